"""Losses as task objects: ``task(model, x, y) -> {"loss", "logits"}``.

The training loop only knows this signature, so distillation and multimodal objectives plug into the
same loop by passing another task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationTask:
    """Cross-entropy on logits (the seed's sparse_categorical_crossentropy), optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(x)
        return {"loss": F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), "logits": logits}
