"""Read and write IDX files (the MNIST / Fashion-MNIST container), raw or gzip-compressed.

Layout (LeCun et al., "THE MNIST DATABASE", section "FILE FORMATS"): a 4-byte magic number, which is two
zero bytes, a dtype code and the number of dimensions; then one big-endian uint32 per dimension; then the
values in C order, big-endian. gzip is recognised by its magic bytes (1f 8b) and never by the file name,
because mirrors and browsers rename files, and an error page saved as ``*.gz`` must be reported as one.

Example:
    write_idx("labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8), compress=True)
    labels = read_idx("labels-idx1-ubyte.gz")  # array([0, 1, ..., 9], dtype=uint8)
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from tinyfm.errors import DataError
from tinyfm.io import write_bytes

GZIP_MAGIC = b"\x1f\x8b"

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype code -> big-endian numpy dtype (the six types the format defines)."""

_DTYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}
# Markup that servers return instead of the file (login walls, 404 pages, S3 <Error> documents).
_MARKUP_PREFIXES = (b"<!doctype", b"<html", b"<head", b"<?xml", b"<error")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, into a native-endian numpy array.

    Args:
        path: the file; compression is detected from its first two bytes, not its name.

    Returns:
        A writable array with the shape and dtype the header declares.

    Raises:
        DataError: naming the file, when it is missing, empty, truncated, has trailing bytes, is a corrupt
            gzip stream, is an HTML/XML page, or has a bad magic number or dtype code.

    Example:
        images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # (10000, 28, 28) uint8
    """
    path = Path(path)
    data = _read_bytes(path)
    compressed = data.startswith(GZIP_MAGIC)
    if compressed:
        data = _gunzip(path, data)
    _reject_markup(path, data, compressed)
    code, shape, offset = _parse_header(path, data)
    return _parse_payload(path, data, code, shape, offset)


def write_idx(path: str | Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` as an IDX file, atomically (a crash never leaves a half-written file).

    Args:
        path: destination; its name does not decide compression, `compress` does.
        array: uint8, int8, int16, int32, float32 or float64, with 1 to 255 dimensions.
        compress: gzip the file (with a zero timestamp, so equal arrays give equal bytes).

    Returns:
        `path` as a Path.

    Example:
        write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    """
    array = np.asarray(array)
    code = _code_for(array)
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    if compress:
        data = gzip.compress(data, mtime=0)
    return write_bytes(path, data)


def _code_for(array: np.ndarray) -> int:
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        allowed = "uint8, int8, int16, int32, float32, float64"
        raise TypeError(f"IDX cannot store dtype {array.dtype} (allowed: {allowed}); cast the array first")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got an array with {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX dimensions are uint32, got shape {array.shape}")
    return code


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror})") from None
    if not data:
        raise DataError(f"{path}: empty file (0 bytes); an interrupted download? Delete it and fetch it again")
    return data


def _gunzip(path: Path, data: bytes) -> bytes:
    try:
        data = gzip.decompress(data)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (the compressed stream ends early; an interrupted "
                        "download?). Delete it and fetch it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt gzip file ({e}). Delete it and fetch it again") from None
    if not data:
        raise DataError(f"{path}: gzip file decompresses to 0 bytes, expected IDX data")
    return data


def _reject_markup(path: Path, data: bytes, compressed: bool) -> None:
    head = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head.startswith(_MARKUP_PREFIXES):
        return
    # The usual cause: a mirror answered with an error or login page and it was saved under the data file's name.
    what = "a gzip-compressed HTML/XML page" if compressed else "an HTML/XML page"
    named_gz = "" if compressed or path.suffix != ".gz" else " (named .gz but not gzip-compressed)"
    raise DataError(f"{path}: this is {what}{named_gz}, not IDX data; the server probably returned an error "
                    "page instead of the file. Delete it and download it again")


def _parse_header(path: Path, data: bytes) -> tuple[int, tuple[int, ...], int]:
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, the magic number alone needs 4)")
    if data[0] or data[1]:
        raise DataError(f"{path}: not an IDX file (magic bytes {data[:4].hex(' ')}, expected 00 00 <dtype> <ndim>)")
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X} {n}" for c, n in _DTYPE_NAMES.items())
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {offset} bytes, file has {len(data)})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return code, shape, offset


def _parse_payload(path: Path, data: bytes, code: int, shape: tuple[int, ...], offset: int) -> np.ndarray:
    dtype = DTYPES[code]
    count = math.prod(shape)
    expected, actual = count * dtype.itemsize, len(data) - offset
    declared = f"shape {shape} of {_DTYPE_NAMES[code]}"
    if actual < expected:
        raise DataError(f"{path}: truncated: the header declares {declared} = {expected} bytes of data, "
                        f"found {actual}. Delete it and fetch it again")
    if actual > expected:
        raise DataError(f"{path}: {actual - expected} trailing bytes after the {expected} bytes of data "
                        f"declared by the header ({declared})")
    # astype copies: the result is writable and native-endian, and does not pin the file's bytes in memory.
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))
