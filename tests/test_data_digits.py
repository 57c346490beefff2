"""The optional scikit-learn digits source: tested against a stand-in loader, and for real when sklearn exists."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from tinyfm.config import DataConfig
from tinyfm.data import digits, list_datasets, load_data, to_image_data
from tinyfm.errors import ConfigError

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None


@pytest.fixture
def fake_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a stand-in sklearn.datasets.load_digits with the real set's shape: 1797 8x8 images, values 0..16."""
    rng = np.random.default_rng(0)
    target = np.arange(1797) % 10
    images = rng.integers(0, 17, size=(1797, 8, 8)).astype(np.float64)
    datasets = types.ModuleType("sklearn.datasets")
    datasets.load_digits = lambda: types.SimpleNamespace(images=images, target=target)
    package = types.ModuleType("sklearn")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "sklearn", package)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", datasets)


@pytest.mark.usefixtures("fake_sklearn")
def test_fixed_stratified_test_split() -> None:
    raw = digits.load_digits_dataset()
    assert raw.x_train.shape == (1437, 1, 8, 8) and raw.x_test.shape == (360, 1, 8, 8)
    assert np.bincount(raw.y_test).tolist() == [36] * 10
    np.testing.assert_array_equal(digits.load_digits_dataset().y_test, raw.y_test)


@pytest.mark.usefixtures("fake_sklearn")
def test_pixels_scale_by_sixteen() -> None:
    data = to_image_data(digits.load_digits_dataset(), DataConfig(dataset="digits", val_size=100, split_seed=3))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert float(data.train.x.max()) == 1.0 and float(data.train.x.min()) == 0.0
    assert torch.bincount(data.val.y).tolist() == [10] * 10


@pytest.mark.skipif(HAVE_SKLEARN, reason="scikit-learn is installed")
def test_without_sklearn_digits_is_unavailable() -> None:
    assert "digits" not in list_datasets()
    with pytest.raises(ConfigError, match="scikit-learn"):
        load_data(DataConfig(dataset="digits", val_size=100))


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
def test_real_digits_through_load_data() -> None:
    data = load_data(DataConfig(dataset="digits", val_size=137))
    assert (len(data.train), len(data.val), len(data.test)) == (1300, 137, 360)
