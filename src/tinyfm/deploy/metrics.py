"""Prometheus text-format metrics for `tinyfm serve`: counters and histograms, no client library needed.

The exposition format is https://prometheus.io/docs/instrumenting/exposition_formats/ (version 0.0.4). With
`--workers N` every process keeps its own metrics, and a scrape of /metrics reports the process that answered it.

Example:
    m = ServeMetrics()
    m.requests.inc(endpoint="/v1/predict", method="POST", status="200")
    m.batch_size.observe(8)
    text = m.render()
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in labels.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, esc, strict=True)) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Counter:
    """A monotonically increasing value per label set."""

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            lines += [f"{self.name}{_labels(dict(k))} {_num(v)}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    """Cumulative bucket counts, sum and count of observed values (one series, no labels)."""

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    self._counts[i] += 1
                    break
            self.sum += value
            self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            total = 0
            for upper, n in zip(self.buckets, self._counts, strict=True):
                total += n
                lines.append(f'{self.name}_bucket{{le="{_num(upper)}"}} {total}')
            lines += [f"{self.name}_sum {_num(self.sum)}", f"{self.name}_count {self.count}"]
        return lines


class ServeMetrics:
    """The server's metrics: requests by endpoint/status, request latency, batch sizes, inference time."""

    def __init__(self, info: dict[str, str] | None = None) -> None:
        self.info = info or {}
        self.requests = Counter("tinyfm_requests_total", "HTTP requests by endpoint, method and status code.")
        self.samples = Counter("tinyfm_predicted_samples_total", "Samples (images, texts, clips) predicted.")
        self.latency = Histogram("tinyfm_request_duration_seconds", "Time from request to response, all "
                                 "endpoints.", LATENCY_BUCKETS)
        self.predict_latency = Histogram("tinyfm_predict_duration_seconds", "Time from request to response of "
                                         "POST /v1/predict.", LATENCY_BUCKETS)
        self.batch_size = Histogram("tinyfm_batch_size", "Samples per ONNX Runtime call (after micro-batching).",
                                    BATCH_BUCKETS)
        self.inference = Histogram("tinyfm_inference_duration_seconds", "ONNX Runtime time per call.",
                                   LATENCY_BUCKETS)

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        lines = ["# HELP tinyfm_info The served run and variant.", "# TYPE tinyfm_info gauge",
                 f"tinyfm_info{_labels(self.info)} 1"]
        for m in (self.requests, self.samples, self.latency, self.predict_latency, self.batch_size, self.inference):
            lines += m.render()
        return "\n".join(lines) + "\n"
