"""MicroBatcher: concurrent requests share one model call, every request gets its own rows back, errors and
shutdown never leave a request hanging."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tinyfm.deploy.batching import MicroBatcher


class Recorder:
    """A model that records the batch sizes it was called with and returns x * 2 (so rows can be traced)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        if self.fail:
            raise RuntimeError("model exploded")
        return x * 2


async def _submit_all(batcher: MicroBatcher, xs: list[np.ndarray]) -> list[np.ndarray]:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(x) for x in xs))
    finally:
        await batcher.stop()


def _requests(n: int, rows: int = 1) -> list[np.ndarray]:
    return [np.full((rows, 3), i, np.float32) for i in range(n)]


def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    model = Recorder()
    xs = _requests(10)
    out = asyncio.run(_submit_all(MicroBatcher(model, max_batch=32, max_wait_ms=50), xs))
    assert model.calls == [10]
    for x, y in zip(xs, out, strict=True):
        np.testing.assert_array_equal(y, x * 2)


def test_max_batch_is_respected_and_requests_are_not_split():
    model = Recorder()
    xs = _requests(5, rows=2)  # 10 samples in requests of 2, batches of at most 4
    out = asyncio.run(_submit_all(MicroBatcher(model, max_batch=4, max_wait_ms=50), xs))
    assert model.calls == [4, 4, 2]
    assert [int(y[0, 0]) for y in out] == [2 * i for i in range(5)]


def test_max_batch_one_is_one_call_per_request():
    model = Recorder()
    asyncio.run(_submit_all(MicroBatcher(model, max_batch=1, max_wait_ms=50), _requests(6)))
    assert model.calls == [1] * 6


def test_request_larger_than_max_batch_runs_alone():
    model = Recorder()
    xs = [np.zeros((1, 3), np.float32), np.ones((7, 3), np.float32), np.zeros((1, 3), np.float32)]
    out = asyncio.run(_submit_all(MicroBatcher(model, max_batch=4, max_wait_ms=50), xs))
    assert model.calls == [1, 7, 1]
    assert [len(y) for y in out] == [1, 7, 1]


def test_zero_wait_takes_only_what_is_queued():
    model = Recorder()
    out = asyncio.run(_submit_all(MicroBatcher(model, max_batch=8, max_wait_ms=0), _requests(3)))
    assert sum(model.calls) == 3 and len(out) == 3


def test_a_failing_model_fails_its_batch_and_the_batcher_keeps_serving():
    async def scenario():
        model = Recorder(fail=True)
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=20)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(x) for x in _requests(3)), return_exceptions=True)
            assert all(isinstance(r, RuntimeError) for r in results)
            model.fail = False
            return await batcher.submit(np.ones((1, 3), np.float32))
        finally:
            await batcher.stop()

    np.testing.assert_array_equal(asyncio.run(scenario()), np.full((1, 3), 2, np.float32))


def test_stop_fails_waiting_requests_instead_of_hanging():
    async def scenario():
        batcher = MicroBatcher(Recorder(), max_batch=8, max_wait_ms=1000)  # the batch waits for company
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(np.ones((1, 3), np.float32))) for _ in range(3)]
        await asyncio.sleep(0.05)  # the batching task holds them now
        await batcher.stop()
        for p in pending:
            with pytest.raises(RuntimeError, match="shutting down"):
                await p

    asyncio.run(scenario())


def test_on_batch_reports_sizes():
    seen: list[int] = []
    batcher = MicroBatcher(Recorder(), max_batch=16, max_wait_ms=50, on_batch=lambda n, s: seen.append(n))
    asyncio.run(_submit_all(batcher, _requests(5)))
    assert seen == [5]


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait_ms": -1}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), **kwargs)
