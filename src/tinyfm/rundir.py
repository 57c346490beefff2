"""Run directories that are replaced whole: a run writes into a staging folder and swaps it in at the end.

An interrupted or failed run leaves the previous run directory exactly as it was; a directory that
is not a tinyfm run (no config.json) is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tinyfm.errors import TinyfmError


def check_replaceable(out: Path) -> None:
    """Refuse to replace a path that is a file, or a non-empty directory that is not a tinyfm run."""
    if out.exists() and not out.is_dir():
        raise TinyfmError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise TinyfmError(f"--out {out}: a non-empty directory that is not a tinyfm run (no config.json); "
                          "refusing to replace it, choose another --out")


@contextlib.contextmanager
def staged_run_dir(out: str | Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside `out`; on success it replaces `out`, on error it is deleted.

    Example:
        with staged_run_dir("runs/fashion-mnist") as stage:
            write_json(stage / "config.json", cfg.to_dict())
    """
    out = Path(out)
    check_replaceable(out)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
    except OSError as e:
        raise TinyfmError(f"--out {out}: cannot create the run directory there ({e.strerror})") from None
    try:
        yield stage
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
