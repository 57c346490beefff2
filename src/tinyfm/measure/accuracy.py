"""Accuracy and confusion matrix of anything that maps an input batch to logits: a torch model or an OrtModel.

Inputs and labels cross the boundary as numpy arrays, so the same code scores every variant.

Example:
    evaluate(OrtModel("model.onnx"), x_test, y_test, batch_size=1000)["accuracy"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyfm.errors import TinyfmError


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _torch_predictor(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return lambda xb: _to_numpy(model(torch.from_numpy(xb).to(device)).float())


def _predicted(predict_logits: Callable[[Any], Any], x: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """Predicted class per row of `x`, batch by batch, and the number of logits per row."""
    fn = _torch_predictor(predict_logits) if isinstance(predict_logits, nn.Module) else predict_logits
    preds, width = [np.zeros(0, dtype=np.int64)], 0
    for start in range(0, len(x), batch_size):
        logits = _to_numpy(fn(np.ascontiguousarray(x[start:start + batch_size])))  # (B, classes)
        preds.append(logits.argmax(-1))
        width = logits.shape[-1]
    return np.concatenate(preds), width


def _confusion(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (true class, predicted class): rows are true classes, columns predictions."""
    return np.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate(predict_logits: Callable[[Any], Any], x: Any, y: Any, batch_size: int = 1000,
             num_classes: int | None = None) -> dict[str, Any]:
    """Score a classifier on (x, y).

    Args:
        predict_logits: an nn.Module (run in eval mode under inference_mode, its flags restored afterwards) or a
            callable from a numpy batch to logits (an OrtModel).
        x: inputs (N, ...), numpy array or tensor.
        y: integer labels (N,).
        batch_size: inputs per call.
        num_classes: size of the confusion matrix; default: the larger of the logit width and max(y) + 1.

    Returns:
        {"accuracy": fraction correct, "confusion": list of lists (rows true, columns predicted), "n": N}.

    Example:
        evaluate(model, x_test, y_test)["accuracy"]
    """
    xa, ya = _to_numpy(x), _to_numpy(y).astype(np.int64).reshape(-1)
    if len(xa) != len(ya):
        raise TinyfmError(f"evaluate: {len(xa)} inputs but {len(ya)} labels")
    module = predict_logits if isinstance(predict_logits, nn.Module) else None
    with _eval_mode(module) if module is not None else contextlib.nullcontext(), torch.inference_mode():
        pred, width = _predicted(predict_logits, xa, batch_size)
    k = num_classes or max(width, int(ya.max(initial=-1)) + 1)
    if len(ya) and (ya.min() < 0 or ya.max() >= k):
        raise TinyfmError(f"evaluate: labels must lie in [0, {k}), got [{ya.min()}, {ya.max()}]")
    confusion = _confusion(ya, pred, k)
    n = len(ya)
    return {"accuracy": float(np.trace(confusion) / n) if n else float("nan"), "confusion": confusion.tolist(), "n": n}
