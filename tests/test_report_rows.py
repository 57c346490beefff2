"""Variant rows: derived columns against the baseline, baseline choice, missing fields."""

import pytest

from tinyfm.errors import TinyfmError
from tinyfm.report import baseline_name, format_row, variant_rows


def _variant(name, runtime, acc, size, p50, thr, **extra):
    return {"name": name, "runtime": runtime, "test_accuracy": acc, "size_bytes": size, "latency_ms_p50": p50,
            "throughput_per_s": thr, **extra}


@pytest.fixture
def results():
    return {"variants": [
        _variant("fp32-torch", "torch", 0.912, 400_000, 0.8, 5000.0),
        _variant("fp32-onnx", "onnxruntime", 0.910, 400_000, 0.4, 9000.0),
        _variant("int8-onnx", "onnxruntime", 0.905, 100_000, 0.2, 18000.0, notes="dynamic"),
    ]}


def test_default_baseline_is_first_onnxruntime_variant(results):
    assert baseline_name(results) == "fp32-onnx"
    rows = variant_rows(results)
    assert [r["is_baseline"] for r in rows] == [False, True, False]


def test_derived_columns_against_baseline(results):
    torch_row, base, int8 = variant_rows(results)
    assert base["delta_accuracy_pp"] == pytest.approx(0.0)
    assert base["size_ratio"] == base["speedup_latency"] == base["speedup_throughput"] == pytest.approx(1.0)
    assert int8["delta_accuracy_pp"] == pytest.approx(-0.5)
    assert int8["size_ratio"] == pytest.approx(0.25)
    assert int8["speedup_latency"] == pytest.approx(2.0)
    assert int8["speedup_throughput"] == pytest.approx(2.0)
    assert torch_row["delta_accuracy_pp"] == pytest.approx(0.2)
    assert torch_row["speedup_latency"] == pytest.approx(0.5)
    assert int8["notes"] == "dynamic"


def test_explicit_baseline(results):
    results["baseline"] = "fp32-torch"
    int8 = variant_rows(results)[2]
    assert int8["speedup_latency"] == pytest.approx(4.0)
    assert int8["delta_accuracy_pp"] == pytest.approx(-0.7)


def test_first_variant_is_baseline_without_onnxruntime():
    results = {"variants": [_variant("a", "torch", 0.9, 10, 1.0, 1.0), _variant("b", "torch", 0.8, 5, 0.5, 2.0)]}
    assert baseline_name(results) == "a"


def test_unknown_baseline_is_an_error(results):
    results["baseline"] = "fp16-onnx"
    with pytest.raises(TinyfmError, match="baseline"):
        variant_rows(results)


def test_missing_optional_fields_render_as_dash(results):
    del results["variants"][2]["latency_ms_p50"]
    int8 = variant_rows(results)[2]
    assert int8["latency_ms_p50"] is None and int8["speedup_latency"] is None
    cells = format_row(int8)
    assert cells["p50 ms"] == cells["Speed-up ×"] == cells["Params"] == cells["p95 ms"] == "—"
    assert cells["Acc %"] == "90.50"


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ({}, "'variants'"),
        ({"variants": []}, "'variants'"),
        ({"variants": [{"runtime": "torch"}]}, r"variants\[0\]\.name"),
    ],
)
def test_bad_results_name_the_field(results, field):
    with pytest.raises(TinyfmError, match=field):
        variant_rows(results)
