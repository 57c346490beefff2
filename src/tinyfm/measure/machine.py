"""What the measurements ran on, saved beside every benchmark (absolute times mean little without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def _cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """CPU model name from /proc/cpuinfo (x86 'model name', some ARM 'Hardware'/'Model'), else platform's."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int:
    # The affinity mask, not os.cpu_count(), is what a container or taskset lets this process use.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _cuda_info() -> dict[str, Any]:
    available = torch.cuda.is_available()
    return {"cuda_available": available,
            "cuda_device": torch.cuda.get_device_name(0) if available else None,
            "cuda_version": torch.version.cuda}


def machine_info() -> dict[str, Any]:
    """A flat description of the machine and software.

    Returns:
        {"cpu", "cores" (logical, os.cpu_count), "cores_usable" (affinity), "torch_threads", "platform",
        "python", "torch", "onnxruntime", "cuda_available", "cuda_device", "cuda_version"}.

    Example:
        write_json(run_dir / "machine.json", machine_info())
    """
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": _usable_cores(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": _ort_version(),
            **_cuda_info()}
