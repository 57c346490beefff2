"""Deterministic stratified splits, and the one vectorised conversion from uint8 arrays to tensors.

The validation split is carved from the official training split only, so the official test split is never
mixed with train/val. Each of the three draws (validation, train subset, test subset) uses its own child of
``SeedSequence(split_seed)``: changing --train-subset does not move the validation images, and vice versa.

Example:
    val = stratified_indices(labels, 5000, seed=0)  # sorted indices, class proportions kept
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyfm.config import DataConfig
from tinyfm.data.dataset import ImageData, RawDataset, RawText, Split, TextData, TextSplit
from tinyfm.errors import ConfigError, DataError


def stratified_indices(labels: np.ndarray, n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Pick `n` indices whose class proportions match `labels` as closely as integers allow.

    Each class gets floor(n * count / total) items, and the leftover items go to the classes with the
    largest remainders (largest-remainder apportionment), so the result has exactly `n` indices.

    Args:
        labels: 1-D integer class ids.
        n: how many indices to draw, 0 <= n <= len(labels).
        seed: an int (or a numpy Generator) deciding which items of each class are taken.

    Returns:
        Sorted int64 indices into `labels`, without repeats; the same inputs always give the same result.

    Example:
        labels = np.repeat([0, 1], [60, 40])
        idx = stratified_indices(labels, 10, seed=0)  # 6 indices of class 0 and 4 of class 1
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot draw {n} items from {len(labels)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = _apportion(counts, n)
    # Shuffle, then group by class (a stable sort keeps the shuffled order inside each class) and keep the
    # first quota[c] of each group: one permutation and one sort, no per-class Python loop.
    perm = rng.permutation(len(labels))
    grouped = perm[np.argsort(inverse[perm], kind="stable")]
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(labels)) - np.repeat(starts, counts)
    return np.sort(grouped[rank < np.repeat(quota, counts)]).astype(np.int64)


def _apportion(counts: np.ndarray, n: int) -> np.ndarray:
    """Integer shares of `n` proportional to `counts` (exact integer arithmetic, ties go to lower class ids)."""
    total = int(counts.sum())
    if total == 0:
        return counts.copy()
    share, remainder = np.divmod(counts.astype(np.int64) * n, total)
    extra = n - int(share.sum())
    share[np.argsort(-remainder, kind="stable")[:extra]] += 1
    return share


def grouped_indices(groups: Sequence[str], n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Sorted indices of whole groups, taken in a seeded order of the (sorted) group names until >= `n` items.

    No group is split, so the result may exceed `n` by less than one group's size.

    Example:
        val = grouped_indices(movie_names, 1000, seed=0)  # ~1000 reviews of whole movies
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    names, inverse, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True,
                                       return_counts=True)
    order = rng.permutation(len(names))
    taken = order[: int(np.searchsorted(np.cumsum(counts[order]), n)) + 1]
    return np.flatnonzero(np.isin(inverse, taken)).astype(np.int64)


def split_indices(y_train: np.ndarray, y_test: np.ndarray, cfg: DataConfig,
                  groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val) into the official train split and of test into the official test split.

    Args:
        y_train: labels of the official training split.
        y_test: labels of the official test split.
        cfg: val_size, train_subset, test_subset and split_seed are used.
        groups: a group name per training item (e.g. the movie of a review): the validation split then takes
            whole groups (about val_size items) instead of a stratified draw.

    Returns:
        (train_idx, val_idx, test_idx), each sorted; train_idx and val_idx are disjoint.

    Example:
        tr, va, te = split_indices(y_train, y_test, DataConfig(val_size=5000, train_subset=10000))
    """
    _check_sizes(len(y_train), len(y_test), cfg)
    rng_val, rng_train, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.split_seed).spawn(3))
    if groups is None:
        val_idx = stratified_indices(y_train, cfg.val_size, rng_val)
    else:
        val_idx = grouped_indices(groups, cfg.val_size, rng_val)
    train_idx = np.setdiff1d(np.arange(len(y_train)), val_idx, assume_unique=True)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(train_idx):
            raise ConfigError(f"--train-subset: got {cfg.train_subset}, but only {len(train_idx)} training items "
                              f"remain after the {len(val_idx)}-item validation split")
        train_idx = train_idx[stratified_indices(y_train[train_idx], cfg.train_subset, rng_train)]
    test_idx = np.arange(len(y_test))
    if cfg.test_subset is not None:
        test_idx = stratified_indices(y_test, cfg.test_subset, rng_test)
    return train_idx, val_idx, test_idx


def _check_sizes(n_train: int, n_test: int, cfg: DataConfig) -> None:
    if cfg.val_size >= n_train:
        raise ConfigError(f"--val-size: got {cfg.val_size}, but {cfg.dataset} has {n_train} training images "
                          f"(the validation split must leave at least one; use at most {n_train - 1})")
    left = n_train - cfg.val_size
    if cfg.train_subset is not None and cfg.train_subset > left:
        raise ConfigError(f"--train-subset: got {cfg.train_subset}, but only {left} training images remain "
                          f"after the {cfg.val_size}-image validation split")
    if cfg.test_subset is not None and cfg.test_subset > n_test:
        raise ConfigError(f"--test-subset: got {cfg.test_subset}, but {cfg.dataset} has {n_test} test images")


def to_image_data(raw: RawDataset, cfg: DataConfig) -> ImageData:
    """Split `raw` as `cfg` says and convert each split to tensors once (float32 in [0, 1], int64 labels).

    Example:
        data = to_image_data(load_fashion_mnist(), DataConfig(val_size=5000))
    """
    train_idx, val_idx, test_idx = split_indices(raw.y_train, raw.y_test, cfg)
    return ImageData(
        train=_to_split(raw.x_train, raw.y_train, train_idx, raw.max_value),
        val=_to_split(raw.x_train, raw.y_train, val_idx, raw.max_value),
        test=_to_split(raw.x_test, raw.y_test, test_idx, raw.max_value),
        class_names=list(raw.class_names),
        input_shape=tuple(int(d) for d in raw.x_train.shape[1:]),
        num_classes=len(raw.class_names),
        source=raw.source,
    )


def _to_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, max_value: float) -> Split:
    import torch

    # numpy gives a size-1 channel axis stride 1, so (N, 1, H, W) arrays arrive with strides (HW, 1, W, 1), which
    # torch also reads as channels_last; batch-norm backward then takes a wrong kernel path and corrupts memory
    # (seen with torch 2.13 CPU). A fresh tensor in the default layout avoids that ambiguity.
    picked = np.ascontiguousarray(x[idx])
    images = torch.empty(picked.shape, dtype=torch.float32)  # (N, C, H, W), standard strides
    images.copy_(torch.from_numpy(picked)).div_(max_value)
    labels = torch.from_numpy(y[idx].astype(np.int64))
    return Split(images, labels)


def to_text_data(raw: RawText, cfg: DataConfig) -> TextData:
    """Split `raw` as `cfg` says (validation by whole groups when the source has them) and tokenize every split
    with a word-level tokenizer fitted on the training split only.

    Raises:
        DataError: the training split holds a single class (nothing to learn to tell apart).

    Example:
        data = to_text_data(load_reviews(cfg), cfg)  # data.tokenizer: the fitted WordTokenizer
    """
    from tinyfm.data.text import create_tokenizer

    train_idx, val_idx, test_idx = split_indices(raw.y_train, raw.y_test, cfg, groups=raw.groups_train)
    present = np.unique(raw.y_train[train_idx])
    if len(present) < 2:
        names = [raw.class_names[i] for i in present]
        raise DataError(f"{raw.source}: the training split holds one class only ({', '.join(names)}); a classifier "
                        "needs at least two (check the label column and --train-subset)")
    texts = {"train": [raw.texts_train[i] for i in train_idx], "val": [raw.texts_train[i] for i in val_idx],
             "test": [raw.texts_test[i] for i in test_idx]}
    tokenizer = create_tokenizer("word", texts["train"], cfg)
    labels = {"train": raw.y_train[train_idx], "val": raw.y_train[val_idx], "test": raw.y_test[test_idx]}
    splits = {k: _text_split(texts[k], labels[k], tokenizer) for k in texts}
    return TextData(splits["train"], splits["val"], splits["test"], class_names=list(raw.class_names),
                    num_classes=len(raw.class_names), source=raw.source, tokenizer=tokenizer,
                    word_tokenizer=tokenizer)


def _text_split(texts: list[str], y: np.ndarray, tokenizer) -> TextSplit:
    import torch

    return TextSplit(tokenizer.encode(texts), torch.from_numpy(np.asarray(y, dtype=np.int64)), texts)
