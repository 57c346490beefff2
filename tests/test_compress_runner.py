"""Variant specs from `--passes`, their validation, and `tinyfm compress` on a real run (selection, files kept)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.test_cli import assert_clean_error, tinyfm
from tinyfm.compress.runner import parse_passes, validate_specs
from tinyfm.errors import ConfigError


def test_commas_separate_variants_and_plus_chains_passes():
    specs = parse_passes("quantize, prune+quantize ,dsconv")
    assert [s["name"] for s in specs] == ["quantize", "prune+quantize", "dsconv"]
    assert [p["pass"] for p in specs[1]["passes"]] == ["prune", "quantize"]


def test_pass_settings_after_colons_are_typed_and_name_a_safe_directory():
    (spec,) = parse_passes("prune:ratio=0.3:finetune_epochs=1+quantize:calibration=entropy:per_channel=false")
    assert spec["passes"] == [{"pass": "prune", "ratio": 0.3, "finetune_epochs": 1},
                              {"pass": "quantize", "calibration": "entropy", "per_channel": False}]
    assert spec["name"] == "prune-ratio-0.3-finetune_epochs-1+quantize-calibration-entropy-per_channel-false"
    validate_specs([spec])


def test_a_dotted_pass_setting_nests():
    (spec,) = parse_passes("distill:student=text-cnn:train.batch_size=64:train.token_dropout=0.3")
    assert spec["passes"] == [{"pass": "distill", "student": "text-cnn",
                               "train": {"batch_size": 64, "token_dropout": 0.3}}]
    validate_specs([spec], text=True)


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected pass names"),
    ("distill:train=3:train.epochs=1", "--passes distill train.epochs: train is a value, not a section"),
    ("distill:train..x=1", "--passes distill 'train..x=1': expected KEY=VALUE"),
    (":=3", "the pass name is empty"),
    ("quantize:mode=static:mode=dynamic", "mode is given twice"),
    ("distill:pass=quantize", "'pass' is the name before the first colon"),
    ("distill:student=text-cnn:train.colour=red", "colour"),
    ("quantize:mode", "expected quantize:KEY=VALUE"),
    ("bogus", "bogus"),
    ("prune:sparsity=1.5:method=unstructured", "sparsity"),
    ("quantize:calibration=median", "calibration"),
    ("quantize:colour=red", "colour"),
])
def test_bad_passes_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        validate_specs(parse_passes(text))


def test_duplicate_variant_names_are_refused():
    with pytest.raises(ConfigError, match="unique"):
        validate_specs(parse_passes("quantize,quantize"))


def _digests(run: Path) -> dict[str, str]:
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in ("model.safetensors", "model.onnx")}


@pytest.fixture
def run_copy(quick_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(quick_run, copy)
    return copy


def test_compress_builds_selects_and_keeps_the_fp32_files(run_copy):
    before = _digests(run_copy)
    proc = tinyfm("compress", str(run_copy), "--passes", "quantize,prune:finetune_epochs=1", "--max-drop", "1.5",
                  "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert _digests(run_copy) == before
    results = json.loads((run_copy / "results.json").read_text())
    names = [v["name"] for v in results["variants"]]
    assert {"fp32-onnx", "quantize", "prune-finetune_epochs-1"} <= set(names)
    selection = results["selection"]
    assert selection["max_drop_pp"] == 1.5 and selection["chosen"] in names
    assert "chosen" in proc.stdout and "sensitivity" in proc.stdout.lower()
    assert (run_copy / "variants" / "prune-finetune_epochs-1" / "model.onnx").is_file()


def test_compress_with_a_bad_setting_changes_nothing(run_copy):
    before = _digests(run_copy)
    results = (run_copy / "results.json").read_text()
    assert_clean_error(tinyfm("compress", str(run_copy), "--passes", "prune:ratio=1.5"), "ratio")
    assert _digests(run_copy) == before and (run_copy / "results.json").read_text() == results


def test_validate_specs_checks_that_the_student_reads_the_runs_data() -> None:
    def spec(**distill):
        return [{"name": "d", "passes": [{"pass": "distill", **distill}]}]

    with pytest.raises(ConfigError, match="--student seed-text: a model of texts, but this run's data are images"):
        validate_specs(spec(student="seed-text"), text=False)
    with pytest.raises(ConfigError, match="--student tiny-seed-cnn: a model of images, but this run's data are texts"):
        validate_specs(spec(student="tiny-seed-cnn"), text=True)
    with pytest.raises(ConfigError, match="--init-embeddings pretrained: word embeddings need a text run"):
        validate_specs(spec(student="tiny-seed-cnn", init_embeddings="pretrained"), text=False)
    with pytest.raises(ConfigError, match="--transfer-copies: copies with words removed need a text run"):
        validate_specs(spec(student="tiny-seed-cnn", transfer_copies=1), text=False)
    validate_specs(spec(student="seed-text", init_embeddings="pretrained"), text=True)
    validate_specs(spec(student="seed-text"))  # without the data kind: the settings alone
