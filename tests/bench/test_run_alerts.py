"""Every benchmark run is watched: its alerts reach the result, the ledger, the CSV, the report and the figures."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import TinyTask, make_tiny_task

from tunefree.bench import Ledger, run_sweep
from tunefree.bench import runner as runner_mod
from tunefree.bench.report import figures as F
from tunefree.bench.report import write_report
from tunefree.bench.report.scoring import default_alerts, summarise
from tunefree.bench.runner import run_one
from tunefree.bench.sweep import build_specs

# lower_bound far above the tiny task's loss (about 14 at the start): MoMo's step is 0 on every step
_STUCK = {"momo": {"lower_bound": 100.0}}


def _quiet(_: str) -> None:
    pass


def _task(steps: int = 200) -> TinyTask:
    return make_tiny_task(steps=steps)


def _spec(task: TinyTask, optimizer: str, kwargs: dict | None = None):
    return build_specs(task, task.name, [optimizer], [0], "quick", [0.0],
                       optimizer_kwargs={optimizer: kwargs} if kwargs else None)[0]


def test_a_stuck_momo_run_records_no_progress_once() -> None:
    task = _task()
    result = run_one(_spec(task, "momo", _STUCK["momo"]), task)
    assert result.status == "ok", result.error
    codes = [code for _, code, _ in result.alerts]
    assert codes == ["no_progress"], result.alerts
    step, _, message = result.alerts[0]
    assert 50 <= step <= 60  # Thresholds.no_progress_steps = 50, read every 10 steps
    assert "lower_bound" in message


def test_a_healthy_run_records_an_empty_list() -> None:
    task = _task(60)
    result = run_one(_spec(task, "sgd"), task)
    assert result.status == "ok" and result.alerts == []


def test_the_watcher_does_not_change_the_trajectory(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task(60)
    watched = run_one(_spec(task, "momo"), task)
    monkeypatch.setattr(runner_mod, "attach_watcher", lambda opt: None)
    bare = run_one(_spec(task, "momo"), task)
    assert bare.alerts is None and watched.alerts is not None
    assert watched.losses == bare.losses and watched.evals == bare.evals and watched.stats == bare.stats


def test_alerts_are_recorded_for_a_diverged_run_too() -> None:
    task = _task(200)
    spec = build_specs(task, task.name, ["sgd"], [0], "quick", [2.5])[0]  # lr 10^1.5: blows up
    result = run_one(spec, task)
    assert result.status == "diverged"
    assert result.alerts is not None  # recorded (maybe empty: the harness's own rule may stop it first)


def _sweep(folder: Path, task: TinyTask) -> None:
    run_sweep(task, ["momo", "sgd"], 2, folder, suite="quick", exponents=[-1.0, 0.0], extend_grid=False,
              optimizer_kwargs=_STUCK, workers=1, log=_quiet, progress=False, report=False)


def test_ledger_csv_and_report_carry_the_alerts(tmp_path: Path) -> None:
    task = _task()
    _sweep(tmp_path, task)
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows(optimizer="momo", lr_exp=0.0)
        ledger.export_csv()
    assert len(rows) == 2 and all([a[1] for a in r["alerts"]] == ["no_progress"] for r in rows)
    with open(tmp_path / "runs.csv", newline="") as handle:
        stored = {r["run_id"]: json.loads(r["alerts"]) for r in csv.DictReader(handle)}
    assert [a[1] for a in stored[rows[0]["run_id"]]] == ["no_progress"]

    (ts,) = summarise(tmp_path)
    found = default_alerts(ts)
    label = next(label for label in found if label.startswith("momo"))
    assert found[label].codes["no_progress"][0] == 2 and found[label].recorded == 2
    assert found["sgd"].codes == {} and found["sgd"].recorded == 2

    fig = F.figure_stats(ts)
    gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert "alert no_progress" in gids

    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    section = text.split("## Adaptation alerts at the default lr", 1)[1].split("\n## ", 1)[0]
    assert "no_progress 2/2 (step" in section and "| sgd | none |" in section


def test_a_ledger_from_before_alerts_migrates_and_reports_them_as_not_recorded(tmp_path: Path) -> None:
    task = _task(60)
    _sweep(tmp_path, task)
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:  # the schema of 0.1.0
        conn.execute("ALTER TABLE runs DROP COLUMN alerts")
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows()
        ledger.export_csv()
    assert rows and all(r["alerts"] is None for r in rows)
    (ts,) = summarise(tmp_path)
    assert all(found.recorded == 0 for found in default_alerts(ts).values())
    write_report(tmp_path)
    assert "Adaptation alerts" not in (tmp_path / "report.md").read_text()
