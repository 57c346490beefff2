"""Fashion-MNIST: the real Debian files, directory resolution, validation errors, splits and the download path."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyfm.config import DataConfig
from tinyfm.data import RawDataset, load_data, split_indices, to_image_data, write_idx
from tinyfm.data import fashion_mnist as fm
from tinyfm.errors import ConfigError, DataError

real = pytest.mark.skipif(not all((fm.SYSTEM_DIR / n).is_file() for n in fm.DEBIAN_SHA256),
                          reason="dataset-fashion-mnist is not installed")
# Timestamps in the mirror's gzip headers, found by rebuilding the headers until the digests matched.
MIRROR_MTIME = {"train": 1504176606, "t10k": 1504176627}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the caller's TINYFM_DATA or download cache."""
    monkeypatch.delenv("TINYFM_DATA", raising=False)
    monkeypatch.setenv("TINYFM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def raw() -> RawDataset:
    if not all((fm.SYSTEM_DIR / n).is_file() for n in fm.DEBIAN_SHA256):
        pytest.skip("dataset-fashion-mnist is not installed")
    return fm.load_fashion_mnist(fm.SYSTEM_DIR)


def write_small_set(directory: Path, n_train: int = 60, n_test: int = 20, compress: bool = True) -> Path:
    """Write a tiny but valid Fashion-MNIST directory: every class present, pixel value = image index % 256."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = fm.FILES[split]
        suffix = ".gz" if compress else ""
        images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None], (n, 28, 28))
        write_idx(directory / f"{images_stem}{suffix}", images, compress=compress)
        write_idx(directory / f"{labels_stem}{suffix}", rng.permutation(np.arange(n) % 10).astype(np.uint8),
                  compress=compress)
    return directory


def _message(directory: Path) -> str:
    with pytest.raises(DataError) as e:
        fm.load_fashion_mnist(directory)
    return str(e.value)


# --- the real files ------------------------------------------------------------------------------------------


@real
def test_real_counts_shapes_and_classes(raw: RawDataset) -> None:
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.uint8
    assert np.bincount(raw.y_train).tolist() == [6000] * 10
    assert np.bincount(raw.y_test).tolist() == [1000] * 10
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"
    assert raw.source == str(fm.SYSTEM_DIR)


@real
def test_debian_files_match_the_known_digests() -> None:
    for name, digest in fm.DEBIAN_SHA256.items():
        assert hashlib.sha256((fm.SYSTEM_DIR / name).read_bytes()).hexdigest() == digest, name


@real
def test_mirror_digests_are_the_debian_files_with_their_gzip_header_restored(tmp_path: Path) -> None:
    for name in fm.MIRROR_SHA256:
        mirror = _as_mirror_file(fm.SYSTEM_DIR / name)
        assert hashlib.sha256(mirror).hexdigest() == fm.MIRROR_SHA256[name], name


def _as_mirror_file(debian_file: Path) -> bytes:
    """Rebuild the mirror's bytes: Debian's gzip header lacks the FNAME field and has a reset timestamp."""
    data = debian_file.read_bytes()
    stem = debian_file.name.removesuffix(".gz")
    mtime = MIRROR_MTIME[stem.split("-")[0]]
    # RFC 1952: ID1 ID2 CM FLG(FNAME) MTIME XFL OS, then the zero-terminated name; the deflate data is unchanged.
    header = b"\x1f\x8b\x08\x08" + mtime.to_bytes(4, "little") + b"\x00\x03" + stem.encode() + b"\x00"
    return header + data[10:]


@real
def test_default_split_sizes_and_stratification(raw: RawDataset) -> None:
    data = to_image_data(raw, DataConfig())
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert torch.bincount(data.val.y).tolist() == [500] * 10
    assert torch.bincount(data.train.y).tolist() == [5500] * 10
    assert data.train.x.shape == (55000, 1, 28, 28) and data.train.x.dtype == torch.float32
    assert data.train.y.dtype == torch.int64
    assert 0.0 == data.train.x.min() and data.train.x.max() == 1.0
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.class_names == fm.CLASS_NAMES


@real
def test_subsets_are_stratified(raw: RawDataset) -> None:
    data = to_image_data(raw, DataConfig(val_size=1000, train_subset=2000, test_subset=500))
    assert torch.bincount(data.train.y).tolist() == [200] * 10
    assert torch.bincount(data.val.y).tolist() == [100] * 10
    assert torch.bincount(data.test.y).tolist() == [50] * 10


@real
def test_splits_are_deterministic_and_seeded(raw: RawDataset) -> None:
    cfg = DataConfig(train_subset=1000, test_subset=500)
    first, again = (split_indices(raw.y_train, raw.y_test, cfg) for _ in range(2))
    other = split_indices(raw.y_train, raw.y_test, DataConfig(train_subset=1000, test_subset=500, split_seed=1))
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@real
def test_validation_split_does_not_move_with_the_train_subset(raw: RawDataset) -> None:
    _, val_all, _ = split_indices(raw.y_train, raw.y_test, DataConfig())
    _, val_sub, _ = split_indices(raw.y_train, raw.y_test, DataConfig(train_subset=1000))
    np.testing.assert_array_equal(val_all, val_sub)


@real
def test_train_and_val_partition_the_official_train_split(raw: RawDataset) -> None:
    train, val, test = split_indices(raw.y_train, raw.y_test, DataConfig())
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(60000))
    np.testing.assert_array_equal(test, np.arange(10000))


@real
def test_test_split_is_exactly_the_official_test_images(raw: RawDataset) -> None:
    data = to_image_data(raw, DataConfig(val_size=100, train_subset=100))
    assert torch.equal(data.test.x, torch.from_numpy(raw.x_test).float() / 255)
    assert torch.equal(data.test.y, torch.from_numpy(raw.y_test).long())


@real
def test_load_data_reads_the_system_directory_by_default() -> None:
    data = load_data(DataConfig(val_size=100, train_subset=100, test_subset=100))
    assert data.source == str(fm.SYSTEM_DIR)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 100, 100)


# --- directory resolution -------------------------------------------------------------------------------------


def test_tinyfm_data_overrides_the_system_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_small_set(tmp_path / "small")
    monkeypatch.setenv("TINYFM_DATA", str(tmp_path / "small"))
    data = load_data(DataConfig(val_size=10))
    assert data.source == str(tmp_path / "small")
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    assert torch.bincount(data.val.y).tolist() == [1] * 10


def test_explicit_data_dir_beats_tinyfm_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_small_set(tmp_path / "env", n_train=30)
    write_small_set(tmp_path / "explicit", n_train=40, compress=False)  # raw, uncompressed names
    monkeypatch.setenv("TINYFM_DATA", str(tmp_path / "env"))
    data = load_data(DataConfig(data_dir=str(tmp_path / "explicit"), val_size=10))
    assert data.source == str(tmp_path / "explicit") and len(data.train) == 30


def test_a_fashion_mnist_subfolder_is_found(tmp_path: Path) -> None:
    write_small_set(tmp_path / "fashion-mnist")
    assert fm.load_fashion_mnist(tmp_path).source == str(tmp_path / "fashion-mnist")


def test_pixels_scale_to_unit_range(tmp_path: Path) -> None:
    data = to_image_data(fm.load_fashion_mnist(write_small_set(tmp_path)), DataConfig(val_size=0))
    np.testing.assert_allclose(data.test.x[:, 0, 0, 0].numpy(), np.arange(20) / 255, rtol=1e-6)


def test_missing_directory_says_how_to_fix_it(tmp_path: Path) -> None:
    message = _message(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "no such directory" in message
    for fix in ("dataset-fashion-mnist", "scripts/setup.sh", "--data-dir", "TINYFM_DATA", "--download"):
        assert fix in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    message = _message(tmp_path)
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte" in message and "--download" in message


def test_unset_sources_list_every_place_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-debian-package")
    with pytest.raises(DataError) as e:
        fm.load_fashion_mnist()
    assert str(tmp_path / "no-debian-package") in str(e.value) and str(tmp_path / "cache") in str(e.value)


# --- validation -----------------------------------------------------------------------------------------------


def test_labels_file_given_as_images(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(labels.read_bytes())
    message = _message(tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message and "labels file" in message


def test_images_file_given_as_labels(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(images.read_bytes())
    message = _message(tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in message and "images file" in message


def test_label_out_of_range(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.r_[np.zeros(59), 10].astype(np.uint8), compress=True)
    message = _message(tmp_path)
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in message and "label 10 at index 59" in message


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8), compress=True)
    message = _message(tmp_path)
    assert "20 images" in message and "19 labels" in message
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert str(tmp_path / name) in message


def test_wrong_image_size(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((20, 32, 32), np.uint8), compress=True)
    message = _message(tmp_path)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message and "(20, 32, 32)" in message


def test_html_saved_in_place_of_a_data_file(tmp_path: Path) -> None:
    write_small_set(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_text("<!DOCTYPE html><html>Sign in</html>")
    message = _message(tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message and "HTML" in message


def test_split_sizes_the_data_cannot_supply(tmp_path: Path) -> None:
    directory = str(write_small_set(tmp_path))
    for cfg, flag in ((DataConfig(data_dir=directory, val_size=60), "--val-size"),
                      (DataConfig(data_dir=directory, val_size=10, train_subset=51), "--train-subset"),
                      (DataConfig(data_dir=directory, val_size=10, test_subset=21), "--test-subset")):
        with pytest.raises(ConfigError, match=flag):
            load_data(cfg)


# --- download -------------------------------------------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Counter]]:
    """A loopback mirror serving byte-exact copies of the official .gz files; yields (base URL, request counts)."""
    if not all((fm.SYSTEM_DIR / n).is_file() for n in fm.DEBIAN_SHA256):
        pytest.skip("dataset-fashion-mnist is not installed")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "mirror"
    root.mkdir()
    for name in fm.MIRROR_SHA256:
        (root / name).write_bytes(_as_mirror_file(fm.SYSTEM_DIR / name))
    requests: Counter = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            requests[self.path.lstrip("/")] += 1
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()
    httpd.server_close()


def test_download_fetches_verifies_and_reuses(mirror: tuple[str, Counter], tmp_path: Path) -> None:
    base_url, requests = mirror
    raw = fm.load_fashion_mnist(tmp_path / "empty", download=True, base_url=base_url)
    assert raw.source == str(tmp_path / "cache" / "fashion-mnist")
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    fm.download_fashion_mnist(base_url=base_url)
    assert requests == Counter({name: 1 for name in fm.MIRROR_SHA256})  # verified copies are not fetched twice


def test_download_is_not_attempted_without_the_flag(mirror: tuple[str, Counter], tmp_path: Path) -> None:
    base_url, requests = mirror
    with pytest.raises(DataError, match="--download"):
        fm.load_fashion_mnist(tmp_path / "empty", base_url=base_url)
    assert not requests


def test_a_mirror_serving_other_bytes_is_rejected(tmp_path: Path, mirror: tuple[str, Counter]) -> None:
    base_url, _ = mirror
    (tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match="checksum mismatch") as e:
        fm.download_fashion_mnist(tmp_path / "dl", base_url=base_url)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and fm.MIRROR_SHA256["t10k-labels-idx1-ubyte.gz"] in str(e.value)
    assert not (tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz").exists()
