"""A small residual CNN with batch norm: the accuracy ceiling for 28x28 images.

Three stages of basic residual blocks (He et al., 2016, "Deep Residual Learning"), widths
(w, 2w, 4w), stride-2 downsampling between stages, global average pooling and one linear head.
`resnet-small` (w=32, 2 blocks a stage) reaches the accuracy the seed CNN cannot.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyfm.models.registry import register_model
from tinyfm.models.seed_cnn import Normalize


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, blocks: int = 2,
                 dropout: float = 0.0, mean: float = 0.2860, std: float = 0.3530, image_size: int = 28) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for j in range(blocks):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.layers(self.stem(self.normalize(x)))))


@register_model("resnet-small")
def resnet_small(num_classes: int = 10, in_channels: int = 1, **kw) -> ResNet:
    """Residual CNN, widths 32/64/128, 2 blocks a stage (~0.7M parameters)."""
    return ResNet(num_classes, in_channels, width=kw.pop("width", 32), blocks=kw.pop("blocks", 2), **kw)


@register_model("tiny-resnet")
def tiny_resnet(num_classes: int = 10, in_channels: int = 1, **kw) -> ResNet:
    """Residual CNN, widths 4/8/16, 1 block a stage: for tests."""
    return ResNet(num_classes, in_channels, width=kw.pop("width", 4), blocks=kw.pop("blocks", 1), **kw)
