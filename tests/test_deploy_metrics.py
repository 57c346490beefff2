"""Prometheus text format of the server metrics: counters by label, cumulative histogram buckets, escaping."""

from __future__ import annotations

from tinyfm.deploy.metrics import Counter, Histogram, ServeMetrics


def test_counter_by_labels():
    c = Counter("x_total", "things")
    c.inc(endpoint="/a", status="200")
    c.inc(2, endpoint="/a", status="200")
    c.inc(endpoint="/b", status="404")
    assert c.value(endpoint="/a", status="200") == 3
    lines = c.render()
    assert lines[:2] == ["# HELP x_total things", "# TYPE x_total counter"]
    assert 'x_total{endpoint="/a",status="200"} 3' in lines
    assert 'x_total{endpoint="/b",status="404"} 1' in lines


def test_histogram_buckets_are_cumulative():
    h = Histogram("b", "sizes", (1, 4, 16))
    for v in (1, 2, 3, 20):
        h.observe(v)
    lines = h.render()
    assert 'b_bucket{le="1"} 1' in lines
    assert 'b_bucket{le="4"} 3' in lines
    assert 'b_bucket{le="16"} 3' in lines
    assert 'b_bucket{le="+Inf"} 4' in lines
    assert "b_sum 26" in lines and "b_count 4" in lines


def test_render_has_every_metric_and_escapes_labels():
    m = ServeMetrics({"run": 'a "quoted"\\run'})
    m.requests.inc(endpoint="/v1/predict", method="POST", status="200")
    m.batch_size.observe(8)
    text = m.render()
    assert text.endswith("\n")
    assert 'tinyfm_info{run="a \\"quoted\\"\\\\run"} 1' in text
    for name in ("tinyfm_requests_total", "tinyfm_request_duration_seconds", "tinyfm_predict_duration_seconds",
                 "tinyfm_batch_size", "tinyfm_inference_duration_seconds", "tinyfm_predicted_samples_total"):
        assert f"# TYPE {name} " in text
    assert 'tinyfm_batch_size_bucket{le="8"} 1' in text
