"""Text classifiers on word ids: the seed's model, layer for layer, and two stronger small ones (a CNN, a bi-GRU).

The seed (Keras): Embedding(10000, 16) -> GlobalAveragePooling1D -> Dense(16, relu) -> Dense(1, sigmoid); 160,289
parameters. Two deliberate differences, both switchable:

- pooling: Keras' GlobalAveragePooling1D without ``mask_zero`` averages the padding too, so a 5-word snippet
  padded to 64 is mostly zeros; ``pooling="masked"`` (the default) averages the real tokens only, ``"mean"``
  is the seed's exact behaviour.
- output: for two classes the last layer is the seed's Dense(16, 1) and the model returns the two logits
  (0, z): softmax((0, z)) = (1 - sigmoid(z), sigmoid(z)), so cross-entropy on them is the seed's binary
  cross-entropy on sigmoid(z), with the seed's parameter count, while every other part of tinyfm (argmax, the
  distillation loss, evaluation) sees ordinary class logits. For K > 2 classes the layer is Dense(16, K).

It starts where Keras starts (``init="keras"``, the default): embeddings uniform in (-0.05, 0.05), Dense kernels
Glorot-uniform, biases zero. PyTorch's own defaults (``init="torch"``: embeddings N(0, 1)) give every word that
training rarely touches a large random vector, which the average then carries into each text that holds it.

Inputs are int64 ids (B, L) with 0 as padding and 1 as out-of-vocabulary (tinyfm.data.text); an id outside
[0, vocab_size) is mapped to the OOV id inside the model, so a wrong id can never index past the table.

Example:
    model = create_model("seed-text", num_classes=2)  # 160,289 parameters
    logits = model(torch.tensor([[5, 17, 2, 0, 0]]))   # (1, 2)
"""

from __future__ import annotations

import torch
from torch import nn

from tinyfm.models.registry import register_model

PAD_ID, OOV_ID = 0, 1


def clean_ids(ids: torch.Tensor, vocab_size: int, oov_id: int = OOV_ID) -> torch.Tensor:
    """`ids` with every id outside [0, vocab_size) replaced by `oov_id` (cheap, and part of the ONNX graph)."""
    ids = ids.long()
    return torch.where((ids >= 0) & (ids < vocab_size), ids, torch.full_like(ids, oov_id))


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, L, D) over the positions where mask (B, L) is true; an all-padding row gives zeros."""
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class TextModel(nn.Module):
    """Marks a model whose input is int64 token ids (B, L) (its tokenizer is named at registration).

    `ignores_trailing_padding`: whether the output is the same when padding columns at the end of a batch are cut
    off (true for models that mask padding everywhere; seed-text's unmasked "mean" pooling is not).
    """

    input_dtype = torch.long
    ignores_trailing_padding = False


def trim_padding(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """`ids` (B, L) cut to its longest row when `model` ignores trailing padding (the same output from fewer
    columns: a batch of short texts padded to 64 ids costs a fraction); otherwise `ids` unchanged."""
    if not getattr(model, "ignores_trailing_padding", False):
        return ids
    return ids[:, :max(1, int((ids != PAD_ID).sum(1).max()))]


def keras_init(model: nn.Module) -> None:
    """Keras' default initialisers in place: embeddings U(-0.05, 0.05), Dense kernels Glorot-uniform, biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.05, 0.05)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class _Head(nn.Module):
    """The seed's last layer: Dense(in, 1) read as logits (0, z) for two classes, else Dense(in, K)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.binary = num_classes == 2
        self.linear = nn.Linear(in_features, 1 if self.binary else num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)  # (B, 1) or (B, K)
        return torch.cat([torch.zeros_like(z), z], dim=1) if self.binary else z


class SeedText(TextModel):
    """The seed's text classifier (see the module docstring); `embed_dim` and `hidden` scale it for tests."""

    def __init__(self, num_classes: int = 2, vocab_size: int = 10000, embed_dim: int = 16, hidden: int = 16,
                 pooling: str = "masked", init: str = "keras") -> None:
        super().__init__()
        if pooling not in ("masked", "mean"):
            raise ValueError(f"pooling: got {pooling!r}, expected masked or mean")
        if init not in ("keras", "torch"):
            raise ValueError(f"init: got {init!r}, expected keras or torch")
        self.vocab_size, self.pooling = vocab_size, pooling
        self.ignores_trailing_padding = pooling == "masked"
        # No padding_idx: Keras' Embedding trains the padding row too (it matters only for pooling="mean").
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.hidden = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU())
        self.head = _Head(hidden, num_classes)
        if init == "keras":
            keras_init(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = clean_ids(ids, self.vocab_size)
        h = self.embedding(ids)  # (B, L, E)
        pooled = masked_mean(h, ids != PAD_ID) if self.pooling == "masked" else h.mean(1)
        return self.head(self.hidden(pooled))


class TextCNN(TextModel):
    """Kim (2014), "Convolutional Neural Networks for Sentence Classification" (arXiv:1408.5882), trained from
    scratch: embeddings -> parallel 1-D convolutions of widths `kernels` -> ReLU -> max over time -> dropout ->
    linear. The max ignores windows that start on padding (a text shorter than a window keeps its first one).
    """

    def __init__(self, num_classes: int = 2, vocab_size: int = 10000, embed_dim: int = 32, filters: int = 100,
                 kernels: tuple[int, ...] | list[int] = (3, 4, 5), dropout: float = 0.5) -> None:
        super().__init__()
        self.vocab_size, self.kernels = vocab_size, tuple(int(k) for k in kernels)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k) for k in self.kernels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters * len(self.kernels), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = clean_ids(ids, self.vocab_size)
        length = (ids != PAD_ID).sum(1, keepdim=True)  # (B, 1)
        x = self.embedding(ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for k, conv in zip(self.kernels, self.convs, strict=True):
            h = torch.relu(conv(x))  # (B, F, L - k + 1)
            starts = torch.arange(h.shape[-1], device=ids.device).unsqueeze(0)  # (1, L - k + 1)
            valid = starts < (length - k + 1).clamp(min=1)  # (B, L - k + 1)
            pooled.append(h.masked_fill(~valid.unsqueeze(1), 0.0).amax(-1))  # ReLU >= 0: 0 never beats a real max
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


def reverse_within_length(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) with each row's first `length` (B, 1) positions in reverse order and its padding left in place.

    Its own inverse; gathers with computed indices, so it exports to ONNX with dynamic axes (packed sequences
    do not).
    """
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, L)
    idx = torch.where(t < length, length - 1 - t, t)  # (B, L)
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class TextBiGRU(TextModel):
    """A bidirectional GRU over word embeddings, pooled by masked max and mean over time -> dropout -> linear.

    The student of Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks"
    (arXiv:1903.12136), with a GRU for their LSTM. The backward direction reads each text from its last real word
    (the valid part is reversed in place, see :func:`reverse_within_length`), so padding never enters a state
    that the pooling reads: trailing padding does not change the output.
    """

    ignores_trailing_padding = True

    def __init__(self, num_classes: int = 2, vocab_size: int = 10000, embed_dim: int = 32, hidden: int = 64,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.forward_gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.backward_gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = clean_ids(ids, self.vocab_size)
        mask = ids != PAD_ID  # (B, L)
        length = mask.sum(1, keepdim=True)  # (B, 1)
        x = self.dropout(self.embedding(ids))  # (B, L, E)
        fwd, _ = self.forward_gru(x)  # (B, L, H): position t has read words 0..t
        bwd, _ = self.backward_gru(reverse_within_length(x, length))
        h = torch.cat([fwd, reverse_within_length(bwd, length)], dim=-1)  # (B, L, 2H); bwd at t read t..end
        keep = mask.unsqueeze(-1)
        top = h.masked_fill(~keep, float("-inf")).amax(1)
        top = torch.where(length > 0, top, torch.zeros_like(top))  # an all-padding row: zeros, not -inf
        return self.head(self.dropout(torch.cat([top, masked_mean(h, mask)], dim=1)))


@register_model("seed-text", tokenizer="word")
def seed_text(num_classes: int = 2, vocab_size: int = 10000, **kw) -> SeedText:
    """The seed exercise's text classifier (160,289 parameters for 2 classes and 10,000 words)."""
    return SeedText(num_classes, vocab_size, **kw)


@register_model("tiny-seed-text", tokenizer="word")
def tiny_seed_text(num_classes: int = 2, vocab_size: int = 10000, **kw) -> SeedText:
    """seed-text with 4-dimensional embeddings and hidden layer: the same graph, for fast tests."""
    return SeedText(num_classes, vocab_size, embed_dim=kw.pop("embed_dim", 4), hidden=kw.pop("hidden", 4), **kw)


@register_model("text-cnn", tokenizer="word")
def text_cnn(num_classes: int = 2, vocab_size: int = 10000, **kw) -> TextCNN:
    """Kim-style CNN: 32-d embeddings, 100 filters of widths 3/4/5 (~358K parameters at 10,000 words)."""
    return TextCNN(num_classes, vocab_size, **kw)


@register_model("tiny-text-cnn", tokenizer="word")
def tiny_text_cnn(num_classes: int = 2, vocab_size: int = 10000, **kw) -> TextCNN:
    """text-cnn with 4-d embeddings and 4 filters per width: for tests."""
    return TextCNN(num_classes, vocab_size, embed_dim=kw.pop("embed_dim", 4), filters=kw.pop("filters", 4), **kw)


@register_model("text-bigru", tokenizer="word")
def text_bigru(num_classes: int = 2, vocab_size: int = 10000, **kw) -> TextBiGRU:
    """Bidirectional GRU: 32-d embeddings, 64 units each way, max+mean pooling (~358K parameters at 10,000 words)."""
    return TextBiGRU(num_classes, vocab_size, **kw)


@register_model("tiny-text-bigru", tokenizer="word")
def tiny_text_bigru(num_classes: int = 2, vocab_size: int = 10000, **kw) -> TextBiGRU:
    """text-bigru with 4-d embeddings and 4 units each way: for tests."""
    return TextBiGRU(num_classes, vocab_size, embed_dim=kw.pop("embed_dim", 4), hidden=kw.pop("hidden", 4), **kw)
