"""Dynamic micro-batching: concurrent requests grouped into one model call.

Requests wait in a queue; one asyncio task takes the first, then keeps taking requests until the batch holds
`max_batch` samples or `max_wait_ms` have passed since the first arrived, and runs the model once on the
concatenated batch in a single worker thread (so the event loop keeps accepting requests meanwhile, and the
ORT session is called by one thread at a time). While a batch runs, the next one fills up, so under load the
batches grow by themselves. ``max_batch=1`` turns batching off: one model call per request, same thread.

This is the scheme of Triton's dynamic batcher and TorchServe (max batch size + max delay).

Example:
    batcher = MicroBatcher(model, max_batch=32, max_wait_ms=2)
    await batcher.start()
    logits = await batcher.submit(x)  # x: (n, ...) -> (n, classes)
    await batcher.stop()
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future = field(repr=False)


def _concat(batches: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(batches, axis=0)


class MicroBatcher:
    """Group concurrent `submit` calls into one `model` call.

    Args:
        model: batch -> outputs with the batch on axis 0 (an OrtModel).
        max_batch: most samples per model call; 1 = no batching.
        max_wait_ms: how long the first request of a batch waits for company; 0 = take only what is queued.
        collate: list of request batches -> one model batch (default: concatenate; text pads first).
        on_batch: called with (samples, seconds) after every model call (metrics).
    """

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_wait_ms: float = 2.0,
                 collate: Callable[[Sequence[np.ndarray]], np.ndarray] = _concat,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: got {max_batch}, expected >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: got {max_wait_ms}, expected >= 0")
        self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1000.0
        self.collate, self.on_batch = collate, on_batch
        self._queue: deque[_Item] = deque()
        self._ready: asyncio.Event | None = None  # set while the queue may be non-empty
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinyfm-infer")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Cancel the batching task; waiting requests get an error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in self._drain():
            if not item.future.done():
                item.future.set_exception(RuntimeError("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._executor = None

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Outputs for the batch `x` (n samples), computed together with other requests."""
        if self._ready is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(x, future))
        self._ready.set()
        return await future

    def _drain(self) -> list[_Item]:
        items = list(self._queue)
        self._queue.clear()
        return items

    async def _loop(self) -> None:
        while True:
            items = await self._collect()
            try:
                await self._run(items)
            except asyncio.CancelledError:  # stopped mid-batch: these requests get an answer too
                self._queue.extendleft(reversed(items))
                raise

    async def _collect(self) -> list[_Item]:
        """The next batch: the first waiting request plus those arriving within max_wait, up to max_batch.

        A plain deque and an Event rather than asyncio.Queue + wait_for: a timed-out wait can never swallow
        a request, because items are only taken from the deque after a wait, never by the cancelled waiter.
        """
        while not self._queue:
            await self._wait(None)
        first = self._queue.popleft()
        items, n = [first], len(first.x)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            if not self._queue:
                timeout = deadline - time.monotonic()
                try:
                    if timeout <= 0 or not await self._wait(timeout):
                        break
                except asyncio.CancelledError:  # stopped while collecting: put the requests back for stop()
                    self._queue.extendleft(reversed(items))
                    raise
                continue
            if n + len(self._queue[0].x) > self.max_batch:  # does not fit: it opens the next batch
                break
            item = self._queue.popleft()
            items.append(item)
            n += len(item.x)
        return items

    async def _wait(self, timeout: float | None) -> bool:
        """Wait until something is queued (or `timeout` seconds pass); True when the queue is non-empty."""
        assert self._ready is not None
        self._ready.clear()
        if self._queue:
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return bool(self._queue)

    async def _run(self, items: list[_Item]) -> None:
        live = [i for i in items if not i.future.done()]  # a client that went away cancelled its future
        if not live:
            return
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            x = self.collate([i.x for i in live])
            out = await loop.run_in_executor(self._executor, self.model, x)
        except Exception as e:  # the model failed: every request of this batch gets the error
            for i in live:
                if not i.future.done():
                    i.future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(len(x), time.perf_counter() - t0)
        start = 0
        for i in live:
            n = len(i.x)
            if not i.future.done():
                i.future.set_result(out[start:start + n])
            start += n
