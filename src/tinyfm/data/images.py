"""Single images for prediction: PNG/JPEG (via Pillow, which matplotlib brings) or .npy, validated against the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfm.errors import DataError


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG or .npy)") from None


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
    a = _read_array(path)
    if a.ndim == len(shape) - 1:
        a = a[None]
    if tuple(a.shape) != tuple(shape):
        raise DataError(f"{path}: image of shape {tuple(a.shape)}, expected {tuple(shape)} "
                        f"({shape[-2]}x{shape[-1]} pixels, {shape[0]} channel(s))")
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif np.issubdtype(a.dtype, np.floating):
        x = a.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float values must be finite and in [0, 1], got [{x.min()}, {x.max()}]")
    else:
        raise DataError(f"{path}: dtype {a.dtype}, expected uint8 (0-255) or float in [0, 1]")
    return 1.0 - x if invert else x
