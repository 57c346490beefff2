"""Low-rank factorisation: a Linear(in, out) becomes Linear(in, r, bias=False) -> Linear(r, out).

The weight W (out, in) is replaced by its truncated SVD, W ≈ U_r S_r V_rᵀ, split symmetrically as
(U_r S_r^½)(S_r^½ V_rᵀ) so both factors have the same scale (Denton et al., 2014, "Exploiting Linear Structure
Within Convolutional Networks"; Eckart–Young: the truncated SVD is the best rank-r approximation in Frobenius
norm). The layer's parameters drop from in·out to r·(in + out), which saves only when r < in·out / (in + out).
1x1 convolutions are the same matrix product per pixel and are factorised the same way when `conv1x1` is set.

Variant names: ``lowrank-16`` (rank 16 everywhere) or ``lowrank-e90`` (per layer, the smallest rank that keeps
90 % of the squared singular values).

Example:
    res = apply(model, Config(energy=0.9), ctx)
    res.changes["ranks"]  # {"classifier.1": 23}
    save_model(res.model, out_dir, {"name": "seed-cnn", "kwargs": {}, "transforms": res.transforms})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tinyfm.compress.base import (
    PassContext,
    PassResult,
    classifier_name,
    clone,
    register_rebuilder,
    select_modules,
    set_submodule_,
    size_record,
)
from tinyfm.errors import ConfigError, TinyfmError


@dataclass
class Config:
    rank: int | None = None
    """Rank of every factorised layer (capped at min(in, out)); set this or energy."""
    energy: float | None = None
    """Per layer, the smallest rank keeping this fraction of the squared singular values, in (0, 1]; default 0.9
    when rank is not set."""
    include: tuple[str, ...] = ("*",)
    """Glob patterns of the layers to factorise (qualified names, e.g. classifier.*)."""
    ignore: tuple[str, ...] = ()
    """Glob patterns of layers to leave alone (the classifier head is always left alone, see keep_classifier)."""
    keep_classifier: bool = True
    """Leave the classifier head (the last Linear) unfactorised."""
    conv1x1: bool = False
    """Also factorise 1x1 convolutions (groups=1): Conv(in, r, 1) -> Conv(r, out, 1)."""
    min_saving: float = 0.0
    """Skip a layer unless the factorised form saves more than this fraction of its weights (0: any saving)."""
    finetune_epochs: int = 1
    """Fine-tuning epochs after factorising (0: none)."""
    lr_scale: float = 0.3
    """Fine-tuning learning rate as a fraction of the run's lr."""
    distill: bool = True
    """Fine-tune against the unfactorised model's soft targets (DistillTask, T=4, alpha=0.7) as well as the labels."""

    def __post_init__(self) -> None:
        self.include, self.ignore = tuple(self.include), tuple(self.ignore)
        if self.rank is not None and self.energy is not None:
            raise ConfigError(f"--rank/--energy: got rank={self.rank!r} and energy={self.energy!r}, set only one")
        if self.rank is None and self.energy is None:
            self.energy = 0.9
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"--rank: got {self.rank!r}, expected an integer >= 1")
        if self.energy is not None and (not isinstance(self.energy, int | float) or not 0 < self.energy <= 1):
            raise ConfigError(f"--energy: got {self.energy!r}, expected a value in (0, 1]")
        if not isinstance(self.min_saving, int | float) or not 0 <= self.min_saving < 1:
            raise ConfigError(f"--min-saving: got {self.min_saving!r}, expected a value in [0, 1)")
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ConfigError(f"--finetune-epochs: got {self.finetune_epochs!r}, expected an integer >= 0")
        if not self.lr_scale > 0:
            raise ConfigError(f"--lr-scale: got {self.lr_scale!r}, expected a value > 0")

    @property
    def name(self) -> str:
        """Variant name: lowrank-16 or lowrank-e90."""
        return f"lowrank-{self.rank}" if self.rank is not None else f"lowrank-e{round(self.energy * 100)}"


# ---- factorisation ----------------------------------------------------------------------------------------------


def _matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out, in) matrix (a 1x1 conv's kernel without its two unit axes)."""
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _is_conv1x1(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.dilation == (1, 1)


def _empty_factors(layer: nn.Module, rank: int) -> nn.Sequential:
    """The two-layer replacement with the right shapes (weights uninitialised; the rebuilder loads them)."""
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return nn.Sequential(nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias))
    # The first 1x1 conv takes the stride and padding; padded pixels are zero, so the second conv sees zeros there
    # too and outputs just the bias, as the original layer did.
    first = nn.Conv2d(layer.in_channels, rank, 1, layer.stride, layer.padding, bias=False,
                      padding_mode=layer.padding_mode)
    return nn.Sequential(first, nn.Conv2d(rank, layer.out_channels, 1, bias=bias))


@torch.no_grad()
def factorize(layer: nn.Linear | nn.Conv2d, rank: int) -> nn.Sequential:
    """The truncated-SVD factorisation of a Linear or 1x1 Conv2d at `rank`.

    Args:
        layer: nn.Linear, or nn.Conv2d with a 1x1 kernel and groups=1.
        rank: inner width r, 1 <= r <= min(in, out); at full rank the output equals the layer's.

    Returns:
        nn.Sequential(first (in -> r, no bias) with S_r^½ V_rᵀ, second (r -> out, the layer's bias) with U_r S_r^½).

    Example:
        f = factorize(nn.Linear(64, 32), 32)
        torch.testing.assert_close(f(x), layer(x))
    """
    w = _matrix(layer)
    if not 1 <= rank <= min(w.shape):
        raise TinyfmError(f"factorize: rank {rank} outside [1, {min(w.shape)}] for a {tuple(w.shape)} weight")
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)  # float64: exact at full rank after the cast
    root = s[:rank].sqrt()
    new = _empty_factors(layer, rank).to(layer.weight.device)
    first, second = new[0], new[1]
    first.weight.copy_((root[:, None] * vh[:rank]).reshape(first.weight.shape))  # (r, in)
    second.weight.copy_((u[:, :rank] * root).reshape(second.weight.shape))  # (out, r)
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return new


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest r whose top-r squared singular values hold at least `energy` of the total.

    Example:
        rank_for_energy(torch.tensor([3.0, 1.0]), 0.9)  # 1 (9 / 10 of the energy)
    """
    e = s.double() ** 2
    kept = torch.cumsum(e, 0) / e.sum().clamp_min(1e-300)
    r = int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype)).item()) + 1
    return min(r, len(s))  # energy 1.0 may sit a rounding error above the last cumulative sum


def _energy_kept(s: torch.Tensor, rank: int) -> float:
    e = s.double() ** 2
    return float(e[:rank].sum() / e.sum().clamp_min(1e-300))


# ---- layer selection and planning -------------------------------------------------------------------------------


def _candidates(model: nn.Module, cfg: Config) -> dict[str, nn.Module]:
    head = classifier_name(model)
    ignore = (*cfg.ignore, head) if cfg.keep_classifier and head else cfg.ignore
    layers = select_modules(model, (nn.Linear, nn.Conv2d), cfg.include, ignore)
    return {n: m for n, m in layers.items() if isinstance(m, nn.Linear) or (cfg.conv1x1 and _is_conv1x1(m))}


def _plan(name: str, layer: nn.Module, cfg: Config) -> dict[str, Any]:
    """Rank and parameter counts of one layer; "skip" says why it is left alone (or is None)."""
    w = _matrix(layer)
    out, inp = w.shape
    s = torch.linalg.svdvals(w.double())
    rank = min(cfg.rank, len(s)) if cfg.rank is not None else rank_for_energy(s, cfg.energy)
    dense, factored = out * inp, rank * (out + inp)
    skip = None
    if factored >= dense * (1 - cfg.min_saving):
        skip = f"rank {rank}: {factored} weights factorised vs {dense} dense (min_saving={cfg.min_saving})"
    return {"in": inp, "out": out, "rank": rank, "energy_kept": _energy_kept(s, rank),
            "weights_before": dense, "weights_after": factored, "skip": skip}


@register_rebuilder("lowrank")
def rebuild_lowrank_(model: nn.Module, transform: dict[str, Any]) -> None:
    """Re-apply a low-rank transform to a fresh model in place: each named layer becomes its two factors."""
    modules = dict(model.named_modules())
    for name, rank in transform["ranks"].items():
        layer = modules.get(name)
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise TinyfmError(f"model.json: lowrank names layer {name!r}, which is not a Linear/Conv2d in the model")
        set_submodule_(model, name, _empty_factors(layer, int(rank)))


# ---- the pass ---------------------------------------------------------------------------------------------------


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Factorise the selected layers of a copy of `model` by truncated SVD, fine-tune, measure before/after.

    Args:
        model: the trained model (untouched).
        config: which layers, which rank (or energy), fine-tuning.
        ctx: data (fine-tuning on ctx.train, accuracy on ctx.val) and training settings.

    Returns:
        PassResult with transform {"kind": "lowrank", "ranks": {layer: r}} (also `transforms`, alone: a pipeline
        composing passes prepends earlier ones) and changes {"ranks", "layers", "skipped", "params_ratio", ...}.

    Example:
        res = apply(model, Config(rank=16, finetune_epochs=1), ctx)
        res.after["params"] / res.before["params"]
    """
    new = clone(model)
    before = size_record(new, ctx)
    plans = {n: _plan(n, m, config) for n, m in _candidates(new, config).items()}
    ranks = {n: p["rank"] for n, p in plans.items() if p["skip"] is None}
    for name, rank in ranks.items():
        set_submodule_(new, name, factorize(new.get_submodule(name), rank))
    torch.manual_seed(ctx.train_cfg.seed)
    if ranks:
        from tinyfm.compress.distill import recover

        recover(new, model, config, ctx)
    transform = {"kind": "lowrank", "ranks": ranks} if ranks else None
    after = size_record(new, ctx)
    changes = {"ranks": ranks, "layers": {n: {k: v for k, v in p.items() if k != "skip"} for n, p in plans.items()
                                          if p["skip"] is None},
               "skipped": {n: p["skip"] for n, p in plans.items() if p["skip"] is not None},
               "params_ratio": after["params"] / before["params"], "macs_ratio": after["macs"] / before["macs"],
               "val_accuracy_drop": before["val_accuracy"] - after["val_accuracy"]}
    return PassResult(config.name, new.eval(), config, transform=transform, changes=changes, before=before,
                      after=after, transforms=[transform] if transform else [])
