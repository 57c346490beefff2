"""Checksummed downloads into the tinyfm cache: a file lands at its destination only once its SHA-256 matches.

Example:
    path = download("http://example.org/a.gz", cache_dir() / "a.gz", sha256="3aede38d...")
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from tinyfm.errors import DataError
from tinyfm.io import atomic_path

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The download cache: ``$TINYFM_CACHE`` if set, else ``~/.cache/tinyfm``.

    Returns:
        The directory (not created here; :func:`download` creates what it needs).

    Example:
        cache_dir() / "fashion-mnist"  # PosixPath('/home/me/.cache/tinyfm/fashion-mnist')
    """
    return Path(os.environ.get("TINYFM_CACHE") or Path.home() / ".cache" / "tinyfm").expanduser()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Example:
        sha256_file("train-images-idx3-ubyte.gz")  # '3aede38d...'
    """
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str, timeout: float = 60) -> Path:
    """Fetch `url` to `dest` unless `dest` already holds the file with digest `sha256`.

    The body is streamed to a temporary file beside `dest` and renamed into place only after its digest
    matches, so an interrupted or corrupted transfer never leaves a file that looks whole. A `dest` with a
    wrong digest (a stale or damaged copy) is fetched again. A progress bar is shown when stderr is a terminal.

    Args:
        url: http(s) or file URL.
        dest: final path; its parent directories are created.
        sha256: expected hex digest (case-insensitive).
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        `dest` as a Path.

    Raises:
        DataError: naming the URL, on a network or HTTP error, or when the digest differs (the download is
            discarded and the message gives the expected and actual digests).

    Example:
        download(f"{base}/t10k-labels-idx1-ubyte.gz", cache_dir() / "t10k-labels-idx1-ubyte.gz", digest)
    """
    dest, expected = Path(dest), sha256.lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if dest.is_file() and sha256_file(dest) == expected:
        return dest
    with atomic_path(dest) as tmp:  # renamed over dest on success, deleted on any exception
        actual = _fetch(url, tmp, timeout, label=dest.name)
        if actual != expected:
            raise DataError(f"{url}: checksum mismatch, expected sha256 {expected}, got {actual}; the download "
                            "was discarded (a corrupted transfer, or the mirror serves a different file)")
    return dest


def _fetch(url: str, tmp: Path, timeout: float, label: str) -> str:
    from tinyfm import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"tinyfm/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, tmp.open("wb") as out:
            return _stream(response, out, label)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed, HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: download failed ({e.reason}); check the network or the URL") from None
    except (TimeoutError, OSError) as e:
        raise DataError(f"{url}: download failed ({e})") from None


def _stream(response: BinaryIO, out: BinaryIO, label: str) -> str:
    """Copy `response` to `out` in chunks, hashing as it goes; returns the hex digest."""
    h = hashlib.sha256()
    length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    with _progress(label, int(length) if length and length.isdigit() else None) as advance:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            h.update(chunk)
            advance(len(chunk))
    return h.hexdigest()


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(nbytes)` callback: a transient rich bar on a terminal, a no-op otherwise (logs, CI)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
