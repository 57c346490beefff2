"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747): 70 000 28x28 grey images of 10 clothing classes.

Where the files are looked for, first match wins:

1. `data_dir` (``--data-dir``), if given: only there;
2. else ``$TINYFM_DATA``, if set: only there;
3. else the Debian package's directory ``/usr/share/datasets/fashion-mnist`` (``apt install
   dataset-fashion-mnist``, which scripts/setup.sh does), then the download cache
   ``cache_dir()/fashion-mnist`` (filled by ``--download``).

Each of these may hold the four files directly or in a ``fashion-mnist/`` subfolder, gzip-compressed
(``*.gz``) or not. With ``download=True``, files found nowhere are fetched into the cache and checked
against the mirror's SHA-256 digests.

Example:
    raw = load_fashion_mnist()                     # RawDataset: x_train (60000, 1, 28, 28) uint8, ...
    raw = load_fashion_mnist("~/data", download=True)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinyfm.config import DataConfig
from tinyfm.data.dataset import RawDataset
from tinyfm.data.download import cache_dir, download
from tinyfm.data.idx import read_idx
from tinyfm.data.registry import register_dataset
from tinyfm.errors import DataError

NAME = "fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
IMAGE_SIZE = (28, 28)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""The official mirror (from the Fashion-MNIST README). An S3 *website* endpoint serves plain HTTP only;
integrity comes from the SHA-256 check, not from the transport."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Split -> (images, labels) file stems; each file may also be present gzip-compressed as ``<stem>.gz``."""

MIRROR_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
"""Digests of the .gz files as the mirror serves them (verified: they are the Debian files below with the
original gzip header restored, i.e. the same compressed bytes)."""

DEBIAN_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
"""Digests of the files installed by the Debian package dataset-fashion-mnist. They differ from the mirror's
only because Debian's reproducible-build tooling stripped the file name and reset the timestamp in the gzip
header; the compressed data and hence the decompressed files are identical (see RAW_SHA256)."""

RAW_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
"""Digests of the decompressed IDX files, the same whichever copy they came from."""

_STEMS = tuple(stem for pair in FILES.values() for stem in pair)


def load_fashion_mnist(data_dir: str | Path | None = None, download: bool = False, base_url: str = MIRROR,
                       timeout: float = 60) -> RawDataset:
    """Read the official train (60 000) and test (10 000) splits, validated.

    Args:
        data_dir: directory of the files; None = $TINYFM_DATA, then the system directory, then the cache.
        download: when the files are found nowhere, fetch them into ``cache_dir()/fashion-mnist``.
        base_url: where to download from (tests point this at a local server).
        timeout: seconds to wait for the server, per connect and per read.

    Returns:
        RawDataset with x_* uint8 of shape (N, 1, 28, 28) and y_* uint8 in 0..9.

    Raises:
        DataError: naming the directory or file, when files are missing (saying how to get them), corrupt,
            of the wrong kind (e.g. a labels file where images belong) or inconsistent with each other.

    Example:
        raw = load_fashion_mnist(os.environ.get("MY_DATA"))
        raw.x_train.shape  # (60000, 1, 28, 28)
    """
    directory = find_data_dir(data_dir)
    if directory is None:
        if not download:
            raise _missing_error(data_dir)
        directory = download_fashion_mnist(base_url=base_url, timeout=timeout)
    x_train, y_train = read_split(directory, "train")
    x_test, y_test = read_split(directory, "test")
    return RawDataset(x_train[:, None], y_train, x_test[:, None], y_test, list(CLASS_NAMES), str(directory))


@register_dataset(NAME)
def _load_for_config(cfg: DataConfig) -> RawDataset:
    return load_fashion_mnist(cfg.data_dir, download=cfg.download)


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The directories searched, in order (see the module docstring); each one's fashion-mnist/ is tried too.

    Example:
        candidate_dirs()  # [PosixPath('/usr/share/datasets/fashion-mnist'), PosixPath('~/.cache/tinyfm/...')]
    """
    if data_dir is not None:
        roots = [Path(data_dir)]
    elif os.environ.get("TINYFM_DATA"):
        roots = [Path(os.environ["TINYFM_DATA"])]
    else:
        roots = [SYSTEM_DIR, cache_dir() / NAME]
    return [r.expanduser() for r in roots]


def find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The first candidate directory holding all four files (raw or .gz), or None."""
    for directory in (d for root in candidate_dirs(data_dir) for d in (root, root / NAME)):
        if all(find_file(directory, stem) is not None for stem in _STEMS):
            return directory
    return None


def find_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem` if it exists, else `directory/stem.gz`, else None (read_idx detects gzip by content)."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def download_fashion_mnist(dest: str | Path | None = None, base_url: str = MIRROR, timeout: float = 60) -> Path:
    """Fetch the four .gz files into `dest` (default ``cache_dir()/fashion-mnist``), skipping verified ones.

    Example:
        download_fashion_mnist()  # PosixPath('/home/me/.cache/tinyfm/fashion-mnist')
    """
    dest = Path(dest).expanduser() if dest is not None else cache_dir() / NAME
    for name, digest in MIRROR_SHA256.items():
        download(base_url.rstrip("/") + "/" + name, dest / name, digest, timeout=timeout)
    return dest


def read_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one split: images (N, 28, 28) uint8 and labels (N,) uint8 in 0..9.

    Example:
        x, y = read_split(SYSTEM_DIR, "test")  # (10000, 28, 28), (10000,)
    """
    directory = Path(directory)
    images_path, labels_path = (_require_file(directory, stem) for stem in FILES[split])
    images = _check_images(images_path, read_idx(images_path))
    labels = _check_labels(labels_path, read_idx(labels_path))
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                        "the two files of a split must match (mixed-up or partial files?)")
    return images, labels


def _require_file(directory: Path, stem: str) -> Path:
    path = find_file(directory, stem)
    if path is None:
        raise DataError(f"{directory / stem}[.gz]: file not found; {_HOW_TO_FIX}")
    return path


def _check_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.ndim == 1:
        raise DataError(f"{path}: expected images of shape (N, 28, 28) uint8, got a 1-D array of {images.dtype} "
                        f"with {images.shape[0]} values; is this a labels file?")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SIZE or images.dtype != np.uint8:
        raise DataError(f"{path}: expected images of shape (N, 28, 28) uint8, got shape {images.shape} "
                        f"{images.dtype}")
    return images


def _check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype != np.uint8:
        hint = "; is this an images file?" if labels.ndim == 3 else ""
        raise DataError(f"{path}: expected labels of shape (N,) uint8, got shape {labels.shape} {labels.dtype}{hint}")
    bad = np.flatnonzero(labels >= len(CLASS_NAMES))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{len(CLASS_NAMES) - 1} "
                        f"({bad.size} labels out of range)")
    return labels


_HOW_TO_FIX = ("to fix: install the Debian package dataset-fashion-mnist (scripts/setup.sh does this), "
               "pass --data-dir DIR, set TINYFM_DATA=DIR, or pass --download")


def _missing_error(data_dir: str | Path | None) -> DataError:
    looked = "; ".join(_describe(d) for d in candidate_dirs(data_dir))
    return DataError(f"Fashion-MNIST not found ({looked}); {_HOW_TO_FIX}")


def _describe(directory: Path) -> str:
    """Why `directory` does not qualify: it is missing, or which files it lacks."""
    if not directory.is_dir():
        return f"{directory}: no such directory"
    missing = [stem for stem in _STEMS if find_file(directory, stem) is None]
    return f"{directory}: missing {', '.join(missing)} (raw or .gz)"
