"""Text files: UTF-8 whatever the locale, CSV/TSV/JSONL with columns and a label map, aclImdb, and every error case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyfm.config import DataConfig
from tinyfm.data import load_data
from tinyfm.data.textfiles import read_table, read_text
from tinyfm.errors import ConfigError, DataError

POS = ["A joy from start to finish.", "Superb acting.", "Wonderful, moving and funny.", "A great film."]
NEG = ["A dreary mess.", "Dull and far too long.", "Terrible script.", "I wanted to leave."]


def _rows(n: int = 5) -> list[tuple[str, str]]:
    return [(t, "pos") for t in POS * n] + [(t, "neg") for t in NEG * n]


def _write_csv(path, rows, header=("review", "sentiment"), sep=","):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


def _cfg(path, **kw) -> DataConfig:
    return DataConfig(dataset="text-file", data_dir=str(path), val_size=4, text_column="review",
                      label_column="sentiment", **kw)


def test_csv_with_columns_and_label_map(tmp_path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", _rows())
    data = load_data(_cfg(path, label_map={"neg": 0, "pos": 1}, max_length=8))
    assert len(data.train) + len(data.val) + len(data.test) == 40 and len(data.test) == 8
    assert data.class_names == ["neg", "pos"] and data.train.x.shape[1] == 8
    assert {t for t, y in zip(data.test.texts, data.test.y.tolist(), strict=True) if y == 1} <= set(POS)
    assert data.tokenizer.kind == "word" and int(data.train.x.max()) < data.tokenizer.vocab_size


def test_tsv_and_jsonl_and_a_train_test_folder(tmp_path) -> None:
    _write_csv(tmp_path / "train.tsv", _rows(4), sep="\t")
    _write_csv(tmp_path / "test.tsv", _rows(1), sep="\t")
    data = load_data(_cfg(tmp_path))
    assert len(data.test) == 8 and data.class_names == ["neg", "pos"]  # sorted distinct labels
    lines = [json.dumps({"review": t, "sentiment": s}) for t, s in _rows()]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts, labels = read_table(tmp_path / "r.jsonl", "review", "sentiment")
    assert len(texts) == 40 and labels[0] == "pos"


def test_utf8_whatever_the_locale_and_bad_bytes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    good = tmp_path / "good.csv"
    good.write_bytes("\ufeffreview,sentiment\nCafé crème — très bon,pos\n".encode())  # with a BOM
    assert read_table(good, "review", "sentiment")[0] == ["Café crème — très bon"]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"review,sentiment\nfine,pos\nbro\xffken,neg\n")
    with pytest.raises(DataError, match=r"bad.csv: not valid UTF-8 at byte offset 29 \(byte 0xff\)"):
        read_text(bad)
    assert read_table(bad, "review", "sentiment", errors="replace")[0][1] == "bro\ufffdken"


@pytest.mark.parametrize("text, message", [("", "empty"), ("   ", "empty"), ("NA", "missing-value"),
                                           ("null", "missing-value"), ("NaN", "missing-value")])
def test_empty_and_missing_value_texts_are_errors(tmp_path, text, message) -> None:
    path = _write_csv(tmp_path / "r.csv", _rows(1) + [(text, "pos")])
    with pytest.raises(DataError, match=rf"r.csv row 9: .*{message}"):
        read_table(path, "review", "sentiment")


def test_missing_columns_labels_and_one_class(tmp_path) -> None:
    path = _write_csv(tmp_path / "r.csv", _rows())
    with pytest.raises(DataError, match="no column 'text'.*review, sentiment.*data.text_column"):
        read_table(path, "text", "sentiment")
    with pytest.raises(DataError, match="no column 'label'"):
        read_table(path, "review", "label")
    with pytest.raises(DataError, match="labels 'pos' are not in the label map"):
        load_data(_cfg(path, label_map={"neg": 0, "positive": 1}))
    with pytest.raises(ConfigError, match="label_map"):
        DataConfig(label_map={"neg": 0, "pos": 2})
    one = _write_csv(tmp_path / "one.csv", [(t, "pos") for t in POS * 5])
    with pytest.raises(DataError, match="one class only"):
        load_data(_cfg(one))
    empty_label = _write_csv(tmp_path / "nolabel.csv", _rows(1) + [("Fine.", "")])
    with pytest.raises(DataError, match="row 9: the label .* is missing"):
        read_table(empty_label, "review", "sentiment")


def test_aclimdb_layout(tmp_path) -> None:
    for split in ("train", "test"):
        for label, texts in (("pos", POS), ("neg", NEG)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i, t in enumerate(texts * 2):
                (folder / f"{i}_7.txt").write_text(t + "<br /><br />The end.", encoding="utf-8")
    data = load_data(DataConfig(dataset="aclimdb", data_dir=str(tmp_path), val_size=4))
    assert data.class_names == ["neg", "pos"] and len(data.test) == 16 and len(data.train) == 12
    assert "<br" not in data.test.texts[0] and np.bincount(data.test.y.numpy()).tolist() == [8, 8]
    (tmp_path / "test" / "neg" / "9_1.txt").write_bytes(b"ok \xc3")
    with pytest.raises(DataError, match=r"9_1.txt: not valid UTF-8 at byte offset 3"):
        load_data(DataConfig(dataset="aclimdb", data_dir=str(tmp_path), val_size=4))
    with pytest.raises(DataError, match="nowhere/train/neg: folder not found"):
        load_data(DataConfig(dataset="aclimdb", data_dir=str(tmp_path / "nowhere"), val_size=4))
