"""Pruning: remove whole channels (structured, a smaller dense model) or single weights (unstructured, zeros).

Structured pruning uses Torch-Pruning's dependency graph (Fang et al., 2023, "DepGraph: Towards Any Structural
Pruning", https://arxiv.org/abs/2301.12900): removing output channels of one layer also removes the matching
input channels of every layer that reads them, the matching BatchNorm entries and, for depthwise convolutions,
the coupled channels on both sides, so the pruned model is a physically smaller dense network that exports to
ONNX like any other. Unstructured pruning uses ``torch.nn.utils.prune`` (magnitude pruning, Han et al., 2015,
"Learning both Weights and Connections") and only produces zeros: dense kernels run exactly as fast, the gain
is in compressed file size (or in a sparse runtime).

Variant names: ``prune-50`` (structured, 50 % of the channels of every prunable layer), ``prune-50-macs``
(structured, 50 % of the MACs removed), ``sparse-80`` (unstructured, 80 % of the selected weights zero).

Example:
    res = apply(model, Config(ratio=0.5, finetune_epochs=2), ctx)
    res.after["params"] / res.before["params"]  # ~0.25 on seed-cnn
    save_model(res.model, out_dir, {"name": "seed-cnn", "kwargs": {}, "transforms": res.transforms})
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from tinyfm.compress.base import (
    PassContext,
    PassResult,
    classifier_name,
    clone,
    register_rebuilder,
    select_modules,
    size_record,
)
from tinyfm.compress.distill import recover
from tinyfm.errors import ConfigError, TinyfmError

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TAYLOR_BATCHES = 8  # batches whose loss gradients Taylor importance sums (Molchanov et al., 2019)


# ---- importance criteria: small strategy objects chosen by name ---------------------------------------------


def _tp_l1() -> Any:
    import torch_pruning as tp

    return tp.importance.MagnitudeImportance(p=1)


def _tp_l2() -> Any:
    import torch_pruning as tp

    return tp.importance.MagnitudeImportance(p=2)


def _tp_taylor() -> Any:
    import torch_pruning as tp

    return tp.importance.TaylorImportance()


def _tp_random() -> Any:
    import torch_pruning as tp

    return tp.importance.RandomImportance()


IMPORTANCES: dict[str, Callable[[], Any]] = {"l1": _tp_l1, "l2": _tp_l2, "taylor": _tp_taylor, "random": _tp_random}
"""Structured criteria: name -> factory of a Torch-Pruning importance (scores a channel group)."""


def _magnitude_scores(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().abs()


def _taylor_scores(m: nn.Module) -> torch.Tensor:
    # First-order Taylor estimate of the loss change when a weight is zeroed: |w * dL/dw| (Molchanov et al., 2019).
    # Once masked, `weight` is computed from the leaf weight_orig, which holds the (masked) gradient.
    leaf = getattr(m, "weight_orig", m.weight)
    return (m.weight.detach() * leaf.grad).abs()


UNSTRUCTURED_SCORES: dict[str, Callable[[nn.Module], torch.Tensor] | None] = {
    "l1": _magnitude_scores, "l2": _magnitude_scores, "taylor": _taylor_scores, "random": None}
"""Unstructured criteria: name -> per-weight score (smallest pruned first); None = random pruning.
l1 and l2 rank single weights identically (|w| and w² have the same order)."""


# ---- configuration ----------------------------------------------------------------------------------------------


@dataclass
class Config:
    method: str = "structured"
    """structured (remove channels: a smaller dense model) | unstructured (zero single weights)."""
    ratio: float = 0.5
    """Structured: fraction removed, of the channels of every prunable layer or of params/MACs (see target)."""
    target: str = "channels"
    """Structured: what `ratio` removes: channels (per layer) | params | macs (whole model, found by search)."""
    sparsity: float = 0.5
    """Unstructured: fraction of the selected weights set to zero, in [0, 1)."""
    importance: str = "l1"
    """Which channels/weights go first: l1 | l2 (magnitude) | taylor (|w·grad|) | random."""
    iterative_steps: int = 1
    """Reach the target in this many equal steps, fine-tuning after each (Torch-Pruning's iterative_steps)."""
    finetune_epochs: int = 2
    """Fine-tuning epochs after each pruning step (0: none)."""
    lr_scale: float = 1.0
    """Fine-tuning learning rate as a fraction of the run's lr. A network with half its channels gone needs real
    retraining: on the seed CNN (50%, 2 epochs) 1.0 lost 0.70 pp of test accuracy, 0.6 0.77 pp, 0.3 0.97 pp."""
    distill: bool = True
    """Fine-tune against the unpruned model's soft targets (DistillTask, T=4, alpha=0.7) as well as the labels."""
    include: tuple[str, ...] = ("*",)
    """Glob patterns of the Conv/Linear layers to prune (qualified names, e.g. features.*)."""
    ignore: tuple[str, ...] = ()
    """Glob patterns of layers to leave alone (the classifier head is always left alone, see keep_classifier)."""
    keep_classifier: bool = True
    """Leave the classifier head (the last Linear) unpruned: its outputs are the classes."""
    global_pruning: bool = False
    """Rank channels/weights across all selected layers at once instead of per layer."""
    round_to: int | None = None
    """Structured: keep a multiple of this many channels per layer (SIMD-friendly widths); None: exact."""

    def __post_init__(self) -> None:
        self.include, self.ignore = tuple(self.include), tuple(self.ignore)
        _choice("--method", self.method, ("structured", "unstructured"))
        _choice("--target", self.target, ("channels", "params", "macs"))
        _choice("--importance", self.importance, tuple(IMPORTANCES))
        _unit_interval("--ratio", self.ratio)
        _unit_interval("--sparsity", self.sparsity)
        for flag, v in (("--iterative-steps", self.iterative_steps), ("--round-to", self.round_to)):
            if flag == "--round-to" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{flag}: got {v!r}, expected an integer >= 1")
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ConfigError(f"--finetune-epochs: got {self.finetune_epochs!r}, expected an integer >= 0")
        if not self.lr_scale > 0:
            raise ConfigError(f"--lr-scale: got {self.lr_scale!r}, expected a value > 0")

    @property
    def name(self) -> str:
        """Variant name: prune-50, prune-50-macs or sparse-80."""
        if self.method == "unstructured":
            return f"sparse-{round(self.sparsity * 100)}"
        suffix = "" if self.target == "channels" else f"-{self.target}"
        return f"prune-{round(self.ratio * 100)}{suffix}"


def _choice(flag: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag}: got {value!r}, expected one of {', '.join(allowed)}")


def _unit_interval(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{flag}: got {value!r}, expected a value in [0, 1)")


# ---- shared helpers ---------------------------------------------------------------------------------------------


def _selected(model: nn.Module, cfg: Config) -> dict[str, nn.Module]:
    """The Conv/Linear layers the config selects (the classifier head dropped unless keep_classifier=False)."""
    head = classifier_name(model)
    ignore = (*cfg.ignore, head) if cfg.keep_classifier and head else cfg.ignore
    return select_modules(model, _LAYERS, cfg.include, ignore)


def _shapes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """(in, out, groups) of every Conv/Linear layer by qualified name."""
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[n] = (m.in_features, m.out_features, 1)
        elif isinstance(m, _LAYERS):
            out[n] = (m.in_channels, m.out_channels, m.groups)
    return out


def _accumulate_grads(model: nn.Module, ctx: PassContext, batches: int = _TAYLOR_BATCHES) -> None:
    """Fill .grad of every parameter with the summed loss gradient of a few training batches (for Taylor)."""
    model.zero_grad(set_to_none=True)
    bs, n = ctx.train_cfg.batch_size, len(ctx.train.y)
    with torch.enable_grad():
        for start in range(0, min(n, bs * batches), bs):
            x, y = ctx.train.x[start:start + bs], ctx.train.y[start:start + bs]
            F.cross_entropy(model(x), y).backward()


def _ratio(after: dict[str, Any], before: dict[str, Any], key: str) -> float:
    return after[key] / before[key] if before[key] else float("nan")


# ---- structured -------------------------------------------------------------------------------------------------


def _example(input_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))


def _create_pruner(model: nn.Module, cfg: Config, input_shape: tuple[int, ...], ratio: float, steps: int) -> Any:
    """A Torch-Pruning BasePruner over the selected layers (everything else, and the head, in ignored_layers)."""
    import torch_pruning as tp

    chosen = set(_selected(model, cfg).values())
    ignored = [m for m in model.modules() if isinstance(m, _LAYERS) and m not in chosen]
    # Global ranking may empty a layer; Torch-Pruning's max_pruning_ratio caps any one layer's loss.
    return tp.pruner.BasePruner(model, _example(input_shape), IMPORTANCES[cfg.importance](),
                                global_pruning=cfg.global_pruning, pruning_ratio=ratio, iterative_steps=steps,
                                max_pruning_ratio=max(ratio, 0.9), ignored_layers=ignored, round_to=cfg.round_to)


def _prune_once(model: nn.Module, cfg: Config, ctx: PassContext, ratio: float) -> nn.Module:
    """Prune a copy of `model` in one step at channel ratio `ratio` (used to search a params/MACs target)."""
    m = clone(model)
    pruner = _create_pruner(m, cfg, ctx.input_shape, ratio, 1)
    if cfg.importance == "taylor":
        _accumulate_grads(m, ctx)
    pruner.step()
    return m


def _measure(model: nn.Module, target: str, input_shape: tuple[int, ...]) -> int:
    from tinyfm.measure import count_macs, count_params

    return count_params(model) if target == "params" else count_macs(model, input_shape)


def _channel_ratio(model: nn.Module, cfg: Config, ctx: PassContext, iters: int = 8) -> float:
    """The channel ratio that removes `cfg.ratio` of the params/MACs: bisection on one-shot prunes of copies.

    Params and MACs fall roughly with the square of the kept width, but pooling, flattening and ignored layers
    bend that curve, so the ratio is searched rather than solved for.
    """
    if cfg.target == "channels":
        return cfg.ratio
    goal = (1 - cfg.ratio) * _measure(model, cfg.target, ctx.input_shape)
    lo, hi = 0.0, 0.95
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _measure(_prune_once(model, cfg, ctx, mid), cfg.target, ctx.input_shape) <= goal \
            else (mid, hi)
    return hi


def _channel_changes(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
                     ) -> dict[str, str]:
    """'in→in', 'out→out' strings of the layers whose shape changed, e.g. {'features.0': 'out 32→16'}."""
    changes = {}
    for name, (i0, o0, _) in before.items():
        i1, o1, _ = after[name]
        parts = ([f"in {i0}→{i1}"] if i0 != i1 else []) + ([f"out {o0}→{o1}"] if o0 != o1 else [])
        if parts:
            changes[name] = ", ".join(parts)
    return changes


def _structured_transform(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]],
                          input_shape: tuple[int, ...]) -> dict[str, Any]:
    changed = [n for n in before if before[n] != after[n]]
    return {"kind": "prune-structured", "input_shape": list(input_shape),
            "channels": {n: after[n][1] for n in changed}, "in_channels": {n: after[n][0] for n in changed},
            "groups": {n: after[n][2] for n in changed if after[n][2] > 1}}


def _check_structured(model: nn.Module) -> None:
    recurrent = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    if recurrent:  # Torch-Pruning cannot trace channel dependencies through a GRU/LSTM's packed gate weights
        raise ConfigError(f"prune (structured): {type(model).__name__} has recurrent layers ({', '.join(recurrent)}), "
                          "which structured pruning does not support; use prune:method=unstructured or lowrank")


def _apply_structured(model: nn.Module, cfg: Config, ctx: PassContext) -> PassResult:
    pruned, shapes0 = clone(model), _shapes(model)
    ratio = _channel_ratio(pruned, cfg, ctx)
    torch.manual_seed(ctx.train_cfg.seed)  # random importance and the fine-tuning shuffles are reproducible
    pruner = _create_pruner(pruned, cfg, ctx.input_shape, ratio, cfg.iterative_steps)
    for _ in range(cfg.iterative_steps):
        if cfg.importance == "taylor":
            _accumulate_grads(pruned, ctx)
        pruner.step()
        pruned.zero_grad(set_to_none=True)
        recover(pruned, model, cfg, ctx)
    shapes1 = _shapes(pruned)
    transform = _structured_transform(shapes0, shapes1, ctx.input_shape)
    changes = {"method": "structured", "channel_ratio": ratio, "layers": _channel_changes(shapes0, shapes1)}
    return PassResult(cfg.name, pruned.eval(), cfg, transform=transform, changes=changes, transforms=[transform])


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


@register_rebuilder("prune-structured")
def rebuild_structured_(model: nn.Module, transform: dict[str, Any]) -> None:
    """Re-apply a structured prune to a fresh model in place: the same layers cut to the recorded widths.

    Which channels are removed does not matter (the pruned weights are loaded afterwards); the dependency graph
    keeps the layers that read a pruned layer (next layers, BatchNorm, depthwise convs) consistent.
    """
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=_example(tuple(transform["input_shape"])))
    modules = dict(model.named_modules())
    for name, out in transform["channels"].items():
        m = modules.get(name)
        if m is None:
            raise TinyfmError(f"model.json: prune-structured names layer {name!r}, which the model does not have")
        current = _out_channels(m)
        if current > out:
            fn = tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels
            graph.get_pruning_group(m, fn, idxs=list(range(out, current))).prune()
    _check_rebuilt(model, transform)


def _check_rebuilt(model: nn.Module, transform: dict[str, Any]) -> None:
    shapes = _shapes(model)
    for name, out in transform["channels"].items():
        want = (transform["in_channels"][name], out, transform["groups"].get(name, 1))
        if shapes[name] != want:
            raise TinyfmError(f"model.json: prune-structured could not rebuild {name}: (in, out, groups) "
                              f"{shapes[name]}, expected {want}")


# ---- unstructured -----------------------------------------------------------------------------------------------


def _step_amounts(sparsity: float, steps: int) -> list[float]:
    """Per-step fractions of the *remaining* weights to prune so that step k reaches sparsity * k / steps.

    torch.nn.utils.prune applies a float amount to the weights still unpruned (PruningContainer), hence the
    conversion from cumulative targets.
    """
    targets = [sparsity * k / steps for k in range(steps + 1)]
    return [1 - (1 - targets[k]) / (1 - targets[k - 1]) for k in range(1, steps + 1)]


def _prune_weights_(layers: dict[str, nn.Module], cfg: Config, amount: float, ctx: PassContext,
                    model: nn.Module) -> None:
    """One unstructured step: masks (weight_orig * weight_mask) on the selected layers' weights."""
    score = UNSTRUCTURED_SCORES[cfg.importance]
    if cfg.importance == "taylor":
        _accumulate_grads(model, ctx)
    scores = {(m, "weight"): score(m) for m in layers.values()} if score else None
    if cfg.global_pruning:
        method = torch_prune.L1Unstructured if score else torch_prune.RandomUnstructured
        torch_prune.global_unstructured(list(scores or [(m, "weight") for m in layers.values()]),
                                        pruning_method=method, importance_scores=scores, amount=amount)
    else:
        for m in layers.values():
            if score:
                torch_prune.l1_unstructured(m, "weight", amount, importance_scores=scores[(m, "weight")])
            else:
                torch_prune.random_unstructured(m, "weight", amount)
    model.zero_grad(set_to_none=True)


def _sparsity_record(layers: dict[str, nn.Module]) -> dict[str, Any]:
    zeros = {n: int((m.weight == 0).sum()) for n, m in layers.items()}
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    total = sum(sizes.values())
    return {"per_layer": {n: zeros[n] / sizes[n] for n in layers}, "overall": sum(zeros.values()) / total,
            "zero_weights": sum(zeros.values()), "selected_weights": total}


def _gzip_size(model: nn.Module, path: Path) -> int:
    """Bytes of the model's safetensors file after gzip (level 9); the .gz is written to `path`."""
    from safetensors.torch import save

    from tinyfm.io import write_bytes

    raw = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    write_bytes(path, data)
    return len(data)


def _compressibility(dense: nn.Module, sparse: nn.Module, workdir: Path, name: str) -> dict[str, Any]:
    d = _gzip_size(dense, Path(workdir) / f"{name}.dense.safetensors.gz")
    s = _gzip_size(sparse, Path(workdir) / f"{name}.sparse.safetensors.gz")
    return {"dense_gzip_bytes": d, "sparse_gzip_bytes": s, "gzip_ratio": s / d}


def _apply_unstructured(model: nn.Module, cfg: Config, ctx: PassContext) -> PassResult:
    sparse = clone(model)
    layers = _selected(sparse, cfg)
    if not layers:
        raise ConfigError(f"--include/--ignore: no Conv/Linear layer selected (include={cfg.include}, "
                          f"ignore={cfg.ignore})")
    torch.manual_seed(ctx.train_cfg.seed)
    for amount in _step_amounts(cfg.sparsity, cfg.iterative_steps):
        _prune_weights_(layers, cfg, amount, ctx, sparse)
        # The masks stay in place while fine-tuning from the trained weights: the forward pre-hook recomputes
        # weight = weight_orig * weight_mask, so pruned weights stay zero and get zero gradient.
        recover(sparse, model, cfg, ctx)
    for m in layers.values():
        torch_prune.remove(m, "weight")  # bake the mask in: plain `weight` tensors, no weight_orig/weight_mask
    changes = {"method": "unstructured", "target_sparsity": cfg.sparsity, "sparsity": _sparsity_record(layers),
               "compressibility": _compressibility(model, sparse, ctx.workdir, cfg.name),
               "note": "zeros are stored densely: dense kernels (PyTorch, ONNX Runtime) run no faster; the gain is "
                       "compressed size, or speed only with a sparse runtime or sparse tensor cores"}
    return PassResult(cfg.name, sparse.eval(), cfg, changes=changes)


# ---- the pass ---------------------------------------------------------------------------------------------------


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Prune `model` (a copy; the input is untouched), fine-tune, and measure before/after.

    Args:
        model: the trained model.
        config: what and how much to prune.
        ctx: data (fine-tuning on ctx.train, accuracy on ctx.val), training settings, workdir.

    Returns:
        PassResult; structured: `transform` {"kind": "prune-structured", "channels": {layer: out}, ...} to replay
        on a fresh registry model (`transforms` holds it alone: a pipeline composing passes prepends earlier
        ones); unstructured: changes["sparsity"] and changes["compressibility"], no transform.

    Example:
        res = apply(model, Config(method="unstructured", sparsity=0.8), ctx)
        res.changes["sparsity"]["overall"], res.changes["compressibility"]["gzip_ratio"]
    """
    if config.method == "structured":
        _check_structured(model)
    before = size_record(clone(model), ctx)
    res = (_apply_structured if config.method == "structured" else _apply_unstructured)(model, config, ctx)
    res.before, res.after = before, size_record(res.model, ctx)
    res.changes |= {"params_ratio": _ratio(res.after, before, "params"),
                    "macs_ratio": _ratio(res.after, before, "macs"),
                    "val_accuracy_drop": before["val_accuracy"] - res.after["val_accuracy"]}
    return res
