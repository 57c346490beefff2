"""Number formatting shared by the terminal table, the markdown and the HTML report.

Every formatter takes a raw value from results.json and returns a string; a missing value (None or NaN) renders
as DASH, so one place decides how "not measured" looks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

DASH = "—"


def is_number(value: Any) -> bool:
    """True for a finite int or float (bools excluded): a value that can be plotted or divided."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _or_dash(fmt: Callable[..., str]) -> Callable[..., str]:
    """Wrap a number formatter: None/NaN become DASH, non-numbers are shown as they are."""

    @functools.wraps(fmt)
    def wrapper(value: Any, *args: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return DASH
        return fmt(value, *args) if is_number(value) else str(value)

    return wrapper


@_or_dash
def fmt_percent(fraction: float) -> str:
    """A fraction as a percentage with two decimals, no sign: 0.9123 -> "91.23"."""
    return f"{fraction * 100:.2f}"


@_or_dash
def fmt_pp(points: float) -> str:
    """Percentage points with an explicit sign: -0.35 -> "-0.35"."""
    return f"{points:+.2f}"


@_or_dash
def fmt_count(n: float) -> str:
    """A count in human units with 3 significant digits: 93322 -> "93.3K", 2.8e6 -> "2.8M"."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale * 0.9995:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


@_or_dash
def fmt_bytes(n: float) -> str:
    """A byte count in binary units: 373000 -> "364.3 KiB", 512 -> "512 B"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@_or_dash
def fmt_sig(value: float, digits: int = 3) -> str:
    """A float with `digits` significant digits and no exponent: 0.4 -> "0.400", 1234.5 -> "1234"."""
    if value == 0:
        return f"{0:.{digits - 1}f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


@_or_dash
def fmt_ms(ms: float) -> str:
    """Milliseconds with decimals by magnitude: 0.4 -> "0.40", 0.045 -> "0.045", 12.34 -> "12.3"."""
    if abs(ms) >= 100:
        return f"{ms:.0f}"
    if abs(ms) >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if abs(ms) >= 0.1 or ms == 0 else f"{ms:.3f}"


@_or_dash
def fmt_int(value: float) -> str:
    """A rounded number with thousands separators: 9000.4 -> "9,000"."""
    return f"{value:,.0f}"


@_or_dash
def fmt_ratio(value: float) -> str:
    """A ratio with two decimals and a times sign: 2.345 -> "2.35×"."""
    return f"{value:.2f}×"


@_or_dash
def fmt_sci(value: float) -> str:
    """A small difference in scientific notation: 3e-6 -> "3.0e-06"."""
    return f"{value:.1e}"


@_or_dash
def fmt_seconds(seconds: float) -> str:
    """A duration: 42.3 -> "42.3 s", 754 -> "12 min 34 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def fmt_value(value: Any) -> str:
    """Any config/machine value as short text: bools as yes/no, floats with 4 significant digits."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
