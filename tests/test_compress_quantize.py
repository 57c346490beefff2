"""int8 quantization through ONNX Runtime: size, accuracy gate, per-channel scales, calibration, dynamic, QAT."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tinyfm.compress import pass_config
from tinyfm.compress.base import PassContext
from tinyfm.compress.quantize import (
    AccuracyGateError,
    CalibrationBatches,
    Config,
    FakeQuantLayer,
    apply,
    calibration_images,
    sensitivity,
)
from tinyfm.config import TrainConfig
from tinyfm.deploy import OrtModel
from tinyfm.errors import ConfigError, TinyfmError
from tinyfm.models import create_model
from tinyfm.train import fit

# one thread: with two, OpenMP spin-waits burn CPU when the shared machine is busy
EVAL = TrainConfig(epochs=1, batch_size=64, lr=3e-3, threads=1, eval_batch_size=500)


def _export_fast(model: nn.Module, path: Path, shape: tuple[int, ...] = (1, 28, 28)) -> Path:
    """The TorchScript exporter directly (much faster than export_onnx's dynamo-first path) for test models."""
    torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=18, dynamo=False)
    return path


def _split(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(x=torch.rand(n, *shape, generator=g), y=torch.randint(0, 10, (n,), generator=g))


@pytest.fixture(scope="module")
def trained(fashion_small, tmp_path_factory):
    """A tiny seed CNN trained for 2 epochs on 2,000 real images, and its static int8 result (one export)."""
    torch.manual_seed(0)
    model = create_model("tiny-seed-cnn", width=0.25)
    fit(model, fashion_small.train, fashion_small.val, dataclasses.replace(EVAL, epochs=2), progress=False)
    fp32 = _export_fast(model, tmp_path_factory.mktemp("fp32") / "model.onnx")  # reused by every test (fp32_onnx)
    workdir = tmp_path_factory.mktemp("static")
    ctx = PassContext(fashion_small.train, fashion_small.val, EVAL, workdir)
    # 70 calibration images in batches of 64: the last batch holds 6
    res = apply(model, Config(calib_samples=70, calib_batch=64, report_sensitivity=True, fp32_onnx=str(fp32)), ctx)
    return types.SimpleNamespace(model=model, ctx=ctx, res=res, fp32=fp32, data=fashion_small)


def _ctx(data, tmp_path: Path, train=None) -> PassContext:
    return PassContext(train if train is not None else data.train, data.val, EVAL, tmp_path)


def test_static_int8_within_gate_on_trained_model(trained):
    res = trained.res
    assert res.name == "int8-static" and res.transform is None
    assert res.onnx_path == trained.ctx.workdir / "int8-static.onnx" and res.onnx_path.is_file()
    assert res.before["val_accuracy"] > 0.6  # a real model, so the gate measures something
    assert res.after["drop_pp"] <= 1.0
    assert res.after["drop_pp"] == pytest.approx((res.before["val_accuracy"] - res.after["val_accuracy"]) * 100)
    assert res.changes["calib_samples"] == 70 and res.changes["quantized_weights"] == 5
    assert (res.changes["activation_type"], res.changes["weight_type"], res.changes["reduce_range"]) == \
        ("uint8", "int8", True)
    ops = {n.op_type for n in onnx.load(str(res.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops  # QDQ format
    # the pass works on a copy and writes only the fp32 reference and the int8 file
    assert res.model is not trained.model
    torch.testing.assert_close(res.model.state_dict(), trained.model.state_dict())
    assert sorted(p.name for p in trained.ctx.workdir.iterdir()) == ["int8-static.onnx"]


def test_sensitivity_table_has_every_weight_layer(trained):
    table = trained.res.changes["sensitivity"]
    assert {r["layer"] for r in table} == {"features.0", "features.3", "features.6", "classifier.1", "classifier.3"}
    assert all({"layer", "accuracy", "drop_pp", "node", "logit_rel_err"} <= set(r) for r in table)
    keys = [(-r["drop_pp"], -r["logit_rel_err"]) for r in table]
    assert keys == sorted(keys)  # most sensitive first


def test_sensitivity_function_on_an_onnx_file(trained, tmp_path):
    table = sensitivity(trained.fp32, _ctx(trained.data, tmp_path), Config(calib_samples=64))
    assert len(table) == 5 and all(0 <= r["accuracy"] <= 1 for r in table)
    assert list(tmp_path.iterdir()) == []  # scratch files are cleaned up


def test_static_file_is_at_most_035_of_fp32(tmp_path):
    model = create_model("seed-cnn").eval()
    fp32 = _export_fast(model, tmp_path / "seed.onnx")
    ctx = PassContext(_split(64), _split(64, seed=1), EVAL, tmp_path / "work")
    res = apply(model, Config(calib_samples=64, max_drop=100, fp32_onnx=str(fp32)), ctx)
    assert res.after["onnx_bytes"] <= 0.35 * fp32.stat().st_size
    assert res.after["size_ratio"] == pytest.approx(res.after["onnx_bytes"] / res.before["onnx_bytes"])
    # compact names (the default) are part of the saving: the same quantization with ORT's names is larger
    named = apply(model, Config(calib_samples=64, max_drop=100, fp32_onnx=str(fp32), compact_names=False),
                  PassContext(_split(64), _split(64, seed=1), EVAL, tmp_path / "named"))
    assert res.after["onnx_bytes"] < 0.97 * named.after["onnx_bytes"]
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(OrtModel(res.onnx_path)(x), OrtModel(named.onnx_path)(x))


class _TwoChannel(nn.Module):
    """Conv with output channel 0 a thousand times smaller than channel 1, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2 * 6 * 6, 10)
        with torch.no_grad():
            self.conv.weight[0] *= 1e-3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _dequantized_conv_weight(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(scales, dequantized weight) of the model's first conv, found through the graph (names are compacted)."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    conv = next(n for n in graph.node if n.op_type == "Conv")  # topological order: the first conv
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1])
    q = inits[dq.input[0]].astype(np.float32)  # (C_out, C_in, kH, kW) int8
    scale = inits[dq.input[1]].reshape(-1, 1, 1, 1)
    zp = inits[dq.input[2]].astype(np.float32).reshape(-1, 1, 1, 1)
    return scale.reshape(-1), (q - zp) * scale


@pytest.mark.parametrize("per_channel", [True, False])
def test_per_channel_scales_keep_a_small_range_channel(tmp_path, per_channel):
    torch.manual_seed(0)
    model = _TwoChannel().eval()
    fp32 = _export_fast(model, tmp_path / "two.onnx", (1, 8, 8))
    data = _split(32, shape=(1, 8, 8))
    ctx = PassContext(data, data, EVAL, tmp_path / "work", input_shape=(1, 8, 8))
    res = apply(model, Config(per_channel=per_channel, max_drop=100, fp32_onnx=str(fp32), calib_samples=32), ctx)
    scales, w = _dequantized_conv_weight(res.onnx_path)
    small = model.conv.weight[0].detach().numpy()
    if per_channel:
        assert scales.shape == (2,) and scales[0] > 0 and scales[0] < scales[1] / 100
        assert np.count_nonzero(w[0]) > 0
        np.testing.assert_allclose(w[0], small, atol=float(scales[0]) / 2 + 1e-12)  # within half a step
    else:  # one scale for the tensor: the small channel rounds to zero, which per-channel prevents
        assert scales.size == 1 and np.count_nonzero(w[0]) == 0


def test_fake_quant_weights_match_ort_dequantized_weights(trained):
    """QAT's fake quantization rounds weights exactly as ORT's static quantizer does (same scales, same grid)."""
    conv = trained.res.model.features[0]
    ort_scales, ort_w = _dequantized_conv_weight(trained.res.onnx_path)
    fq = FakeQuantLayer(conv, Config())._weight().detach().numpy()
    np.testing.assert_allclose(fq, ort_w, rtol=0, atol=float(ort_scales.max()) * 1e-3)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibrations_take_a_short_last_batch(trained, tmp_path, method):
    """ORT's histogram collectors fail on unequal batches when given them all at once; the pass feeds one a call."""
    cfg = Config(calibration=method, calib_samples=70, calib_batch=64, max_drop=100, fp32_onnx=str(trained.fp32))
    res = apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    assert res.changes["calibration"] == method and res.changes["calib_samples"] == 70
    graph = onnx.load(str(res.onnx_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scales = [inits[n.input[1]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
              and n.input[1] in inits]  # found through the graph: the int8 file's tensor names are compacted
    assert scales and all(np.all(s > 0) and np.all(np.isfinite(s)) for s in scales)


def test_calibration_batches_end_with_a_short_batch():
    x = np.zeros((70, 1, 28, 28), np.float32)
    reader = CalibrationBatches(x, batch=64)
    assert [len(b["input"]) for b in reader] == [64, 6] and len(reader) == 2
    reader.rewind()
    assert len(reader.get_next()["input"]) == 64
    reader.set_range(1, 2)  # quantize_static's strided calibration: one batch per call
    assert len(reader.get_next()["input"]) == 6 and reader.get_next() is None


def test_calibration_images_are_deterministic_and_capped():
    split = _split(100)
    a, b = calibration_images(split, 30, seed=3), calibration_images(split, 30, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (30, 1, 28, 28) and a.dtype == np.float32
    assert not np.array_equal(a, calibration_images(split, 30, seed=4))
    assert len(calibration_images(split, 1000)) == 100


def test_zero_calibration_samples_is_an_error(trained, tmp_path):
    with pytest.raises(ConfigError, match="--calib-samples"):
        Config(calib_samples=0)
    with pytest.raises(TinyfmError, match="no calibration images"):
        calibration_images(_split(0), 1000)
    empty = types.SimpleNamespace(x=torch.zeros(0, 1, 28, 28), y=torch.zeros(0, dtype=torch.long))
    with pytest.raises(TinyfmError, match="no calibration images"):
        apply(trained.model, Config(fp32_onnx=str(trained.fp32)), _ctx(trained.data, tmp_path, train=empty))
    assert not (tmp_path / "int8-static.onnx").exists()


def test_dynamic_int8_loads_and_runs(trained, tmp_path):
    res = apply(trained.model, Config(mode="dynamic", fp32_onnx=str(trained.fp32)), _ctx(trained.data, tmp_path))
    assert res.name == "int8-dynamic" and res.after["drop_pp"] <= 1.0
    assert res.changes["op_types"] == ["MatMul", "Gemm"] and res.changes["quantized_weights"] == 2  # the linears
    ops = {n.op_type for n in onnx.load(str(res.onnx_path)).graph.node}
    assert "ConvInteger" not in ops and "Conv" in ops
    logits = OrtModel(res.onnx_path)(trained.data.test.x[:16].numpy())
    assert logits.shape == (16, 10) and np.isfinite(logits).all()


def test_dynamic_conv_is_refused_or_runs(trained, tmp_path):
    """Quantizing Conv dynamically (ConvInteger) either runs in this ORT build or fails with a clear TinyfmError."""
    cfg = Config(mode="dynamic", op_types=["Conv"], max_drop=100, fp32_onnx=str(trained.fp32))
    try:
        res = apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    except AccuracyGateError:
        raise
    except TinyfmError as e:
        assert "ConvInteger" in str(e) and not (tmp_path / "int8-dynamic.onnx").exists()
    else:
        assert OrtModel(res.onnx_path)(trained.data.val.x[:4].numpy()).shape == (4, 10)


def test_a_model_ort_cannot_load_is_a_clear_error(trained, tmp_path, monkeypatch):
    """Builds without a ConvInteger CPU kernel refuse the file at load time: the pass says so and writes nothing."""
    import tinyfm.deploy

    real = tinyfm.deploy.OrtModel

    def refusing(path, *args, **kwargs):
        if Path(path).name == "candidate.onnx":
            raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                               "ConvInteger(10) node with name 'node_conv2d_quant'")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tinyfm.deploy, "OrtModel", refusing)
    cfg = Config(mode="dynamic", op_types=["Conv", "MatMul"], fp32_onnx=str(trained.fp32))
    with pytest.raises(TinyfmError, match="cannot run the quantized model.*NOT_IMPLEMENTED.*ConvInteger"):
        apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_gate_refuses_and_writes_nothing_outside_workdir(trained, tmp_path):
    before = trained.fp32.read_bytes()
    # A gate int8 cannot pass: 5 pp better than fp32 (on 500 validation images it came out up to 1 pp better).
    cfg = Config(max_drop=-5, fallback=True, fallback_limit=1, calib_samples=64, fp32_onnx=str(trained.fp32))
    with pytest.raises(AccuracyGateError, match="--max-drop -5") as info:
        apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    e = info.value
    assert isinstance(e, TinyfmError) and e.variant == "int8-static" and e.max_drop == -5
    assert e.drop_pp == pytest.approx((e.fp32_accuracy - e.int8_accuracy) * 100) and e.drop_pp > -5
    assert len(e.excluded) == 1 and len(e.sensitivity) == 5  # fallback kept one layer fp32, then gave up
    assert e.excluded[0] == e.sensitivity[0]["layer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8-static.rejected.onnx"]
    assert trained.fp32.read_bytes() == before


def test_relative_workdir_and_no_files_in_the_working_directory(trained, tmp_path, monkeypatch):
    """`tinyfm run` passes relative paths (runs/...); ORT's pre-processing must not litter the cwd either."""
    monkeypatch.chdir(tmp_path)
    cfg = Config(calib_samples=64, max_drop=100, fp32_onnx=str(trained.fp32))
    apply(trained.model, cfg, _ctx(trained.data, Path("variants")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variants"]
    assert sorted(p.name for p in (tmp_path / "variants").iterdir()) == ["int8-static.onnx"]


def test_exclude_keeps_layers_fp32(trained, tmp_path):
    cfg = Config(exclude=["classifier.*"], calib_samples=64, max_drop=100, fp32_onnx=str(trained.fp32))
    res = apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    assert res.changes["excluded"] == ["classifier.1", "classifier.3"] and res.changes["quantized_weights"] == 3
    with pytest.raises(ConfigError, match="--exclude"):
        apply(trained.model, Config(exclude=["nope*"], fp32_onnx=str(trained.fp32)), _ctx(trained.data, tmp_path))


def test_qat_fine_tunes_and_deploys(trained, tmp_path):
    """The one test that runs tinyfm.deploy.export_onnx (slow): the fine-tuned model is exported by the pass."""
    cfg = Config(mode="qat", qat_always=True, qat_epochs=1, calib_samples=64, fp32_onnx=str(trained.fp32))
    res = apply(trained.model, cfg, _ctx(trained.data, tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8-qat.onnx"]
    assert res.name == "int8-qat" and res.changes["qat"]["ran"] and res.after["drop_pp"] <= 1.0
    assert not any(isinstance(m, FakeQuantLayer) for m in res.model.modules())  # plain layers, new weights
    assert not torch.equal(res.model.features[0].weight, trained.model.features[0].weight)
    assert OrtModel(res.onnx_path)(trained.data.val.x[:4].numpy()).shape == (4, 10)


@pytest.mark.parametrize(("settings", "flag"), [
    ({"calibration": "kl"}, "--calibration"), ({"mode": "int4"}, "--mode"), ({"calib_batch": 0}, "--calib-batch"),
    ({"activation_type": "int4"}, "--activation-type"), ({"activation_type": "int8", "weight_type": "uint8"},
                                                         "--weight-type"),
    ({"percentile": 0}, "--percentile"), ({"max_drop": float("nan")}, "--max-drop"),
])
def test_bad_config_names_the_flag(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        pass_config("quantize", settings)


def test_config_variant_names():
    assert [Config(mode=m).variant for m in ("static", "dynamic", "qat")] == ["int8-static", "int8-dynamic",
                                                                               "int8-qat"]
