"""ONNX Runtime sessions: explicit threads, spinning off by default, clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tinyfm.deploy import OrtModel, create_session
from tinyfm.errors import TinyfmError

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


@pytest.fixture
def matmul_onnx(tmp_path: Path) -> Path:
    """logits = input @ W with a symbolic batch axis "N", built directly (no exporter involved)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])], "matmul",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(W, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "matmul.onnx"
    onnx.save(model, str(path))
    return path


def test_spinning_is_off_by_default_and_threads_are_explicit(matmul_onnx: Path) -> None:
    opts = create_session(matmul_onnx, threads=2).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_spinning_and_optimization_can_be_chosen(matmul_onnx: Path) -> None:
    opts = create_session(matmul_onnx, spinning=True, optimization="basic").get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


@pytest.mark.parametrize("kwargs, match", [({"threads": 0}, "threads"), ({"optimization": "max"}, "optimization"),
                                           ({"device": "tpu"}, "device")])
def test_bad_settings_are_named(matmul_onnx: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(TinyfmError, match=match):
        create_session(matmul_onnx, **kwargs)


def test_corrupt_file_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    for open_it in (create_session, OrtModel):
        with pytest.raises(TinyfmError, match="broken.onnx"):
            open_it(bad)


def test_missing_file_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TinyfmError, match="nothere.onnx.*not found"):
        OrtModel(tmp_path / "nothere.onnx")


def test_ort_model_maps_inputs_to_logits(matmul_onnx: Path) -> None:
    model = OrtModel(matmul_onnx, threads=1)
    assert (model.input_name, model.input_shape, model.output_name) == ("input", ["N", 4], "logits")
    assert model.providers == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).normal(size=(5, 4))  # float64 is cast to the model's float32
    np.testing.assert_allclose(model(x), x.astype(np.float32) @ W, rtol=1e-6)
    np.testing.assert_allclose(model(torch.ones(2, 4)), np.ones((2, 4), np.float32) @ W, rtol=1e-6)


def test_cuda_request_without_cuda_provider_falls_back_to_cpu(matmul_onnx: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        model = OrtModel(matmul_onnx, device="cuda")
    assert model.providers == ["CPUExecutionProvider"]
