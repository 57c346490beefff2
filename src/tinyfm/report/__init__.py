"""Reports: the results table, the plots and the markdown/HTML report of a run directory.

Example:
    from tinyfm.report import write_report
    paths = write_report("runs/fashion-mnist")  # report.md, report.html, plots/*.png
"""

from tinyfm.report.plots import pareto_front, plot_confusion_matrix, plot_pareto, plot_training_curves
from tinyfm.report.rows import baseline_name, validate_results, variant_rows
from tinyfm.report.table import format_row, markdown_table, results_table
from tinyfm.report.writer import write_report

__all__ = [
    "baseline_name",
    "format_row",
    "markdown_table",
    "pareto_front",
    "plot_confusion_matrix",
    "plot_pareto",
    "plot_training_curves",
    "results_table",
    "validate_results",
    "variant_rows",
    "write_report",
]
