"""Export a PyTorch model to one self-contained ONNX file and check it against ONNX Runtime.

The torch.export-based exporter (``dynamo=True``, needs onnxscript) is tried first; if it raises, or produces a
graph whose batch axis is not symbolic, the TorchScript exporter (``dynamo=False``) is used instead. Which one
wrote the file is recorded in the model's metadata under ``tinyfm.exporter`` ("dynamo" or "torchscript").

Example:
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), "runs/a/model.onnx")
    stats = check_parity(model, path, x_test[:1000])
    assert stats["max_abs_diff"] <= 1e-4
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tinyfm.errors import TinyfmError
from tinyfm.io import atomic_path

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER_KEY = "tinyfm.exporter"

# Axes as torch.onnx.export's legacy `dynamic_axes` takes them: {tensor name: {axis: symbol} or [axes]}.
DynamicAxes = Mapping[str, Mapping[int, str] | Sequence[int]]


def _default_dynamic_axes(example_input: torch.Tensor | None = None) -> dict[str, dict[int, str]]:
    """Batch axis dynamic; for token ids (an integer (B, L) input) the sequence axis too."""
    if example_input is not None and example_input.dim() == 2 and not example_input.is_floating_point():
        return {INPUT_NAME: {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}}
    return {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}


def _axes_dict(axes: Mapping[int, str] | Sequence[int], name: str) -> dict[int, str]:
    """Normalise one tensor's entry to {axis: symbol}; list entries get symbols like the legacy exporter's."""
    if isinstance(axes, Mapping):
        return {int(a): str(s) for a, s in axes.items()}
    return {int(a): f"{name}_dim_{a}" for a in axes}


@contextlib.contextmanager
def _training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put `model` (and its submodules) in train/eval mode for the block, then restore every module's flag."""
    before = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in before.items():
            m.training = flag


_NOISE = (".*legacy TorchScript-based ONNX export", ".*The feature will be removed", ".*LeafSpec.*is deprecated",
          ".*'dynamic_axes' is not recommended", ".*from_dynamic_axes_to_dynamic_shapes is deprecated",
          ".*_check_is_size will be removed",  # torch's own decompositions of GRU/LSTM call it
          r".*_flat_weights\[\d+\].* were assigned during export")  # nn.RNNBase re-assigns its weight list

_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "torch.fx.experimental.symbolic_shapes")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known noise (deprecations, 'torchvision is not installed'); real errors still raise."""
    # torch.fx logs a failed dynamo trace with whole graph dumps; the fallback warning already says why.
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        # Only messages known to be noise: a TracerWarning (the trace may not generalise) must still show.
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: Path, opset: int, axes: dict[str, dict[int, str]]) -> None:
    # dynamic_shapes is positional (a tuple matching forward's args) so it works whatever forward's argument
    # is called; the output's dynamic axes follow from the input's.
    dims = {a: torch.export.Dim(re.sub(r"\W", "_", s), min=1) for a, s in axes.get(INPUT_NAME, {}).items()}
    # torch.export specialises dimensions of size 0 or 1 ("0/1 specialization"), and a channels_last model traced
    # at batch 1 can fail on it ("Invalid ranges"): trace each dynamic axis at size >= 2 (the example repeated).
    for a in dims:
        if x.shape[a] < 2:
            x = torch.cat([x, x], dim=a)
    # On failure torch.export prints the partial FX graph to stderr (pages of it); the fallback warning says
    # why it failed, so that dump is dropped. On success whatever was written is passed on.
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        torch.onnx.export(model, (x,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=True, dynamic_shapes=(dims,), external_data=False,
                          verbose=False)
    sys.stderr.write(captured.getvalue())


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, opset: int,
                        axes: dict[str, dict[int, str]]) -> None:
    # Below 2 GB the TorchScript exporter embeds the weights in the one file.
    torch.onnx.export(model, (x,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True)


def _static_axes(proto: onnx.ModelProto, axes: dict[str, dict[int, str]]) -> list[str]:
    """The requested dynamic axes that came out fixed in the graph, e.g. ['input[0]=1']."""
    values = list(proto.graph.input) + list(proto.graph.output)
    shapes = {v.name: v.type.tensor_type.shape.dim for v in values}
    bad = []
    for name, wanted in axes.items():
        dims = shapes.get(name)
        for a in wanted:
            if dims is None or a >= len(dims) or dims[a].HasField("dim_value"):
                bad.append(f"{name}[{a}]" + (f"={dims[a].dim_value}" if dims and a < len(dims) else " missing"))
    return bad


def _finish(tmp: Path, exporter: str, axes: dict[str, dict[int, str]]) -> list[str]:
    """Check the written file, tag it with the exporter; return the axes that are not dynamic (empty = good)."""
    import onnx

    proto = onnx.load(str(tmp), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:  # the file would point at data beside a temporary name
        raise TinyfmError(f"{tmp}: ONNX export wrote {len(external)} weights as external data; expected one file")
    bad = _static_axes(proto, axes)
    if bad:
        return bad
    kept = [p for p in proto.metadata_props if p.key != EXPORTER_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=EXPORTER_KEY, value=exporter)
    _strip_debug_info(proto.graph)
    relu_before_pool(proto.graph)
    onnx.save(proto, str(tmp))
    onnx.checker.check_model(str(tmp))
    return []


def relu_before_pool(graph) -> int:
    """Rewrite each MaxPool -> Relu pair into Relu -> MaxPool; return how many were swapped.

    The two orders compute the same function (ReLU is monotone: max(relu(a), relu(b)) == relu(max(a, b))).
    tinyfm's seed CNN pools first because training is faster that way (ReLU's backward touches a quarter of the
    values); inference wants the ReLU next to its convolution, the pattern ONNX Runtime fuses into one kernel (fp32
    FusedConv, and in a QDQ int8 graph a QLinearConv whose output range absorbs the ReLU, with no float detour).
    Only a MaxPool whose single output feeds that Relu alone is touched; the two nodes trade places in the node
    list, so the graph stays topologically sorted.
    """
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    position = {out: i for i, node in enumerate(graph.node) for out in node.output}
    nodes, swapped = list(graph.node), []
    for j, relu in enumerate(nodes):
        i = position.get(relu.input[0]) if relu.op_type == "Relu" and relu.input else None
        pool = nodes[i] if i is not None else None
        if pool is None or pool.op_type != "MaxPool" or len(pool.output) != 1 or consumers[pool.output[0]] != 1:
            continue
        x, mid, y = pool.input[0], pool.output[0], relu.output[0]
        relu.input[0], relu.output[0], pool.input[0], pool.output[0] = x, mid, mid, y
        nodes[i], nodes[j] = nodes[j], nodes[i]
        swapped.append(mid)  # `mid` now holds the un-pooled ReLU output: its recorded shape is stale
    if swapped:
        stale = set(swapped)
        kept = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        del graph.node[:]
        graph.node.extend(nodes)
    return len(swapped)


def _strip_debug_info(graph) -> None:
    """Drop the exporter's per-node debug records (FX node, Python stack trace with local paths, name scopes).

    They are 4% of the seed CNN's file, 10% of its int8 form, and would ship the build machine's paths
    with every deployed model; the graph itself is untouched.
    """
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                _strip_debug_info(attr.g)
            for g in attr.graphs:
                _strip_debug_info(g)


def _short_name(i: int) -> str:
    """0 -> "t0", 35 -> "tz", 36 -> "t10": base-36 names, unique and short."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return "t" + out


def compact_names(proto: onnx.ModelProto) -> bool:
    """Shrink `proto` in place without changing what it computes: every tensor but the graph's inputs and outputs
    gets a short name ("t0", "t1", ...), node names and recorded intermediate shapes (value_info) are dropped, and
    so are opset imports no node uses. Returns False (and changes nothing) for graphs with subgraphs (If/Loop),
    whose inner nodes may name outer tensors.

    The names of a quantized QDQ graph ("features.3.weight_DequantizeLinear_Output", ...) are 5% of a 100 KB
    int8 file; ORT fuses Q/DQ pairs by pattern, never by name, so the renamed file runs the same kernels.

    Example:
        proto = onnx.load(path); compact_names(proto); onnx.save(proto, path)
    """
    graph = proto.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        return False
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, _short_name(len(names)))

    for t in graph.initializer:
        t.name = short(t.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    used = {n.domain for n in graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return True


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _describe(e: BaseException) -> str:
    """The error and its root cause, one line each: torch.onnx wraps the real reason (e.g. data-dependent flow)."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    return _first_line(e) if root is e else f"{_first_line(e)} (cause: {_first_line(root)})"


def _try_exporters(model: nn.Module, x: torch.Tensor, tmp: Path, opset: int,
                   axes: dict[str, dict[int, str]]) -> str:
    """Run dynamo then TorchScript until one gives a valid, dynamic file; return which one did."""
    failures = []
    for exporter, fn in (("dynamo", _export_dynamo), ("torchscript", _export_torchscript)):
        try:
            with _quiet_exporter():
                fn(model, x, tmp, opset, axes)
            bad = _finish(tmp, exporter, axes)
        except TinyfmError:
            raise
        except Exception as e:  # any exporter failure means: try the next exporter
            failures.append(f"{exporter}: {_describe(e)}")
            continue
        if not bad:
            if failures:
                warnings.warn(f"ONNX export fell back to {exporter} ({'; '.join(failures)})", stacklevel=3)
            return exporter
        failures.append(f"{exporter}: axes not dynamic: {', '.join(bad)}")
    raise TinyfmError("ONNX export failed with every exporter: " + "; ".join(failures))


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = 18,
                dynamic_axes: DynamicAxes | None = None) -> Path:
    """Export `model` to a single ONNX file with input "input", output "logits" and a dynamic batch axis.

    The model is exported in eval mode; its previous train/eval flags are restored afterwards. The file is
    written atomically and passes onnx.checker.check_model.

    Args:
        model: the module to export (its forward takes one tensor and returns logits).
        example_input: an input batch of any size (batch 1 is fine) on the model's device.
        path: destination .onnx file; parent folders are created.
        opset: ONNX opset version (ExportConfig.opset).
        dynamic_axes: legacy-style {tensor name: {axis: symbol}} for "input"/"logits"; default: axis 0 of both
            is "batch", and for token ids (an integer (B, L) input) axis 1 of the input is "sequence".

    Returns:
        The path written.

    Example:
        export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "model.onnx")
    """
    # {} means: all axes fixed
    requested = _default_dynamic_axes(example_input) if dynamic_axes is None else dynamic_axes
    axes = {n: _axes_dict(a, n) for n, a in requested.items()}
    path = Path(path)
    with _training_mode(model, False), torch.no_grad(), atomic_path(path) as tmp:
        _try_exporters(model, example_input, tmp, opset, axes)
    return path


def exporter_used(path: str | Path) -> str | None:
    """Which exporter wrote `path` ("dynamo" or "torchscript"), from its metadata; None if not tinyfm's."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in proto.metadata_props if p.key == EXPORTER_KEY), None)


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _torch_logits(model: nn.Module, xb: torch.Tensor) -> np.ndarray:
    return model(xb.to(_model_device(model))).float().cpu().numpy()


def check_parity(model: nn.Module, onnx_path: str | Path, x: torch.Tensor | np.ndarray,
                 batch_size: int = 256) -> dict[str, Any]:
    """Compare the logits of `model` (PyTorch, eval mode) and the ONNX file (ONNX Runtime, CPU) on `x`.

    Args:
        model: the module that was exported; its train/eval flags are restored afterwards.
        onnx_path: the exported file.
        x: inputs (N, ...), e.g. ExportConfig.parity_samples test images.
        batch_size: inputs per forward pass.

    Returns:
        {"n": inputs compared, "max_abs_diff": largest |Δlogit|, "argmax_agreement": fraction of equal argmax}.

    Example:
        stats = check_parity(model, "model.onnx", x_test[:1000])
        assert stats["max_abs_diff"] <= cfg.export.atol
    """
    from tinyfm.deploy.runtime import OrtModel

    ort_model = OrtModel(onnx_path, threads=max(1, torch.get_num_threads()))
    xt = torch.as_tensor(x)
    diffs, agree = [0.0], 0
    with _training_mode(model, False), torch.inference_mode():
        for start in range(0, len(xt), batch_size):
            xb = xt[start:start + batch_size]
            ref, got = _torch_logits(model, xb), ort_model(xb.cpu().numpy())
            diffs.append(float(np.abs(ref - got).max(initial=0.0)))
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
    n = len(xt)
    # np.max, not max(): a NaN logit must surface as NaN, not be skipped by a comparison
    return {"n": n, "max_abs_diff": float(np.max(diffs)), "argmax_agreement": agree / n if n else float("nan")}
