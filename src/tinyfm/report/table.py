"""The results table, defined once and rendered for the terminal (rich) and for markdown/HTML."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinyfm.report import _doc
from tinyfm.report._format import (
    DASH,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_percent,
    fmt_pp,
    fmt_ratio,
)
from tinyfm.report.rows import baseline_name, variant_rows

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True)
class _Column:
    header: str
    key: str
    fmt: Callable[[Any], str]
    numeric: bool = True


def _text(value: Any) -> str:
    return DASH if value is None or value == "" else str(value)


COLUMNS = (
    _Column("Variant", "name", _text, numeric=False),
    _Column("Runtime", "runtime", _text, numeric=False),
    _Column("Acc %", "test_accuracy", fmt_percent),
    _Column("Δ pp", "delta_accuracy_pp", fmt_pp),
    _Column("Params", "params", fmt_count),
    _Column("MACs", "macs", fmt_count),
    _Column("Size", "size_bytes", fmt_bytes),
    _Column("Size ×", "size_ratio", fmt_ratio),
    _Column("p50 ms", "latency_ms_p50", fmt_ms),
    _Column("p95 ms", "latency_ms_p95", fmt_ms),
    _Column("Throughput/s", "throughput_per_s", fmt_int),
    _Column("Speed-up ×", "speedup_latency", fmt_ratio),
    _Column("Thr. ×", "speedup_throughput", fmt_ratio),
)


def format_row(row: dict[str, Any]) -> dict[str, str]:
    """The display strings of one row from `variant_rows`, keyed by column header ("—" where missing).

    Example:
        format_row(rows[0])["Acc %"]  # "91.20"
    """
    return {col.header: col.fmt(row.get(col.key)) for col in COLUMNS}


def table_caption(results: dict[str, Any]) -> str:
    """One line that says what Δ and the ratios are relative to and how latency was measured."""
    return (
        f"Δ pp, size × and speed-ups are relative to the baseline {baseline_name(results)}; "
        "latency is batch 1 (p50/p95), throughput is at large batch."
    )


def results_table(results: dict[str, Any], title: str | None = None) -> Table:
    """The variants as a rich Table for the terminal; the baseline row is bold.

    Args:
        results: the parsed results.json.
        title: the table title (default: the run name).

    Returns:
        A `rich.table.Table`; print it with `rich.console.Console().print(table)`.

    Example:
        Console().print(results_table(read_json("runs/fashion-mnist/results.json")))
    """
    from rich.table import Table

    run = results.get("run")
    table = Table(title=title or (f"tinyfm · {run}" if run else "tinyfm results"), caption=table_caption(results))
    for col in COLUMNS:
        table.add_column(col.header, justify="right" if col.numeric else "left", no_wrap=col.numeric)
    for row in variant_rows(results):
        cells = format_row(row)
        table.add_row(*cells.values(), style="bold" if row["is_baseline"] else None)
    return table


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a GitHub markdown table (numbers right-aligned, baseline name in bold).

    Example:
        Path("BENCHMARKS.md").write_text(markdown_table(variant_rows(results)))
    """
    return _doc.to_markdown([table_block(rows)])


def table_block(rows: list[dict[str, Any]]) -> _doc.Table:
    """The rows as a document table block (used by both the markdown and the HTML report)."""
    body = []
    for row in rows:
        cells = list(format_row(row).values())
        if row.get("is_baseline"):
            cells[0] = f"**{cells[0]}**"
        body.append(cells)
    return _doc.Table([c.header for c in COLUMNS], body, [c.numeric for c in COLUMNS])
