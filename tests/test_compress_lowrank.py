"""Low-rank factorisation: exact SVD initialisation, rank choice, skipping, replay, composition with pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinyfm.compress import prune
from tinyfm.compress.base import PassContext
from tinyfm.compress.lowrank import Config, apply, factorize, rank_for_energy
from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError
from tinyfm.models import create_model, load_model, save_model


@pytest.fixture
def ctx(fashion_small, tmp_path) -> PassContext:
    """Real data, 1-thread CPU fine-tuning at batch 128."""
    cfg = TrainConfig(epochs=1, batch_size=128, threads=1, device="cpu", eval_batch_size=500)
    return PassContext(fashion_small.train, fashion_small.val, cfg, tmp_path)


def _outputs_match(a: nn.Module, b: nn.Module) -> None:
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_full_rank_svd_reproduces_linear():
    layer = nn.Linear(20, 12)
    f = factorize(layer, 12)
    assert f[0].weight.shape == (12, 20) and f[0].bias is None and f[1].weight.shape == (12, 12)
    x = torch.randn(16, 20)
    with torch.no_grad():
        torch.testing.assert_close(f(x), layer(x))


def test_full_rank_svd_reproduces_conv1x1():
    layer = nn.Conv2d(6, 10, 1, stride=2, padding=1)
    f = factorize(layer, 6)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(f(x), layer(x))


def test_truncated_rank_is_best_approximation():
    layer = nn.Linear(30, 30)
    w = layer.weight.detach()
    f = factorize(layer, 5)
    approx = f[1].weight @ f[0].weight  # (out, r) @ (r, in)
    s = torch.linalg.svdvals(w)
    # Eckart–Young: the error of the best rank-5 approximation is the norm of the dropped singular values.
    torch.testing.assert_close(torch.linalg.norm(w - approx), s[5:].norm(), rtol=1e-4, atol=1e-5)


def test_rank_for_energy():
    s = torch.tensor([3.0, 1.0, 0.0])
    assert rank_for_energy(s, 0.9) == 1 and rank_for_energy(s, 0.95) == 2 and rank_for_energy(s, 1.0) == 2


def test_apply_rank_factorises_dense_layer_only(ctx):
    model = create_model("tiny-seed-cnn")  # classifier.1: Linear(72, 8), head classifier.3: Linear(8, 10)
    res = apply(model, Config(rank=2, finetune_epochs=1), ctx)
    m = res.model
    assert res.name == "lowrank-2" and res.transform == {"kind": "lowrank", "ranks": {"classifier.1": 2}}
    assert isinstance(m.classifier[1], nn.Sequential) and m.classifier[1][0].weight.shape == (2, 72)
    assert isinstance(m.classifier[3], nn.Linear)  # head left alone
    assert isinstance(model.classifier[1], nn.Linear)  # input untouched
    assert res.after["params"] == res.before["params"] - 72 * 8 + 2 * (72 + 8)
    assert res.changes["layers"]["classifier.1"]["energy_kept"] < 1


def test_energy_and_min_saving_skip(ctx):
    res = apply(create_model("tiny-seed-cnn"), Config(energy=1.0, finetune_epochs=0), ctx)
    # full rank 8 needs 8 * (72 + 8) = 640 weights > 576 dense: not worth factorising
    assert res.transform is None and res.transforms == [] and "classifier.1" in res.changes["skipped"]
    res = apply(create_model("tiny-seed-cnn"), Config(rank=3, min_saving=0.7, finetune_epochs=0), ctx)
    assert "classifier.1" in res.changes["skipped"]  # 240 of 576 weights is a 58 % saving, under 70 %


def test_lowrank_round_trip_via_load_model(ctx, tmp_path):
    res = apply(create_model("tiny-seed-cnn"), Config(rank=3, finetune_epochs=0), ctx)
    save_model(res.model, tmp_path, {"name": "tiny-seed-cnn", "kwargs": {}, "transforms": res.transforms})
    _outputs_match(load_model(tmp_path), res.model)


def test_lowrank_after_structured_prune_replays(ctx, tmp_path):
    pruned = prune.apply(create_model("tiny-seed-cnn"), prune.Config(ratio=0.5, finetune_epochs=0), ctx)
    res = apply(pruned.model, Config(rank=2, finetune_epochs=0), ctx)
    assert res.model.classifier[1][0].weight.shape == (2, 36)
    transforms = pruned.transforms + res.transforms
    save_model(res.model, tmp_path, {"name": "tiny-seed-cnn", "kwargs": {}, "transforms": transforms})
    _outputs_match(load_model(tmp_path), res.model)


def test_conv1x1_factorised_when_asked(ctx):
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 26 * 26, 10))
    assert apply(model, Config(rank=4, finetune_epochs=0), ctx).transform is None
    res = apply(model, Config(rank=4, conv1x1=True, finetune_epochs=0), ctx)
    assert res.transform["ranks"] == {"2": 4} and res.model[2][0].out_channels == 4


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"rank": 0}, "--rank"),
    ({"energy": 1.5}, "--energy"),
    ({"energy": 0.0}, "--energy"),
    ({"rank": 4, "energy": 0.9}, "--rank/--energy"),
    ({"min_saving": 1.0}, "--min-saving"),
    ({"finetune_epochs": -1}, "--finetune-epochs"),
])
def test_bad_config_names_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        Config(**kwargs)


def test_variant_name_energy():
    assert Config().name == "lowrank-e90" and Config(energy=0.75).name == "lowrank-e75"
