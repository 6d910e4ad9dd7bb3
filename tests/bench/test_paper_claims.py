"""benchmarks/paper_claims.py reads its figures from the report's scoring, not from anywhere else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import TASK_FILE

from tunefree.bench import run_sweep, summarise

ROOT = Path(__file__).resolve().parents[2]


def _claims():
    spec = importlib.util.spec_from_file_location("paper_claims", ROOT / "benchmarks" / "paper_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_claim_tables_show_the_reports_numbers(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    run_sweep(f"{TASK_FILE}:make_tiny_task", optimizers=["momo", "rsgdm", "gala", "sgd", "adam"], seeds=1,
              out=out, workers=1, exponents=[-1.0, 0.0, 1.0], progress=False, report=False, log=lambda _: None)
    (ts,) = summarise(out)
    by_label = {o.label: o for o in ts.optimizers}
    _claims().main(["--standard", str(out)])
    text = capsys.readouterr().out
    momo = text.split("## MoMo: W95 [decades] per task", 1)[1].split("##", 1)[0]
    row = next(line for line in momo.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{by_label['momo'].w95:.3g}" and cells[4] == f"{by_label['sgd'].w95:.3g}"
    rsgdm = text.split("## RSGDM: tuned s per task", 1)[1].split("##", 1)[0]
    assert f"| tiny | {by_label['rsgdm'].tuned_score:.3g} | {by_label['sgd'].tuned_score:.3g} |" in rsgdm
    assert "| tiny | gala | 30/10 |" in text  # the equal-compute table


def test_a_folder_without_a_ledger_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _claims().main(["--standard", str(tmp_path)])
