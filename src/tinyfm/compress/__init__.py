"""Compression passes, one module each, one signature: ``apply(model, config, ctx) -> PassResult``.

Example:
    from tinyfm.compress import PassContext, apply_pass
    res = apply_pass("prune", model, {"ratio": 0.5}, ctx)
    res.after["params"] / res.before["params"]
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from tinyfm.compress.base import (
    PassContext,
    PassResult,
    classifier_name,
    finetune,
    register_rebuilder,
    replay_transforms_,
    select_modules,
    set_submodule_,
)
from tinyfm.errors import ConfigError

# pass name -> module; each module defines `Config` (a dataclass) and `apply(model, config, ctx)`.
PASSES = {"quantize": "tinyfm.compress.quantize", "prune": "tinyfm.compress.prune",
          "dsconv": "tinyfm.compress.dsconv", "distill": "tinyfm.compress.distill",
          "lowrank": "tinyfm.compress.lowrank"}


def list_passes() -> list[str]:
    return sorted(PASSES)


def _module(name: str):
    if name not in PASSES:
        close = difflib.get_close_matches(name, PASSES, n=2)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(PASSES))}"
        raise ConfigError(f"--passes: unknown pass {name!r} ({hint})")
    return importlib.import_module(PASSES[name])


def pass_config(name: str, settings: dict[str, Any] | None = None):
    """The typed config of pass `name` from a settings dict (unknown keys and bad values are ConfigErrors)."""
    from tinyfm.config import _from_dict

    return _from_dict(_module(name).Config, settings or {}, f"compress.{name}.")


def apply_pass(name: str, model, settings: dict[str, Any] | Any | None, ctx: PassContext) -> PassResult:
    """Run pass `name` on `model` with `settings` (a dict or the pass's Config)."""
    mod = _module(name)
    cfg = settings if isinstance(settings, mod.Config) else pass_config(name, settings)
    return mod.apply(model, cfg, ctx)


for _mod in PASSES.values():  # importing a pass registers its structural rebuilder (load_model needs them)
    importlib.import_module(_mod)

__all__ = ["PASSES", "PassContext", "PassResult", "apply_pass", "classifier_name", "finetune", "list_passes",
           "pass_config", "register_rebuilder", "replay_transforms_", "select_modules", "set_submodule_"]
