"""Build compressed variants from a trained model: chains of passes, each variant in its own directory.

A variant spec is ``{"name": "prune-50+int8", "passes": [{"pass": "prune", "ratio": 0.5}, {"pass": "quantize"}]}``.
Each variant lands in ``variants/<name>/``: model.safetensors + model.json (registry spec + structural
transforms, so load_model rebuilds it), model.onnx (the deployable file: int8 when quantized) and
variant.json (what every pass changed, with before/after measurements). A variant is written to a staging
folder and renamed into place only when it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tinyfm.compress import apply_pass, pass_config
from tinyfm.compress.base import PassContext
from tinyfm.errors import ConfigError, TinyfmError
from tinyfm.io import write_json


@dataclass
class BuiltVariant:
    name: str
    directory: Path
    model: nn.Module
    onnx_path: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    data: Any = None
    """Text variants: the TextData encoded for this model (its own tokenizer); None for images."""

    @property
    def notes(self) -> str:
        return " → ".join(s["summary"] for s in self.steps)


def variant_name(spec: dict[str, Any]) -> str:
    return spec.get("name") or "+".join(p["pass"] for p in spec["passes"])


def parse_passes(text: str) -> list[dict[str, Any]]:
    """`--passes prune+quantize,dsconv` -> variant specs (comma between variants, + between chained passes).

    A pass takes settings after colons: ``quantize:mode=qat:qat_always=true`` or ``prune:ratio=0.3`` (a dotted
    key sets a nested one: ``distill:student=text-cnn:train.batch_size=64``); the
    variant is named after the chain, with every other character than letters, digits and ``+._-`` made ``-``.
    """
    specs = []
    for chain in filter(None, (c.strip() for c in text.split(","))):
        name = re.sub(r"[^A-Za-z0-9+._-]+", "-", chain)  # a directory name: quantize:mode=qat -> quantize-mode-qat
        specs.append({"name": name, "passes": [_parse_pass(p.strip()) for p in chain.split("+") if p.strip()]})
    if not specs:
        raise ConfigError(f"--passes: got {text!r}, expected pass names such as prune,quantize or prune+quantize")
    return specs


def _parse_pass(text: str) -> dict[str, Any]:
    from tinyfm.config import parse_set, set_dotted

    name, *settings = text.split(":")
    if not name.strip():
        raise ConfigError(f"--passes {text!r}: the pass name is empty (expected e.g. quantize or prune:ratio=0.3)")
    for item in settings:
        if "=" not in item:
            raise ConfigError(f"--passes {text!r}: expected {name}:KEY=VALUE settings, got {item!r}")
    out: dict[str, Any] = {"pass": name.strip()}
    for key, value in parse_set(settings, flag=f"--passes {name.strip()}", example="epochs=3").items():
        if key.split(".")[0] == "pass":
            raise ConfigError(f"--passes {text!r}: 'pass' is the name before the first colon, not a setting")
        set_dotted(out, key, value, flag=f"--passes {name.strip()}")  # train.batch_size=64 -> train: {batch_size}
    return out


def validate_specs(specs: list[dict[str, Any]], text: bool | None = None) -> None:
    """Build every pass config now, so a bad setting fails before any training starts; with `text` (whether the
    run's data are texts) also check that each distilled student reads that kind of data."""
    from tinyfm.compress.distill import check_for_data

    names = [variant_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"compress.variants: names must be unique, got {names}")
    for s in specs:
        for i, p in enumerate(s["passes"]):
            config = pass_config(p["pass"], {k: v for k, v in p.items() if k != "pass"})
            if p["pass"] == "distill" and text is not None:
                check_for_data(config, text)
            if p["pass"] == "quantize" and i != len(s["passes"]) - 1:
                raise ConfigError(f"compress variant {variant_name(s)}: quantize must be the last pass (its "
                                  "product is an int8 ONNX file, not a PyTorch model)")


def _summary(name: str, res) -> str:
    """One line for the report: what the pass changed, with the figures it measured on the validation split."""
    b, a, c = res.before, res.after, res.changes
    parts = []
    if "params" in b and "params" in a and a["params"] != b["params"]:
        parts.append(f"params {b['params']:,} → {a['params']:,}")
    if "conv_param_ratio" in c:
        parts.append(f"conv params ×{c['conv_param_ratio']:.3f}")
    if c.get("gain_pp") is not None:
        parts.append(f"val {c['with_teacher_val_accuracy']:.2%} with the teacher vs {c['scratch_val_accuracy']:.2%} "
                     f"from scratch (gain {c['gain_pp']:+.2f} pp)")
    if c.get("embeddings_from_teacher"):
        parts.append(f"{c['embeddings_from_teacher']:,} word embeddings from the "
                     f"{'pretrained model' if c.get('embeddings_source') == 'pretrained' else 'teacher'}")
    if "size_ratio" in a:
        parts.append(f"ONNX file ×{a['size_ratio']:.2f}, val accuracy {-a.get('drop_pp', 0):+.2f} pp")
    elif c.get("gain_pp") is None and "val_accuracy" in a and "val_accuracy" in b:
        parts.append(f"val {b['val_accuracy']:.2%} → {a['val_accuracy']:.2%}")
    if c.get("excluded"):
        parts.append(f"kept in fp32: {', '.join(c['excluded'])}")
    return f"{res.name}: " + "; ".join(parts) if parts else res.name


def build_variant(spec: dict[str, Any], model: nn.Module, base_spec: dict[str, Any], ctx: PassContext,
                  variants_dir: Path, cache: dict[str, tuple] | None = None) -> BuiltVariant:
    """Run the spec's passes in order on `model` and write the variant directory (atomically, by rename).

    `cache` (shared across calls) keeps the PyTorch result of every pass prefix, so "prune" and
    "prune+quantize" prune and fine-tune once.
    """
    from tinyfm.deploy import check_parity, export_onnx
    from tinyfm.models import save_model

    name = variant_name(spec)
    final = variants_dir / name
    stage = variants_dir / f".{name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        cur, model_spec, onnx_path, steps = model, dict(base_spec), None, []
        transforms = list(base_spec.get("transforms", []))
        for i, p in enumerate(spec["passes"]):
            key = json.dumps(spec["passes"][: i + 1], sort_keys=True)
            if cache is not None and key in cache:
                cur, model_spec, transforms, steps, ctx = cache[key]
                transforms, steps = list(transforms), list(steps)
                continue
            settings = {k: v for k, v in p.items() if k != "pass"}
            work = stage / f"work-{len(steps)}-{p['pass']}"
            work.mkdir()
            res = apply_pass(p["pass"], cur, settings, dataclasses.replace(ctx, workdir=work))
            ctx = res.ctx or ctx  # a text student reads its own tokenizer: later passes see its encoding
            if "spec" in res.changes:  # distillation into another registry model: a new base structure
                model_spec, transforms = {**base_spec, **res.changes["spec"]}, []
            if res.transform:
                transforms.append(res.transform)
            cur, onnx_path = res.model, res.onnx_path
            steps.append({"pass": p["pass"], "name": res.name, "config": dataclasses.asdict(res.config),
                          "changes": res.changes, "before": res.before, "after": res.after,
                          "summary": _summary(p["pass"], res)})
            if cache is not None and onnx_path is None:
                cache[key] = (cur, model_spec, list(transforms), list(steps), ctx)
        save_model(cur, stage, {**model_spec, "transforms": transforms})
        if ctx.data is not None:  # a text model: its tokenizer beside it (the ids mean nothing without it)
            ctx.data.tokenizer.save(stage)
        if onnx_path is not None:
            shutil.copyfile(onnx_path, stage / "model.onnx")
            parity = None  # int8 differs from fp32 by design; its accuracy gate is the check
        else:
            from tinyfm.models.registry import example_input

            export_onnx(cur, example_input(cur, ctx.input_shape), stage / "model.onnx")
            parity = check_parity(cur, stage / "model.onnx", ctx.val.x[:1000])
            if parity["max_abs_diff"] > 1e-3 or parity["argmax_agreement"] < 0.999:
                raise TinyfmError(f"variant {name}: ONNX parity failed ({parity})")
        for p in stage.glob("work-*"):
            shutil.rmtree(p)
        write_json(stage / "variant.json", {"name": name, "spec": spec, "steps": steps, "parity": parity})
        old = variants_dir / f".{name}.old"
        if final.exists():
            final.rename(old)
        stage.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return BuiltVariant(name, final, cur.cpu().eval(), final / "model.onnx", steps, data=ctx.data)
