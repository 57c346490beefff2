"""Model size: parameters, multiply-accumulates (MACs) per sample, bytes on disk.

MACs are counted with forward hooks during one forward pass of a single sample. Counted: convolutions
(Conv1d/2d/3d and their transposes, with groups), Linear (any leading dims, e.g. tokens), MultiheadAttention
(input and output projections plus the two attention matmuls), RNN/GRU/LSTM (the input and recurrent matmuls of
every gate, layer, direction and time step). Counted as 0: Embedding (a table lookup),
normalisation, activations, pooling, and any arithmetic in forward code that is not one of these modules
(e.g. a bare torch.matmul). A module called twice is counted twice.

Example:
    count_macs(nn.Conv2d(1, 32, 3), (1, 28, 28))  # 26 * 26 * 32 * 9 = 194688
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyfm.errors import TinyfmError


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once).

    Args:
        model: the module.
        trainable_only: count only parameters with requires_grad.

    Returns:
        The count.

    Example:
        count_params(nn.Linear(10, 2))  # 22
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _conv_macs(m: nn.Conv2d, inp: torch.Tensor, out: torch.Tensor) -> int:
    # Each output (transposed: each input) element is a dot product over in/groups channels x kernel taps.
    taps = math.prod(m.kernel_size)
    if m.transposed:
        return inp.numel() * (m.out_channels // m.groups) * taps
    return out.numel() * (m.in_channels // m.groups) * taps


def _linear_macs(m: nn.Linear, inp: torch.Tensor, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _mha_macs(m: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor) -> int:
    # With one sample the layout (batch_first or not, batched or not) does not matter: numel / width = length.
    e = m.embed_dim
    lq, lk = q.numel() // e, k.numel() // m.kdim
    projections = lq * e * e + lk * m.kdim * e + lk * m.vdim * e + lq * e * e  # q, k, v in; out
    attention = 2 * lq * lk * e  # scores q·kᵀ and the weighted sum over values, across all heads
    return projections + attention


_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}


def _rnn_macs(m: nn.RNNBase, inp: torch.Tensor, out: Any) -> int:
    # One sample: numel / input_size = time steps, whatever the layout (packed sequences are not counted).
    if not isinstance(inp, torch.Tensor):
        return 0
    steps, h = inp.numel() // m.input_size, m.hidden_size
    dirs = 2 if m.bidirectional else 1
    per_step = sum(m.input_size if layer == 0 else h * dirs for layer in range(m.num_layers)) * h + m.num_layers * h * h
    return _GATES[type(m)] * dirs * steps * per_step


def _counting_hook(counter: Callable[..., int], total: list[int]) -> Callable[..., None]:
    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        total[0] += counter(m, args[0], out)
    return hook


def _mha_hook(total: list[int]) -> Callable[..., None]:
    def hook(m: nn.MultiheadAttention, args: tuple, kwargs: dict, out: Any) -> None:
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        total[0] += _mha_macs(m, q, k)
    return hook


def _example(input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
    # Grad on the input keeps nn.TransformerEncoderLayer off its fused fast path, which would skip the hooks.
    return x.requires_grad_(True) if x.is_floating_point() else x


def count_macs(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype | None = None) -> int:
    """Multiply-accumulates for one forward pass of one sample (see the module docstring for what counts).

    Args:
        model: the module; run once in eval mode (its flags are restored afterwards).
        input_shape: the shape of ONE sample, without the batch axis, e.g. (1, 28, 28).
        dtype: input dtype; default: the model's `input_dtype` (torch.long for text models), else float32. Zeros
            are fed (all padding, for token ids).

    Returns:
        The MAC count (FLOPs ≈ 2 × MACs).

    Example:
        count_macs(model, (1, 28, 28))
    """
    total, handles = [0], []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(_mha_hook(total), with_kwargs=True))
        elif isinstance(module, _CONVS):
            handles.append(module.register_forward_hook(_counting_hook(_conv_macs, total)))
        elif type(module) in _GATES:
            handles.append(module.register_forward_hook(_counting_hook(_rnn_macs, total)))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(_counting_hook(_linear_macs, total)))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.enable_grad():
            model(_example(tuple(input_shape), dtype or getattr(model, "input_dtype", torch.float32), device))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    return total[0]


def file_size(path: str | Path) -> int:
    """Bytes on disk of a file, or of all files under a directory.

    Args:
        path: a file (model.onnx, model.safetensors) or a directory.

    Returns:
        The size in bytes; a missing path raises TinyfmError naming it.

    Example:
        file_size("runs/a/model.onnx") / 1e6  # MB
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    raise TinyfmError(f"{path}: file not found")
