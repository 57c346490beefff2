"""The containers every data source fills: raw numpy arrays from a source, and in-memory tensor splits.

torch is imported lazily (only where tensors are made), so importing :mod:`tinyfm.data` stays cheap.

Example:
    data = load_data(DataConfig(val_size=5000))
    data.train.x.shape, data.input_shape  # (torch.Size([55000, 1, 28, 28]), (1, 28, 28))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the data fixes for a model: the input channels."""
        return {"in_channels": int(self.input_shape[0])}

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


@dataclass(repr=False)
class TextSplit(Split):
    """A text split: `x` int64 token ids (N, L) padded with 0, `y` int64 class ids (N,), and the raw `texts`.

    The texts are kept so another model's tokenizer (a distillation student, MiniLM's WordPiece) can encode the
    same split; `x` is always the encoding of the run's own model.
    """

    texts: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.texts) != len(self):
            raise ValueError(f"TextSplit: {len(self.texts)} texts but {len(self)} labels")

    def subset(self, idx: np.ndarray) -> TextSplit:
        """The rows `idx` of this split (texts included)."""
        import torch

        i = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return TextSplit(self.x[i], self.y[i], [self.texts[k] for k in np.asarray(idx).tolist()])


@dataclass(repr=False)
class TextData:
    """A text-classification dataset split three ways, tokenized for one model (see tinyfm.data.text).

    Duck-types :class:`ImageData` (train/val/test with .x/.y, class_names, input_shape, num_classes, source), so
    the trainer, evaluation and measurement code run unchanged; `input_shape` is (max_length,) and the inputs are
    int64 token ids with 0 as padding.

    Example:
        data = load_data(DataConfig(dataset="rotten-tomatoes"))
        data.train.x.shape, data.tokenizer.vocab_size  # (torch.Size([9237, 64]), 10000)
        student = data.with_tokenizer(other_tokenizer)  # the same texts, encoded for another model
    """

    train: TextSplit
    val: TextSplit
    test: TextSplit
    class_names: list[str]
    num_classes: int
    source: str
    tokenizer: Any
    """The tokenizer that produced every split's `x` (WordTokenizer or HFTokenizer)."""
    word_tokenizer: Any = None
    """The word-level tokenizer fitted on the training split (what a word-level student reads); None = `tokenizer`."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.train.x.shape[1]),)

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the data fixes for a text model: the embedding table's size."""
        return {"vocab_size": int(self.tokenizer.vocab_size)}

    def with_tokenizer(self, tokenizer: Any) -> TextData:
        """The same splits encoded with `tokenizer` (an identical tokenizer returns self)."""
        if tokenizer.to_dict() == self.tokenizer.to_dict():
            return self
        splits = [TextSplit(tokenizer.encode(s.texts), s.y, s.texts) for s in (self.train, self.val, self.test)]
        return TextData(*splits, class_names=self.class_names, num_classes=self.num_classes, source=self.source,
                        tokenizer=tokenizer, word_tokenizer=self.word_tokenizer or self.tokenizer)

    def for_model(self, name: str) -> TextData:
        """The splits encoded for registry model `name`: word ids (the fitted vocabulary) or MiniLM's WordPiece.

        Example:
            teacher_data, student_data = data.for_model("minilm-classifier"), data.for_model("seed-text")
        """
        from tinyfm.data.text import tokenizer_for

        return self.with_tokenizer(tokenizer_for(name, self.word_tokenizer or self.tokenizer))

    def __repr__(self) -> str:
        return (f"TextData(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})")


@dataclass(repr=False)
class RawText:
    """What a text source returns: train and test texts with integer labels, before validation splitting.

    `groups_train` (optional) names the group of every training text (e.g. the movie): the validation split then
    takes whole groups, so no group spans train and validation.
    """

    texts_train: list[str]
    y_train: np.ndarray
    texts_test: list[str]
    y_test: np.ndarray
    class_names: list[str]
    source: str
    groups_train: list[str] | None = None

    def __repr__(self) -> str:
        return (f"RawText(train={len(self.texts_train)}, test={len(self.texts_test)}, "
                f"classes={len(self.class_names)}, source={self.source!r})")
