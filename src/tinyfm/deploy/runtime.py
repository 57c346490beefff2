"""ONNX Runtime sessions set up for fair timing, and a model wrapper that maps arrays to logits.

Threads are set explicitly (intra-op = `threads`, inter-op = 1) and thread spinning is off by default: spinning
ORT worker threads keep cores busy after each call, which slows PyTorch variants timed in the same process
(see https://onnxruntime.ai/docs/performance/tune-performance/threading.html).

Example:
    model = OrtModel("runs/a/model.onnx", threads=2)
    logits = model(np.zeros((8, 1, 28, 28), np.float32))  # (8, 10)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyfm.errors import TinyfmError

if TYPE_CHECKING:
    import onnxruntime as ort

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEVICES = ("cpu", "cuda")
SPIN_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def _session_options(threads: int, spinning: bool, optimization: str) -> ort.SessionOptions:
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # inter-op parallelism off: one op at a time
    opts.graph_optimization_level = levels[optimization]
    for key in SPIN_KEYS:
        opts.add_session_config_entry(key, "1" if spinning else "0")
    return opts


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        warnings.warn("CUDAExecutionProvider is not available in this onnxruntime; using CPU", stacklevel=3)
    return ["CPUExecutionProvider"]


def _check_args(path: Path, threads: int, optimization: str, device: str) -> None:
    if not path.is_file():
        raise TinyfmError(f"{path}: ONNX file not found")
    if threads < 1:
        raise TinyfmError(f"threads: got {threads}, expected a value >= 1")
    if optimization not in OPTIMIZATION_LEVELS:
        raise TinyfmError(f"optimization: got {optimization!r}, expected one of {', '.join(OPTIMIZATION_LEVELS)}")
    if device not in DEVICES:
        raise TinyfmError(f"device: got {device!r}, expected one of {', '.join(DEVICES)}")


def create_session(path: str | Path, threads: int = 1, spinning: bool = False, optimization: str = "all",
                   device: str = "cpu") -> ort.InferenceSession:
    """Open an ONNX file in an ONNX Runtime session with explicit threading.

    Args:
        path: the .onnx file.
        threads: intra-op threads (inter-op is always 1).
        spinning: let idle ORT threads spin; off by default so other work in the process is not slowed.
        optimization: graph optimisation level: disable | basic | extended | all.
        device: cpu | cuda (CUDA provider when this onnxruntime has it, else CPU with a warning).

    Returns:
        The session; a missing, corrupt or invalid file raises TinyfmError naming it.

    Example:
        sess = create_session("model.onnx", threads=2)
        logits = sess.run(None, {"input": x})[0]
    """
    import onnxruntime as ort

    path = Path(path)
    _check_args(path, threads, optimization, device)
    opts = _session_options(threads, spinning, optimization)
    try:
        return ort.InferenceSession(str(path), opts, providers=_providers(device))
    except Exception as e:  # ORT raises its own types (InvalidProtobuf, InvalidGraph, Fail, ...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TinyfmError(f"{path}: not a valid ONNX model for onnxruntime ({first})") from e


class OrtModel:
    """An ONNX model as a callable from an input batch to logits, like a PyTorch model in eval mode.

    Args:
        path: the .onnx file.
        threads: intra-op threads.
        **session_kwargs: passed to create_session (spinning, optimization, device).

    Example:
        model = OrtModel("model.onnx", threads=1)
        model.input_name, model.input_shape  # "input", ["batch", 1, 28, 28]
        logits = model(x)  # x: (N, 1, 28, 28) float32 array
    """

    def __init__(self, path: str | Path, threads: int = 1, **session_kwargs: Any) -> None:
        self.path = Path(path)
        self.threads = threads
        self.session = create_session(self.path, threads=threads, **session_kwargs)
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        self.input_shape: list[int | str | None] = list(first.shape)  # symbolic axes are names, e.g. "batch"
        self._input_dtype = _numpy_dtype(first.type)
        self.output_name: str = self.session.get_outputs()[0].name

    def __call__(self, x: Any) -> np.ndarray:
        """Logits for the batch `x` (a numpy array, or anything np.asarray takes, e.g. a CPU tensor)."""
        xb = np.ascontiguousarray(np.asarray(x), dtype=self._input_dtype)
        return self.session.run([self.output_name], {self.input_name: xb})[0]

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses, best first."""
        return self.session.get_providers()

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, threads={self.threads}, providers={self.providers})"


def _numpy_dtype(ort_type: str) -> np.dtype:
    """numpy dtype of an ORT input type string such as 'tensor(float)'."""
    names = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8, "tensor(bool)": np.bool_}
    return np.dtype(names.get(ort_type, np.float32))
