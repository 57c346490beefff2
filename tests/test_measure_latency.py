"""Timing: the right keys, the right number of calls, variants interleaved, torch calls in inference mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from tinyfm.config import MeasureConfig
from tinyfm.errors import TinyfmError
from tinyfm.measure import Timed, measure_latency, measure_throughput, measure_variants, set_threads

TINY = MeasureConfig(threads=1, latency_iters=3, throughput_batch=4, throughput_iters=2, repeats=3, warmup=1)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Recorder:
    """A fake variant that logs (name, batch size, inference mode on?) for every call."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, len(x), torch.is_inference_mode_enabled()))
        return x


def test_measure_latency_keys_and_call_count() -> None:
    log: list = []
    res = measure_latency(Recorder("a", log), torch.zeros(1, 3), iters=5, warmup=2)
    assert set(res) == {"p50_ms", "p95_ms", "mean_ms"}
    assert 0 <= res["p50_ms"] <= res["p95_ms"]
    assert len(log) == 7


def test_measure_throughput_counts_samples() -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return x

    sps = measure_throughput(slow, np.zeros((10, 3)), iters=3, warmup=0)
    assert 0 < sps <= 10 / 0.002


def test_measure_variants_interleaves_rounds_and_variants() -> None:
    log: list = []
    variants = [Timed(n, Recorder(n, log), torch.zeros(1, 2), torch.zeros(TINY.throughput_batch, 2)) for n in "ab"]
    res = measure_variants(variants, TINY)
    per_block = (TINY.warmup + TINY.latency_iters) + (min(TINY.warmup, TINY.throughput_iters) + TINY.throughput_iters)
    blocks = [log[i:i + per_block] for i in range(0, len(log), per_block)]
    assert [b[0][0] for b in blocks] == ["a", "b", "b", "a", "a", "b"]  # every round runs both; the start rotates
    for b in blocks:  # warm-up + latency on batch 1, then warm-up + throughput on the big batch
        assert [size for _, size, _ in b] == [1] * 4 + [TINY.throughput_batch] * 3
        assert len({name for name, _, _ in b}) == 1
    assert all(inference for _, _, inference in log)
    metrics = ("p50_ms", "p95_ms", "mean_ms", "throughput_sps")
    expected_keys = {*metrics, "threads", "throughput_batch", "repeats", *(f"{m}_rounds" for m in metrics)}
    for name in "ab":
        assert set(res[name]) == expected_keys
        assert res[name]["threads"] == 1 and res[name]["repeats"] == 3 and res[name]["throughput_batch"] == 4
        assert len(res[name]["p50_ms_rounds"]) == 3
        assert res[name]["p50_ms"] == float(np.median(res[name]["p50_ms_rounds"]))


def test_measure_variants_times_a_real_model() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()
    v = Timed("fp32", model, torch.zeros(1, 1, 28, 28), torch.zeros(4, 1, 28, 28))
    res = measure_variants([v], TINY)["fp32"]
    assert res["p50_ms"] > 0 and res["throughput_sps"] > 0


def test_duplicate_variant_names_are_rejected() -> None:
    v = Timed("a", lambda x: x, np.zeros(1), np.zeros(4))
    with pytest.raises(TinyfmError, match="unique"):
        measure_variants([v, v], TINY)


def test_set_threads() -> None:
    assert set_threads(1)["intra_op"] == 1 == torch.get_num_threads()
    assert set_threads(1)["inter_op"] >= 1  # a second call must not raise although inter-op is fixed by now
    with pytest.raises(TinyfmError, match="threads"):
        set_threads(0)
