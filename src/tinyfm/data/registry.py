"""Data sources registered by name, and `load_data`, the one entry point the pipeline calls.

A source is a function ``(cfg: DataConfig) -> RawDataset``; `load_data` splits and converts what it returns.

Example:
    @register_dataset("my-set")
    def _load_my_set(cfg: DataConfig) -> RawDataset: ...

    list_datasets()                           # ['fashion-mnist', 'my-set']
    data = load_data(DataConfig(dataset="my-set", val_size=100))
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from tinyfm.config import DataConfig
from tinyfm.data.dataset import ImageData, RawDataset, RawText, TextData
from tinyfm.errors import ConfigError

Source = Callable[[DataConfig], RawDataset | RawText]

_SOURCES: dict[str, Source] = {}
_UNAVAILABLE: dict[str, str] = {}  # name -> why it is not registered here (e.g. a missing optional package)


def register_dataset(name: str) -> Callable[[Source], Source]:
    """Decorator registering a source under `name` (an existing name is an error, not a silent override).

    Example:
        @register_dataset("fashion-mnist")
        def _load(cfg: DataConfig) -> RawDataset: ...
    """

    def decorate(fn: Source) -> Source:
        if name in _SOURCES:
            raise ValueError(f"dataset {name!r} is already registered")
        _SOURCES[name] = fn
        _UNAVAILABLE.pop(name, None)
        return fn

    return decorate


def mark_unavailable(name: str, reason: str) -> None:
    """Record that source `name` exists but cannot be used here, so asking for it explains why."""
    _UNAVAILABLE[name] = reason


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered sources matching the glob `pattern`.

    Example:
        list_datasets("*mnist*")  # ['fashion-mnist']
    """
    return sorted(n for n in _SOURCES if fnmatch.fnmatchcase(n, pattern))


def load_data(cfg: DataConfig) -> ImageData | TextData:
    """Load `cfg.dataset` and split it: train/val from the official train split, test from the test split.

    Args:
        cfg: the dataset name and where to find it, plus the split sizes and split seed.

    Returns:
        ImageData with all three splits as in-memory tensors.

    Raises:
        ConfigError: for an unknown dataset (listing the known ones) or split sizes the data cannot supply.
        DataError: when the files are missing or corrupt (naming the file and how to fix it).

    Example:
        data = load_data(DataConfig(val_size=5000, train_subset=10000))
        len(data.train), len(data.val), len(data.test)  # (10000, 5000, 10000)
    """
    from tinyfm.data.splits import to_image_data, to_text_data

    raw = _get_source(cfg.dataset)(cfg)
    if isinstance(raw, RawText):  # a text source: split, then tokenized word-level (see tinyfm.data.text)
        return to_text_data(raw, cfg)
    return to_image_data(raw, cfg)


def _get_source(name: str) -> Source:
    if name in _SOURCES:
        return _SOURCES[name]
    if name in _UNAVAILABLE:
        raise ConfigError(f"--dataset: {name!r} is not available here: {_UNAVAILABLE[name]}")
    close = difflib.get_close_matches(name, list(_SOURCES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"--dataset: unknown dataset {name!r} (known: {', '.join(list_datasets())}{hint})")
