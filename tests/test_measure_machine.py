"""machine_info(): a flat record of the hardware and software the numbers came from."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tinyfm.measure import machine_info
from tinyfm.measure.machine import _cpu_model


def test_machine_info_is_flat_and_complete() -> None:
    info = machine_info()
    assert {"cpu", "cores", "cores_usable", "torch", "onnxruntime", "cuda_available"} <= set(info)
    assert info["torch"] == torch.__version__ and info["cores"] >= info["cores_usable"] >= 1
    json.dumps(info)  # flat and serialisable


def test_cpu_model_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 3.0GHz\n")
    assert _cpu_model(cpuinfo) == "Example CPU @ 3.0GHz"
    assert _cpu_model(tmp_path / "absent")  # falls back to platform's answer
