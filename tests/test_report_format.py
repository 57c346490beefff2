"""Number formatting used by every report table."""

import math

import pytest

from tinyfm.report._format import DASH, fmt_bytes, fmt_count, fmt_ms, fmt_percent, fmt_pp, fmt_ratio, fmt_seconds


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        (fmt_percent, 0.912, "91.20"),
        (fmt_pp, -0.35, "-0.35"),
        (fmt_pp, 0.0, "+0.00"),
        (fmt_count, 93322, "93.3K"),
        (fmt_count, 2.8e6, "2.8M"),
        (fmt_count, 999_999, "1M"),
        (fmt_count, 512, "512"),
        (fmt_bytes, 373000, "364.3 KiB"),
        (fmt_bytes, 3 * 2**20, "3.0 MiB"),
        (fmt_bytes, 100, "100 B"),
        (fmt_ms, 0.4, "0.40"),
        (fmt_ms, 0.045, "0.045"),
        (fmt_ms, 12.34, "12.3"),
        (fmt_ratio, 2.345, "2.35×"),
        (fmt_seconds, 120.3, "2 min 0 s"),
    ],
)
def test_formatters(fmt, value, expected):
    assert fmt(value) == expected


@pytest.mark.parametrize("fmt", [fmt_percent, fmt_pp, fmt_count, fmt_bytes, fmt_ms, fmt_ratio, fmt_seconds])
def test_missing_values_render_as_dash(fmt):
    assert fmt(None) == DASH
    assert fmt(math.nan) == DASH
