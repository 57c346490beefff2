"""Structured (Torch-Pruning) and unstructured (torch.nn.utils.prune) pruning: shapes, sizes, export, replay."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tinyfm.compress import replay_transforms_
from tinyfm.compress.base import PassContext
from tinyfm.compress.prune import Config, apply
from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError
from tinyfm.models import create_model, load_model, save_model


@pytest.fixture
def ctx(fashion_small, tmp_path) -> PassContext:
    """Real data, 1-thread CPU fine-tuning at batch 128."""
    cfg = TrainConfig(epochs=1, batch_size=128, threads=1, device="cpu", eval_batch_size=500)
    return PassContext(fashion_small.train, fashion_small.val, cfg, tmp_path)


def _shape(m: nn.Module) -> tuple[int, ...]:
    return tuple(m.weight.shape)


def _outputs_match(a: nn.Module, b: nn.Module) -> None:
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


class DepthwiseNet(nn.Module):
    """Stem conv, then a depthwise-separable block as the dsconv pass writes it: dw 3x3 (groups=c) + BN + pw 1x1."""

    def __init__(self, c: int = 8, c2: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c2, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.pw(torch.relu(self.bn(self.dw(torch.relu(self.stem(x))))))))


def test_structured_shapes_and_input_untouched(ctx):
    model = create_model("tiny-seed-cnn")  # convs 4, 8, 8; dense 8; head 10
    original = copy.deepcopy(model.state_dict())
    res = apply(model, Config(ratio=0.5, finetune_epochs=0), ctx)
    m = res.model
    assert res.name == "prune-50"
    assert _shape(m.features[0]) == (2, 1, 3, 3) and _shape(m.features[3]) == (4, 2, 3, 3)
    assert _shape(m.features[6]) == (4, 4, 3, 3) and _shape(m.classifier[1]) == (4, 36)
    assert _shape(m.classifier[3]) == (10, 4)  # the head keeps its 10 classes, loses inputs
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert res.transform["channels"]["features.0"] == 2
    assert res.transform["channels"]["classifier.3"] == 10 and res.transform["in_channels"]["classifier.3"] == 4
    assert res.changes["layers"]["features.3"] == "in 4→2, out 8→4"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())


def test_params_ratio_seed_cnn(ctx):
    res = apply(create_model("seed-cnn"), Config(ratio=0.5, finetune_epochs=0), ctx)
    assert res.after["params"] / res.before["params"] <= 0.35
    assert res.changes["params_ratio"] == pytest.approx(res.after["params"] / res.before["params"])
    assert res.after["macs"] < 0.35 * res.before["macs"]


def test_macs_target_is_met(ctx):
    res = apply(create_model("tiny-seed-cnn"), Config(ratio=0.5, target="macs", finetune_epochs=0), ctx)
    assert res.name == "prune-50-macs"
    # The search finds the least pruning that meets the target (tiny widths move in coarse steps).
    assert 0.3 <= res.changes["macs_ratio"] <= 0.5 and res.changes["channel_ratio"] < 0.5


def test_pruned_model_exports_with_parity(ctx, tmp_path):
    from tinyfm.deploy import check_parity, export_onnx

    res = apply(create_model("tiny-seed-cnn"), Config(ratio=0.5, finetune_epochs=1), ctx)
    path = export_onnx(res.model, torch.zeros(1, 1, 28, 28), tmp_path / "pruned.onnx")
    stats = check_parity(res.model, path, ctx.val.x[:64])
    assert stats["max_abs_diff"] <= 1e-4 and stats["argmax_agreement"] == 1.0


def test_structured_round_trip_via_load_model(ctx, tmp_path):
    res = apply(create_model("tiny-seed-cnn"), Config(ratio=0.5, iterative_steps=2, finetune_epochs=0), ctx)
    save_model(res.model, tmp_path, {"name": "tiny-seed-cnn", "kwargs": {}, "transforms": res.transforms})
    _outputs_match(load_model(tmp_path), res.model)


def test_depthwise_groups_stay_consistent(ctx):
    torch.manual_seed(0)
    model = DepthwiseNet()
    res = apply(model, Config(ratio=0.5, finetune_epochs=0), ctx)
    m = res.model
    assert m.stem.out_channels == m.dw.in_channels == m.dw.out_channels == m.dw.groups == m.bn.num_features == 4
    assert m.pw.in_channels == 4 and m.pw.out_channels == 8 and m.head[2].in_features == 8
    assert res.transform["groups"]["dw"] == 4
    fresh = replay_transforms_(DepthwiseNet(), res.transforms)
    fresh.load_state_dict(m.state_dict())
    _outputs_match(fresh, m)


def test_taylor_importance_prunes(ctx):
    res = apply(create_model("tiny-seed-cnn"), Config(ratio=0.5, importance="taylor", finetune_epochs=0), ctx)
    assert res.model.features[3].out_channels == 4 and res.model.features[0].weight.grad is None


def test_round_to_and_apply_pass_by_name(ctx):
    from tinyfm.compress import apply_pass

    settings = {"ratio": 0.6, "round_to": 4, "finetune_epochs": 0, "include": ["features.*"]}
    m = apply_pass("prune", create_model("seed-cnn"), settings, ctx).model
    widths = [m.features[0].out_channels, m.features[3].out_channels, m.features[6].out_channels]
    assert all(w % 4 == 0 for w in widths) and widths[0] < 32
    assert m.classifier[1].out_features == 64  # not included: only its inputs shrink


def test_ignore_glob_keeps_layer(ctx):
    res = apply(create_model("tiny-seed-cnn"), Config(ratio=0.5, ignore=("features.0",), finetune_epochs=0), ctx)
    assert res.model.features[0].out_channels == 4 and res.model.features[3].out_channels == 4


def test_unstructured_sparsity_and_plain_state_dict(ctx):
    res = apply(create_model("tiny-seed-cnn"), Config(method="unstructured", sparsity=0.6, finetune_epochs=1), ctx)
    keys = list(res.model.state_dict())
    assert not any(k.endswith(("weight_orig", "weight_mask")) for k in keys)
    assert res.name == "sparse-60" and res.transform is None
    assert abs(res.changes["sparsity"]["overall"] - 0.6) <= 0.01
    zeros = sum(int((m.weight == 0).sum()) for m in (res.model.features[0], res.model.classifier[1]))
    assert zeros > 0  # the zeros survived fine-tuning
    assert (res.model.classifier[3].weight != 0).all()  # head left alone
    comp = res.changes["compressibility"]
    assert comp["sparse_gzip_bytes"] < comp["dense_gzip_bytes"]
    assert (ctx.workdir / "sparse-60.sparse.safetensors.gz").is_file()


@pytest.mark.parametrize("importance", ["l1", "taylor", "random"])
def test_unstructured_global_iterative_hits_target(ctx, importance):
    cfg = Config(method="unstructured", sparsity=0.8, global_pruning=True, iterative_steps=2, finetune_epochs=0,
                 importance=importance)
    res = apply(create_model("tiny-seed-cnn"), cfg, ctx)
    assert abs(res.changes["sparsity"]["overall"] - 0.8) <= 0.01


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"method": "unstructured", "sparsity": 1.0}, "--sparsity"),
    ({"method": "unstructured", "sparsity": -0.1}, "--sparsity"),
    ({"importance": "hessian"}, "--importance"),
    ({"ratio": 1.0}, "--ratio"),
    ({"method": "channels"}, "--method"),
    ({"target": "flops"}, "--target"),
    ({"iterative_steps": 0}, "--iterative-steps"),
    ({"round_to": 0}, "--round-to"),
])
def test_bad_config_names_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        Config(**kwargs)


def test_structured_pruning_refuses_recurrent_layers(ctx):
    with pytest.raises(ConfigError, match=r"recurrent layers \(forward_gru, backward_gru\).*method=unstructured"):
        apply(create_model("tiny-text-bigru"), Config(), ctx)
