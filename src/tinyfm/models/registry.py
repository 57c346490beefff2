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

from torch import nn

from tinyfm.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a constructor under `name` (names are unique)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
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
    except TypeError as e:
        raise ConfigError(f"--model {name}: bad constructor arguments {kwargs} ({e})") from None


def _import_families() -> None:
    # Families register themselves on import; importing here keeps `tinyfm --help` free of model code.
    from tinyfm.models import resnet, seed_cnn  # noqa: F401
