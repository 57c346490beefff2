"""scikit-learn's 8x8 handwritten digits (1797 images, UCI "Optical Recognition of Handwritten Digits").

Registered as "digits" only when scikit-learn is installed (it is optional). The set has no official test
split, so a stratified 20 % is held out with a fixed seed: it never moves with --split-seed, and so never
mixes with train/val. 1437 training images remain, so runs need ``--val-size`` well below the default 5000.

Example:
    data = load_data(DataConfig(dataset="digits", val_size=200))
    data.input_shape  # (1, 8, 8)
"""

from __future__ import annotations

import importlib.util

import numpy as np

from tinyfm.config import DataConfig
from tinyfm.data.dataset import RawDataset
from tinyfm.data.registry import mark_unavailable, register_dataset
from tinyfm.data.splits import stratified_indices

NAME = "digits"
TEST_SIZE = 360
"""Held-out test images (20 % of 1797, stratified)."""
_TEST_SEED = 0


def load_digits_dataset() -> RawDataset:
    """Load the digits through scikit-learn and hold out the fixed test split.

    Returns:
        RawDataset with x_* uint8 of shape (N, 1, 8, 8) in 0..16 (max_value 16) and y_* in 0..9.

    Example:
        raw = load_digits_dataset()
        raw.x_train.shape  # (1437, 1, 8, 8)
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)[:, None]  # (N, 1, 8, 8); values are counts 0..16
    labels = np.asarray(bunch.target).astype(np.uint8)
    test = stratified_indices(labels, TEST_SIZE, seed=_TEST_SEED)
    train = np.setdiff1d(np.arange(len(labels)), test, assume_unique=True)
    return RawDataset(images[train], labels[train], images[test], labels[test],
                      class_names=[str(d) for d in range(10)], source="sklearn.datasets.load_digits",
                      max_value=16.0)


def _load_for_config(cfg: DataConfig) -> RawDataset:
    return load_digits_dataset()


# find_spec checks that sklearn is installed without paying for its import.
if importlib.util.find_spec("sklearn") is not None:
    register_dataset(NAME)(_load_for_config)
else:
    mark_unavailable(NAME, "it needs scikit-learn (pip install scikit-learn)")
