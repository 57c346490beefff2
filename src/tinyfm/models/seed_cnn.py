"""The seed's image classifier, layer for layer (its Keras program, written in PyTorch).

Conv 32@3x3 ReLU -> MaxPool 2 -> Conv 64@3x3 ReLU -> MaxPool 2 -> Conv 64@3x3 ReLU -> Flatten ->
Dense 64 ReLU -> Dense 10. On a 28x28x1 input it has 93,322 parameters, the count Keras prints.
Where a max-pool follows a ReLU the two are applied the other way round, pool first: ReLU is monotone, so
max(relu(a), relu(b), ...) == relu(max(a, b, ...)) and the network computes the same function (forward and
gradients), but the ReLU and its backward touch a quarter of the values. On the 26x26x32 first-layer output that
makes training faster on this CPU (benchmarks/parallel.py, variant seed-order); `relu_before_pool=True` builds
the seed's order, module for module. The exported ONNX file is in the seed's order again (each ReLU right after its
Conv, which ONNX Runtime fuses; `tinyfm.deploy.onnx.relu_before_pool`).
The Keras softmax is left out: the model returns logits and the loss applies log-softmax.
Inputs are float images in [0, 1], (B, C, H, W); a fixed (non-trained) normalisation is applied first.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyfm.models.registry import register_model


class Normalize(nn.Module):
    """(x - mean) / std with constants stored as buffers: part of the exported graph, not parameters."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.mean_value, self.std_value = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean_value}, std={self.std_value}"


def _flat_features(body: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return body(torch.zeros(1, in_channels, image_size, image_size)).flatten(1).shape[1]


class SeedCNN(nn.Module):
    """The seed's CNN; `width` scales every layer (1.0 = the seed) for the tiny test variant."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: float = 1.0,
                 mean: float = 0.2860, std: float = 0.3530, relu_before_pool: bool = False) -> None:
        super().__init__()
        c1, c2, d = (max(1, round(c * width)) for c in (32, 64, 64))
        self.normalize = Normalize(mean, std)  # Fashion-MNIST train-set statistics

        def act_pool() -> list[nn.Module]:  # the same function either way (module docstring); indices unchanged
            return [nn.ReLU(), nn.MaxPool2d(2)] if relu_before_pool else [nn.MaxPool2d(2), nn.ReLU()]

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3), *act_pool(),
            nn.Conv2d(c1, c2, 3), *act_pool(),
            nn.Conv2d(c2, c2, 3), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_features(self.features, in_channels, image_size), d), nn.ReLU(),
            nn.Linear(d, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


@register_model("seed-cnn")
def seed_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kw) -> SeedCNN:
    """The seed exercise's CNN (93,322 parameters on 28x28x1, 10 classes)."""
    return SeedCNN(num_classes, in_channels, image_size, **kw)


@register_model("tiny-seed-cnn")
def tiny_seed_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, **kw) -> SeedCNN:
    """The seed CNN at 1/8 width: the same graph, for fast tests."""
    return SeedCNN(num_classes, in_channels, image_size, width=kw.pop("width", 0.125), **kw)
