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
from tinyfm.errors import ConfigError, DataError, TinyfmError
from tinyfm.io import read_json, write_json
from tinyfm.rundir import staged_run_dir

# --quick: a subset and short schedule for a one-minute demo (same code path as the full run).
QUICK_OVERRIDES = {"data.train_subset": 10000, "data.val_size": 1000, "data.test_subset": 2000,
                   "train.epochs": 3, "measure.repeats": 2, "measure.latency_iters": 50,
                   "measure.throughput_iters": 3, "measure.warmup": 5}
# The text corpora are smaller (12,808 reviews) and MiniLM is slow on a CPU: a smaller subset and one epoch.
QUICK_TEXT_OVERRIDES = {**QUICK_OVERRIDES, "data.train_subset": 2000, "data.val_size": 500, "data.test_subset": 1000,
                        "train.epochs": 1}


def quick_overrides(task: str) -> dict[str, Any]:
    """The --quick settings for a task (a subset and a short schedule; the same code path as the full run)."""
    return dict(QUICK_TEXT_OVERRIDES if task == "text-classification" else QUICK_OVERRIDES)


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
    build_seconds: float | None = None  # time the compression passes took (None for the fp32 forms)
    test_x: Any = None  # its own encoding of the test split (a text student with another tokenizer); None = the run's
    val_x: Any = None  # likewise for the validation split (accuracy control)


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(msg)


def load_stage(cfg: RunConfig, run_dir: str | Path | None = None):
    """The run's data: images as loaded; texts encoded for cfg.model (with the tokenizer saved in `run_dir`, if any).

    Example:
        data = load_stage(load_recipe("reviews"))  # WordPiece ids for minilm-classifier, word ids for seed-text
    """
    from tinyfm.data import load_data

    data = load_data(cfg.data)
    if not hasattr(data, "for_model"):  # not text
        return data
    if run_dir is not None and (Path(run_dir) / "tokenizer.json").is_file():
        from tinyfm.data.text import load_tokenizer

        return data.with_tokenizer(load_tokenizer(run_dir))
    return data.for_model(cfg.model.name)


def train_stage(cfg: RunConfig, run_dir: Path | None, data, progress: bool = True,
                resume: bool = False) -> tuple[nn.Module, Any]:
    """Build the registry model, train it (weights and metrics.jsonl land in run_dir) and return it with the result."""
    from tinyfm.models import create_model
    from tinyfm.models.registry import model_tokenizer
    from tinyfm.train import fit

    if getattr(data, "tokenizer", None) is None and model_tokenizer(cfg.model.name) is not None:
        raise ConfigError(f"--model {cfg.model.name}: a text model, and recipe {cfg.name}'s data "
                          f"({cfg.data.dataset}) are images (image models: `tinyfm models`; text: --recipe reviews)")
    kwargs = {"num_classes": data.num_classes, **data.model_kwargs(), **cfg.model.kwargs}
    if run_dir is not None and getattr(data, "tokenizer", None) is not None:  # text: the ids mean nothing without it
        data.tokenizer.save(run_dir)
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


def _timing_inputs(x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 1 and a batch of `batch` test inputs (a small test subset is repeated up to the batch size)."""
    xb = x[:batch]
    if len(xb) < batch:
        xb = xb.repeat((batch + len(xb) - 1) // len(xb), *([1] * (xb.dim() - 1)))[:batch]
    return x[:1], xb


def measure_stage(variants: list[Variant], cfg: RunConfig, data) -> list[dict[str, Any]]:
    """Test accuracy, size and (interleaved, repeated) latency/throughput of every variant: results.json rows."""
    from tinyfm.measure import Timed, evaluate, file_size, measure_variants

    # A variant reading another tokenizer (a distilled text student) carries its own encoding of the same test texts.
    tests = {v.name: v.test_x if v.test_x is not None else data.test.x for v in variants}
    scores = {v.name: evaluate(v.predict, tests[v.name], data.test.y, cfg.train.eval_batch_size,
                               data.num_classes) for v in variants}
    timed = []
    for v in variants:
        x1, xb = _timing_inputs(tests[v.name], cfg.measure.throughput_batch)
        timed.append(Timed(v.name, v.predict, x1.numpy() if v.numpy_input else x1, xb.numpy() if v.numpy_input else xb))
    times = measure_variants(timed, cfg.measure)
    rows = []
    for v in variants:
        t = times[v.name]
        rows.append({"name": v.name, "runtime": v.runtime, "test_accuracy": scores[v.name]["accuracy"],
                     "params": v.params, "macs": v.macs, "size_bytes": file_size(v.file), "file": v.file.name,
                     "latency_ms_p50": t["p50_ms"], "latency_ms_p95": t["p95_ms"],
                     "throughput_per_s": t["throughput_sps"], "threads": t["threads"],
                     "throughput_batch": t["throughput_batch"], "repeats": t["repeats"], "notes": v.notes,
                     "build_seconds": v.build_seconds,
                     "confusion": scores[v.name]["confusion"]})
    return rows


def _pass_context(cfg: RunConfig, data, teacher: nn.Module, workdir: Path, progress: bool):
    from tinyfm.compress import PassContext

    return PassContext(train=data.train, val=data.val, train_cfg=cfg.train, workdir=workdir,
                       input_shape=tuple(data.input_shape), teacher=teacher, progress=progress,
                       data=data if hasattr(data, "tokenizer") else None)


def _own_inputs(variant_data, data) -> dict[str, Any]:
    """test_x/val_x of a variant whose model reads another tokenizer than the run's (else none)."""
    if variant_data is None or variant_data is data:
        return {}
    return {"test_x": variant_data.test.x, "val_x": variant_data.val.x}


def compress_stage(model: nn.Module, cfg: RunConfig, run_dir: Path, data, specs: list[dict[str, Any]],
                   quiet: bool = False) -> tuple[list[Variant], list[dict[str, Any]]]:
    """Build every compressed variant into run_dir/variants; a variant refused by its accuracy gate is reported."""
    from tinyfm.compress.quantize import AccuracyGateError
    from tinyfm.compress.runner import build_variant, variant_name
    from tinyfm.deploy import OrtModel
    from tinyfm.measure import count_macs, count_params
    from tinyfm.models.serialize import read_spec

    base_spec = read_spec(run_dir)
    ctx = _pass_context(cfg, data, model, run_dir / "variants", progress=not quiet)
    built, rejected, cache = [], [], {}
    for spec in specs:
        name = variant_name(spec)
        _log(f"compressing: [bold]{name}[/] ({' → '.join(p['pass'] for p in spec['passes'])})", quiet)
        t0 = time.perf_counter()
        try:
            b = build_variant(spec, model, base_spec, ctx, run_dir / "variants", cache)
        except AccuracyGateError as e:
            _log(f"[yellow]rejected[/] {name}: {e}", quiet)
            rejected.append({"name": name, "reason": str(e)})
            continue
        built.append(Variant(name, "onnxruntime", OrtModel(b.onnx_path, threads=cfg.measure.threads), b.onnx_path,
                             count_params(b.model), count_macs(b.model, tuple(data.input_shape)), numpy_input=True,
                             notes=b.notes, build_seconds=time.perf_counter() - t0,
                             **_own_inputs(b.data, data)))
    return built, rejected


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
    from tinyfm.compress.runner import validate_specs
    from tinyfm.report import write_report

    out = Path(out or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    validate_specs(cfg.compress.variants, text=cfg.task == "text-classification")  # fails now, not after training
    data = load_stage(cfg)  # before the staging dir: bad data leaves nothing behind
    _log(f"[bold]tinyfm run[/] {cfg.name}: {cfg.model.name} on {cfg.data.dataset} "
         f"(train {len(data.train)}, val {len(data.val)}, test {len(data.test)}) from {data.source}", quiet)
    stages: dict[str, float] = {"data": time.perf_counter() - t0}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        return now

    with staged_run_dir(out) as stage:
        t = time.perf_counter()
        write_json(stage / "config.json", cfg.to_dict())
        model, result = train_stage(cfg, stage, data, progress=not quiet)
        t = lap("train", t)
        _log("exporting ONNX and checking parity", quiet)
        parity = export_stage(model, cfg, stage, data)
        if not parity["passed"]:
            raise TinyfmError(f"ONNX parity failed: max |Δlogit| {parity['max_abs_diff']:.2e} (allowed "
                              f"{cfg.export.atol:.0e}), argmax agreement {parity['argmax_agreement']:.4f}")
        t = lap("export", t)
        compressed, rejected = compress_stage(model, cfg, stage, data, cfg.compress.variants, quiet)
        t = lap("compress", t)
        _log(f"measuring variants ({cfg.measure.repeats} interleaved rounds, {cfg.measure.threads} threads)", quiet)
        rows = measure_stage(base_variants(model, stage, data, cfg.measure.threads) + compressed, cfg, data)
        lap("measure", t)
        results = results_record(cfg, data, result, parity, rows)
        results["rejected"] = rejected
        results["seconds_total"] = time.perf_counter() - t0
        results["seconds_by_stage"] = stages
        write_json(stage / "results.json", results)
        write_report(stage)
    return out, read_json(out / "results.json")


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig saved in a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TinyfmError(f"{run_dir}: run directory not found")
    path = run_dir / "config.json"
    try:
        return RunConfig.from_dict(read_json(path))
    except ConfigError as e:  # a hand-edited or damaged file: say which one
        raise ConfigError(f"{path}: {e}") from None


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
    from tinyfm.measure import count_macs, count_params, evaluate, file_size
    from tinyfm.train.distributed import DistContext, shutdown

    out = Path(out or Path("runs") / cfg.name)
    data = load_stage(cfg)
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


def _unit(cfg: RunConfig) -> str:
    """What the run's inputs are called in messages."""
    return "texts" if cfg.task == "text-classification" else "images"


def _is_text_run(run_dir: Path) -> bool:
    """Whether a run directory holds a text model (its tokenizer is saved beside the weights)."""
    return (run_dir / "tokenizer.json").is_file()


def _load_for_run(run_dir: str | Path, data_dir: str | None):
    cfg = with_data_dir(load_run_config(run_dir), data_dir)
    return cfg, load_stage(cfg, run_dir)


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
    return {"model": cfg.model.name, "runtime": "onnxruntime" if onnx else "torch", **score,
            "unit": _unit(cfg)}


def export_run(run_dir: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """`tinyfm export`: write model.onnx from the run's weights and check parity on test inputs."""
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    cfg, data = _load_for_run(run_dir, data_dir)
    return {**export_stage(load_model(run_dir), cfg, run_dir, data),
            "unit": _unit(cfg)}


def predict_files(run_dir: str | Path, paths: list[Path], top_k: int = 3, invert: bool = False,
                  onnx: bool = False) -> list[tuple[Path, list[tuple[str, float]]]]:
    """`tinyfm predict`: top-k (class name, probability) for each image file, validated against the model's input."""
    import numpy as np

    from tinyfm.data.images import load_image
    from tinyfm.deploy import OrtModel
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    if _is_text_run(run_dir):
        raise TinyfmError(f"{run_dir}: a text run, which reads texts, not image files: give --text \"...\" or "
                          "--texts-file FILE")
    results = read_json(run_dir / "results.json")
    names = results.get("class_names") or []
    shape = tuple(read_json(run_dir / "model.json").get("input_shape", (1, 28, 28)))
    batch = np.stack([load_image(p, shape, invert=invert) for p in paths])  # validate all before predicting
    if onnx:
        logits = OrtModel(run_dir / "model.onnx")(batch)
    else:
        with torch.inference_mode():
            logits = load_model(run_dir)(torch.from_numpy(batch)).numpy()
    return list(zip(paths, _top_k(logits, names, top_k), strict=True))


def _top_k(logits: Any, names: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Per row of logits: the k most probable (class name, probability), most probable first."""
    probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    label = (lambda i: names[i] if i < len(names) else str(i))  # noqa: E731
    return [[(label(i), float(v)) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]
            for vals, idx in zip(top.values, top.indices, strict=True)]


def predict_texts(run_dir: str | Path, texts: list[str], texts_file: str | Path | None = None, top_k: int = 2,
                  onnx: bool = False) -> list[tuple[str, list[tuple[str, float]]]]:
    """`tinyfm predict RUN --text ...`: top-k (class name, probability) for each text, with the run's tokenizer.

    Args:
        texts: texts to classify.
        texts_file: a UTF-8 file with one more text per line (empty lines skipped).
        onnx: run model.onnx with ONNX Runtime instead of the PyTorch weights.

    Example:
        predict_texts("runs/reviews", ["A triumph.", "Two hours I will not get back."])
    """
    from tinyfm.data.text import PAD_ID, load_tokenizer
    from tinyfm.data.textfiles import check_text, read_text, shorten
    from tinyfm.deploy import OrtModel
    from tinyfm.models import load_model

    run_dir = Path(run_dir)
    if not _is_text_run(run_dir) and (run_dir / "model.json").is_file():
        raise TinyfmError(f"{run_dir}: an image run (no tokenizer.json), which reads images: give PNG/JPEG or .npy "
                          "files instead of --text/--texts-file")
    texts = list(texts)
    if texts_file is not None:
        lines = read_text(texts_file, hint="save it as UTF-8").splitlines()
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise DataError(f"{texts_file}: no text to classify (the file has no non-empty line)")
    texts = [check_text(t, f"text {i + 1}") for i, t in enumerate(texts)]
    ids = load_tokenizer(run_dir).encode(texts)  # (N, max_length) int64
    empty = (ids != PAD_ID).sum(1).eq(0).nonzero().flatten().tolist()  # PAD_ID is 0 in every tokenizer here
    if empty:
        raise DataError(f"text {empty[0] + 1}: {shorten(texts[empty[0]], 40)!r} keeps no token after tokenization "
                        "(only punctuation or symbols); nothing to classify")
    names = read_json(run_dir / "results.json").get("class_names") or []
    if onnx:
        logits = OrtModel(run_dir / "model.onnx")(ids.numpy())
    else:
        with torch.inference_mode():
            logits = load_model(run_dir)(ids)
    return list(zip(texts, _top_k(logits, names, top_k), strict=True))


def select_variant(variants: list[Variant], data, baseline: Variant, max_drop: float,
                   batch_size: int = 1000) -> tuple[str | None, list[dict[str, Any]]]:
    """Accuracy control: the smallest (then fastest by MACs) variant whose validation accuracy is within
    `max_drop` pp of `baseline`; returns (chosen name or None, one decision record per variant)."""
    from tinyfm.measure import evaluate, file_size

    x = data.val.x.numpy()
    base_acc = evaluate(baseline.predict, x, data.val.y, batch_size)["accuracy"]
    decisions = []
    for v in variants:
        acc = evaluate(v.predict, x if v.val_x is None else v.val_x.numpy(), data.val.y, batch_size)["accuracy"]
        drop = (base_acc - acc) * 100
        ok = drop <= max_drop
        decisions.append({"name": v.name, "val_accuracy": acc, "drop_pp": drop, "size_bytes": file_size(v.file),
                          "macs": v.macs, "accepted": ok,
                          "reason": "within budget" if ok else f"drop {drop:.2f} pp > allowed {max_drop:.2f} pp"})
    fits = sorted((d for d in decisions if d["accepted"]), key=lambda d: (d["size_bytes"], d["macs"]))
    chosen = fits[0]["name"] if fits else None
    for d in decisions:
        if d["accepted"] and d["name"] != chosen:
            d["reason"] = f"within budget but larger than {chosen}"
    return chosen, decisions


def compress_run(run_dir: str | Path, passes: str | None = None, max_drop: float | None = None,
                 data_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """`tinyfm compress RUN`: build variants into RUN/variants, measure them beside fp32, update results/report.

    The fp32 artefacts (model.safetensors, model.onnx) are never touched. Raises TinyfmError (exit 2) when a
    variant was refused by its accuracy gate or when no variant fits `max_drop`, after writing the others.
    """
    import math

    from tinyfm.compress.runner import parse_passes, validate_specs
    from tinyfm.models import load_model
    from tinyfm.report import write_report

    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):  # before any work: exit 2
        raise ConfigError(f"--max-drop: got {max_drop!r}, expected a number of percentage points >= 0")
    run_dir = Path(run_dir)
    cfg, data = _load_for_run(run_dir, data_dir)
    specs = parse_passes(passes) if passes else cfg.compress.variants
    if not specs:
        raise TinyfmError(f"{run_dir}: no variants to build (give --passes, e.g. --passes prune+quantize,dsconv)")
    max_drop = cfg.compress.max_drop if max_drop is None else max_drop
    if max_drop is not None:  # the int8 gate uses the same budget, and shows its per-layer sensitivity
        for p in (p for s in specs for p in s["passes"] if p["pass"] == "quantize"):
            p.setdefault("max_drop", max_drop)
            p.setdefault("report_sensitivity", True)
    validate_specs(specs, text=cfg.task == "text-classification")
    model = load_model(run_dir)
    if not (run_dir / "model.onnx").is_file():
        export_stage(model, cfg, run_dir, data)
    compressed, rejected = compress_stage(model, cfg, run_dir, data, specs, quiet)
    base = base_variants(model, run_dir, data, cfg.measure.threads)
    chosen, decisions = (None, [])
    if max_drop is not None and compressed:
        chosen, decisions = select_variant(compressed, data, base[1], max_drop, cfg.train.eval_batch_size)
    rows = measure_stage(base + compressed, cfg, data)
    results = read_json(run_dir / "results.json") if (run_dir / "results.json").exists() else \
        results_record(cfg, data, None, None, [])
    new = {r["name"] for r in rows}
    results["confusion_matrix"] = rows[0].pop("confusion")
    for r in rows[1:]:
        r.pop("confusion", None)
    results["variants"] = rows + [v for v in results.get("variants", []) if v["name"] not in new]
    results["baseline"] = "fp32-onnx"
    results["rejected"] = rejected
    if decisions:
        results["selection"] = {"max_drop_pp": max_drop, "chosen": chosen, "decisions": decisions}
    write_json(run_dir / "results.json", results)
    write_report(run_dir)
    if rejected:
        raise TinyfmError("; ".join(f"{r['name']} rejected: {r['reason']}" for r in rejected) +
                          f" (fp32 artefacts untouched; other variants written to {run_dir / 'variants'})")
    if max_drop is not None and chosen is None:
        raise TinyfmError(f"no variant is within --max-drop {max_drop} pp of fp32 ONNX on the validation split")
    return results
