"""Image files and bytes for prediction: one decoder for `tinyfm predict` (files) and `tinyfm serve` (uploads)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tinyfm.data.images import decode_image, load_image, to_model_input
from tinyfm.errors import DataError


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_bytes_and_file_give_the_same_input(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    (tmp_path / "x.png").write_bytes(_png(a))
    np.save(tmp_path / "x.npy", a)
    x = load_image(tmp_path / "x.png")
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(x, decode_image(_png(a), "upload"))
    np.testing.assert_array_equal(x, load_image(tmp_path / "x.npy"))
    np.testing.assert_array_equal(x, decode_image((tmp_path / "x.npy").read_bytes(), "upload"))  # by magic bytes
    np.testing.assert_allclose(load_image(tmp_path / "x.png", invert=True), 1 - x)


@pytest.mark.parametrize(("data", "match"), [
    (b"not an image", "not an image Pillow can read"),
    (_png(np.zeros((32, 32), np.uint8)), r"shape \(1, 32, 32\), expected \(1, 28, 28\)"),
    (_png(np.zeros((28, 28), np.uint8))[:40], "not an image Pillow can read"),  # truncated
    (b"\x93NUMPY garbage", "not a readable .npy"),
])
def test_bad_bytes_name_the_field(data, match):
    with pytest.raises(DataError, match=match) as e:
        decode_image(data, "file")
    assert str(e.value).startswith("file: ")


@pytest.mark.parametrize(("a", "match"), [
    (np.full((28, 28), 1.5, np.float32), r"in \[0, 1\]"),
    (np.zeros((28, 28), np.int32), "dtype int32"),
    (np.zeros((2, 28, 28), np.uint8), "expected"),
])
def test_to_model_input_checks(a, match):
    with pytest.raises(DataError, match=match):
        to_model_input(a, (1, 28, 28), "inputs")
