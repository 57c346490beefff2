"""The CLI's error paths: one clear line, exit code 2, no traceback, nothing existing overwritten."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FASHION_DIR


def tinyfm(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyfm", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    for f in fragments:
        assert f in proc.stderr, proc.stderr


def test_help_lists_the_commands():
    out = tinyfm("--help")
    assert out.returncode == 0
    for cmd in ("run", "train", "eval", "predict", "export", "report", "models"):
        assert cmd in out.stdout


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    proc = tinyfm("run", "--quick", "--data-dir", str(missing), "--out", str(tmp_path / "run"))
    assert_clean_error(proc, str(missing))
    assert not (tmp_path / "run").exists()


def test_corrupt_idx_names_the_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in FASHION_DIR.iterdir():
        shutil.copy(f, data / f.name)
    raw = gzip.decompress((data / "t10k-images-idx3-ubyte.gz").read_bytes())
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))  # truncated payload
    proc = tinyfm("run", "--quick", "--data-dir", str(data), "--out", str(tmp_path / "run"))
    assert_clean_error(proc, "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "run").exists()


def test_unknown_model_suggests_close_names(tmp_path):
    proc = tinyfm("run", "--quick", "--model", "seed-cn", "--out", str(tmp_path / "run"))
    assert_clean_error(proc, "unknown model 'seed-cn'", "seed-cnn")


def test_a_text_model_on_an_image_recipe_and_the_recipes_kwargs_under_another_model(tmp_path):
    assert_clean_error(tinyfm("train", "--quick", "--model", "tiny-text-bigru", "--out", str(tmp_path / "r")),
                       "--model tiny-text-bigru: a text model", "are images")
    from tinyfm.cli import _config

    assert _config("reviews", False).model.kwargs == {"pooling": "mean", "dropout": 0.1}  # MiniLM's own
    assert _config("reviews", False, model="text-bigru").model.kwargs == {}  # not handed to another model
    assert _config("reviews", False, model="text-bigru", settings=["model.kwargs.hidden=8"]).model.kwargs == \
        {"hidden": 8}
    assert _config("reviews", False, model="minilm-classifier").model.kwargs["pooling"] == "mean"
    assert not (tmp_path / "r").exists()


def test_bad_flag_value_names_the_flag(tmp_path):
    assert_clean_error(tinyfm("train", "--quick", "--amp", "fp8", "--out", str(tmp_path / "r")), "--amp")
    assert_clean_error(tinyfm("run", "--recipe", str(tmp_path / "none.yaml")), "none.yaml")
    assert_clean_error(tinyfm("run", "--set", "train.epoch=1", "--out", str(tmp_path / "r")), "train.epoch")
    assert_clean_error(tinyfm("train", "--set", "train.epochs", "--out", str(tmp_path / "r")), "KEY=VALUE")
    assert_clean_error(tinyfm("train", "--grad-accum", "0", "--out", str(tmp_path / "r")), "--grad-accum")
    assert_clean_error(tinyfm("train", "--set", "train.epochs=1.5", "--out", str(tmp_path / "r")),
                       "train.epochs: got 1.5, expected an integer")
    assert_clean_error(tinyfm("train", "--resume", str(tmp_path), "--epochs", "3", "--set", "train.lr=0.1"),
                       "--epochs, --set cannot change them")  # --resume continues with the run's own settings
    assert_clean_error(tinyfm("compress", str(tmp_path), "--max-drop", "-1"), "--max-drop")  # before any work
    assert_clean_error(tinyfm("compress", str(tmp_path), "--max-drop", "nan"), "--max-drop")
    assert not (tmp_path / "r").exists()


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = tinyfm("run", "--quick", "--out", str(blocker / "run"))
    assert_clean_error(proc, "--out")
    assert blocker.read_text() == "not a directory"


def test_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    proc = tinyfm("run", "--quick", "--out", str(precious))
    assert_clean_error(proc, "not a tinyfm run")
    assert (precious / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_missing_run_directory(tmp_path):
    assert_clean_error(tinyfm("eval", str(tmp_path / "no-run")), "no-run")
    assert_clean_error(tinyfm("report", str(tmp_path / "no-run")), "no-run")


@pytest.mark.parametrize(("damage", "fragment"), [
    (("config.json", '{"name": 3}'), "config.json: name"), (("config.json", "[1, 2]"), "config.json"),
    (("config.json", "{bad"), "config.json: not valid JSON"), (("results.json", "{bad"), "results.json"),
    (("model.safetensors", "garbage"), "model.safetensors"),
])
def test_damaged_run_files_name_the_file(quick_run, tmp_path, damage, fragment):
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    (run / damage[0]).write_text(damage[1], encoding="utf-8")
    command = "report" if damage[0] == "results.json" else "eval"
    assert_clean_error(tinyfm(command, str(run)), fragment)


def test_failed_run_leaves_the_previous_run_untouched(tmp_path, monkeypatch):
    from tinyfm import pipeline
    from tinyfm.config import load_recipe
    from tinyfm.errors import TinyfmError

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "results.json").write_text('{"old": true}')

    def boom(*a, **k):
        raise TinyfmError("export failed on purpose")

    monkeypatch.setattr(pipeline, "export_stage", boom)
    cfg = load_recipe("fashion-mnist", {**pipeline.QUICK_OVERRIDES, "model.name": "tiny-seed-cnn",
                                        "train.epochs": 1, "data.train_subset": 1000})
    with pytest.raises(TinyfmError, match="on purpose"):
        pipeline.run(cfg, out, quiet=True)
    assert (out / "results.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left behind


def test_predict_rejects_an_image_of_the_wrong_size(quick_run, tmp_path):
    from PIL import Image

    bad = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad)
    assert_clean_error(tinyfm("predict", str(quick_run), str(bad)), "big.png", "(1, 28, 28)")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert_clean_error(tinyfm("predict", str(quick_run), str(text)), "notes.png")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 24 KB on disk, 196 million pixels decoded
    assert_clean_error(tinyfm("predict", str(quick_run), str(bomb)), "bomb.png", "pixels")
    assert_clean_error(tinyfm("predict", str(quick_run), str(bad), "-k", "0"), "--top-k")


def test_summary_names_only_the_reports_that_exist(quick_run, tmp_path, capsys) -> None:
    # `tinyfm train` writes no report: the closing line must not point at files that are not there.
    from tinyfm.cli import _print_summary
    from tinyfm.io import read_json

    results = read_json(quick_run / "results.json")
    _print_summary(quick_run, results)
    words = " ".join(capsys.readouterr().out.split())  # rich may wrap the line
    assert f"report: {quick_run / 'report.html'}, {quick_run / 'report.md'}" in words
    shutil.copy(quick_run / "results.json", tmp_path / "results.json")
    _print_summary(tmp_path, results)
    words = " ".join(capsys.readouterr().out.split())
    assert "report.html" not in words and f"no report yet: tinyfm report {tmp_path}" in words


@pytest.mark.parametrize(("args", "fragment"), [(("train", "--foo-bar"), "No such option: --foo-bar"),
                                                (("nosuchcmd",), "No such command 'nosuchcmd'"),
                                                (("train", "--epochs", "abc"), "Invalid value for '--epochs'")])
def test_usage_errors_are_one_message_and_exit_2(args, fragment):
    assert_clean_error(tinyfm(*args), fragment)


def test_sigterm_during_training_exits_130_with_a_message_and_leaves_no_run(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tinyfm", "train", "--quick", "--epochs", "50", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # past start-up and data loading, well inside 50 epochs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: the run directory was left as it was" in err and "Traceback" not in err
    assert not out.exists()  # the staging folder is removed; nothing half-written is left
