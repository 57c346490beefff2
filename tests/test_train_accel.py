"""Accelerator paths of the trainer, exercised on CPU where PyTorch allows: AMP (bf16, fp16 + GradScaler),
channels_last, torch.compile (slow: TINYFM_SLOW=1), pinned host memory (CUDA only) and threads per process."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from tinyfm.config import TrainConfig
from tinyfm.data.dataset import Split
from tinyfm.errors import TinyfmError
from tinyfm.models import create_model, load_model
from tinyfm.train import default_threads, fit
from tinyfm.train.trainer import _to_device

FAST = dict(threads=1, eval_batch_size=500)  # 1 thread: 2 threads on a busy 2-core machine spin-wait


@pytest.fixture
def small() -> Split:
    """256 random 28x28 images with labels: enough for the mechanics, no data files needed."""
    g = torch.Generator().manual_seed(0)
    return Split(torch.rand(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class NaNFirst(nn.Module):
    """A linear classifier whose first `bad` forward passes return NaN logits."""

    def __init__(self, bad: int = 1) -> None:
        super().__init__()
        self.lin, self.calls, self.bad = nn.Linear(784, 10), 0, bad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = self.lin(x.flatten(1))
        return z * float("nan") if self.calls <= self.bad else z


def test_fp16_with_grad_scaler_trains(small):
    r = fit(create_model("tiny-seed-cnn"), small, small, TrainConfig(epochs=1, batch_size=64, amp="fp16", **FAST),
            progress=False)
    assert r.amp == "float16" and math.isfinite(r.history[0]["train_loss"])


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_a_non_finite_loss_skips_the_step_in_every_precision(small, amp):
    torch.manual_seed(0)
    model = NaNFirst(bad=1)
    before = _flat(model).clone()
    # One step, and its loss is NaN: skipping it must leave no trace in the weights.
    fit(model, Split(small.x[:64], small.y[:64]), None, TrainConfig(epochs=1, batch_size=64, amp=amp, **FAST),
        progress=False)
    assert torch.isfinite(_flat(model)).all()
    torch.testing.assert_close(_flat(model), before)  # the only step was the NaN one: skipped


def test_fp16_stops_on_a_persistently_non_finite_loss(small):
    with pytest.raises(TinyfmError, match="inf/NaN"):
        fit(NaNFirst(bad=10**9), small, None, TrainConfig(epochs=1, batch_size=8, amp="fp16", **FAST),
            progress=False)


def test_channels_last_trains_like_contiguous_and_saves_loadable_weights(small, tmp_path):
    flats = []
    for cl in (False, True):
        torch.manual_seed(0)
        m = create_model("tiny-seed-cnn")
        fit(m, small, None, TrainConfig(epochs=1, batch_size=64, schedule="none", channels_last=cl, **FAST),
            run_dir=tmp_path / str(cl), spec={"name": "tiny-seed-cnn", "kwargs": {}}, progress=False)
        flats.append(_flat(m))
    torch.testing.assert_close(flats[1], flats[0], rtol=1e-3, atol=1e-4)
    loaded = load_model(tmp_path / "True")
    assert all(p.is_contiguous() for p in loaded.parameters())
    torch.testing.assert_close(_flat(loaded), flats[1])


def test_gradient_accumulation_with_bf16_matches_one_batch(small):
    flats = []
    for accum in (1, 4):
        torch.manual_seed(0)
        m = create_model("tiny-seed-cnn")
        fit(m, small, None, TrainConfig(epochs=1, batch_size=64, grad_accum=accum, amp="bf16", schedule="none",
                                        **FAST), progress=False)
        flats.append(_flat(m))
    # bf16 rounds each micro-batch's activations differently: close, not equal.
    torch.testing.assert_close(flats[1], flats[0], rtol=0, atol=2e-2)


def test_host_batches_are_not_pinned_on_cpu():
    x = torch.rand(4, 1, 28, 28)
    out = _to_device(x, torch.device("cpu"), channels_last=True)
    assert not out.is_pinned() and out.is_contiguous(memory_format=torch.channels_last)
    assert _to_device(x, torch.device("cpu")) is x  # no copy at all on CPU


@pytest.mark.gpu
def test_cuda_copies_come_from_pinned_memory():
    x = torch.rand(4, 1, 28, 28)
    out = _to_device(x, torch.device("cuda"))
    assert out.is_cuda and torch.equal(out.cpu(), x)


def test_threads_per_process_split_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert default_threads(1) == 8 and default_threads(2) == 4 and default_threads(16) == 1


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TINYFM_SLOW") != "1", reason="torch.compile takes ~1 min on 2 CPU cores: "
                    "set TINYFM_SLOW=1")
def test_compile_trains_one_epoch(small):
    torch.manual_seed(0)
    ref = create_model("tiny-seed-cnn")
    fit(ref, small, None, TrainConfig(epochs=1, batch_size=64, schedule="none", **FAST), progress=False)
    torch.manual_seed(0)
    m = create_model("tiny-seed-cnn")
    r = fit(m, small, small, TrainConfig(epochs=1, batch_size=64, schedule="none", compile=True, **FAST),
            progress=False)
    assert math.isfinite(r.history[0]["train_loss"])
    torch.testing.assert_close(_flat(m), _flat(ref), rtol=1e-3, atol=1e-4)
