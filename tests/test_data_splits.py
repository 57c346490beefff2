"""Stratified, deterministic index selection and the split plan built from a DataConfig."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyfm.config import DataConfig
from tinyfm.data import RawDataset, split_indices, stratified_indices, to_image_data
from tinyfm.errors import ConfigError


@st.composite
def labels_and_n(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    labels = np.array(draw(st.lists(st.integers(0, 5), min_size=1, max_size=200)))
    return labels, draw(st.integers(0, len(labels)))


@settings(max_examples=200, deadline=None)
@given(case=labels_and_n(), seed=st.integers(0, 2**32 - 1))
def test_stratified_indices_properties(case: tuple[np.ndarray, int], seed: int) -> None:
    labels, n = case
    idx = stratified_indices(labels, n, seed)
    assert idx.dtype == np.int64 and len(idx) == n
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert idx.size == 0 or (idx[0] >= 0 and idx[-1] < len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    picked = np.array([(labels[idx] == c).sum() for c in classes])
    quota = counts * n / len(labels)
    assert np.all(picked >= np.floor(quota)) and np.all(picked <= np.ceil(quota))  # proportions kept
    np.testing.assert_array_equal(stratified_indices(labels, n, seed), idx)  # deterministic


def test_exact_proportions() -> None:
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    idx = stratified_indices(labels, 100, seed=3)
    assert np.bincount(labels[idx]).tolist() == [60, 30, 10]


def test_seed_changes_the_choice_not_the_counts() -> None:
    labels = np.arange(1000) % 10
    a, b = stratified_indices(labels, 100, 0), stratified_indices(labels, 100, 1)
    assert not np.array_equal(a, b)
    assert np.bincount(labels[a]).tolist() == np.bincount(labels[b]).tolist() == [10] * 10


def test_accepts_a_generator_and_any_label_values() -> None:
    labels = np.array([7, 7, -1, -1, 100, 100])
    idx = stratified_indices(labels, 3, np.random.default_rng(0))
    assert sorted(labels[idx].tolist()) == [-1, 7, 100]


def test_edges_and_errors() -> None:
    labels = np.arange(10) % 2
    assert stratified_indices(labels, 0, 0).size == 0
    np.testing.assert_array_equal(stratified_indices(labels, 10, 0), np.arange(10))
    with pytest.raises(ValueError, match="cannot draw 11"):
        stratified_indices(labels, 11, 0)
    with pytest.raises(ValueError, match="1-D"):
        stratified_indices(labels.reshape(2, 5), 2, 0)


def test_split_plan_is_disjoint_and_seeded() -> None:
    y_train, y_test = np.arange(1000) % 10, np.arange(300) % 10
    cfg = DataConfig(val_size=100, train_subset=200, test_subset=50, split_seed=5)
    train, val, test = split_indices(y_train, y_test, cfg)
    assert (len(train), len(val), len(test)) == (200, 100, 50)
    assert np.intersect1d(train, val).size == 0
    for a, b in zip(split_indices(y_train, y_test, cfg), (train, val, test), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("kwargs", "flag"), [({"val_size": 1000}, "--val-size"),
                                              ({"val_size": 100, "train_subset": 901}, "--train-subset"),
                                              ({"val_size": 100, "test_subset": 301}, "--test-subset")])
def test_split_plan_rejects_impossible_sizes(kwargs: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        split_indices(np.arange(1000) % 10, np.arange(300) % 10, DataConfig(**kwargs))


def test_to_image_data_converts_once_to_tensors() -> None:
    x = np.arange(40 * 4, dtype=np.uint8).reshape(40, 1, 2, 2) % 17
    raw = RawDataset(x, np.arange(40) % 4, x[:8], np.arange(8) % 4, ["a", "b", "c", "d"], "memory", max_value=16)
    data = to_image_data(raw, DataConfig(val_size=8))
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert data.input_shape == (1, 2, 2) and data.num_classes == 4 and data.source == "memory"
    assert float(data.train.x.max()) <= 1.0 and float(data.test.x.max()) == 1.0
    assert "train=32, val=8, test=8" in repr(data)
