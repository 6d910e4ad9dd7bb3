"""The README's performance table is the one `benchmarks/step_time.py --readme` renders from the
committed results (so it cannot drift from them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "docs/results/step-time/cpu-default.json"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("step_time", ROOT / "benchmarks" / "step_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_performance_table_is_generated_from_the_committed_results() -> None:
    results = json.loads((ROOT / RESULTS).read_text())
    table = load_benchmark().readme_table({**results, "json_path": RESULTS})
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README's performance table is stale: paste the output of " + table.splitlines()[0]


def test_the_table_shows_every_method_with_its_ratio_and_guard() -> None:
    results = json.loads((ROOT / RESULTS).read_text())
    results["sets"]["resnet18"]["rows"]["tunefree MoMo"]["ms"] = 123.4  # a changed result changes the table
    table = load_benchmark().readme_table({**results, "json_path": RESULTS})
    assert "| MoMo | 123.4 |" in table
    for method in ("MoMo", "MoMoAdam", "SMES", "AGD", "RSGDM"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert "foreach" in row and "%" in row
