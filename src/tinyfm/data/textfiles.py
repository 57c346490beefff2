"""Text data from files: UTF-8 decoding with exact error positions, CSV/TSV/JSONL tables, the aclImdb layout.

Every file is read as UTF-8 whatever the locale (a BOM is dropped). A byte that is not UTF-8 is a DataError
naming the file and the byte offset, unless ``encoding_errors="replace"`` (then it becomes U+FFFD). Rows are
never dropped silently: an empty text, a text that is only "NA"/"null"/"nan"/"none" (what spreadsheets and
pandas write for a missing value), a missing column and a label outside the label map are errors naming the file
and row.

Registered sources:
- ``text-file``: ``--data-dir`` is a .csv/.tsv/.jsonl file (20% held out as a fixed stratified test split), or a
  folder holding train.<ext> and test.<ext>; columns data.text_column and data.label_column.
- ``aclimdb``: ``--data-dir`` is the aclImdb folder (train|test/pos|neg/*.txt, the Large Movie Review Dataset).

Example:
    texts, labels = read_table("reviews.csv", text_column="review", label_column="sentiment")
"""

from __future__ import annotations

import bz2
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinyfm.config import DataConfig
from tinyfm.data.dataset import RawText
from tinyfm.data.registry import register_dataset
from tinyfm.errors import ConfigError, DataError

MISSING = ("na", "n/a", "nan", "null", "none")
"""Texts (case-insensitive, stripped) that stand for a missing value, not for a review."""
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEST_FRACTION = 0.2
"""Share of a single file held out as the test split (stratified, fixed seed: it never moves with --split-seed)."""
_TEST_SEED = 0


REPLACE_HINT = "fix the file or pass --set data.encoding_errors=replace to replace bad bytes"


def decode_utf8(data: bytes, where: str | Path, errors: str = "strict", hint: str = REPLACE_HINT) -> str:
    """`data` decoded as UTF-8 (a leading BOM dropped); a bad byte is a DataError naming `where`, its offset and
    `hint` (what the user can do about it)."""
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 at byte offset {e.start} (byte 0x{data[e.start]:02x}); "
                        f"{hint}") from None


def read_text(path: str | Path, errors: str = "strict", hint: str = REPLACE_HINT) -> str:
    """The whole file as text (UTF-8; .bz2 files are decompressed first, offsets then count decompressed bytes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    if path.suffix == ".bz2":
        try:
            data = bz2.decompress(data)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable bz2 file ({e})") from None
    return decode_utf8(data, path if path.suffix != ".bz2" else f"{path} (decompressed)", errors, hint)


def shorten(text: str, width: int) -> str:
    """`text` itself, or its first width - 3 characters and "..." when it is longer (for messages and echoes)."""
    return text if len(text) <= width else f"{text[:width - 3]}..."


def check_text(text: Any, where: str) -> str:
    """`text` itself when it is a real text; else a DataError naming `where` (the file and row)."""
    if not isinstance(text, str):
        raise DataError(f"{where}: the text is {text!r}, not a string")
    if not text.strip():
        raise DataError(f"{where}: the text is empty")
    if text.strip().lower() in MISSING:
        raise DataError(f"{where}: the text is {text.strip()!r}, a missing-value marker, not a text")
    return text


def _table_format(path: Path) -> str:
    name = path.name.removesuffix(".bz2")
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DataError(f"{path}: unknown table format (expected one of {', '.join(TABLE_SUFFIXES)}, optionally .bz2)")


def _csv_rows(text: str, delimiter: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _jsonl_rows(text: str, path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    rows, keys = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        keys.update(dict.fromkeys(row))
    return list(keys), rows


def read_rows(path: str | Path, errors: str = "strict") -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows as dicts) of a .csv, .tsv or .jsonl file (each optionally .bz2)."""
    path = Path(path)
    fmt, text = _table_format(path), read_text(path, errors)
    if fmt == ".jsonl":
        return _jsonl_rows(text, path)
    return _csv_rows(text, "," if fmt == ".csv" else "\t")


def read_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               errors: str = "strict") -> tuple[list[str], list[str]]:
    """Texts and raw labels (as strings) of a table; every row is checked (see the module docstring).

    Returns:
        (texts, labels), one entry per row, in file order.

    Example:
        texts, labels = read_table("train.tsv", "sentence", "label")
    """
    path = Path(path)
    columns, rows = read_rows(path, errors)
    for col, flag in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in columns:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(map(str, columns)) or 'none'}); "
                            f"set --set data.{flag}=NAME")
    if not rows:
        raise DataError(f"{path}: no rows")
    texts, labels = [], []
    for n, row in enumerate(rows, 1):
        where = f"{path} row {n}"
        texts.append(check_text(row.get(text_column), where))
        label = row.get(label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{where}: the label ({label_column}) is missing")
        labels.append(str(label).strip())
    return texts, labels


def map_labels(raw: Sequence[str], label_map: dict[str, int] | None, where: str,
               classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class ids of raw labels, and the class names (index = id).

    Args:
        raw: labels as strings.
        label_map: raw label -> id; None = `classes` if given, else the sorted distinct labels of `raw`.
        where: the file, for error messages.
        classes: class names already fixed (e.g. by the training file), when label_map is None.

    Raises:
        DataError: a label outside the map (or outside the training labels), naming some of them.
    """
    if label_map is not None:
        mapping = {str(k): int(v) for k, v in label_map.items()}
        names = [" / ".join(sorted(k for k, v in mapping.items() if v == i)) for i in range(max(mapping.values()) + 1)]
    else:
        names = classes if classes is not None else sorted(set(raw))
        mapping = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw) - set(mapping))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"{where}: labels {shown} are not in the label map ({', '.join(map(repr, mapping))}); "
                        "set --set data.label_map=... or fix the file")
    return np.asarray([mapping[r] for r in raw], dtype=np.int64), names


def _holdout(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of one labelled file: a fixed stratified TEST_FRACTION as the test split."""
    from tinyfm.data.splits import stratified_indices

    test = stratified_indices(y, int(round(TEST_FRACTION * len(y))), seed=_TEST_SEED)
    return np.setdiff1d(np.arange(len(y)), test, assume_unique=True), test


def _find_table(folder: Path, stem: str) -> Path | None:
    candidates = [folder / f"{stem}{s}{z}" for s in TABLE_SUFFIXES for z in ("", ".bz2")]
    return next((p for p in candidates if p.is_file()), None)


def load_text_file(cfg: DataConfig) -> RawText:
    """The `text-file` source: one table (test held out) or a folder with train.<ext> and test.<ext>."""
    if not cfg.data_dir:
        raise ConfigError("--data-dir: dataset text-file needs a .csv/.tsv/.jsonl file or a folder with "
                          "train.csv and test.csv (or .tsv/.jsonl)")
    path = Path(cfg.data_dir)
    cols = (cfg.text_column, cfg.label_column, cfg.encoding_errors)
    if path.is_dir():
        train, test = _find_table(path, "train"), _find_table(path, "test")
        if train is None or test is None:
            raise DataError(f"{path}: expected train.<ext> and test.<ext> (ext: csv, tsv or jsonl)")
        texts_tr, raw_tr = read_table(train, *cols)
        texts_te, raw_te = read_table(test, *cols)
        y_tr, names = map_labels(raw_tr, cfg.label_map, str(train))
        y_te, _ = map_labels(raw_te, cfg.label_map, str(test), classes=names)
        return RawText(texts_tr, y_tr, texts_te, y_te, names, source=str(path))
    texts, raw = read_table(path, *cols)
    y, names = map_labels(raw, cfg.label_map, str(path))
    tr, te = _holdout(y)
    return RawText([texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te], names, source=str(path))


# ---- aclImdb ------------------------------------------------------------------------------------------------------

ACLIMDB_CLASSES = ["neg", "pos"]


def _read_review(path: Path, errors: str) -> str:
    # The reviews carry HTML line breaks; they are layout, not words.
    return check_text(read_text(path, errors).replace("<br />", " "), str(path))


def _aclimdb_split(root: Path, split: str, errors: str) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for label, name in enumerate(ACLIMDB_CLASSES):
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected the aclImdb layout train|test/pos|neg/*.txt)")
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise DataError(f"{folder}: no .txt files")
        texts += [_read_review(f, errors) for f in files]
        labels += [label] * len(files)
    return texts, np.asarray(labels, dtype=np.int64)


def load_aclimdb(cfg: DataConfig) -> RawText:
    """The `aclimdb` source: the official train and test splits, neg = 0 and pos = 1 (unsup/ is ignored)."""
    if not cfg.data_dir:
        raise ConfigError("--data-dir: dataset aclimdb needs the aclImdb folder (train|test/pos|neg/*.txt)")
    root = Path(cfg.data_dir)
    texts_tr, y_tr = _aclimdb_split(root, "train", cfg.encoding_errors)
    texts_te, y_te = _aclimdb_split(root, "test", cfg.encoding_errors)
    return RawText(texts_tr, y_tr, texts_te, y_te, list(ACLIMDB_CLASSES), source=str(root))


register_dataset("text-file")(load_text_file)
register_dataset("aclimdb")(load_aclimdb)
