"""The containers every data source fills: raw numpy arrays from a source, and in-memory tensor splits.

torch is imported lazily (only where tensors are made), so importing :mod:`tinyfm.data` stays cheap.

Example:
    data = load_data(DataConfig(val_size=5000))
    data.train.x.shape, data.input_shape  # (torch.Size([55000, 1, 28, 28]), (1, 28, 28))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(repr=False)
class Split:
    """One split, held in memory: `x` float32 in [0, 1] of shape (N, C, H, W), `y` int64 class ids of shape (N,).

    Example:
        for i in range(0, len(split), 64):
            xb, yb = split.x[i:i + 64], split.y[i:i + 64]
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split: {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:  # the default repr would print tensor values
        return f"Split(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype}, y={self.y.dtype})"


@dataclass(repr=False)
class ImageData:
    """An image-classification dataset split three ways; `test` never shares an image with `train` or `val`.

    Example:
        data = load_data(cfg)
        model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=data.input_shape[0])
    """

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    input_shape: tuple[int, ...]
    """(C, H, W) of one image."""
    num_classes: int
    source: str
    """Where the data was read from (a directory, or a library loader)."""

    def __repr__(self) -> str:
        return (f"ImageData(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})")


@dataclass(repr=False)
class RawDataset:
    """What a registered source returns: the official train and test arrays, before any splitting.

    `x_*` are integer pixel arrays of shape (N, C, H, W) whose values lie in [0, `max_value`]; `y_*` are
    integer class ids in [0, len(class_names)).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str
    max_value: float = 255.0
    """Pixel value that maps to 1.0."""

    def __repr__(self) -> str:
        return (f"RawDataset(train={self.x_train.shape}, test={self.x_test.shape}, "
                f"classes={len(self.class_names)}, source={self.source!r})")
