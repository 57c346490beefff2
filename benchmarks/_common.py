"""Shared helpers of the benchmark scripts: output paths, machine context and the BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, and
rewrites only that, so the scripts never clobber each other's results.

Example:
    update_section("train_speed", "## Training speed\\n\\n| ... |")
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nWritten by the scripts in `benchmarks/` (each owns one section). Absolute numbers are "
          "context; the ratios measured in the same run are the claim.\n")


def update_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the section `name` of BENCHMARKS.md with `body`.

    Args:
        name: the section's marker name, e.g. "train_speed".
        body: markdown without the markers.

    Returns:
        The path written.
    """
    from tinyfm.io import write_text

    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return write_text(path, text)


def save_json(name: str, record: dict[str, Any]) -> Path:
    """Write `record` to benchmarks/out/<name>.json."""
    from tinyfm.io import write_json

    return write_json(OUT / f"{name}.json", record)


def machine() -> dict[str, Any]:
    """tinyfm's machine description plus the load average (the machine may be shared: it explains outliers)."""
    from tinyfm.measure import machine_info

    return {**machine_info(), "loadavg": list(os.getloadavg())}


def machine_line(m: dict[str, Any]) -> str:
    """One line for the markdown: CPU, cores, GPU, torch version, load."""
    gpu = m.get("cuda_device") or "no GPU"
    load = ", ".join(f"{v:.1f}" for v in m.get("loadavg", []))
    line = f"{m['cpu']}, {m['cores_usable']} usable cores, {gpu}, torch {m['torch']}"
    return f"{line}, load average {load} at the start" if load else line


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table: columns are (header, key, format spec), e.g. ("img/s", "images_per_s", ",.0f")."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = ["| " + " | ".join(_fmt(r.get(k), f) for _, k, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *lines])


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "—"
    return format(v, spec) if spec and isinstance(v, int | float) else str(v)
