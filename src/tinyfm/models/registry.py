"""One factory for every model: ``create_model(name, **kwargs)``, ``list_models(pattern)``.

A model family registers its constructors with :func:`register_model`; the registry name plus the
constructor arguments (``model.json``) and the weights (``model.safetensors``) rebuild the module
without pickles (see :mod:`tinyfm.models.serialize`).

Example:
    model = create_model("seed-cnn", num_classes=10)
    list_models("*cnn*")  # ['seed-cnn', 'tiny-seed-cnn', ...]
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from tinyfm.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_TOKENIZERS: dict[str, str] = {}  # text models: name -> the tokenizer kind they read


Constructor = Callable[..., nn.Module]


def register_model(name: str, tokenizer: str | None = None) -> Callable[[Constructor], Constructor]:
    """Decorator: register a constructor under `name` (names are unique).

    Args:
        tokenizer: for a text model, the tokenizer kind its ids come from ("word", "minilm"; see tinyfm.data.text).
    """

    def deco(fn: Constructor) -> Constructor:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        if tokenizer is not None:
            _TOKENIZERS[name] = tokenizer
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a glob `pattern`, sorted."""
    _import_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model `name`; an unknown name raises ConfigError listing close matches."""
    _import_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(_REGISTRY))}"
        raise ConfigError(f"--model: unknown model {name!r} ({hint})")
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as e:  # an unknown argument, or a value the layers refuse (hidden=0, dropout=2)
        raise ConfigError(f"--model {name}: bad constructor arguments {kwargs} ({e})") from None


def _import_families() -> None:
    # Families register themselves on import; importing here keeps `tinyfm --help` free of model code.
    from tinyfm.models import minilm, resnet, seed_cnn, seed_text  # noqa: F401


def model_tokenizer(name: str) -> str | None:
    """The tokenizer a registered model reads ("word", "minilm"), or None for a model of images."""
    _import_families()
    return _TOKENIZERS.get(name)


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of a model's input: int64 token ids for text models, float32 otherwise."""
    return getattr(model, "input_dtype", torch.float32)


def example_input(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> torch.Tensor:
    """Zeros of shape (batch, *input_shape) in the model's input dtype (all padding, for a text model).

    Example:
        export_onnx(model, example_input(model, (64,)), "model.onnx")
    """
    return torch.zeros((batch, *input_shape), dtype=input_dtype(model))
