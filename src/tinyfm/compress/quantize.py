"""int8 quantization through ONNX Runtime: static (QDQ, calibrated), dynamic, and quantization-aware training.

The product is an ONNX file, not a PyTorch model: the fp32 model is exported with tinyfm.deploy.export_onnx,
pre-processed (`quant_pre_process`: shape inference + graph optimisation, as ORT's guide recommends) and quantized
by `onnxruntime.quantization`. Every variant passes an accuracy gate measured with ONNX Runtime on the validation
split (fp32 ONNX vs int8 ONNX, the same code for both); a variant that drops more than `max_drop` points is refused
with :class:`AccuracyGateError`, after the most sensitive layers have been kept in fp32 one by one (`fallback`).

Variants: "int8-static" (mode static), "int8-dynamic" (mode dynamic), "int8-qat" (mode qat).
Guide: https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html

Example:
    from tinyfm.compress import PassContext, apply_pass
    res = apply_pass("quantize", model, {"mode": "static", "calibration": "entropy"}, ctx)
    res.onnx_path, res.after["val_accuracy"], res.changes["excluded"]
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyfm.compress.base import PassContext, PassResult, clone, finetune
from tinyfm.config import _check_choice
from tinyfm.errors import ConfigError, TinyfmError

if TYPE_CHECKING:
    import onnx

MODES = ("static", "dynamic", "qat")
VARIANTS = {"static": "int8-static", "dynamic": "int8-dynamic", "qat": "int8-qat"}
CALIBRATIONS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
QTYPES = {"int8": "QInt8", "uint8": "QUInt8"}
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # ops whose second input is a weight initializer
DYNAMIC_OPS = ("MatMul", "Gemm")  # ConvInteger has no CPU kernel in many ORT builds: conv stays fp32 by default


def _check_min(flag: str, value: Any, lo: float) -> None:
    if not isinstance(value, int | float) or value < lo:
        raise ConfigError(f"{flag}: got {value!r}, expected a number >= {lo}")


@dataclass
class Config:
    mode: str = "static"
    """static (calibrated QDQ int8) | dynamic (weights int8, activations quantized at run time) | qat."""
    calibration: str = "minmax"
    """Static/QAT activation ranges: minmax | entropy | percentile (ORT CalibrationMethod)."""
    calib_samples: int = 1000
    """Training images used for calibration, drawn deterministically (seeded by calib_seed)."""
    calib_batch: int = 64
    """Images per calibration batch (the last batch may be smaller)."""
    calib_seed: int = 0
    """Seed of the calibration-image draw."""
    percentile: float = 99.999
    """Percentile kept by the percentile calibration (ORT's CalibPercentile)."""
    per_channel: bool = True
    """One weight scale per output channel (a small-range channel keeps its precision)."""
    # Defaults for x86-64 AVX2 without VNNI (this project's CPUs): ORT's quantize_static docstring, "Choosing
    # parameters for CPU inference": "x86/x64 CPU without VNNI: use activation_type=QUInt8 and weight_type=QInt8,
    # and set reduce_range=True"; the guide's FAQ: U8S8 runs on VPMADDUBSW, whose int16 sums can saturate, and
    # "on AVX2 and AVX512 machines, you will generally need to enable reduce-range as well if per-channel is
    # enabled" (7-bit weights: 255 * 64 * 2 < 2**15). On a VNNI or ARM CPU set reduce_range=False.
    reduce_range: bool = True
    """Quantize weights to 7 bits (avoids U8S8 int16 saturation on AVX2/AVX512 CPUs without VNNI)."""
    activation_type: str = "uint8"
    """Activation integer type: uint8 | int8."""
    weight_type: str = "int8"
    """Weight integer type: int8 | uint8."""
    op_types: list[str] | None = None
    """ONNX op types to quantize; None = static/qat: every op ORT supports, dynamic: MatMul and Gemm."""
    exclude: list[str] = field(default_factory=list)
    """Glob patterns of ONNX node names or PyTorch layer names kept in fp32, e.g. ["classifier.3"]."""
    max_drop: float = 1.0
    """Accuracy gate: largest validation-accuracy drop (percentage points, fp32 ONNX - int8 ONNX) accepted."""
    fallback: bool = True
    """When over max_drop, keep the most sensitive weight layers in fp32, one by one, until the drop fits."""
    fallback_limit: int | None = None
    """Most layers fallback may keep in fp32; None = half the weight layers (rounded down, at least 1)."""
    report_sensitivity: bool = False
    """Measure the per-layer sensitivity table even when no fallback is needed (changes["sensitivity"])."""
    qat_epochs: int = 1
    """mode qat: epochs of fine-tuning with fake quantization when static int8 misses the gate."""
    qat_lr_scale: float = 0.1
    """mode qat: fine-tuning learning rate as a fraction of the run's lr."""
    qat_always: bool = False
    """mode qat: fine-tune even when static int8 already passes the gate."""
    fp32_onnx: str | None = None
    """An fp32 ONNX file already exported from this model (checked against it); None = export one."""
    opset: int = 18
    """ONNX opset of the fp32 export."""
    compact_names: bool = True
    """Give the int8 file's tensors short names and drop node names (tinyfm.deploy.onnx.compact_names): the same
    graph and outputs (checked), about 5% smaller for a small CNN; False keeps ORT's descriptive names."""

    def __post_init__(self) -> None:
        _check_choice("--mode", self.mode, MODES)
        _check_choice("--calibration", self.calibration, tuple(CALIBRATIONS))
        _check_choice("--activation-type", self.activation_type, tuple(QTYPES))
        _check_choice("--weight-type", self.weight_type, tuple(QTYPES))
        if (self.activation_type, self.weight_type) == ("int8", "uint8"):  # ORT: "doesn't support data format"
            raise ConfigError("--weight-type: uint8 weights need uint8 activations (ORT has no S8U8 kernels); "
                              "use --weight-type int8 or --activation-type uint8")
        if isinstance(self.calib_samples, bool) or not isinstance(self.calib_samples, int) or self.calib_samples < 1:
            raise ConfigError(f"--calib-samples: got {self.calib_samples!r}, expected an integer >= 1 "
                              "(static int8 needs calibration images; zero would give zero scales)")
        _check_min("--calib-batch", self.calib_batch, 1)
        _check_min("--qat-epochs", self.qat_epochs, 0)
        _check_min("--qat-lr-scale", self.qat_lr_scale, 0)
        _check_min("--opset", self.opset, 13)
        if not isinstance(self.percentile, int | float) or not 0 < self.percentile <= 100:
            raise ConfigError(f"--percentile: got {self.percentile!r}, expected a value in (0, 100]")
        if not isinstance(self.max_drop, int | float) or not np.isfinite(self.max_drop):
            raise ConfigError(f"--max-drop: got {self.max_drop!r}, expected a number of percentage points")
        if self.fallback_limit is not None:
            _check_min("--fallback-limit", self.fallback_limit, 0)
        self.exclude = [self.exclude] if isinstance(self.exclude, str) else list(self.exclude)
        if self.op_types is not None:
            self.op_types = [self.op_types] if isinstance(self.op_types, str) else list(self.op_types)

    @property
    def variant(self) -> str:
        """The variant name this config produces: int8-static | int8-dynamic | int8-qat."""
        return VARIANTS[self.mode]


class AccuracyGateError(TinyfmError):
    """The int8 model drops more validation accuracy than `max_drop` allows; nothing outside workdir was written.

    Attributes: variant, fp32_accuracy, int8_accuracy, drop_pp, max_drop, excluded (layers kept in fp32),
    sensitivity (the per-layer table, may be empty), rejected_path (the refused .onnx, inside workdir).
    """

    def __init__(self, variant: str, fp32_accuracy: float, int8_accuracy: float, max_drop: float,
                 excluded: list[str], sensitivity: list[dict[str, Any]], rejected_path: Path | None) -> None:
        self.variant, self.fp32_accuracy, self.int8_accuracy = variant, fp32_accuracy, int8_accuracy
        self.drop_pp = _drop_pp(fp32_accuracy, int8_accuracy)
        self.max_drop, self.excluded, self.sensitivity = max_drop, excluded, sensitivity
        self.rejected_path = rejected_path
        kept = f"; kept in fp32: {', '.join(excluded)}" if excluded else ""
        super().__init__(f"{variant}: validation accuracy drops {self.drop_pp:.2f} points (fp32 {fp32_accuracy:.2%} "
                         f"-> int8 {int8_accuracy:.2%}), more than --max-drop {max_drop:g}{kept}; try "
                         "--calibration entropy/percentile, --mode qat, --exclude <layer> or a larger --max-drop")


def _drop_pp(fp32_accuracy: float, int8_accuracy: float) -> float:
    return round((fp32_accuracy - int8_accuracy) * 100, 6)  # rounded: 0.1 - 0.1 must not read as 1e-15 points


# ---- calibration data -------------------------------------------------------------------------------------------

def calibration_images(split: Any, samples: int, seed: int = 0) -> np.ndarray:
    """`samples` images of `split` (.x) drawn without replacement by a seeded permutation, as float32 numpy.

    Args:
        split: a data split with an .x tensor (N, C, H, W).
        samples: how many to draw (all of them when the split is smaller).
        seed: seed of the draw (the same seed gives the same images).

    Returns:
        (min(samples, N), C, H, W) float32 array; an empty draw raises TinyfmError.

    Example:
        x = calibration_images(ctx.train, 1000)
    """
    x = torch.as_tensor(split.x)
    take = min(int(samples), len(x))
    if take < 1:
        raise TinyfmError(f"quantize: no calibration images (the training split has {len(x)}, --calib-samples "
                          f"{samples}); static int8 needs at least one to compute activation scales")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:take].sort().values
    return np.ascontiguousarray(x[idx].float().cpu().numpy())


class CalibrationBatches:
    """An ORT CalibrationDataReader (duck-typed) over images in batches; the last batch may be short.

    `len()` counts batches and `set_range(start, end)` restricts the reader to batches [start, end), the
    interface quantize_static's strided calibration uses (see _Quantizer).

    Example:
        reader = CalibrationBatches(x, batch=64)  # 70 images -> batches of 64 and 6
    """

    def __init__(self, x: np.ndarray, batch: int, input_name: str = "input") -> None:
        self.x, self.batch, self.input_name = x, batch, input_name
        self._start, self._end = 0, len(self)
        self._at = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._at >= self._end:
            return None
        xb = self.x[self._at * self.batch:(self._at + 1) * self.batch]  # (B, C, H, W), B <= batch
        self._at += 1
        return {self.input_name: xb}

    def rewind(self) -> None:
        self._at = self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self))
        self.rewind()

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item


# ---- ONNX helpers -----------------------------------------------------------------------------------------------

def _weight_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv/Gemm/MatMul nodes whose weight (second input) is an initializer: the layers int8 quantizes."""
    inits = {t.name for t in proto.graph.initializer}
    return [n for n in proto.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


def layer_name(node: onnx.NodeProto) -> str:
    """The PyTorch layer an ONNX weight node came from: its weight's name without ".weight", else its scope."""
    weight = node.input[1] if len(node.input) > 1 else ""
    if weight.endswith(".weight"):
        return weight.removesuffix(".weight")
    parts = node.name.strip("/").split("/")  # TorchScript scopes: /classifier/classifier.1/MatMul
    return parts[-2] if node.name.startswith("/") and len(parts) >= 2 else node.name


def _layers(path: Path) -> dict[str, str]:
    """{ONNX node name: PyTorch layer name} of the weight layers of an ONNX file."""
    import onnx

    return {n.name: layer_name(n) for n in _weight_nodes(onnx.load(str(path)))}


def _excluded_nodes(path: Path, patterns: list[str]) -> list[str]:
    """Node names of `path` matching any glob in `patterns` (by node name or PyTorch layer name)."""
    import onnx

    if not patterns:
        return []
    proto = onnx.load(str(path))
    torch_names = {n.name: layer_name(n) for n in _weight_nodes(proto)}
    out = []
    for p in patterns:
        hits = [n.name for n in proto.graph.node
                if fnmatch.fnmatch(n.name, p) or fnmatch.fnmatch(torch_names.get(n.name, ""), p)]
        if not hits:
            known = ", ".join(f"{v} ({k})" for k, v in torch_names.items())
            raise ConfigError(f"--exclude: {p!r} matches no ONNX node or layer (weight layers: {known})")
        out += [h for h in hits if h not in out]
    return out


def _gemm_to_matmul_(proto: onnx.ModelProto) -> int:
    """Rewrite Gemm(x, W, b) with a constant W as MatMul(x, W^T) + b, in place; returns how many were rewritten.

    quantize_dynamic only has integer kernels for MatMul (ORT's IntegerOpsRegistry has no Gemm), and the exporter
    writes nn.Linear as Gemm, so without this a dynamic int8 CNN would come out unquantized.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    nodes, done = [], 0
    for n in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if n.op_type != "Gemm" or not plain or n.input[1] not in inits or uses[n.input[1]] != 1:
            nodes.append(n)
            continue
        w = inits[n.input[1]]
        if attrs.get("transB", 0):  # Gemm keeps nn.Linear's (out, in); MatMul wants (in, out)
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
        has_bias = len(n.input) > 2 and n.input[2]
        mm_out = f"{n.output[0]}_matmul" if has_bias else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [mm_out], name=n.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=f"{n.name}_bias"))
        done += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return done


def _prepare(fp32_path: Path, dst: Path, mode: str) -> Path:
    """ORT's recommended pre-processing (shape inference + optimisation) and, for dynamic mode, Gemm -> MatMul."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tinyfm.io import working_directory

    src, out = str(Path(fp32_path).resolve()), str(Path(dst).resolve())
    # When ORT's symbolic shape inference gives up on a graph (a BERT with a dynamic sequence axis) it dumps
    # sym_shape_infer_temp.onnx + external data into the working directory: run it from a throwaway one.
    # Its warnings ("unsupported broadcast between Min(512, sequence) sequence" for BERT) are about dims it leaves
    # symbolic, which ORT resolves at load time; the file is checked by loading and scoring it anyway.
    shape_log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = shape_log.level
    shape_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix=".pre-quant-") as cwd, working_directory(cwd):
        try:
            quant_pre_process(src, out)
        except Exception:
            quant_pre_process(src, out, skip_symbolic_shape=True)  # ONNX's own shape inference only
        finally:
            shape_log.setLevel(level)
    if mode == "dynamic":
        proto = onnx.load(str(dst))
        if _gemm_to_matmul_(proto):
            del proto.graph.value_info[:]  # recorded shapes of the transposed weights are stale; ORT re-infers them
            onnx.save(proto, str(dst))
    return dst


def _int8_weights(path: Path) -> int:
    """How many weight tensors of `path` are stored as 8-bit integers (0 means nothing was quantized)."""
    import onnx

    proto = onnx.load(str(path))
    eight = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return sum(1 for t in proto.graph.initializer if t.data_type in eight and len(t.dims) >= 2)


# ---- quantizing and scoring ------------------------------------------------------------------------------------

class _Quantizer:
    """Quantizes one pre-processed fp32 ONNX file with one Config, for any set of fp32 nodes (calibrates once)."""

    def __init__(self, src: Path, calib: np.ndarray | None, cfg: Config, scratch: Path) -> None:
        self.src, self.calib, self.cfg = src, calib, cfg
        self.cache = scratch / f"{src.stem}.calibration.json"
        self.op_types = cfg.op_types or (list(DYNAMIC_OPS) if cfg.mode == "dynamic" else None)

    def __call__(self, dst: Path, exclude: list[str] = (), only: list[str] | None = None) -> Path:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        cfg = self.cfg
        common = {"op_types_to_quantize": self.op_types, "per_channel": cfg.per_channel,
                  "reduce_range": cfg.reduce_range, "weight_type": getattr(QuantType, QTYPES[cfg.weight_type]),
                  "nodes_to_quantize": list(only) if only else None, "nodes_to_exclude": list(exclude)}
        if self.cfg.mode == "dynamic":
            quantize_dynamic(str(self.src), str(dst), **common)
            return dst
        # One batch per collect call ("strided" calibration): ORT's histogram collectors (entropy, percentile)
        # np.asarray the list of per-batch outputs, which fails on a short last batch ("inhomogeneous shape");
        # per-call ranges and histograms are merged instead (the same global min/max for minmax).
        extra: dict[str, Any] = {"CalibStridedMinMax": 1}
        if cfg.calibration == "percentile":
            extra["CalibPercentile"] = cfg.percentile
        # Ranges depend on the model and data only, not on which nodes stay fp32: compute them once and reuse
        # them for every sensitivity and fallback candidate (calibration_cache_path, onnxruntime >= 1.2x).
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            extra_kw = {"calibration_cache_path": str(self.cache)}
        else:
            extra_kw = {}
        quantize_static(str(self.src), str(dst), CalibrationBatches(self.calib, cfg.calib_batch),
                        quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, QTYPES[cfg.activation_type]),
                        calibrate_method=getattr(CalibrationMethod, CALIBRATIONS[cfg.calibration]),
                        extra_options=extra, **common, **extra_kw)
        return dst


class _Scorer:
    """Logits and accuracy of ONNX files on the validation split, with ONNX Runtime (the same code for every file)."""

    def __init__(self, ctx: PassContext, variant: str) -> None:
        x = torch.as_tensor(ctx.val.x)
        self.x = np.ascontiguousarray((x.float() if x.is_floating_point() else x).cpu().numpy())  # ids stay int64
        self.y = torch.as_tensor(ctx.val.y).cpu().numpy().astype(np.int64).reshape(-1)
        if not len(self.y):
            raise TinyfmError("quantize: the accuracy gate needs a validation split, and it is empty (--val-size 0)")
        self.batch, self.variant = ctx.train_cfg.eval_batch_size, variant
        self.threads = ctx.train_cfg.threads or max(1, torch.get_num_threads())

    def logits(self, path: Path) -> np.ndarray:
        """(N, classes) logits of `path` on the validation images; a file ORT cannot load or run is a TinyfmError."""
        from tinyfm.deploy import OrtModel

        try:
            model = OrtModel(path, threads=self.threads)
            return np.concatenate([model(self.x[i:i + self.batch]) for i in range(0, len(self.x), self.batch)])
        except Exception as e:  # ORT raises its own types (NotImplemented: no kernel for ConvInteger, ...)
            raise TinyfmError(f"{self.variant}: ONNX Runtime cannot run the quantized model {path.name} "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); if it quantized Conv "
                              "dynamically (ConvInteger has no CPU kernel in many builds) leave Conv out of "
                              "--op-types or use --mode static") from e

    def accuracy(self, logits: np.ndarray) -> float:
        return float((logits.argmax(-1) == self.y).mean())


def _rel_err(logits: np.ndarray, ref: np.ndarray) -> float:
    """||logits - ref|| / ||ref||: a continuous tie-break when accuracies on a small split are equal."""
    return float(np.linalg.norm(logits - ref) / max(float(np.linalg.norm(ref)), 1e-12))


def _sensitivity(quantize: _Quantizer, score: _Scorer, ref: np.ndarray, exclude: list[str],
                 scratch: Path) -> list[dict[str, Any]]:
    """Quantize one weight layer at a time (the rest fp32) and score it; most sensitive first.

    One at a time (not all-but-one): each row then isolates that layer's own quantization error and reads as
    "quantizing only this layer costs drop_pp points". This is the sensitivity analysis behind partial
    quantization in Wu et al. 2020, "Integer Quantization for Deep Learning Inference: Principles and Empirical
    Evaluation" (rank layers by the accuracy lost when each alone is quantized, then keep the worst in fp32 one
    at a time); interactions between layers are accounted for by the fallback, which re-measures the whole
    model after each layer it keeps in fp32.
    """
    ref_acc = score.accuracy(ref)
    rows = []
    for node, layer in _layers(quantize.src).items():
        if node in exclude:
            continue
        logits = score.logits(quantize(scratch / "sensitivity.onnx", only=[node]))
        acc = score.accuracy(logits)
        rows.append({"layer": layer, "node": node, "accuracy": acc, "drop_pp": _drop_pp(ref_acc, acc),
                     "logit_rel_err": _rel_err(logits, ref)})
    return sorted(rows, key=lambda r: (-r["drop_pp"], -r["logit_rel_err"]))


def sensitivity(onnx_fp32_path: str | Path, ctx: PassContext, cfg: Config | None = None) -> list[dict[str, Any]]:
    """Per-layer int8 sensitivity of an fp32 ONNX model on the validation split, most sensitive first.

    Each weight layer (Conv/Gemm/MatMul) is quantized alone with `cfg`'s settings, the others kept fp32.

    Args:
        onnx_fp32_path: an fp32 ONNX file with input "input" (e.g. from tinyfm.deploy.export_onnx).
        ctx: the pass context (train: calibration images, val: scoring, workdir: scratch files).
        cfg: quantization settings (mode, calibration, types); default Config().

    Returns:
        [{"layer": PyTorch layer name, "node": ONNX node, "accuracy": int8 val accuracy, "drop_pp": fp32 - int8
        in percentage points, "logit_rel_err": ||Δlogits|| / ||logits||}, ...].

    Example:
        for row in sensitivity("runs/a/model.onnx", ctx, Config(calibration="entropy")):
            print(f"{row['layer']:<16} {row['drop_pp']:+.2f}")
    """
    cfg = cfg or Config()
    score = _Scorer(ctx, cfg.variant)
    with _scratch(Path(ctx.workdir)) as tmp:
        src = _prepare(Path(onnx_fp32_path), tmp / "fp32.pre.onnx", cfg.mode)
        calib = None if cfg.mode == "dynamic" else calibration_images(ctx.train, cfg.calib_samples, cfg.calib_seed)
        quantize = _Quantizer(src, calib, cfg, tmp)
        return _sensitivity(quantize, score, score.logits(Path(onnx_fp32_path)), _excluded_nodes(src, cfg.exclude),
                            tmp)


# ---- quantization-aware training --------------------------------------------------------------------------------

def _qparams(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
             symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of range [lo, hi] exactly as ORT's quant_utils.compute_scale_zp computes them."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # zero must be representable (zero padding)
    if symmetric:
        a = torch.maximum(-lo, hi)
        lo, hi = -a, a
    scale = (hi - lo) / (qmax - qmin)
    tiny = scale <= torch.finfo(torch.float32).tiny
    scale = torch.where(tiny, torch.ones_like(scale), scale)
    if symmetric:
        zp = torch.full_like(scale, round((qmin + qmax) / 2))
    else:
        zp = torch.where(tiny, torch.zeros_like(scale), torch.clamp(torch.round(qmin - lo / scale), qmin, qmax))
    return scale.float(), zp.to(torch.int32)


def _ranges(qtype: str, reduce_range: bool, symmetric: bool) -> tuple[int, int]:
    """ORT's (qmin, qmax) for a type (quant_utils.get_qmin_qmax_for_qType)."""
    if reduce_range:
        return (-64, 64) if qtype == "int8" else (0, 127)
    if qtype == "int8":
        return (-127, 127) if symmetric else (-128, 127)
    return 0, 255


class FakeQuantLayer(nn.Module):
    """A Conv/Linear with straight-through fake quantization matching ORT's static QDQ scheme.

    Weights: per output channel (or per tensor), symmetric for int8 (ORT's WeightSymmetric default), 7-bit with
    reduce_range. The input activation: per tensor, asymmetric, its range a moving average of batch min/max
    while training (torch.ao's MovingAverageMinMaxObserver, constant 0.01) and frozen in eval mode; ORT's QDQ
    quantizes exactly these tensors (a Relu/MaxPool between two layers commutes with the quantization).
    `quant_output` also fake-quantizes the output (ORT quantizes the logits of the last Gemm too).
    torch.fake_quantize_* pass gradients straight through inside the range and zero them outside (Jacob et al.
    2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference").
    """

    def __init__(self, layer: nn.Module, cfg: Config, quant_output: bool = False, momentum: float = 0.01) -> None:
        super().__init__()
        self.layer, self.per_channel, self.quant_output, self.momentum = layer, cfg.per_channel, quant_output, momentum
        self.w_sym = cfg.weight_type == "int8"
        self.w_q = _ranges(cfg.weight_type, cfg.reduce_range, self.w_sym)
        self.a_q = _ranges(cfg.activation_type, False, False)  # ORT reduces the range of weights only
        self.register_buffer("in_range", torch.zeros(2))
        self.register_buffer("out_range", torch.zeros(2))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def _weight(self) -> torch.Tensor:
        w = self.layer.weight
        flat = w.detach().flatten(1) if self.per_channel else w.detach().reshape(1, -1)  # (C_out or 1, rest)
        scale, zp = _qparams(flat.min(1).values, flat.max(1).values, *self.w_q, self.w_sym)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, *self.w_q)
        return torch.fake_quantize_per_tensor_affine(w, scale[0], zp[0], *self.w_q)

    def _act(self, x: torch.Tensor, rng: torch.Tensor, first: bool) -> torch.Tensor:
        if not self.training and not self.seen:  # no range observed yet: nothing to quantize with
            return x
        if self.training:
            with torch.no_grad():
                cur = torch.stack([x.min(), x.max()]).float()
                rng.copy_(cur if first else rng + self.momentum * (cur - rng))
        scale, zp = _qparams(rng[0], rng[1], *self.a_q, False)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, *self.a_q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = bool(self.training and not self.seen)
        x = self._act(x, self.in_range, first)
        w = self._weight()
        y = F.linear(x, w, self.layer.bias) if isinstance(self.layer, nn.Linear) else \
            self.layer._conv_forward(x, w, self.layer.bias)
        if self.quant_output:
            y = self._act(y, self.out_range, first)
        if self.training:
            self.seen.fill_(True)
        return y


def _qat_layers(model: nn.Module, cfg: Config, excluded: list[str]) -> list[str]:
    """Qualified names of the Conv/Linear layers QAT wraps (the ones the int8 file will quantize)."""
    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [n for n, m in model.named_modules() if isinstance(m, types)
            and not any(fnmatch.fnmatch(n, p) for p in [*cfg.exclude, *excluded])]


def qat_finetune(model: nn.Module, cfg: Config, ctx: PassContext, excluded: list[str] = ()) -> nn.Module:
    """Fine-tune a copy of `model` with fake quantization for cfg.qat_epochs; returns it with plain layers again.

    The returned fp32 weights have learned to tolerate int8 rounding; they are then quantized statically by ORT
    (re-calibrated), so the deployed file uses the same QDQ format and kernels as int8-static. (Exporting the
    fake-quant graph as QDQ would keep fp32 weights behind QuantizeLinear nodes: a larger file, and a second
    export path to maintain.)

    Example:
        tuned = qat_finetune(model, Config(mode="qat", qat_epochs=1), ctx)
    """
    from tinyfm.compress.base import set_submodule_

    model = clone(model)
    names = _qat_layers(model, cfg, list(excluded))
    for i, name in enumerate(names):
        set_submodule_(model, name, FakeQuantLayer(model.get_submodule(name), cfg, quant_output=i == len(names) - 1))
    finetune(model, ctx, cfg.qat_epochs, lr_scale=cfg.qat_lr_scale)
    for name in names:
        set_submodule_(model, name, model.get_submodule(name).layer)
    return model.eval()


# ---- the pass ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _scratch(workdir: Path) -> Iterator[Path]:
    """A scratch folder inside `workdir`, also made the default temp dir while the pass runs, then removed.

    ORT writes its augmented calibration model into tempfile.TemporaryDirectory(); pointing tempfile.tempdir
    (the documented override) here keeps the promise that a pass writes only under ctx.workdir.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=workdir)).resolve()  # absolute: _prepare changes cwd
    old, tempfile.tempdir = tempfile.tempdir, str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = old
        shutil.rmtree(tmp, ignore_errors=True)


def _export(model: nn.Module, ctx: PassContext, path: Path, cfg: Config) -> Path:
    from tinyfm.deploy import export_onnx
    from tinyfm.models.registry import example_input

    return export_onnx(model, example_input(model, ctx.input_shape), path, opset=cfg.opset)


def _fp32_onnx(model: nn.Module, ctx: PassContext, cfg: Config, workdir: Path) -> Path:
    """The fp32 ONNX file to quantize: cfg.fp32_onnx after checking it is this model, else a fresh export."""
    if cfg.fp32_onnx is None:
        return _export(model, ctx, workdir / "fp32.onnx", cfg)
    from tinyfm.deploy import check_parity

    path = Path(cfg.fp32_onnx)
    if not path.is_file():
        raise ConfigError(f"--fp32-onnx: {path} not found")
    stats = check_parity(model, path, torch.as_tensor(ctx.val.x)[:32])
    if not stats["max_abs_diff"] <= 1e-3:
        raise ConfigError(f"--fp32-onnx: {path} is not this model (max |Δlogit| {stats['max_abs_diff']:.3g} on "
                          "32 validation images)")
    return path


class _Run:
    """One quantization of one fp32 ONNX file: candidates, scores and the fallback, inside a scratch folder."""

    def __init__(self, fp32_path: Path, cfg: Config, ctx: PassContext, score: _Scorer, scratch: Path) -> None:
        self.cfg, self.score, self.scratch = cfg, score, scratch
        src = _prepare(fp32_path, scratch / f"{fp32_path.stem}.pre.onnx", cfg.mode)
        calib = None if cfg.mode == "dynamic" else calibration_images(ctx.train, cfg.calib_samples, cfg.calib_seed)
        self.quantize = _Quantizer(src, calib, cfg, scratch)
        self.layers = _layers(src)
        self.excluded = _excluded_nodes(src, cfg.exclude)
        self.candidate = scratch / "candidate.onnx"
        self.accuracy = self._measure()
        self.table: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def _measure(self) -> float:
        self.quantize(self.candidate, exclude=self.excluded)
        if not _int8_weights(self.candidate):
            raise TinyfmError(f"{self.cfg.variant}: no weight layer was quantized (op types "
                              f"{self.quantize.op_types or 'all'}, kept fp32: {self.excluded or 'none'})")
        self.logits = self.score.logits(self.candidate)  # kept: compacting the final file is checked against them
        return self.score.accuracy(self.logits)

    def drop(self, ref_acc: float) -> float:
        return _drop_pp(ref_acc, self.accuracy)

    def measure_sensitivity(self, ref: np.ndarray) -> None:
        if not self.table:
            self.table = _sensitivity(self.quantize, self.score, ref, self.excluded, self.scratch)

    def fallback(self, ref: np.ndarray, ref_acc: float) -> None:
        """Keep the most sensitive layers in fp32, one by one, until the drop fits max_drop (or the limit)."""
        self.measure_sensitivity(ref)
        limit = self.cfg.fallback_limit if self.cfg.fallback_limit is not None else max(1, len(self.layers) // 2)
        for row in self.table[:limit]:
            if self.drop(ref_acc) <= self.cfg.max_drop:
                break
            self.excluded.append(row["node"])
            self.accuracy = self._measure()
            self.steps.append({"kept_fp32": row["layer"], "accuracy": self.accuracy, "drop_pp": self.drop(ref_acc)})


def _qat(model: nn.Module, first: _Run, cfg: Config, ctx: PassContext, score: _Scorer,
         scratch: Path) -> tuple[nn.Module, _Run]:
    """Fine-tune with fake quantization, export the tuned fp32 model and quantize it statically (re-calibrated)."""
    layers = [first.layers[n] for n in first.excluded if n in first.layers]
    tuned = qat_finetune(model, cfg, ctx, excluded=layers)
    path = _export(tuned, ctx, scratch / "qat.fp32.onnx", cfg)
    return tuned, _Run(path, cfg, ctx, score, scratch)


def _compact(path: Path, score: _Scorer, before: np.ndarray) -> None:
    """Rewrite `path` with short tensor names if its validation logits stay exactly `before`; else leave it."""
    import onnx

    from tinyfm.deploy.onnx import compact_names

    proto = onnx.load(str(path))
    if not compact_names(proto):
        return
    tmp = path.with_name(f"{path.stem}.compact.onnx")
    onnx.save(proto, str(tmp))
    if np.array_equal(score.logits(tmp), before):
        tmp.replace(path)
    else:  # never expected (the graph is the same); keep the file that was scored
        tmp.unlink()


def _record(path: Path, acc: float, params: int, macs: int) -> dict[str, Any]:
    from tinyfm.measure import file_size

    return {"params": params, "macs": macs, "val_accuracy": acc, "onnx_bytes": file_size(path)}


def apply(model: nn.Module, config: Config, ctx: PassContext) -> PassResult:
    """Quantize `model` to an int8 ONNX file in ctx.workdir that passes the accuracy gate.

    Steps: export fp32 ONNX (or reuse cfg.fp32_onnx) -> quant_pre_process -> quantize (static QDQ with calibration,
    or dynamic) -> score on ctx.val with ORT -> mode qat: fine-tune with fake quantization if over max_drop ->
    fallback: keep the most sensitive layers fp32 until within max_drop -> gate.

    Args:
        model: the trained fp32 model (not modified).
        config: quantization settings.
        ctx: train (calibration, QAT), val (gate), workdir (every file written), input_shape.

    Returns:
        PassResult with name = config.variant, model = the fp32 model the int8 file was quantized from (a copy of
        `model`; for int8-qat the fake-quant fine-tuned weights), onnx_path = workdir/<variant>.onnx, transform
        None, changes (mode, calibration, types, excluded layers, sensitivity table, fallback steps, qat), before/
        after = fp32 ONNX / int8 ONNX {params, macs, val_accuracy, onnx_bytes}.

    Raises:
        AccuracyGateError: the final int8 model still drops more than max_drop (the refused file is left at
            workdir/<variant>.rejected.onnx).

    Example:
        res = apply(model, Config(mode="static", calibration="entropy"), ctx)
        print(res.after["val_accuracy"] - res.before["val_accuracy"], res.changes["excluded"])
    """
    from tinyfm.measure import count_macs, count_params

    cfg, workdir = config, Path(ctx.workdir)
    fp32 = clone(model)
    params, macs = count_params(fp32), count_macs(fp32, ctx.input_shape)
    score = _Scorer(ctx, cfg.variant)
    with _scratch(workdir) as tmp:
        fp32_path = _fp32_onnx(fp32, ctx, cfg, workdir)
        ref = score.logits(fp32_path)
        ref_acc = score.accuracy(ref)
        run = _Run(fp32_path, cfg, ctx, score, tmp)
        qat: dict[str, Any] = {"ran": False}
        if cfg.mode == "qat" and (cfg.qat_always or run.drop(ref_acc) > cfg.max_drop):
            qat = {"ran": True, "epochs": cfg.qat_epochs, "ptq_accuracy": run.accuracy,
                   "ptq_drop_pp": run.drop(ref_acc)}
            fp32, run = _qat(fp32, run, cfg, ctx, score, tmp)
        if cfg.fallback and run.drop(ref_acc) > cfg.max_drop:
            run.fallback(ref, ref_acc)
        if cfg.report_sensitivity:
            run.measure_sensitivity(ref)
        excluded = [run.layers.get(n, n) for n in run.excluded]
        if run.drop(ref_acc) > cfg.max_drop:
            rejected = workdir / f"{cfg.variant}.rejected.onnx"
            shutil.move(str(run.candidate), rejected)
            raise AccuracyGateError(cfg.variant, ref_acc, run.accuracy, cfg.max_drop, excluded, run.table, rejected)
        if cfg.compact_names:
            _compact(run.candidate, score, run.logits)
        final = workdir / f"{cfg.variant}.onnx"
        shutil.move(str(run.candidate), final)  # same filesystem (scratch is inside workdir): an atomic rename
    static = cfg.mode != "dynamic"  # dynamic int8 has no calibration: activations are scaled per batch at run time
    changes = {"mode": cfg.mode, "calibration": cfg.calibration if static else None,
               "calib_samples": len(run.quantize.calib) if static else 0,
               "activation_type": cfg.activation_type if static else "uint8",  # DynamicQuantizeLinear is uint8
               "weight_type": cfg.weight_type, "per_channel": cfg.per_channel, "reduce_range": cfg.reduce_range,
               "op_types": run.quantize.op_types, "quantized_weights": _int8_weights(final),
               "excluded": excluded, "excluded_nodes": list(run.excluded), "sensitivity": run.table,
               "fallback_steps": run.steps, "qat": qat, "fp32_onnx": str(fp32_path)}
    before = _record(fp32_path, ref_acc, params, macs)
    after = {**_record(final, run.accuracy, params, macs), "drop_pp": run.drop(ref_acc)}
    after["size_ratio"] = after["onnx_bytes"] / before["onnx_bytes"]
    return PassResult(name=cfg.variant, model=fp32, config=cfg, transform=None, onnx_path=final,
                      changes=changes, before=before, after=after)
