"""Parameter, MAC and byte counts against hand computations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tinyfm.errors import TinyfmError
from tinyfm.measure import count_macs, count_params, file_size


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))


@pytest.mark.parametrize("module, shape, expected", [
    (nn.Conv2d(1, 32, 3), (1, 28, 28), 26 * 26 * 32 * 9),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 10, 10), 10 * 10 * 8 * 9),  # depthwise: one channel per filter
    (nn.Conv2d(8, 16, 3, groups=4), (8, 10, 10), 8 * 8 * 16 * (8 // 4) * 9),
    (nn.Conv2d(8, 16, 1), (8, 10, 10), 10 * 10 * 16 * 8),  # pointwise
    (nn.Conv1d(4, 6, 5, stride=2), (4, 21), 9 * 6 * 4 * 5),  # (21 - 5) // 2 + 1 = 9 outputs
    (nn.ConvTranspose2d(4, 2, 3), (4, 5, 5), 5 * 5 * 4 * 2 * 9),  # every input scattered over 2 x 3 x 3
    (nn.Linear(16, 32), (5, 16), 5 * 32 * 16),  # per token
    (nn.GRU(32, 64, batch_first=True), (10, 32), 10 * 3 * (32 * 64 + 64 * 64)),  # 3 gates, input and recurrent
    (nn.LSTM(8, 16, num_layers=2, bidirectional=True), (5, 8),  # layer 2 reads both directions of layer 1
     5 * 4 * 2 * (8 * 16 + 16 * 16 + 32 * 16 + 16 * 16)),
    (nn.RNN(4, 4), (3, 4), 3 * (16 + 16)),
])
def test_macs_of_single_layers(module: nn.Module, shape: tuple, expected: int) -> None:
    assert count_macs(module, shape) == expected


def test_macs_of_small_cnn() -> None:
    assert count_macs(small_cnn(), (1, 28, 28)) == 26 * 26 * 8 * 9 + 8 * 13 * 13 * 10


class SelfAttention(nn.Module):
    def __init__(self, e: int) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(e, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, value=x, key=x)[0]  # key/value as kwargs: the hook must find them there too


def test_macs_of_attention_and_embedding() -> None:
    e, length, ff = 16, 5, 32
    attention = 4 * length * e * e + 2 * length * length * e  # q, k, v, out projections + scores + weighted sum
    assert count_macs(SelfAttention(e), (length, e)) == attention
    # Eval-mode TransformerEncoderLayer has a fused fast path that skips submodules; the count must not.
    layer = nn.TransformerEncoderLayer(e, 4, dim_feedforward=ff, batch_first=True)
    assert count_macs(layer, (length, e)) == attention + 2 * length * e * ff
    assert count_macs(nn.Embedding(100, e), (length,), dtype=torch.long) == 0  # a lookup


def test_count_macs_restores_training_flags() -> None:
    model = small_cnn().train()
    count_macs(model, (1, 28, 28))
    assert all(m.training for m in model.modules())
    assert not model[0]._forward_hooks  # hooks removed


def test_count_params() -> None:
    model = small_cnn()
    assert count_params(model) == (8 * 9 + 8) + (8 * 13 * 13 * 10 + 10)
    model[0].requires_grad_(False)
    assert count_params(model, trainable_only=True) == 8 * 13 * 13 * 10 + 10


def test_file_size(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert file_size(tmp_path / "a.bin") == 10
    assert file_size(tmp_path) == 15
    with pytest.raises(TinyfmError, match="missing.onnx"):
        file_size(tmp_path / "missing.onnx")
