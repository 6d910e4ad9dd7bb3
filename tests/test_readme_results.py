"""The README's results table is the one `tunefree report docs/results/standard --readme` renders from
the committed ledger (so the summary cannot drift from the report)."""

from __future__ import annotations

from pathlib import Path

from tunefree.bench.report import README_MARKER, readme_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_table_is_generated_from_the_standard_ledger() -> None:
    readme = (ROOT / "README.md").read_text()
    assert README_MARKER in readme, "the README lost the marker line above its results table"
    block = readme.split(README_MARKER, 1)[1].lstrip("\n").split("\n\n", 1)[0].strip()
    expected = readme_table(ROOT / "docs" / "results" / "standard").split(README_MARKER, 1)[1].strip()
    assert block == expected, "README results table is stale: run `tunefree report docs/results/standard --readme`"
