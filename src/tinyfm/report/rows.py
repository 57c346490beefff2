"""Flat per-variant rows with the columns derived against the baseline (Δ accuracy, size ratio, speed-ups)."""

from __future__ import annotations

from typing import Any

from tinyfm.errors import TinyfmError
from tinyfm.report._format import is_number

#: The variant fields every row carries (None where results.json leaves one out).
VARIANT_FIELDS = (
    "name",
    "runtime",
    "test_accuracy",
    "params",
    "macs",
    "size_bytes",
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_per_s",
    "threads",
    "file",
    "notes",
)


def validate_results(results: Any, source: str = "results.json") -> list[dict[str, Any]]:
    """Check the shape the report relies on and return the variants.

    Args:
        results: the parsed results.json.
        source: the file name used in error messages.

    Returns:
        The list of variant dicts (non-empty, each with a "name").

    Example:
        variants = validate_results(read_json(path), source=str(path))
    """
    if not isinstance(results, dict):
        raise TinyfmError(f"{source}: expected a JSON object, got {type(results).__name__}")
    if "variants" not in results:
        raise TinyfmError(f"{source}: missing field 'variants'")
    variants = results["variants"]
    if not isinstance(variants, list) or not variants:
        raise TinyfmError(f"{source}: field 'variants' must be a non-empty list of variant objects")
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict) or not variant.get("name"):
            raise TinyfmError(f"{source}: missing field 'variants[{i}].name'")
    return variants


def baseline_name(results: dict[str, Any]) -> str:
    """The variant that Δ accuracy and the ratios are computed against.

    Args:
        results: the parsed results.json.

    Returns:
        `results["baseline"]` when given, else the first onnxruntime variant, else the first variant.

    Example:
        baseline_name({"variants": [{"name": "fp32-torch", "runtime": "torch"}]})  # "fp32-torch"
    """
    variants = validate_results(results)
    names = [v["name"] for v in variants]
    wanted = results.get("baseline")
    if wanted is not None:
        if wanted not in names:
            raise TinyfmError(f"results.json: field 'baseline' is {wanted!r}, not one of the variants {names}")
        return wanted
    onnx = [v["name"] for v in variants if v.get("runtime") == "onnxruntime"]
    return (onnx or names)[0]


def variant_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per variant, with derived columns computed against the baseline.

    Rows keep raw numbers (so they can be plotted or written to CSV); a missing field is None and renders as "—"
    in every table. Derived columns: `delta_accuracy_pp` (percentage points), `size_ratio` (size / baseline size),
    `speedup_latency` (baseline p50 / p50), `speedup_throughput` (throughput / baseline throughput) and
    `is_baseline`.

    Args:
        results: the parsed results.json.

    Returns:
        A list of dicts, in the order of `results["variants"]`.

    Example:
        rows = variant_rows(read_json("runs/fashion-mnist/results.json"))
        rows[1]["speedup_latency"]  # 2.1
    """
    variants = validate_results(results)
    base_name = baseline_name(results)
    base = next(v for v in variants if v["name"] == base_name)
    return [_row(variant, base) for variant in variants]


def _row(variant: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    row = {key: variant.get(key) for key in VARIANT_FIELDS}
    row.update({k: v for k, v in variant.items() if k not in row and _is_scalar(v)})
    row["is_baseline"] = variant is base
    row["delta_accuracy_pp"] = _delta_pp(variant.get("test_accuracy"), base.get("test_accuracy"))
    row["size_ratio"] = _ratio(variant.get("size_bytes"), base.get("size_bytes"))
    row["speedup_latency"] = _ratio(base.get("latency_ms_p50"), variant.get("latency_ms_p50"))
    row["speedup_throughput"] = _ratio(variant.get("throughput_per_s"), base.get("throughput_per_s"))
    return row


def _delta_pp(accuracy: Any, base_accuracy: Any) -> float | None:
    if not (is_number(accuracy) and is_number(base_accuracy)):
        return None
    return (accuracy - base_accuracy) * 100


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if not (is_number(numerator) and is_number(denominator)) or denominator == 0:
        return None
    return numerator / denominator


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
