"""What every compression pass shares: one signature, one result type, and structural replay.

A pass is a module with

    apply(model: nn.Module, config: <Pass>Config, ctx: PassContext) -> PassResult

It never changes `model` in place (it works on a deep copy) and records what it changed. Passes that
change a model's *structure* (pruning channels, depthwise-separable convolutions, low-rank factors) also
return a `transform`: a small JSON-able record that `replay_transforms` re-applies to a freshly built
registry model, so a compressed model is rebuilt from model.json + model.safetensors with no pickles.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError


@dataclass
class PassContext:
    """The data and settings a pass may use. Accuracy gates use `val`, never the test split."""

    train: Any
    """Training split (.x, .y tensors): fine-tuning and calibration data."""
    val: Any
    """Validation split: what sensitivity analysis and accuracy gates measure."""
    train_cfg: TrainConfig
    """The run's training settings; fine-tuning copies them with fewer epochs and a lower lr."""
    workdir: Path
    """Where a pass may write files (ONNX models, calibration caches)."""
    input_shape: tuple[int, ...] = (1, 28, 28)
    """One sample's shape, without the batch axis."""
    teacher: nn.Module | None = None
    """The trained original model: passes that retrain distil from it."""
    progress: bool = False
    """Show progress bars while fine-tuning."""
    data: Any = None
    """Text runs: the TextData `train`/`val` came from (its texts re-encode for a student with another tokenizer)."""
    memo: dict[str, Any] = field(default_factory=dict)
    """What the passes of one run share (the teacher's logits per text: every distilled student of a run costs one
    teacher pass in all)."""


@dataclass
class PassResult:
    """What a pass produced."""

    name: str
    """Variant name, e.g. "prune-50" or "int8-static"."""
    model: nn.Module
    """The new PyTorch model (for ONNX-only passes such as int8: the fp32 model the ONNX file came from)."""
    config: Any
    """The pass config that produced it."""
    transform: dict[str, Any] | None = None
    """Structural change to replay on a fresh registry model (None: same structure, new weights)."""
    onnx_path: Path | None = None
    """The deployable ONNX file when the pass's product is one (quantization); else exported later."""
    changes: dict[str, Any] = field(default_factory=dict)
    """Human-facing summary of what changed (layers, sparsity, ranks, ...)."""
    before: dict[str, Any] = field(default_factory=dict)
    """Measurements before the pass: params, macs, val_accuracy."""
    after: dict[str, Any] = field(default_factory=dict)
    """Measurements after the pass."""
    transforms: list[dict[str, Any]] = field(default_factory=list)
    """Every structural transform from the registry model to this one (composed passes append)."""
    ctx: PassContext | None = None
    """The context later passes of a chain use, when this pass changed the input (a text student's tokenizer)."""


def select_modules(model: nn.Module, types: tuple[type, ...], include: Iterable[str] = ("*",),
                   ignore: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Modules of `types` whose qualified name matches an `include` glob and no `ignore` glob."""
    inc, ign = list(include), list(ignore)
    return {n: m for n, m in model.named_modules() if isinstance(m, types)
            and any(fnmatch.fnmatch(n, p) for p in inc) and not any(fnmatch.fnmatch(n, p) for p in ign)}


def classifier_name(model: nn.Module) -> str | None:
    """Qualified name of the last Linear layer (the classifier head passes leave alone by default)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def set_submodule_(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at qualified `name` in place."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def clone(model: nn.Module) -> nn.Module:
    """A deep copy on CPU in eval mode (passes never touch their input)."""
    return copy.deepcopy(model).cpu().eval()


def finetune(model: nn.Module, ctx: PassContext, epochs: int, lr_scale: float = 0.3,
             task: Callable | None = None) -> nn.Module:
    """Fine-tune `model` in place for `epochs` with the run's settings at `lr_scale` x its lr; returns it.

    Keeps the best validation epoch (fit's behaviour). epochs=0 returns the model unchanged.
    """
    from tinyfm.train import fit

    if epochs <= 0:
        return model
    cfg = dataclasses.replace(ctx.train_cfg, epochs=epochs, lr=ctx.train_cfg.lr * lr_scale)
    fit(model, ctx.train, ctx.val, cfg, task=task, progress=ctx.progress)
    return model.cpu().eval()


@torch.no_grad()
def val_accuracy(model: nn.Module, ctx: PassContext) -> float:
    """Accuracy of a PyTorch model on the validation split."""
    from tinyfm.measure import evaluate

    return evaluate(model, ctx.val.x, ctx.val.y, ctx.train_cfg.eval_batch_size)["accuracy"]


def size_record(model: nn.Module, ctx: PassContext) -> dict[str, Any]:
    """params, macs and validation accuracy of a PyTorch model."""
    from tinyfm.measure import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, ctx.input_shape),
            "val_accuracy": val_accuracy(model, ctx)}


# ---- structural replay ------------------------------------------------------------------------------------------

_REBUILDERS: dict[str, Callable[[nn.Module, dict[str, Any]], None]] = {}


def register_rebuilder(kind: str) -> Callable:
    """Decorator: `fn(model, transform)` re-applies a transform of this kind to a fresh model, in place."""

    def deco(fn: Callable[[nn.Module, dict[str, Any]], None]) -> Callable:
        _REBUILDERS[kind] = fn
        return fn

    return deco


def replay_transforms_(model: nn.Module, transforms: list[dict[str, Any]]) -> nn.Module:
    """Re-apply structural transforms (in order) to a freshly built model so compressed weights fit it."""
    from tinyfm import compress  # noqa: F401  (importing the passes registers their rebuilders)

    for t in transforms:
        kind = t.get("kind")
        if kind not in _REBUILDERS:
            raise ConfigError(f"model.json: unknown transform kind {kind!r} (known: {', '.join(sorted(_REBUILDERS))})")
        _REBUILDERS[kind](model, t)
    return model
