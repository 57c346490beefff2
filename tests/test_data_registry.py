"""The dataset registry: listing, registering, dispatch from DataConfig, and errors for unknown names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyfm.config import DataConfig
from tinyfm.data import ImageData, RawDataset, Split, list_datasets, load_data, register_dataset, registry
from tinyfm.errors import ConfigError


@pytest.fixture
def tiny_source(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a 3-class in-memory source for the duration of one test."""
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))

    @register_dataset("tiny-test")
    def _load(cfg: DataConfig) -> RawDataset:
        x = np.zeros((30, 3, 4, 4), np.uint8)
        return RawDataset(x, np.arange(30) % 3, x[:9], np.arange(9) % 3, ["a", "b", "c"], "memory")

    return "tiny-test"


def test_fashion_mnist_is_registered() -> None:
    assert "fashion-mnist" in list_datasets()
    assert list_datasets("*mnist*") == ["fashion-mnist"]
    assert list_datasets("nothing-*") == []


def test_load_data_dispatches_on_the_name(tiny_source: str) -> None:
    data = load_data(DataConfig(dataset=tiny_source, val_size=6))
    assert isinstance(data, ImageData)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 9)
    assert data.input_shape == (3, 4, 4) and data.num_classes == 3 and data.class_names == ["a", "b", "c"]
    assert torch.bincount(data.val.y).tolist() == [2, 2, 2]


def test_registering_a_name_twice_is_an_error(tiny_source: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(tiny_source)(lambda cfg: None)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="--dataset") as e:
        load_data(DataConfig(dataset="fashion-mnits"))
    assert "fashion-mnist" in str(e.value) and "did you mean" in str(e.value)


def test_unavailable_dataset_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_UNAVAILABLE", {"exotic": "it needs the exotic package"})
    with pytest.raises(ConfigError, match="exotic package"):
        load_data(DataConfig(dataset="exotic"))


def test_split_len_repr_and_shape_check() -> None:
    split = Split(torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.int64))
    assert len(split) == 5 and repr(split) == "Split(n=5, x=(5, 1, 2, 2) torch.float32, y=torch.int64)"
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        Split(torch.zeros(5, 1, 2, 2), torch.zeros(4, dtype=torch.int64))
