"""Device, precision and thread choices, made once per process and recorded with the run."""

from __future__ import annotations

import os

import torch

from tinyfm.errors import ConfigError


def select_device(spec: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit device that is not available is an error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device auto or cpu)")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available on this machine (use --device auto or cpu)")
    return torch.device(spec)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `amp` on `device`, or None for full fp32.

    "auto" means bf16 on CUDA GPUs that support it (no loss scaling needed), fp16 on older GPUs,
    and off on CPU/MPS, where autocast rarely speeds small models up (see benchmarks/parallel.py).
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def default_threads(processes: int = 1) -> int:
    """Intra-op threads per process so that `processes` processes do not oversubscribe the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))
