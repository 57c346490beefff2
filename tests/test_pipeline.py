"""End-to-end: `tinyfm run --quick` on real Fashion-MNIST, then every command on its run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tinyfm.config import RunConfig
from tinyfm.io import read_json, read_jsonl

VARIANT_FIELDS = {"name", "test_accuracy", "params", "macs", "size_bytes", "latency_ms_p50", "latency_ms_p95",
                  "throughput_per_s", "runtime"}


def tinyfm(*args):
    return subprocess.run([sys.executable, "-m", "tinyfm", *args], capture_output=True, text=True, timeout=300)


def test_quick_run_writes_every_artefact(quick_run):
    names = {p.name for p in quick_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "model.safetensors", "model.json", "model.onnx", "results.json",
            "report.md", "report.html", "plots"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temp files left
    cfg = RunConfig.from_dict(read_json(quick_run / "config.json"))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and cfg.train.epochs == 3
    assert [r["epoch"] for r in read_jsonl(quick_run / "metrics.jsonl")] == [1, 2, 3]
    for png in ("training_curves.png", "confusion_matrix.png", "pareto.png"):
        assert (quick_run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_hold_the_variants_and_parity(quick_run):
    res = read_json(quick_run / "results.json")
    rows = {v["name"]: v for v in res["variants"]}
    assert {"fp32-torch", "fp32-onnx"} <= set(rows)
    for v in rows.values():
        assert VARIANT_FIELDS <= set(v), VARIANT_FIELDS - set(v)
        assert 0.75 < v["test_accuracy"] <= 1 and v["latency_ms_p50"] > 0 and v["throughput_per_s"] > 0
    assert rows["fp32-torch"]["params"] == 93_322
    assert abs(rows["fp32-torch"]["test_accuracy"] - rows["fp32-onnx"]["test_accuracy"]) <= 0.001
    assert res["parity"]["argmax_agreement"] >= 0.999 and res["parity"]["max_abs_diff"] <= 1e-4
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == res["data"]["test"]
    assert np.trace(cm) / cm.sum() == rows["fp32-torch"]["test_accuracy"]


def test_report_shows_the_measured_numbers(quick_run):
    res = read_json(quick_run / "results.json")
    md = (quick_run / "report.md").read_text()
    acc = next(v for v in res["variants"] if v["name"] == "fp32-onnx")["test_accuracy"]
    assert f"{acc * 100:.2f}" in md
    assert "data:image/png;base64," in (quick_run / "report.html").read_text()
    stdout = (quick_run.parent / "stdout.txt").read_text()
    assert "fp32-onnx" in stdout and "fp32-torch" in stdout


def test_eval_export_predict_report_on_the_run(quick_run, tmp_path):
    from tinyfm.config import DataConfig
    from tinyfm.data import load_data

    res = read_json(quick_run / "results.json")
    torch_acc = next(v for v in res["variants"] if v["name"] == "fp32-torch")["test_accuracy"]
    out = tinyfm("eval", str(quick_run))
    assert out.returncode == 0 and f"{torch_acc:.2%}" in out.stdout, out.stdout + out.stderr
    out = tinyfm("eval", str(quick_run), "--onnx")
    assert out.returncode == 0 and "onnxruntime" in out.stdout

    data = load_data(DataConfig(val_size=0, train_subset=10, test_subset=20))
    img = (data.test.x[0, 0].numpy() * 255).round().astype(np.uint8)
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "x.png")
    np.save(tmp_path / "x.npy", data.test.x[0].numpy())
    out = tinyfm("predict", str(quick_run), str(tmp_path / "x.png"), str(tmp_path / "x.npy"), "-k", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split(": ")[1] == lines[1].split(": ")[1]  # same image, same answer
    assert lines[0].split(": ")[1].split(" ")[0] in res["class_names"][0] + " ".join(res["class_names"])

    before = (quick_run / "model.onnx").read_bytes()
    out = tinyfm("export", str(quick_run))
    assert out.returncode == 0 and "argmax agreement 100.00%" in out.stdout, out.stdout + out.stderr
    after = (quick_run / "model.onnx").read_bytes()  # the same graph; dynamo's symbol names (s21, s83) may differ
    assert abs(len(after) - len(before)) <= 0.001 * len(before)
    out = tinyfm("report", str(quick_run))
    assert out.returncode == 0 and "fp32-onnx" in out.stdout
    json.loads((quick_run / "results.json").read_text())
