"""Single images for prediction: PNG/JPEG (via Pillow, which matplotlib brings) or .npy, validated against the model.

`tinyfm predict` reads files with :func:`load_image`; `tinyfm serve` decodes uploaded bytes with
:func:`decode_image` and checks JSON arrays with :func:`to_model_input`: one decoder and one set of checks, so
the server and the CLI give the same input to the model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tinyfm.errors import DataError

NPY_MAGIC = b"\x93NUMPY"


MAX_PIXELS = 4096 * 4096
"""Largest image decoded (a decompression bomb is refused before Pillow allocates it)."""


def read_image_array(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes: .npy (by name or magic bytes) as stored, anything Pillow reads as 8-bit greyscale.

    Args:
        data: the file's bytes.
        name: a file name or field name; it starts every error message, and a `.npy` suffix selects numpy.
    """
    if name.lower().endswith(".npy") or data[: len(NPY_MAGIC)] == NPY_MAGIC:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{name}: not a readable .npy array ({e})") from None
    from PIL import Image, UnidentifiedImageError

    too_big = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:  # checked before decoding: a 24 KB PNG can hold 196M pixels
                too_big = im.size
            else:
                return np.asarray(im.convert("L"))
    except Image.DecompressionBombError:
        too_big = "too many"
    except (UnidentifiedImageError, OSError, ValueError):  # OSError: truncated or corrupt image data
        raise DataError(f"{name}: not an image Pillow can read (expected PNG, JPEG or .npy)") from None
    size = "too many" if isinstance(too_big, str) else f"{too_big[0]}x{too_big[1]}"
    raise DataError(f"{name}: image of {size} pixels, more than the {MAX_PIXELS:,} tinyfm decodes")


def to_model_input(a: np.ndarray, shape: tuple[int, ...], name: str, invert: bool = False) -> np.ndarray:
    """Check one image array against the model's input `shape` and scale it to float32 (C, H, W) in [0, 1].

    uint8 arrays are scaled by 1/255; float arrays must already lie in [0, 1]. A missing channel axis is added
    for 1-channel models. `invert` maps v -> 1 - v. Errors (DataError) start with `name`.
    """
    if a.ndim == len(shape) - 1:
        a = a[None]
    if tuple(a.shape) != tuple(shape):
        raise DataError(f"{name}: image of shape {tuple(a.shape)}, expected {tuple(shape)} "
                        f"({shape[-2]}x{shape[-1]} pixels, {shape[0]} channel(s))")
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        x = a.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{name}: float values must be finite and in [0, 1], got [{x.min()}, {x.max()}]")
    else:
        raise DataError(f"{name}: dtype {a.dtype}, expected uint8 (0-255) or float in [0, 1]")
    return 1.0 - x if invert else x


def decode_image(data: bytes, name: str, shape: tuple[int, ...] = (1, 28, 28), invert: bool = False) -> np.ndarray:
    """:func:`load_image` for bytes already in memory (an upload): float32 (C, H, W) in [0, 1]."""
    return to_model_input(read_image_array(data, name), shape, name, invert)


def load_image(path: str | Path, shape: tuple[int, ...] = (1, 28, 28), invert: bool = False) -> np.ndarray:
    """Read one image as float32 (C, H, W) in [0, 1], checking it matches the model's input `shape`.

    uint8 arrays/images are scaled by 1/255; float arrays must already lie in [0, 1]. A missing channel axis
    is added for 1-channel models. `invert` maps v -> 1 - v (Fashion-MNIST objects are light on black).

    Example:
        x = load_image("shoe.png")  # (1, 28, 28)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return decode_image(path.read_bytes(), str(path), shape, invert)
