"""evaluate(): accuracy and confusion for numpy callables, torch modules and ONNX Runtime models alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tinyfm.deploy import OrtModel
from tinyfm.errors import TinyfmError
from tinyfm.measure import evaluate

# The toy "model" predicts the class written in the input: rows are class ids, one is wrong on purpose.
X = np.array([[0], [1], [2], [1], [0]], dtype=np.float32)
Y = np.array([0, 1, 1, 1, 0])
CONFUSION = [[2, 0, 0], [0, 2, 1], [0, 0, 0]]  # rows true, columns predicted


def one_hot_logits(x: np.ndarray) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[x[:, 0].astype(int)]


class OneHot(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training = self.training
        return nn.functional.one_hot(x[:, 0].long(), 3).float()


def test_numpy_callable() -> None:
    res = evaluate(one_hot_logits, X, Y, batch_size=2)
    assert res == {"accuracy": 4 / 5, "confusion": CONFUSION, "n": 5}


def test_torch_module_runs_in_eval_mode_and_is_restored() -> None:
    model = OneHot().train()
    res = evaluate(model, torch.from_numpy(X), torch.from_numpy(Y), batch_size=3)
    assert res == {"accuracy": 4 / 5, "confusion": CONFUSION, "n": 5}
    assert not model.seen_training and model.training


def test_torch_and_onnx_agree(tmp_path: Path) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "b"], ["logits"], transB=1)], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(linear.weight.detach().numpy(), "W"),
                     numpy_helper.from_array(linear.bias.detach().numpy(), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "linear.onnx"))
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    assert evaluate(linear, x, y, batch_size=16) == evaluate(OrtModel(tmp_path / "linear.onnx"), x, y, batch_size=7)


def test_num_classes_sets_the_confusion_size() -> None:
    res = evaluate(one_hot_logits, X, Y, num_classes=4)
    assert np.asarray(res["confusion"]).shape == (4, 4)


def test_bad_labels_are_errors() -> None:
    with pytest.raises(TinyfmError, match="5 inputs but 4 labels"):
        evaluate(one_hot_logits, X, Y[:4])
    with pytest.raises(TinyfmError, match="labels must lie in"):
        evaluate(one_hot_logits, X, np.array([0, 1, 1, 1, 7]), num_classes=3)
