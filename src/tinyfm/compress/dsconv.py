"""Depthwise-separable convolutions: factor each k×k convolution into a depthwise k×k and a pointwise 1×1.

A Conv2d(cin, cout, k) has cout·cin·k² weights; the factorised block (MobileNets, Howard et al. 2017,
arXiv:1704.04861) has cin·k² + cin·cout, about 1/cout + 1/k² of it (seed-cnn: ~8x fewer conv weights).

Initialisation ("svd"): the block computes W[o, c] ≈ p[o, c] · d[c] (a cout-vector times a k×k kernel per input
channel), so for each input channel c the best such approximation of the original slice W[:, c] (cout, k²) in
the Frobenius norm is its top singular pair (Eckart–Young). Training then recovers the rest by distillation
from the original model (Hinton et al. 2015; see :mod:`tinyfm.compress.distill`).

The block is an nn.Sequential of plain layers named `depthwise`, (`bn`,) `pointwise`, so pruning, quantization
and ONNX export see ordinary convolutions.

Example:
    from tinyfm.compress import apply_pass
    res = apply_pass("dsconv", model, {"epochs": 3}, ctx)
    res.changes["conv_param_ratio"], res.transform  # {"kind": "dsconv", "layers": [...], "batchnorm": False}
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tinyfm.compress.base import (
    PassContext,
    PassResult,
    clone,
    register_rebuilder,
    select_modules,
    set_submodule_,
    size_record,
    val_accuracy,
)
from tinyfm.compress.distill import check_distill_settings, distill_finetune
from tinyfm.config import _check_choice, _check_range
from tinyfm.errors import ConfigError

INITS = ("svd", "random")
CALIBRATION_IMAGES = 512  # training images whose statistics set the inserted BatchNorm layers (batchnorm=True)


class DepthwiseSeparableConv(nn.Sequential):
    """depthwise Conv2d(cin, cin, k, groups=cin) -> [BatchNorm2d(cin)] -> pointwise Conv2d(cin, cout, 1).

    Same geometry (stride, padding, dilation, padding mode) as the k×k convolution it replaces, so the output
    shape is unchanged. The depthwise conv has no bias: a bias there passes linearly through the pointwise conv
    and is absorbed by the pointwise bias, which follows the original conv's bias setting.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: Any = 0, dilation: int | tuple[int, int] = 1,
                 bias: bool = True, batchnorm: bool = False, padding_mode: str = "zeros") -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["depthwise"] = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                        groups=in_channels, bias=False, padding_mode=padding_mode)
        if batchnorm:
            layers["bn"] = nn.BatchNorm2d(in_channels)
        layers["pointwise"] = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        super().__init__(layers)

    @classmethod
    def like(cls, conv: nn.Conv2d, batchnorm: bool = False) -> DepthwiseSeparableConv:
        """A block with `conv`'s geometry (fresh PyTorch-default weights)."""
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                   bias=conv.bias is not None, batchnorm=batchnorm, padding_mode=conv.padding_mode)


def is_separable_candidate(m: nn.Module) -> bool:
    """A plain k×k convolution worth factoring: groups 1, more than one input channel, a kernel above 1×1.

    With one input channel the depthwise conv would be the whole layer (nothing saved); 1×1 convs are already
    pointwise; grouped/depthwise convs are already factored.
    """
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels > 1
            and max(m.kernel_size) > 1)


@torch.no_grad()
def svd_init_(block: DepthwiseSeparableConv, conv: nn.Conv2d) -> DepthwiseSeparableConv:
    """Set `block`'s weights to the best rank-1-per-input-channel approximation of `conv`'s kernel; returns it.

    Exact when every slice W[:, c] is rank 1 (W[o, c] = p[o, c] · d[c]); a BatchNorm in between is left as is
    (identity in eval mode at its default statistics).
    """
    w = conv.weight.detach().float()
    cout, cin, kh, kw = w.shape
    slices = w.permute(1, 0, 2, 3).reshape(cin, cout, kh * kw)  # (cin, cout, k²): one matrix per input channel
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # u (cin, cout, r), s (cin, r), vh (cin, r, k²)
    root = s[:, 0].sqrt()  # split σ evenly so both factors start at the same scale (better-conditioned training)
    depthwise = (root[:, None] * vh[:, 0, :]).reshape(cin, 1, kh, kw)  # (cin, 1, kh, kw)
    pointwise = (u[:, :, 0] * root[:, None]).T.reshape(cout, cin, 1, 1)  # (cout, cin, 1, 1)
    block.depthwise.weight.copy_(depthwise)
    block.pointwise.weight.copy_(pointwise)
    if conv.bias is not None:
        block.pointwise.bias.copy_(conv.bias)
    return block


def to_dsconv(conv: nn.Conv2d, batchnorm: bool = False, init: str = "svd") -> DepthwiseSeparableConv:
    """The depthwise-separable replacement of one convolution (a new module; `conv` is not changed).

    Args:
        conv: a Conv2d with groups == 1.
        batchnorm: insert BatchNorm2d between the depthwise and the pointwise conv.
        init: "svd" (approximate `conv`, see :func:`svd_init_`) or "random" (PyTorch's default init).

    Returns:
        The block, on `conv`'s device and dtype.

    Example:
        block = to_dsconv(nn.Conv2d(32, 64, 3))
    """
    _check_choice("--init", init, INITS)
    if conv.groups != 1:
        raise ConfigError(f"dsconv: {conv} is grouped (groups={conv.groups}); only groups=1 convs are factored")
    block = DepthwiseSeparableConv.like(conv, batchnorm)
    if init == "svd":
        svd_init_(block, conv)
    return block.to(device=conv.weight.device, dtype=conv.weight.dtype)


def dsconv_(model: nn.Module, layers: list[str], batchnorm: bool = False, init: str = "svd") -> nn.Module:
    """Replace the Conv2d layers named in `layers` by depthwise-separable blocks, in place; returns `model`."""
    for name in layers:
        conv = model.get_submodule(name)
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError(f"dsconv: layer {name!r} is a {type(conv).__name__}, expected Conv2d")
        set_submodule_(model, name, to_dsconv(conv, batchnorm, init))
    return model


@register_rebuilder("dsconv")
def _rebuild(model: nn.Module, transform: dict[str, Any]) -> None:
    # The structure only: the saved weights are loaded over it, so skip the SVD.
    dsconv_(model, list(transform["layers"]), bool(transform.get("batchnorm", False)), init="random")


@torch.no_grad()
def calibrate_bn_identity_(model: nn.Module, layers: list[str], x: torch.Tensor) -> nn.Module:
    """Make each inserted BatchNorm the identity on `x`'s statistics, so it does not undo the SVD start.

    Running mean/var are set to the per-channel statistics of the depthwise outputs and the affine
    parameters to their inverse (weight = sqrt(var + eps), bias = mean): exactly the identity in eval mode and
    about the identity in training mode, where the batch statistics are close to these.
    """
    captured: dict[str, torch.Tensor] = {}
    blocks = {n: model.get_submodule(n) for n in layers}
    hooks = [b.depthwise.register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
             for n, b in blocks.items() if hasattr(b, "bn")]
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for n, out in captured.items():
        bn = blocks[n].bn
        var, mean = torch.var_mean(out.float(), dim=(0, 2, 3), correction=0)  # (C,) each
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt())
        bn.bias.copy_(mean)
    return model


# ---- the pass -----------------------------------------------------------------------------------------------------

@dataclass
class Config:
    include: list[str] = field(default_factory=lambda: ["*"])
    """Glob patterns of the Conv2d layers to factor (qualified names, e.g. "features.*")."""
    ignore: list[str] = field(default_factory=list)
    """Glob patterns of layers to leave alone."""
    batchnorm: bool = False
    """Insert BatchNorm2d after each depthwise conv. Off by default: the block then stays a linear
    factorisation of the original conv (the SVD start is the exact rank-1 approximation and BN's batch
    statistics cannot perturb it during a short fine-tune), and models without BN (seed-cnn) gain nothing
    from it. Turn it on with init="random" (MobileNet-style training from scratch); with "svd" the BN is
    calibrated to start as the identity."""
    epochs: int = 3
    """Distillation fine-tuning epochs after the replacement (0 = none)."""
    temperature: float = 4.0
    """Distillation temperature (> 0)."""
    alpha: float = 0.7
    """Weight of the distillation term in [0, 1] (0 = labels only)."""
    lr_scale: float = 1.0
    """Fine-tuning learning rate as a multiple of the run's --lr."""
    init: str = "svd"
    """svd (rank-1-per-input-channel approximation of the original kernel) | random."""

    def __post_init__(self) -> None:
        check_distill_settings(self.temperature, self.alpha)
        _check_range("--epochs", self.epochs, 0)
        if not self.lr_scale > 0:
            raise ConfigError(f"--lr-scale: got {self.lr_scale!r}, expected a value > 0")
        _check_choice("--init", self.init, INITS)
        for flag, globs in (("--include", self.include), ("--ignore", self.ignore)):
            if isinstance(globs, str) or not all(isinstance(g, str) for g in globs):
                raise ConfigError(f"{flag}: got {globs!r}, expected a list of glob patterns")


def _conv_params(model: nn.Module) -> int:
    """Parameters of the convolution stack: every Conv2d plus the BatchNorm inside the separable blocks."""
    convs = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())
    bns = sum(p.numel() for m in model.modules() if isinstance(m, DepthwiseSeparableConv) and hasattr(m, "bn")
              for p in m.bn.parameters())
    return convs + bns


def _select(model: nn.Module, config: Config) -> list[str]:
    found = select_modules(model, (nn.Conv2d,), config.include, config.ignore)
    names = [n for n, m in found.items() if is_separable_candidate(m)]
    if not names:
        raise ConfigError(f"--include {config.include} / --ignore {config.ignore}: no Conv2d layer with groups=1, "
                          "more than one input channel and a kernel above 1x1 matches")
    return names


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Factor the selected convolutions of a copy of `model`, then distil from the original.

    The teacher is ctx.teacher when set, else `model` itself (the pass's input, before factoring).

    Returns:
        PassResult "dsconv" with transform {"kind": "dsconv", "layers": [...], "batchnorm": ...} and changes:
        layers, conv_params_before/after, conv_param_ratio, params/macs before/after, init_val_accuracy (after
        the replacement, before fine-tuning).
    """
    new = clone(model)
    before = size_record(new, ctx)
    conv_before = _conv_params(new)
    layers = _select(new, config)
    dsconv_(new, layers, config.batchnorm, config.init)
    if config.batchnorm and config.init == "svd":
        calibrate_bn_identity_(new, layers, ctx.train.x[:CALIBRATION_IMAGES])
    init_acc = val_accuracy(new, ctx)
    teacher = ctx.teacher if ctx.teacher is not None else model
    distill_finetune(new, teacher, ctx, config.epochs, config.temperature, config.alpha, config.lr_scale)
    after = size_record(new, ctx)
    conv_after = _conv_params(new)
    transform = {"kind": "dsconv", "layers": layers, "batchnorm": config.batchnorm}
    changes = {"layers": layers, "conv_params_before": conv_before, "conv_params_after": conv_after,
               "conv_param_ratio": conv_after / conv_before, "params_before": before["params"],
               "params_after": after["params"], "macs_before": before["macs"], "macs_after": after["macs"],
               "init_val_accuracy": init_acc}
    return PassResult(name="dsconv", model=new, config=config, transform=transform, changes=changes,
                      before=before, after=after, transforms=[transform])
