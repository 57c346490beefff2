"""Depthwise-separable convolutions: layer choice, size, SVD start, BatchNorm calibration, rebuild, ONNX."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinyfm.compress import PassContext, apply_pass, pass_config
from tinyfm.compress.dsconv import DepthwiseSeparableConv, dsconv_, to_dsconv
from tinyfm.config import TrainConfig
from tinyfm.errors import ConfigError
from tinyfm.models import create_model, load_model, save_model

FAST = dict(batch_size=64, threads=2, eval_batch_size=500)


def _subset(split, n: int):
    return type(split)(split.x[:n], split.y[:n])


def _ctx(fashion_small, tmp_path, epochs: int = 1) -> PassContext:
    train, val = _subset(fashion_small.train, 256), _subset(fashion_small.val, 200)
    return PassContext(train, val, TrainConfig(epochs=epochs, **FAST), tmp_path)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def seed_dsconv(fashion_small, tmp_path_factory):
    """seed-cnn (untrained) factored without fine-tuning, and the original."""
    model = create_model("seed-cnn")
    state = _state(model)
    res = apply_pass("dsconv", model, {"epochs": 0}, _ctx(fashion_small, tmp_path_factory.mktemp("ds")))
    return model, state, res


def test_replaces_the_multi_channel_convs_of_seed_cnn(seed_dsconv) -> None:
    model, state, res = seed_dsconv
    assert res.changes["layers"] == ["features.3", "features.6"]
    assert res.transform == {"kind": "dsconv", "layers": ["features.3", "features.6"], "batchnorm": False}
    assert res.transforms == [res.transform]
    new = res.model
    assert type(new.features[0]) is nn.Conv2d and new.features[0].in_channels == 1  # nothing to factor there
    for i in (3, 6):
        block = new.features[i]
        assert isinstance(block, DepthwiseSeparableConv)
        assert [n for n, _ in block.named_children()] == ["depthwise", "pointwise"]
        assert block.depthwise.groups == block.depthwise.in_channels and block.pointwise.kernel_size == (1, 1)
    for k, v in model.state_dict().items():  # the input model is untouched
        torch.testing.assert_close(v, state[k])


def test_conv_params_shrink_at_least_3x(seed_dsconv) -> None:
    ch = seed_dsconv[2].changes
    assert ch["conv_param_ratio"] == ch["conv_params_after"] / ch["conv_params_before"] <= 0.3
    assert ch["conv_params_before"] == 320 + 18496 + 36928  # seed-cnn's three convs
    assert ch["params_after"] < ch["params_before"] and ch["macs_after"] < ch["macs_before"]


def test_svd_init_reproduces_an_exactly_separable_conv() -> None:
    cin, cout = 6, 10
    p, d = torch.randn(cout, cin), torch.randn(cin, 3, 5)
    conv = nn.Conv2d(cin, cout, (3, 5), stride=2, padding=(2, 1), dilation=(2, 1))
    with torch.no_grad():
        conv.weight.copy_(p[:, :, None, None] * d[None])  # W[o, c] = p[o, c] · d[c]
    x = torch.randn(3, cin, 17, 19)
    torch.testing.assert_close(to_dsconv(conv)(x), conv(x), atol=1e-5, rtol=1e-4)


def test_svd_init_approximates_a_generic_conv_better_than_random() -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(4, 16, 12, 12)
    err = {init: (to_dsconv(conv, init=init)(x) - conv(x)).norm().item() for init in ("svd", "random")}
    assert err["svd"] < err["random"]


def test_include_and_ignore_choose_the_layers(fashion_small, tmp_path) -> None:
    ctx = _ctx(fashion_small, tmp_path)
    model = create_model("tiny-seed-cnn")
    only3 = apply_pass("dsconv", model, {"epochs": 0, "ignore": ["features.6"]}, ctx)
    assert only3.changes["layers"] == ["features.3"] and type(only3.model.features[6]) is nn.Conv2d
    only6 = apply_pass("dsconv", model, {"epochs": 0, "include": ["features.[5-9]"]}, ctx)
    assert only6.changes["layers"] == ["features.6"]
    again = apply_pass("dsconv", only6.model, {"epochs": 0}, ctx)  # factored blocks are not factored again
    assert again.changes["layers"] == ["features.3"]


def test_batchnorm_is_calibrated_to_start_as_the_identity(fashion_small, tmp_path) -> None:
    model = create_model("tiny-seed-cnn")
    ctx = _ctx(fashion_small, tmp_path)
    plain = apply_pass("dsconv", model, {"epochs": 0}, ctx).model
    with_bn = apply_pass("dsconv", model, {"epochs": 0, "batchnorm": True}, ctx).model
    assert [n for n, _ in with_bn.features[3].named_children()] == ["depthwise", "bn", "pointwise"]
    x = fashion_small.val.x[:64]
    with torch.no_grad():
        torch.testing.assert_close(with_bn(x), plain(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_save_and_load_round_trip(batchnorm: bool, tmp_path) -> None:
    model = dsconv_(create_model("tiny-seed-cnn"), ["features.3", "features.6"], batchnorm=batchnorm)
    transform = {"kind": "dsconv", "layers": ["features.3", "features.6"], "batchnorm": batchnorm}
    save_model(model, tmp_path, {"name": "tiny-seed-cnn", "kwargs": {}, "transforms": [transform]})
    loaded = load_model(tmp_path)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_onnx_export_matches_pytorch(seed_dsconv, tmp_path) -> None:
    from tinyfm.deploy import check_parity, export_onnx

    model = seed_dsconv[2].model
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "dsconv.onnx")
    stats = check_parity(model, path, torch.rand(64, 1, 28, 28))
    assert stats["max_abs_diff"] <= 1e-4 and stats["argmax_agreement"] == 1.0


def test_fine_tunes_by_distillation(fashion_small, tmp_path) -> None:
    model = create_model("tiny-seed-cnn")
    res = apply_pass("dsconv", model, {"epochs": 1, "temperature": 2.0, "alpha": 0.5}, _ctx(fashion_small, tmp_path))
    assert res.changes["layers"] == ["features.3", "features.6"]
    assert 0 <= res.changes["init_val_accuracy"] <= 1 and 0 <= res.after["val_accuracy"] <= 1
    assert not res.model.training and next(res.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(("settings", "flag"), [
    ({"temperature": 0.0}, "--temperature"), ({"alpha": 1.01}, "--alpha"), ({"alpha": -1}, "--alpha"),
    ({"epochs": -1}, "--epochs"), ({"lr_scale": 0}, "--lr-scale"), ({"init": "kaiming"}, "--init"),
    ({"include": "features.3"}, "include: got 'features.3', expected a list"),
])
def test_bad_config_names_the_flag(settings, flag) -> None:
    with pytest.raises(ConfigError, match=flag):
        pass_config("dsconv", settings)


def test_no_matching_layer_is_a_config_error(fashion_small, tmp_path) -> None:
    with pytest.raises(ConfigError, match="--include"):
        apply_pass("dsconv", create_model("tiny-seed-cnn"), {"include": ["classifier.*", "features.0"]},
                   _ctx(fashion_small, tmp_path))
