"""Report figures: training curves, confusion matrix and the accuracy/cost Pareto plot.

Matplotlib is imported inside the functions (so `tinyfm --help` stays fast) and drawn with the Agg canvas on a
bare `Figure` (no pyplot, no global backend switch). Every PNG is written atomically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyfm.errors import TinyfmError
from tinyfm.io import atomic_path
from tinyfm.report._format import is_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_TRAIN, _VAL = "#2563eb", "#ea580c"
_FRONT = "#6b7280"
_RING = "#111827"
_PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#4b5563",
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.dpi": 150,
}


def _styled(plot: Callable[..., Path]) -> Callable[..., Path]:
    """Run a plotting function under the report style (rcParams restored afterwards)."""

    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            return plot(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig: Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return Path(path)


# ---------------------------------------------------------------------------------------------------- training


@_styled
def plot_training_curves(metrics: list[dict[str, Any]], path: str | Path, title: str = "Training curves") -> Path:
    """Loss and accuracy against epoch, train vs validation, in two panels; the best validation epoch is marked.

    Args:
        metrics: the records of metrics.jsonl (records without an "epoch" are ignored).
        path: where to write the PNG.
        title: the figure title.

    Returns:
        `path`.

    Example:
        plot_training_curves(read_jsonl("runs/a/metrics.jsonl"), "runs/a/plots/training_curves.png")
    """
    from matplotlib.ticker import MaxNLocator

    records = epoch_records(metrics)
    if not records:
        raise TinyfmError("metrics.jsonl: no records with an 'epoch' field to plot")
    fig, (ax_loss, ax_acc) = _figure(10, 4, ncols=2)
    _curves(ax_loss, records, "loss", scale=1.0)
    _curves(ax_acc, records, "accuracy", scale=100.0)
    _mark_best(ax_acc, records)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best")
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return _save(fig, path)


def epoch_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-epoch records, sorted by epoch; a repeated epoch keeps its last record (a resumed run)."""
    by_epoch = {r["epoch"]: r for r in metrics if isinstance(r, dict) and is_number(r.get("epoch"))}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: list[dict[str, Any]], key: str, scale: float) -> tuple[list[float], list[float]]:
    points = [(r["epoch"], r[key] * scale) for r in records if is_number(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _curves(ax: Axes, records: list[dict[str, Any]], metric: str, scale: float) -> None:
    marker = "o" if len(records) <= 30 else None
    for split, color in (("train", _TRAIN), ("val", _VAL)):
        xs, ys = _series(records, f"{split}_{metric}", scale)
        if xs:
            ax.plot(xs, ys, color=color, marker=marker, markersize=4, linewidth=1.8, label=split)
    if not ax.lines:
        ax.text(0.5, 0.5, f"no {metric} logged", transform=ax.transAxes, ha="center", color=_FRONT)


def _mark_best(ax: Axes, records: list[dict[str, Any]]) -> None:
    xs, ys = _series(records, "val_accuracy", 100.0)
    if not xs:
        return
    best = max(range(len(ys)), key=ys.__getitem__)
    ax.scatter([xs[best]], [ys[best]], s=140, marker="*", color=_VAL, edgecolor="black", linewidth=0.6, zorder=4,
               label=f"best val {ys[best]:.2f}% (epoch {xs[best]:g})")


# ---------------------------------------------------------------------------------------------------- confusion


@_styled
def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str] | None,
    path: str | Path,
    title: str = "Confusion matrix (test split)",
) -> Path:
    """A row-normalised confusion matrix (colour = fraction of the true class) with the counts written in.

    Args:
        matrix: square counts, rows = true class, columns = predicted class.
        class_names: one name per class (None: class indices).
        path: where to write the PNG.
        title: the figure title.

    Returns:
        `path`.

    Example:
        plot_confusion_matrix(results["confusion_matrix"], results["class_names"], "plots/confusion_matrix.png")
    """
    counts, names = _check_matrix(matrix, class_names)
    n = len(names)
    norm = _row_normalise(counts)
    side = min(max(5.0, 0.55 * n + 2.5), 22.0)
    fig, ax = _figure(side + 1.2, side)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    ax.set_xticks(range(n), names, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    if n <= 30:
        _annotate_counts(ax, counts, norm)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    return _save(fig, path)


def _check_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str] | None) -> tuple[Any, list[str]]:
    import numpy as np

    counts = np.asarray(matrix, dtype=float)  # (C, C)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise TinyfmError(f"confusion_matrix: expected a non-empty square matrix, got shape {counts.shape}")
    names = [str(c) for c in class_names] if class_names else [str(i) for i in range(counts.shape[0])]
    if len(names) != counts.shape[0]:
        raise TinyfmError(f"class_names: {len(names)} names for a {counts.shape[0]}-class confusion_matrix")
    return counts, names


def _row_normalise(counts: Any) -> Any:
    import numpy as np

    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _annotate_counts(ax: Axes, counts: Any, norm: Any) -> None:
    n = counts.shape[0]
    fontsize = 9 if n <= 12 else 7 if n <= 20 else 6
    for i in range(n):
        for j in range(n):
            color = "white" if norm[i, j] > 0.55 else "#111827" if counts[i, j] else "#9ca3af"
            ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", color=color, fontsize=fontsize)


# ---------------------------------------------------------------------------------------------------- pareto


@_styled
def plot_pareto(rows: list[dict[str, Any]], path: str | Path, title: str = "Accuracy vs cost per variant") -> Path:
    """Accuracy against batch-1 latency and against file size (log x), one labelled point per variant.

    The Pareto front (no other variant is both cheaper and more accurate) is drawn as a step line; the baseline
    is ringed. Variants without a latency (or size) are left out of that panel only.

    Args:
        rows: the rows of `variant_rows(results)`.
        path: where to write the PNG.
        title: the figure title.

    Returns:
        `path`.

    Example:
        plot_pareto(variant_rows(results), "runs/a/plots/pareto.png")
    """
    fig, (ax_lat, ax_size) = _figure(12, 4.8, ncols=2)
    colors = _runtime_colors(rows)
    _pareto_panel(ax_lat, rows, "latency_ms_p50", 1.0, colors)
    ax_lat.set(title="Accuracy vs latency", xlabel="batch-1 latency, p50 (ms)")
    unit, scale = _size_unit(rows)
    _pareto_panel(ax_size, rows, "size_bytes", scale, colors, log=True)
    ax_size.set(title="Accuracy vs file size", xlabel=f"file size ({unit}, log scale)")
    ax_lat.set_ylabel("test accuracy (%)")
    fig.legend(handles=_legend_handles(colors), loc="outside lower center", ncol=len(colors) + 2)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower x = cheaper, higher y = better), sorted by x.

    Example:
        pareto_front([(1, 90), (2, 89), (3, 92)])  # [(1, 90), (3, 92)]
    """
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _pareto_panel(
    ax: Axes, rows: list[dict[str, Any]], key: str, scale: float, colors: dict[str, str], log: bool = False
) -> None:
    points = [(r[key] * scale, r["test_accuracy"] * 100, r) for r in rows if _plottable(r, key, log)]
    if log:
        _log_axis(ax)
    if not points:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color=_FRONT)
        return
    _draw_front(ax, [(x, y) for x, y, _ in points])
    for i, (x, y, row) in enumerate(sorted(points, key=lambda p: p[0])):
        _draw_point(ax, x, y, row, colors, above=i % 2 == 0)
    _set_limits(ax, [p[0] for p in points], [p[1] for p in points], log)
    missing = [str(r["name"]) for r in rows if not _plottable(r, key, log)]
    if missing:
        ax.text(0.99, 0.01, f"not measured: {', '.join(missing)}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color=_FRONT)


def _log_axis(ax: Axes) -> None:
    """A log x axis labelled with plain numbers (50, 100, 200) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major")


def _plottable(row: dict[str, Any], key: str, log: bool) -> bool:
    return is_number(row.get(key)) and is_number(row.get("test_accuracy")) and (row[key] > 0 or not log)


def _draw_front(ax: Axes, points: list[tuple[float, float]]) -> None:
    front = pareto_front(points)
    xs, ys = [p[0] for p in front], [p[1] for p in front]
    right = max(p[0] for p in points)
    if right > xs[-1]:  # extend the last step: that accuracy stays reachable at any higher cost
        xs, ys = [*xs, right], [*ys, ys[-1]]
    ax.step(xs, ys, where="post", color=_FRONT, linestyle="--", linewidth=1.4, alpha=0.8, zorder=1)


def _draw_point(ax: Axes, x: float, y: float, row: dict[str, Any], colors: dict[str, str], above: bool) -> None:
    ax.scatter([x], [y], s=80, color=colors[_runtime(row)], edgecolor="white", linewidth=1.0, zorder=3)
    if row.get("is_baseline"):  # a ring, not a bigger marker, so a variant at the same spot stays visible
        ax.scatter([x], [y], s=300, facecolor="none", edgecolor=_RING, linewidth=1.6, zorder=2.5)
    ax.annotate(str(row["name"]), (x, y), xytext=(8, 7 if above else -14), textcoords="offset points", fontsize=9,
                color="#111827", zorder=4)


def _set_limits(ax: Axes, xs: list[float], ys: list[float], log: bool) -> None:
    lo, hi = min(xs), max(xs)
    if log:
        ax.set_xlim(lo / 1.6, hi * 2.2)  # room on the right for the labels
    else:
        ax.set_xlim(0, hi * 1.25 if hi > 0 else 1.0)
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.25, 0.5)
    ax.set_ylim(y_lo - pad, min(y_hi + pad, 100.5) if y_hi <= 100 else y_hi + pad)


def _size_unit(rows: list[dict[str, Any]]) -> tuple[str, float]:
    sizes = [r["size_bytes"] for r in rows if is_number(r.get("size_bytes"))]
    biggest = max(sizes, default=0)
    if biggest >= 2**30:
        return "GiB", 1 / 2**30
    return ("MiB", 1 / 2**20) if biggest >= 2**20 else ("KiB", 1 / 2**10)


def _runtime(row: dict[str, Any]) -> str:
    return str(row.get("runtime") or "unknown")


def _runtime_colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    runtimes = list(dict.fromkeys(_runtime(r) for r in rows))
    return {rt: _PALETTE[i % len(_PALETTE)] for i, rt in enumerate(runtimes)}


def _legend_handles(colors: dict[str, str]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, markersize=8, label=rt) for rt, c in colors.items()]
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor=_RING,
                          markeredgewidth=1.6, markersize=13, label="baseline"))
    handles.append(Line2D([], [], color=_FRONT, linestyle="--", label="Pareto front"))
    return handles
