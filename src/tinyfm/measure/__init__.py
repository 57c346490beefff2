"""Measurements: size (parameters, MACs, bytes), latency and throughput (interleaved, repeated), accuracy.

Example:
    from tinyfm.measure import Timed, count_macs, evaluate, measure_variants
    res = measure_variants([Timed("fp32", model, x1, xb), Timed("onnx", ort_model, x1n, xbn)], cfg.measure)
"""

from tinyfm.measure.accuracy import evaluate
from tinyfm.measure.latency import Timed, measure_latency, measure_throughput, measure_variants, set_threads
from tinyfm.measure.machine import machine_info
from tinyfm.measure.size import count_macs, count_params, file_size

__all__ = ["Timed", "count_macs", "count_params", "evaluate", "file_size", "machine_info", "measure_latency",
           "measure_throughput", "measure_variants", "set_threads"]
