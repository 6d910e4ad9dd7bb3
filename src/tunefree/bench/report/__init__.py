"""Report: robustness metrics per optimizer and task, figures, ``report.md`` and a self-contained
``report.html`` (figures embedded as base64), plus ``runs.csv`` with every run.

Reads only the ledger (nothing upstream), so a report can be rebuilt at any time, also while a sweep is
still running. Inside the package the concerns are split: :mod:`~tunefree.bench.report.scoring` (which
rows count and the numbers), :mod:`~tunefree.bench.report.figures` (matplotlib),
:mod:`~tunefree.bench.report.sections` (what the report says, as one list of blocks) and
:mod:`~tunefree.bench.report.document` (the block model and its Markdown and HTML renderers).
"""

from __future__ import annotations

from pathlib import Path

from tunefree.bench.ledger import Ledger
from tunefree.bench.report.document import to_html, to_markdown
from tunefree.bench.report.scoring import OptimizerSummary, TaskSummary, summarise
from tunefree.bench.report.sections import report_blocks

__all__ = ["OptimizerSummary", "TaskSummary", "summarise", "write_report"]


def write_report(folder: str | Path) -> Path:
    """Write ``report.md``, ``report.html``, ``runs.csv`` and ``figures/*.png`` into ``folder``;
    returns the path of ``report.html``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is built on headless machines and in workers

    folder = Path(folder)
    tasks = summarise(folder)
    with Ledger(folder) as ledger:
        csv_path = ledger.export_csv()
        all_rows = ledger.rows()
    (folder / "figures").mkdir(exist_ok=True)
    blocks = report_blocks(folder, tasks, all_rows, csv_path.name)
    (folder / "report.md").write_text(to_markdown(blocks))
    html_path = folder / "report.html"
    html_path.write_text(to_html(blocks, title="tunefree report"))
    return html_path
