"""Ledger: each run stored exactly once; resumable after a real SIGKILL of the sweep process group."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TASK_FILE, TinyTask

from tunefree.bench import Ledger, run_one, run_sweep
from tunefree.bench.sweep import build_specs


def _quiet(_: str) -> None:
    return None


def test_a_run_is_stored_once(tmp_path: Path, tiny_task: TinyTask) -> None:
    spec = build_specs(tiny_task, "object:tiny", ["adam"], [0], "quick", [0.0])[0]
    result = run_one(spec, tiny_task)
    with Ledger(tmp_path) as ledger:
        assert ledger.store(result) is True
        assert ledger.store(result) is False
        assert ledger.count() == 1
        row = ledger.rows()[0]
    assert row["run_id"] == spec.run_id and row["status"] == "ok"
    assert row["losses"][1] == result.losses and row["evals"][0][0] == 0
    assert row["init_val"] == result.evals[0][1]["loss"]
    assert row["final_val"] == result.final_val["loss"]


def test_run_id_changes_with_any_part_of_the_spec(tiny_task: TinyTask) -> None:
    base = build_specs(tiny_task, "object:tiny", ["adam"], [0], "quick", [0.0])[0]
    ids = {base.run_id}
    for other in (
        build_specs(tiny_task, "object:tiny", ["adam"], [1], "quick", [0.0])[0],
        build_specs(tiny_task, "object:tiny", ["adam"], [0], "quick", [0.5])[0],
        build_specs(tiny_task, "object:tiny", ["adamw"], [0], "quick", [0.0])[0],
        build_specs(tiny_task, "object:tiny", ["adam"], [0], "quick", [0.0], {"adam": {"eps": 1e-6}})[0],
        build_specs(tiny_task, "object:tiny", ["adam"], [0], "quick", [0.0], version="other")[0],
    ):
        ids.add(other.run_id)
    assert len(ids) == 6
    # the task reference (how a worker finds the task) is not part of the identity
    again = build_specs(tiny_task, "some/file.py:make", ["adam"], [0], "quick", [0.0])[0]
    assert again.run_id == base.run_id


def test_rerunning_a_sweep_skips_finished_runs(tmp_path: Path, tiny_task: TinyTask) -> None:
    kw: dict[str, Any] = dict(optimizers=["sgd", "adam"], seeds=2, out=tmp_path, workers=1,
                              progress=False, report=False, log=_quiet)
    first = run_sweep(tiny_task, **kw)
    assert first.executed == first.total == 20
    with Ledger(tmp_path) as ledger:
        stamps = {r["run_id"]: r["finished_at"] for r in ledger.rows()}
    second = run_sweep(tiny_task, **kw)
    assert second.executed == 0 and second.skipped == 20
    # a larger sweep only runs what is new
    third = run_sweep(tiny_task, **{**kw, "seeds": 3})
    assert third.executed == 10 and third.skipped == 20
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows()
    assert len(rows) == 30
    assert all(stamps[r["run_id"]] == r["finished_at"] for r in rows if r["run_id"] in stamps)


def test_seeds_near_best_run_the_grid_once_and_more_seeds_only_near_each_best(
    tmp_path: Path, tiny_task: TinyTask
) -> None:
    from tunefree.bench.sweep import exponents_near_best

    kw: dict[str, Any] = dict(optimizers=["sgd", "adam"], out=tmp_path, workers=1, progress=False,
                              report=False, log=_quiet, suite="quick", extend_grid=False)
    summary = run_sweep(tiny_task, seeds=3, seeds_near_best=0.5, **kw)
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows()
    grid = sorted({r["lr_exp"] for r in rows})
    for name in ("sgd", "adam"):
        mine = [r for r in rows if r["optimizer"] == name]
        first = [(r["lr_exp"], r["final_val"]) for r in mine if r["seed"] == 0]
        assert sorted(k for k, _ in first) == grid  # the whole grid with the first seed
        near = exponents_near_best(first, higher_is_better=False, radius=0.5)
        finite = [(k, v) for k, v in first if v is not None]
        best = min(finite, key=lambda kv: kv[1])[0]
        assert best in near and all(abs(k - best) <= 0.5 for k in near) and len(near) < len(grid)
        for seed in (1, 2):  # further seeds exactly there
            assert sorted(r["lr_exp"] for r in mine if r["seed"] == seed) == near
    assert summary.executed == summary.total == len(rows)
    # asking again is a no-op; asking for more seeds adds only the new seed at the same points
    assert run_sweep(tiny_task, seeds=3, seeds_near_best=0.5, **kw).executed == 0
    more = run_sweep(tiny_task, seeds=4, seeds_near_best=0.5, **kw)
    with Ledger(tmp_path) as ledger:
        assert more.executed == sum(1 for r in ledger.rows() if r["seed"] == 3) > 0


def test_exponents_near_best_ignore_failed_points_and_bad_radius(tmp_path: Path, tiny_task: TinyTask) -> None:
    from tunefree.bench.sweep import exponents_near_best

    # the lowest loss at k = 1 has a diverged seed: it cannot be the best
    results = [(-1.0, 0.5), (-0.5, 0.3), (0.0, 0.4), (1.0, 0.1), (1.0, None)]
    assert exponents_near_best(results, higher_is_better=False, radius=0.5) == [-1.0, -0.5, 0.0]
    assert exponents_near_best(results, higher_is_better=True, radius=0.0) == [-1.0]
    assert exponents_near_best([(0.0, None)], higher_is_better=False, radius=1.0) == []
    with pytest.raises(ValueError, match="seeds_near_best"):
        run_sweep(tiny_task, optimizers=["sgd"], seeds=2, seeds_near_best=-1.0, out=tmp_path,
                  progress=False, report=False, log=_quiet)


def _bench_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "tunefree.cli", "bench", "--task", f"{TASK_FILE}:make_slow_task",
            "--optimizers", "sgd", "adam", "--seeds", "2", "--workers", "2", "--out", str(out),
            "--no-report", "--no-progress"]


def test_sigkilled_sweep_resumes_with_every_run_stored_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    db = out / "ledger.sqlite"
    total = 2 * 5 * 2  # optimizers x quick grid x seeds
    # pin the code version: other engineers edit tunefree/optim while this runs, and a real edit between
    # the kill and the resume would (correctly) make every run new
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNEFREE_CODE_VERSION": "test-kill-resume"}
    proc = subprocess.Popen(_bench_cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # own process group: the kill takes the workers too
    deadline = time.monotonic() + 60
    try:
        while Ledger.stored_runs(db.parent) < 4:
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "sweep made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Ledger(out) as ledger:
        before = {r["run_id"]: r["finished_at"] for r in ledger.rows()}
    assert 4 <= len(before) < total, "the kill must land in the middle of the sweep"

    resumed = subprocess.run(_bench_cmd(out), env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{total - len(before)} to run, {len(before)} already" in resumed.stdout

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in conn.execute("SELECT run_id FROM runs")]
        combos = conn.execute("SELECT DISTINCT optimizer, lr_exp, seed FROM runs").fetchall()
    assert len(ids) == len(set(ids)) == total
    assert len(combos) == total
    with Ledger(out) as ledger:
        rows = {r["run_id"]: r for r in ledger.rows()}
    # nothing stored before the kill was lost or rewritten
    assert all(rows[run_id]["finished_at"] == stamp for run_id, stamp in before.items())
    assert all(r["status"] in ("ok", "diverged") for r in rows.values())
