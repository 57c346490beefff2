"""write_report: every artefact from a run directory, numbers taken from results.json."""

import base64
import json

import pytest

from tinyfm.errors import TinyfmError
from tinyfm.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results():
    names = ["t-shirt", "trouser", "pullover"]
    variant = {"runtime": "onnxruntime", "params": 93322, "macs": 2.8e6, "threads": 2}
    return {
        "run": "demo", "task": "image-classification", "dataset": "fashion-mnist", "model": "seed-cnn",
        "created": "2025-01-01T00:00:00Z", "machine": {"cpu": "test-cpu", "cores": 2, "cuda": False},
        "class_names": names,
        "train": {"epochs": 2, "seconds": 12.5, "best_epoch": 2, "best_val_accuracy": 0.9, "device": "cpu",
                  "amp": "off"},
        "parity": {"n": 1000, "max_abs_diff": 3e-6, "argmax_agreement": 1.0},
        "confusion_matrix": [[90, 5, 5], [2, 97, 1], [10, 3, 87]],
        "variants": [
            {"name": "fp32-torch", "runtime": "torch", "test_accuracy": 0.9134, "size_bytes": 373000,
             "latency_ms_p50": 0.9, "file": "model.safetensors"},
            {**variant, "name": "fp32-onnx", "test_accuracy": 0.9127, "size_bytes": 375000, "latency_ms_p50": 0.4,
             "latency_ms_p95": 0.6, "throughput_per_s": 9000.0},
            {**variant, "name": "int8-onnx", "test_accuracy": 0.9071, "size_bytes": 98000, "latency_ms_p50": 0.2,
             "notes": "dynamic quantisation", "build_seconds": 12.4},
        ],
        "rejected": [{"name": "int8-entropy", "reason": "int8 accuracy drop 3.10 pp exceeds the allowed 1.00 pp"}],
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "demo"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_results()))
    epochs = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.8, "val_loss": 1.1 / e, "val_accuracy": 0.85,
               "lr": 1e-3, "seconds": 6.2, "images_per_s": 2500.0} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs) + '{"epoch": 3, "tr')
    (run / "config.json").write_text(json.dumps({"train": {"lr": 0.00123}}))
    return run


@pytest.fixture(scope="module")
def paths(run_dir):
    return write_report(run_dir)  # written once for the module: plotting is the slow part


def test_write_report_writes_every_artefact(run_dir, paths):
    assert set(paths) == {"markdown", "html", "pareto", "training_curves", "confusion_matrix"}
    for key in ("pareto", "training_curves", "confusion_matrix"):
        assert paths[key].parent == run_dir / "plots"
        assert paths[key].read_bytes()[:8] == PNG_MAGIC
    assert paths["markdown"] == run_dir / "report.md"


def test_markdown_has_numbers_from_results(paths):
    md = paths["markdown"].read_text()
    assert "# tinyfm report — demo" in md
    assert "91.27" in md  # the baseline accuracy, formatted
    assert "90.71" in md and "-0.56" in md  # the int8 accuracy and its Δ pp
    assert "](plots/pareto.png)" in md and "](plots/training_curves.png)" in md
    assert "3.0e-06" in md and "test-cpu" in md and "0.00123" in md
    assert "<details>" in md  # the config and per-epoch table are collapsed
    assert "dynamic quantisation" in md and "(built in 12 s)" in md
    assert "**int8-entropy**: int8 accuracy drop 3.10 pp exceeds the allowed 1.00 pp" in md  # refused, still shown


def test_html_is_self_contained(paths):
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == 3
    assert "plots/" not in page
    start = page.index("base64,") + len("base64,")
    assert base64.b64decode(page[start : page.index('"', start)]) == paths["pareto"].read_bytes()
    assert "91.27" in page and "<table>" in page


def test_report_without_optional_files(tmp_path):
    results = {"variants": [{"name": "only", "runtime": "torch", "test_accuracy": 0.5}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    paths = write_report(tmp_path)
    assert set(paths) == {"markdown", "html", "pareto"}
    assert "50.00" in paths["markdown"].read_text()


def test_missing_results_file_is_named(tmp_path):
    with pytest.raises(TinyfmError, match="results.json"):
        write_report(tmp_path)


def test_missing_variants_field_is_named(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"run": "x"}))
    with pytest.raises(TinyfmError, match=r"results\.json: missing field 'variants'"):
        write_report(tmp_path)
