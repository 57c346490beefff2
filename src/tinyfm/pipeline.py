"""The main job: one recipe from real data to a report.

Stages (each reads and writes the run directory): data -> train -> test evaluation -> ONNX export and
parity -> interleaved measurement of every variant -> results.json -> report.md/html + plots.
`tinyfm run` calls :func:`run`; the other commands call the single stages.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyfm.config import RunConfig
from tinyfm.errors import TinyfmError
from tinyfm.io import read_json, write_json
from tinyfm.rundir import staged_run_dir

# --quick: a subset and short schedule for a one-minute demo (same code path as the full run).
QUICK_OVERRIDES = {"data.train_subset": 10000, "data.val_size": 1000, "data.test_subset": 2000,
                   "train.epochs": 3, "measure.repeats": 2, "measure.latency_iters": 50,
                   "measure.throughput_iters": 3, "measure.warmup": 5}


@dataclass
class Variant:
    """One deployable form of the trained model, measured with the same code as every other."""

    name: str
    runtime: str  # "torch" | "onnxruntime"
    predict: Callable[[Any], Any]  # batch -> logits (nn.Module or OrtModel)
    file: Path
    params: int
    macs: int
    numpy_input: bool
    notes: str = ""


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(msg)


def train_stage(cfg: RunConfig, run_dir: Path | None, data, progress: bool = True,
                resume: bool = False) -> tuple[nn.Module, Any]:
    """Build the registry model, train it (weights and metrics.jsonl land in run_dir) and return it with the result."""
    from tinyfm.models import create_model
    from tinyfm.train import fit

    kwargs = {"num_classes": data.num_classes, "in_channels": data.input_shape[0], **cfg.model.kwargs}
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model.name, **kwargs)
    spec = {"name": cfg.model.name, "kwargs": kwargs, "input_shape": list(data.input_shape),
            "class_names": list(data.class_names)}
    result = fit(model, data.train, data.val, cfg.train, run_dir=run_dir, spec=spec, progress=progress,
                 resume=resume, augment=cfg.data.augment)
    return model.cpu().eval(), result


def export_stage(model: nn.Module, cfg: RunConfig, run_dir: Path, data) -> dict[str, Any]:
    """Export model.onnx (dynamic batch) and compare it with PyTorch on cfg.export.parity_samples test images."""
    from tinyfm.deploy import check_parity, export_onnx

    path = export_onnx(model, data.test.x[:1], run_dir / "model.onnx", opset=cfg.export.opset)
    parity = check_parity(model, path, data.test.x[: cfg.export.parity_samples])
    parity["atol"] = cfg.export.atol
    parity["passed"] = bool(parity["max_abs_diff"] <= cfg.export.atol and parity["argmax_agreement"] >= 0.999)
    return parity


def base_variants(model: nn.Module, run_dir: Path, data, threads: int) -> list[Variant]:
    """fp32 PyTorch and fp32 ONNX Runtime forms of the trained model."""
    from tinyfm.deploy import OrtModel
    from tinyfm.measure import count_macs, count_params

    params, macs = count_params(model), count_macs(model, tuple(data.input_shape))
    return [Variant("fp32-torch", "torch", model, run_dir / "model.safetensors", params, macs, numpy_input=False),
            Variant("fp32-onnx", "onnxruntime", OrtModel(run_dir / "model.onnx", threads=threads),
                    run_dir / "model.onnx", params, macs, numpy_input=True)]


def measure_stage(variants: list[Variant], cfg: RunConfig, data) -> list[dict[str, Any]]:
    """Test accuracy, size and (interleaved, repeated) latency/throughput of every variant: results.json rows."""
    from tinyfm.measure import Timed, evaluate, file_size, measure_variants

    x1, xb = data.test.x[:1], data.test.x[: cfg.measure.throughput_batch]
    if len(xb) < cfg.measure.throughput_batch:  # a small test subset: repeat it up to the batch size
        xb = xb.repeat((cfg.measure.throughput_batch + len(xb) - 1) // len(xb), 1, 1, 1)[: cfg.measure.throughput_batch]
    scores = {v.name: evaluate(v.predict, data.test.x, data.test.y, cfg.train.eval_batch_size,
                               data.num_classes) for v in variants}
    timed = [Timed(v.name, v.predict, x1.numpy() if v.numpy_input else x1, xb.numpy() if v.numpy_input else xb)
             for v in variants]
    times = measure_variants(timed, cfg.measure)
    rows = []
    for v in variants:
        t = times[v.name]
        rows.append({"name": v.name, "runtime": v.runtime, "test_accuracy": scores[v.name]["accuracy"],
                     "params": v.params, "macs": v.macs, "size_bytes": file_size(v.file), "file": v.file.name,
                     "latency_ms_p50": t["p50_ms"], "latency_ms_p95": t["p95_ms"],
                     "throughput_per_s": t["throughput_sps"], "threads": t["threads"],
                     "throughput_batch": t["throughput_batch"], "repeats": t["repeats"], "notes": v.notes,
                     "confusion": scores[v.name]["confusion"]})
    return rows


def results_record(cfg: RunConfig, data, train_result, parity: dict[str, Any] | None,
                   rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The results.json document (the report and the terminal table read only this)."""
    from tinyfm.measure import machine_info

    confusion = rows[0].pop("confusion") if rows else None
    for r in rows[1:]:
        r.pop("confusion", None)
    return {"run": cfg.name, "task": cfg.task, "dataset": cfg.data.dataset, "model": cfg.model.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {**machine_info(), "threads": cfg.measure.threads},
            "data": {"source": data.source, "train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "class_names": list(data.class_names),
            "train": _train_summary(train_result),
            "parity": parity, "confusion_matrix": confusion, "baseline": "fp32-onnx", "variants": rows}


def _train_summary(r) -> dict[str, Any]:
    if r is None:
        return {}
    return {"epochs": len(r.history), "seconds": r.seconds, "best_epoch": r.best_epoch,
            "best_val_accuracy": r.best_val_accuracy, "device": r.device, "amp": r.amp, "world_size": r.world_size}


def run(cfg: RunConfig, out: str | Path | None = None, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """The main job: train, evaluate, export, measure and report into `out` (default runs/<name>).

    The run is built in a staging directory and replaces `out` only when every stage succeeded.

    Returns:
        (run directory, the results.json document).
    """
    from tinyfm.data import load_data
    from tinyfm.report import write_report

    out = Path(out or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    data = load_data(cfg.data)  # before the staging dir: bad data leaves nothing behind
    _log(f"[bold]tinyfm run[/] {cfg.name}: {cfg.model.name} on {cfg.data.dataset} "
         f"(train {len(data.train)}, val {len(data.val)}, test {len(data.test)}) from {data.source}", quiet)
    with staged_run_dir(out) as stage:
        write_json(stage / "config.json", cfg.to_dict())
        model, result = train_stage(cfg, stage, data, progress=not quiet)
        _log("exporting ONNX and checking parity", quiet)
        parity = export_stage(model, cfg, stage, data)
        if not parity["passed"]:
            raise TinyfmError(f"ONNX parity failed: max |Δlogit| {parity['max_abs_diff']:.2e} (allowed "
                              f"{cfg.export.atol:.0e}), argmax agreement {parity['argmax_agreement']:.4f}")
        _log(f"measuring variants ({cfg.measure.repeats} interleaved rounds, {cfg.measure.threads} threads)", quiet)
        rows = measure_stage(base_variants(model, stage, data, cfg.measure.threads), cfg, data)
        results = results_record(cfg, data, result, parity, rows)
        results["seconds_total"] = time.perf_counter() - t0
        write_json(stage / "results.json", results)
        write_report(stage)
    return out, read_json(out / "results.json")


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig saved in a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TinyfmError(f"{run_dir}: run directory not found")
    return RunConfig.from_dict(read_json(run_dir / "config.json"))


def with_data_dir(cfg: RunConfig, data_dir: str | None) -> RunConfig:
    """A copy of cfg reading its data from `data_dir` (when given)."""
    if data_dir is None:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=data_dir))


def train_only(cfg: RunConfig, out: str | Path | None, quiet: bool = False, resume: bool = False) -> Path | None:
    """`tinyfm train`: train and evaluate on the test split; results.json holds the fp32-torch row (no timings).

    With `resume`, `out` is the existing run directory and training continues there in place.
    Returns the run directory on the process that wrote it (rank 0), None on the other ranks.
    """
    from tinyfm.data import load_data
    from tinyfm.measure import count_macs, count_params, evaluate, file_size
    from tinyfm.train.distributed import DistContext, shutdown

    out = Path(out or Path("runs") / cfg.name)
    data = load_data(cfg.data)
    ctx = _dist_context()
    with _run_dir_for(out, ctx, resume) as stage:
        if ctx.is_main and not resume:
            write_json(stage / "config.json", cfg.to_dict())
        model, result = train_stage(cfg, stage, data, progress=not quiet, resume=resume)
        if ctx.is_main:
            score = evaluate(model, data.test.x, data.test.y, cfg.train.eval_batch_size, data.num_classes)
            row = {"name": "fp32-torch", "runtime": "torch", "test_accuracy": score["accuracy"],
                   "params": count_params(model), "macs": count_macs(model, tuple(data.input_shape)),
                   "size_bytes": file_size(stage / "model.safetensors"), "file": "model.safetensors",
                   "confusion": score["confusion"]}
            results = results_record(cfg, data, result, None, [row])
            results["baseline"] = "fp32-torch"
            write_json(stage / "results.json", results)
    shutdown(ctx if isinstance(ctx, DistContext) else DistContext())
    return out if ctx.is_main else None


def _dist_context():
    import os

    from tinyfm.train.distributed import DistContext

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return DistContext(rank=rank, world_size=world)


def _run_dir_for(out: Path, ctx, resume: bool):
    """Staged replacement on rank 0; the other ranks write nothing (a null context yielding None)."""
    import contextlib

    if resume:
        return contextlib.nullcontext(out)
    if not ctx.is_main:
        return contextlib.nullcontext(None)
    return staged_run_dir(out)


def _load_for_run(run_dir: str | Path, data_dir: str | None):
    from tinyfm.data import load_data

    cfg = with_data_dir(load_run_config(run_dir), data_dir)
    return cfg, load_data(cfg.data)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, onnx: bool = False) -> dict[str, Any]:
    """`tinyfm eval`: test accuracy of the run's saved model (PyTorch weights or model.onnx)."""
    from tinyfm.deploy import OrtModel
    from tinyfm.measure import evaluate
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    cfg, data = _load_for_run(run_dir, data_dir)
    model = OrtModel(run_dir / "model.onnx", threads=cfg.measure.threads) if onnx else load_model(run_dir)
    x = data.test.x.numpy() if onnx else data.test.x
    score = evaluate(model, x, data.test.y, cfg.train.eval_batch_size, data.num_classes)
    return {"model": cfg.model.name, "runtime": "onnxruntime" if onnx else "torch", **score}


def export_run(run_dir: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """`tinyfm export`: write model.onnx from the run's weights and check parity on test images."""
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    cfg, data = _load_for_run(run_dir, data_dir)
    return export_stage(load_model(run_dir), cfg, run_dir, data)


def predict_files(run_dir: str | Path, paths: list[Path], top_k: int = 3, invert: bool = False,
                  onnx: bool = False) -> list[tuple[Path, list[tuple[str, float]]]]:
    """`tinyfm predict`: top-k (class name, probability) for each image file, validated against the model's input."""
    import numpy as np

    from tinyfm.data.images import load_image
    from tinyfm.deploy import OrtModel
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    names = results.get("class_names") or []
    shape = tuple(read_json(run_dir / "model.json").get("input_shape", (1, 28, 28)))
    batch = np.stack([load_image(p, shape, invert=invert) for p in paths])  # validate all before predicting
    if onnx:
        logits = OrtModel(run_dir / "model.onnx")(batch)
    else:
        with torch.inference_mode():
            logits = load_model(run_dir)(torch.from_numpy(batch)).numpy()
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=1)
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    label = (lambda i: names[i] if i < len(names) else str(i))  # noqa: E731
    return [(p, [(label(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)])
            for p, vals, idx in zip(paths, top.values, top.indices, strict=True)]
