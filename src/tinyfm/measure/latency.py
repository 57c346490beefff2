"""Latency (batch 1, p50/p95) and throughput (large batch) of several variants, measured fairly in one process.

Fair means: the same threads for every variant, warm-up before every timed block, variants interleaved within
each round (so drift in clock speed or background load hits all of them), several rounds, median over rounds.
Absolute times are context; ratios between variants are the claim.

Example:
    variants = [Timed("fp32", torch_model, x1, xb), Timed("onnx", OrtModel(path, threads=2), x1.numpy(), xb.numpy())]
    results = measure_variants(variants, MeasureConfig(threads=2))
    results["onnx"]["p50_ms"] / results["fp32"]["p50_ms"]
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tinyfm.config import MeasureConfig
from tinyfm.errors import TinyfmError

Batch = np.ndarray | torch.Tensor


@dataclass
class Timed:
    """One variant to time: a callable and the inputs it takes.

    Example:
        Timed("fp32", model, torch.zeros(1, 1, 28, 28), torch.zeros(256, 1, 28, 28))
    """

    name: str
    """Variant name, the key of its results."""
    fn: Callable[[Batch], Any]
    """Maps an input batch to logits (a torch model, an OrtModel, any callable)."""
    sample_1: Batch
    """An input batch of 1 for the latency blocks."""
    sample_big: Batch
    """An input batch of MeasureConfig.throughput_batch for the throughput blocks."""


def set_threads(n: int) -> dict[str, int]:
    """Set PyTorch's intra-op threads to `n`, and its inter-op threads to 1 if they can still be set.

    torch allows inter-op threads to be set only once, before any inter-op work has run; later calls raise
    RuntimeError, which is ignored here (the value in effect is returned either way).

    Args:
        n: intra-op threads (>= 1).

    Returns:
        {"intra_op": threads in effect, "inter_op": inter-op threads in effect}.

    Example:
        set_threads(2)
    """
    if n < 1:
        raise TinyfmError(f"--threads: got {n}, expected a value >= 1")
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def _call(fn: Callable[[Batch], Any], x: Batch) -> Any:
    out = fn(x)
    if isinstance(out, torch.Tensor) and out.is_cuda:  # CUDA calls return before the work is done
        torch.cuda.synchronize(out.device)
    return out


@contextlib.contextmanager
def _timing() -> Iterator[None]:
    """inference_mode for torch callables (a no-op for others), garbage collection paused as in timeit.

    No gc.collect() first: with torch loaded a full collection takes ~0.2 s, longer than many timed blocks.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_enabled:
            gc.enable()


def _times_s(fn: Callable[[Batch], Any], x: Batch, iters: int, warmup: int) -> list[float]:
    """Seconds per call for `iters` calls after `warmup` untimed ones."""
    if iters < 1:
        raise TinyfmError(f"iters: got {iters}, expected a value >= 1")
    with _timing():
        for _ in range(warmup):
            _call(fn, x)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            _call(fn, x)
            times.append(time.perf_counter() - start)
    return times


def measure_latency(fn: Callable[[Batch], Any], x: Batch, iters: int = 200, warmup: int = 20) -> dict[str, float]:
    """Per-call latency of `fn(x)`, timed call by call with time.perf_counter.

    Args:
        fn: the callable (called under torch.inference_mode).
        x: the input, usually a batch of 1.
        iters: timed calls.
        warmup: untimed calls first.

    Returns:
        {"p50_ms", "p95_ms", "mean_ms"}.

    Example:
        measure_latency(model, torch.zeros(1, 1, 28, 28), iters=100, warmup=10)["p50_ms"]
    """
    ms = np.asarray(_times_s(fn, x, iters, warmup)) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}


def measure_throughput(fn: Callable[[Batch], Any], x_big: Batch, iters: int = 10, warmup: int = 2) -> float:
    """Samples per second of `fn` on the large batch `x_big`.

    Args:
        fn: the callable (called under torch.inference_mode).
        x_big: a large input batch; its first axis is the number of samples per call.
        iters: timed calls.
        warmup: untimed calls first.

    Returns:
        len(x_big) × iters / total seconds.

    Example:
        measure_throughput(model, torch.zeros(256, 1, 28, 28))
    """
    return len(x_big) * iters / sum(_times_s(fn, x_big, iters, warmup))


def _round_order(variants: list[Timed], r: int) -> list[Timed]:
    # Rotating the start each round means no variant always runs first (cold) or always after the same one.
    k = r % len(variants)
    return variants[k:] + variants[:k]


def _measure_once(v: Timed, cfg: MeasureConfig) -> dict[str, float]:
    lat = measure_latency(v.fn, v.sample_1, cfg.latency_iters, cfg.warmup)
    # A large batch warms up in fewer calls than batch 1 needs; at most throughput_iters of them.
    sps = measure_throughput(v.fn, v.sample_big, cfg.throughput_iters, min(cfg.warmup, cfg.throughput_iters))
    return {**lat, "throughput_sps": sps}


def _summarise(rounds: list[dict[str, float]], threads: int, batch: int) -> dict[str, Any]:
    keys = ("p50_ms", "p95_ms", "mean_ms", "throughput_sps")
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in keys}
    summary |= {"threads": threads, "throughput_batch": batch, "repeats": len(rounds)}
    summary |= {f"{k}_rounds": [r[k] for r in rounds] for k in keys}
    return summary


def measure_variants(variants: list[Timed], cfg: MeasureConfig) -> dict[str, dict[str, Any]]:
    """Time every variant the same way: cfg.repeats rounds, each running every variant in turn.

    Per round and variant: warm-up and a batch-1 latency block, then warm-up and a throughput block. PyTorch
    threads are set to cfg.threads first (ONNX Runtime sessions take theirs when created:
    OrtModel(path, threads=cfg.threads)). The variant order rotates from round to round.

    Args:
        variants: the variants; names must be unique.
        cfg: iterations, warm-up, repeats and threads.

    Returns:
        {name: {"p50_ms", "p95_ms", "mean_ms", "throughput_sps" (medians over rounds), "threads",
        "throughput_batch", "repeats", and "<metric>_rounds" (the per-round values, in round order)}}.

    Example:
        res = measure_variants([Timed("fp32", model, x1, xb)], MeasureConfig(repeats=3))
        res["fp32"]["p50_ms"]
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise TinyfmError(f"variant names must be unique, got {names}")
    if not variants:
        return {}
    threads = set_threads(cfg.threads)["intra_op"]
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(cfg.repeats):
        for v in _round_order(variants, r):
            rounds[v.name].append(_measure_once(v, cfg))
    batch = {v.name: len(v.sample_big) for v in variants}
    return {n: _summarise(rounds[n], threads, batch[n]) for n in names}
