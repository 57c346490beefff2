"""Export to ONNX: one checked, self-contained file, dynamic batch, parity with PyTorch, exporter fallback."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import tinyfm.deploy.onnx as deploy_onnx
from tinyfm.config import ExportConfig
from tinyfm.deploy import OrtModel, check_parity, export_onnx, exporter_used
from tinyfm.errors import TinyfmError
from tinyfm.models import create_model


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = small_cnn()
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_export_writes_one_checked_file(exported: tuple[nn.Module, Path]) -> None:
    _, path = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no external data, no temp file left
    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.opset_import[0].version == ExportConfig().opset


def test_exported_file_carries_no_debug_records(exported: tuple[nn.Module, Path]) -> None:
    proto = onnx.load(str(exported[1]))
    assert all(len(n.metadata_props) == 0 and not n.doc_string for n in proto.graph.node)
    blob = proto.SerializeToString()
    assert b"stack_trace" not in blob and b"site-packages" not in blob  # no build-machine paths ship


def test_compact_names_shrinks_the_file_and_keeps_the_outputs(exported: tuple[nn.Module, Path], tmp_path) -> None:
    from tinyfm.deploy.onnx import compact_names

    proto = onnx.load(str(exported[1]))
    assert compact_names(proto)
    small = tmp_path / "compact.onnx"
    onnx.save(proto, str(small))
    onnx.checker.check_model(str(small))
    assert small.stat().st_size < exported[1].stat().st_size
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert all(not n.name for n in proto.graph.node) and not proto.graph.value_info
    assert all(t.name.startswith("t") and len(t.name) <= 3 for t in proto.graph.initializer)
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(OrtModel(small)(x), OrtModel(exported[1])(x))


def test_compact_names_leaves_graphs_with_subgraphs_alone() -> None:
    from onnx import TensorProto, helper

    from tinyfm.deploy.onnx import compact_names

    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y_then"])], "then", [],
                               [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="branch")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph)
    before = proto.SerializeToString()
    assert not compact_names(proto) and proto.SerializeToString() == before


def test_dynamo_exporter_is_used_when_onnxscript_is_installed(exported: tuple[nn.Module, Path]) -> None:
    pytest.importorskip("onnxscript")
    assert exporter_used(exported[1]) == "dynamo"


def test_dynamo_exports_a_channels_last_model_from_a_batch_of_one(tmp_path: Path) -> None:
    # torch.export specialises size-1 dims; a channels_last seed CNN traced at batch 1 failed ("Invalid ranges")
    # and fell back to TorchScript until the example is repeated to batch 2 for the trace.
    pytest.importorskip("onnxscript")
    model = create_model("tiny-seed-cnn").to(memory_format=torch.channels_last)
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    assert exporter_used(path) == "dynamo"
    assert OrtModel(path)(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)


def test_the_seed_cnn_graph_has_relu_next_to_its_conv(tmp_path: Path) -> None:
    # The model pools before its ReLU (faster training); the file puts each ReLU back after its Conv, the
    # pattern ORT fuses, and computes the same logits.
    model = create_model("tiny-seed-cnn").eval()
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops[ops.index("Conv"):ops.index("Reshape")] == ["Conv", "Relu", "MaxPool"] * 2 + ["Conv", "Relu"]
    stats = check_parity(model, path, torch.rand(50, 1, 28, 28), batch_size=25)
    assert stats["max_abs_diff"] <= ExportConfig().atol and stats["argmax_agreement"] == 1.0


def test_relu_before_pool_leaves_a_shared_pool_output_alone() -> None:
    from onnx import TensorProto, helper

    from tinyfm.deploy.onnx import relu_before_pool

    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2]), helper.make_node("Relu", ["p"], ["r"]),
             helper.make_node("Add", ["p", "r"], ["y"])]  # p feeds Relu and Add: swapping would change Add's input
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 4, 4]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", info[:1], info[1:])
    assert relu_before_pool(graph) == 0 and [n.op_type for n in graph.node] == ["MaxPool", "Relu", "Add"]
    alone = helper.make_graph(nodes[:2], "g", info[:1], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    assert relu_before_pool(alone) == 1 and [(n.op_type, list(n.input), list(n.output)) for n in alone.node] == [
        ("Relu", ["x"], ["p"]), ("MaxPool", ["p"], ["r"])]


def test_batch_axis_is_dynamic(exported: tuple[nn.Module, Path]) -> None:
    ort_model = OrtModel(exported[1])
    assert isinstance(ort_model.input_shape[0], str)
    for batch in (1, 7):
        assert ort_model(np.zeros((batch, 1, 28, 28), np.float32)).shape == (batch, 10)


def test_parity_with_pytorch(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    torch.manual_seed(1)
    stats = check_parity(model, path, torch.randn(300, 1, 28, 28), batch_size=128)
    assert stats["n"] == 300
    assert stats["max_abs_diff"] <= ExportConfig().atol
    assert stats["argmax_agreement"] == 1.0


def test_training_flags_are_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The TorchScript exporter keeps this fast (a second dynamo export costs seconds); flags are exporter-agnostic.
    monkeypatch.setattr(deploy_onnx, "_export_dynamo", deploy_onnx._export_torchscript)
    model = small_cnn().train()
    model[0].eval()  # a mixed state must come back exactly, not as model.train()
    path = export_onnx(model, torch.zeros(2, 1, 28, 28), tmp_path / "m.onnx", dynamic_axes={"input": [0]})
    assert model.training and not model[0].training and model[1].training
    assert OrtModel(path).input_shape[0] == "input_dim_0"  # list-form axes get a generated symbol


def test_falls_back_to_torchscript_when_dynamo_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no dynamo today")

    monkeypatch.setattr(deploy_onnx, "_export_dynamo", broken)
    model = small_cnn()
    with pytest.warns(UserWarning, match="fell back to torchscript.*no dynamo today"):
        path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "model.onnx")
    assert exporter_used(path) == "torchscript"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert OrtModel(path)(np.zeros((7, 1, 28, 28), np.float32)).shape == (7, 10)
    assert check_parity(model, path, torch.randn(16, 1, 28, 28))["max_abs_diff"] <= ExportConfig().atol


def test_static_batch_from_dynamo_triggers_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def static(model: nn.Module, x: torch.Tensor, path: Path, opset: int, axes: dict) -> None:
        deploy_onnx._export_torchscript(model, x, path, opset, {})  # a graph with a fixed batch of 1

    monkeypatch.setattr(deploy_onnx, "_export_dynamo", static)
    with pytest.warns(UserWarning, match=r"axes not dynamic: input\[0\]=1"):
        path = export_onnx(small_cnn(), torch.zeros(1, 1, 28, 28), tmp_path / "model.onnx")
    assert exporter_used(path) == "torchscript"


def test_every_exporter_failing_raises_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("unsupported op")

    monkeypatch.setattr(deploy_onnx, "_export_dynamo", broken)
    monkeypatch.setattr(deploy_onnx, "_export_torchscript", broken)
    with pytest.raises(TinyfmError, match="dynamo: ValueError: unsupported op; torchscript: ValueError"):
        export_onnx(small_cnn(), torch.zeros(1, 1, 28, 28), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_parity_reports_nan_rather_than_hiding_it(exported: tuple[nn.Module, Path]) -> None:
    model, path = exported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = check_parity(model, path, torch.full((2, 1, 28, 28), float("nan")))
    assert np.isnan(stats["max_abs_diff"])
