"""The terminal and markdown results tables."""

from rich.console import Console

from tinyfm.report import markdown_table, results_table, variant_rows


def _results():
    return {"run": "demo", "variants": [
        {"name": "fp32-onnx", "runtime": "onnxruntime", "test_accuracy": 0.912, "params": 93322, "macs": 2.8e6,
         "size_bytes": 373000, "latency_ms_p50": 0.4, "latency_ms_p95": 0.6, "throughput_per_s": 9000.0},
        {"name": "int8-onnx", "runtime": "onnxruntime", "test_accuracy": 0.9085, "size_bytes": 98000,
         "latency_ms_p50": 0.2},
    ]}


def test_rich_table_renders_variant_names_and_numbers():
    console = Console(record=True, width=200)
    console.print(results_table(_results()))
    text = console.export_text()
    for expected in ("fp32-onnx", "int8-onnx", "91.20", "-0.35", "93.3K", "2.8M", "364.3 KiB", "2.00×", "9,000", "—"):
        assert expected in text


def test_markdown_table_aligns_numbers_and_bolds_baseline():
    lines = markdown_table(variant_rows(_results())).splitlines()
    assert lines[0].startswith("| Variant | Runtime | Acc % |")
    assert lines[1].startswith("|---|---|---:|")
    assert "**fp32-onnx**" in lines[2]
    assert len(lines) == 4
