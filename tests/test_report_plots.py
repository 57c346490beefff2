"""Each plot writes a real PNG, including the awkward cases (one variant, missing latency)."""

import pytest

from tinyfm.errors import TinyfmError
from tinyfm.report import pareto_front, plot_confusion_matrix, plot_pareto, plot_training_curves, variant_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000


def _rows(n=3, drop_latency=False):
    variants = [{"name": f"v{i}", "runtime": "onnxruntime" if i else "torch", "test_accuracy": 0.9 - 0.01 * i,
                 "size_bytes": 400_000 // (i + 1), "latency_ms_p50": 0.5 / (i + 1)} for i in range(n)]
    if drop_latency:
        del variants[-1]["latency_ms_p50"]
    return variant_rows({"variants": variants})


def test_training_curves_png(tmp_path):
    metrics = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.8 + e / 100,
                "val_accuracy": 0.79 + e / 100} for e in range(1, 4)]
    metrics.append({"step": 99, "train_loss": 0.1})  # a step record without an epoch is ignored
    _assert_png(plot_training_curves(metrics, tmp_path / "curves.png"))


def test_training_curves_need_epochs(tmp_path):
    with pytest.raises(TinyfmError, match="epoch"):
        plot_training_curves([{"step": 1}], tmp_path / "curves.png")


def test_confusion_matrix_png(tmp_path):
    matrix = [[50, 2, 0], [3, 40, 7], [0, 0, 0]]  # an empty row must not divide by zero
    _assert_png(plot_confusion_matrix(matrix, ["cat", "dog", "a rather long class name"], tmp_path / "cm.png"))


def test_confusion_matrix_rejects_mismatched_names(tmp_path):
    with pytest.raises(TinyfmError, match="class_names"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "cm.png")


@pytest.mark.parametrize(("n", "drop_latency"), [(1, False), (3, True)])  # 3 complete variants: test_report_writer
def test_pareto_png(tmp_path, n, drop_latency):
    path = tmp_path / "plots" / "pareto.png"
    _assert_png(plot_pareto(_rows(n, drop_latency), path))
    assert [p.name for p in path.parent.iterdir()] == ["pareto.png"]  # no temp file left behind


def test_pareto_front():
    assert pareto_front([(3, 92), (1, 90), (2, 89), (1, 88)]) == [(1, 90), (3, 92)]
    assert pareto_front([(1, 90)]) == [(1, 90)]
