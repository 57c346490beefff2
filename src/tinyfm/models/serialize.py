"""Save and rebuild models as ``model.json`` (registry name + arguments) + ``model.safetensors``: no pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyfm.errors import TinyfmError
from tinyfm.io import atomic_path, read_json, write_json
from tinyfm.models.registry import create_model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers (what gets saved)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def save_model(model: nn.Module, directory: str | Path, spec: dict[str, Any], stem: str = "model") -> Path:
    """Write `<stem>.safetensors` and `<stem>.json` into `directory`; returns the weights path.

    Args:
        spec: {"name": registry name, "kwargs": constructor arguments, ...anything else worth keeping,
            e.g. "input_shape"}; written as `<stem>.json`.
    """
    if "name" not in spec:
        raise ValueError("save_model: spec needs the registry 'name'")
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    weights = directory / f"{stem}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    write_json(directory / f"{stem}.json", {"kwargs": {}, **spec, "format": "safetensors"})
    return weights


def read_spec(directory: str | Path, stem: str = "model") -> dict[str, Any]:
    """The `<stem>.json` of a saved model (registry name, kwargs, transforms, ...)."""
    spec = read_json(Path(directory) / f"{stem}.json")
    if not isinstance(spec, dict) or "name" not in spec:
        raise TinyfmError(f"{Path(directory) / (stem + '.json')}: missing field 'name' (the registry model name)")
    return spec


def load_model(directory: str | Path, stem: str = "model", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from `<stem>.json` + `<stem>.safetensors` (strict: every tensor must match)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    spec = read_spec(directory, stem)
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("transforms"):  # a compressed model: re-apply its structural changes before loading weights
        from tinyfm.compress import replay_transforms_

        replay_transforms_(model, spec["transforms"])
    weights = directory / f"{stem}.safetensors"
    if not weights.is_file():
        raise TinyfmError(f"{weights}: file not found")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise TinyfmError(f"{weights}: not a readable safetensors file ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TinyfmError(f"{weights}: weights do not match model {spec['name']} ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()
