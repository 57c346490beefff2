"""IDX reading and writing: round trips, the byte layout, and a clear DataError for every kind of bad file."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyfm.data.idx import read_idx, write_idx
from tinyfm.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SYSTEM_LABELS = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


def _idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes() + payload


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as e:
        read_idx(path)
    message = str(e.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(tmp_path: Path, dtype: type, compress: bool) -> None:
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a", array, compress=compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
        elements={"allow_nan": False},
    ),
    compress=st.booleans(),
)
def test_round_trip_any_shape(array: np.ndarray, compress: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        back = read_idx(write_idx(Path(d) / "x.idx", array, compress=compress))
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_layout_is_big_endian(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.array([[1, 256]], dtype=np.int32))
    assert path.read_bytes() == bytes.fromhex("00000C02 00000001 00000002 00000001 00000100")


def test_reads_a_hand_written_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(_idx_bytes(0x0B, (3,), np.array([-2, 0, 513], ">i2").tobytes()))
    np.testing.assert_array_equal(read_idx(path), [-2, 0, 513])


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    gz_without_suffix = write_idx(tmp_path / "labels-idx1-ubyte", array, compress=True)
    raw_with_gz_suffix = write_idx(tmp_path / "labels-idx1-ubyte.gz", array, compress=False)
    assert gz_without_suffix.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), array)


def test_compressed_output_is_reproducible(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.uint8)
    first = write_idx(tmp_path / "a.gz", array, compress=True).read_bytes()
    assert write_idx(tmp_path / "b.gz", array, compress=True).read_bytes() == first


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros(5, np.uint8))
    write_idx(tmp_path / "x", np.ones(3, np.uint8))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [1, 1, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary file left behind


@pytest.mark.parametrize("array", [np.zeros(3, np.int64), np.zeros(3, bool), np.zeros(3, np.uint16)])
def test_write_rejects_dtypes_idx_cannot_hold(tmp_path: Path, array: np.ndarray) -> None:
    with pytest.raises(TypeError, match="IDX cannot store"):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


def test_write_rejects_a_scalar(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


@pytest.mark.skipif(not SYSTEM_LABELS.is_file(), reason="dataset-fashion-mnist is not installed")
def test_reads_the_real_fashion_mnist_labels() -> None:
    labels = read_idx(SYSTEM_LABELS)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10


# --- corrupt files: each gives a DataError that names the file and the problem ---------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope-idx1-ubyte", "not found")


def test_directory(tmp_path: Path) -> None:
    _expect_error(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"")
    _expect_error(tmp_path / "x.gz", "empty file")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path: Path, compress: bool) -> None:
    data = _idx_bytes(0x08, (10, 28, 28), bytes(10 * 28 * 28 - 100))
    (tmp_path / "x").write_bytes(gzip.compress(data) if compress else data)
    _expect_error(tmp_path / "x", "truncated", "7840 bytes", "found 7740")


def test_truncated_header(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(bytes([0, 0, 8, 3]) + bytes(6))
    _expect_error(tmp_path / "x", "truncated IDX header", "3 dimensions")


def test_shorter_than_the_magic(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00")
    _expect_error(tmp_path / "x", "truncated IDX header")


def test_trailing_bytes(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(_idx_bytes(0x08, (4,), bytes(4) + b"junk!"))
    _expect_error(tmp_path / "x", "5 trailing bytes")


def test_bad_magic(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"PK\x03\x04" + bytes(20))  # a zip archive, say
    _expect_error(tmp_path / "x", "not an IDX file", "50 4b 03 04")


def test_bad_dtype_code(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(_idx_bytes(0x0A, (4,), bytes(4)))
    _expect_error(tmp_path / "x", "unknown IDX dtype code 0x0A", "0x08 ubyte")


def test_zero_dimensions(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(bytes([0, 0, 8, 0]))
    _expect_error(tmp_path / "x", "0 dimensions")


def test_html_page_saved_as_gz(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"\n<!DOCTYPE html>\n<html><body>Access denied</body></html>\n")
    _expect_error(path, "HTML", "not gzip-compressed", "not IDX data")


def test_html_without_doctype(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"<HTML><head><title>404</title></head></HTML>")
    _expect_error(tmp_path / "x", "HTML")


def test_s3_xml_error_document(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code></Error>')
    _expect_error(path, "HTML/XML page")


def test_gzipped_html(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"<!doctype html><html></html>"))
    _expect_error(tmp_path / "x.gz", "gzip-compressed HTML")


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(_idx_bytes(0x08, (1000,), np.random.default_rng(0).bytes(1000)))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "x.gz", "truncated gzip")


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(_idx_bytes(0x08, (1000,), np.random.default_rng(0).bytes(1000))))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "x.gz").write_bytes(bytes(data))
    _expect_error(tmp_path / "x.gz", "gzip")


def test_gzip_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(gzip.compress(b""))
    _expect_error(tmp_path / "x.gz", "0 bytes")
