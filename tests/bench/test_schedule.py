"""Learning-rate schedules (the protocol's secondary setting, docs/benchmark.md): run identity, validation,
the lr the runner actually uses, the ledger column and its in-place migration, and sweeps that hold
both settings in one ledger."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from dataclasses import fields, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TinyTask, make_tiny_task
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tunefree.bench import Ledger, run_one, run_sweep
from tunefree.bench import runner as R
from tunefree.bench.sweep import RunSpec, build_specs, make_schedule, parse_schedule, resolve_optimizer

REPO = Path(__file__).resolve().parents[2]
OLD_LEDGER = REPO / "docs" / "results" / "standard" / "ledger.sqlite"


def _quiet(_: str) -> None:
    return None


def _spec(task: TinyTask, optimizer: str = "sgd", schedule: str = "constant", exp: float = 0.0) -> RunSpec:
    return build_specs(task, "object:tiny", [optimizer], [0], "quick", [exp], schedule=schedule)[0]


# ---- identity ------------------------------------------------------------------------------------------


def _old_run_id(spec: RunSpec) -> str:
    """The run id as computed before schedules existed (the identity dict of that code, verbatim)."""
    old_identity = {
        "task": spec.task, "suite": spec.suite, "steps": spec.steps, "eval_every": spec.eval_every,
        "optimizer": spec.optimizer, "lr": repr(float(spec.lr)), "kwargs": spec.kwargs,
        "seed": spec.seed, "code_version": spec.code_version,
    }
    return hashlib.sha256(json.dumps(old_identity, sort_keys=True).encode()).hexdigest()[:24]


def test_constant_schedule_keeps_the_old_run_id(tiny_task: TinyTask) -> None:
    for optimizer in ("sgd", "adam"):
        spec = _spec(tiny_task, optimizer)
        assert spec.schedule == "constant" and "schedule" not in spec.identity()
        assert spec.run_id == _old_run_id(spec)
    # literal ids computed with the code before this change (a guard against changing both sides)
    spec = RunSpec(task="lsq_synth", suite="standard", steps=1200, eval_every=100, optimizer="momo", lr=0.01,
                   seed=0, kwargs="{}", code_version="0.1.0+bdcfb24037ee")
    assert spec.run_id == "16d49d1d6888a1d58ad49852"
    spec = RunSpec(task="tiny", suite="quick", steps=30, eval_every=10, optimizer="adam", lr=0.001, seed=2,
                   kwargs='{"eps": 1e-06}', code_version="0.1.0+0123456789ab")
    assert spec.run_id == "9e92b05c38026eefa7f1932e"


def test_a_schedule_is_part_of_the_identity(tiny_task: TinyTask) -> None:
    constant = _spec(tiny_task)
    cosine = _spec(tiny_task, schedule="cosine")
    longer = _spec(tiny_task, schedule="cosine:0.2")
    assert cosine.schedule == "cosine:0.05" and cosine.identity()["schedule"] == "cosine:0.05"
    assert len({constant.run_id, cosine.run_id, longer.run_id}) == 3
    assert _spec(tiny_task, schedule="cosine:0.05").run_id == cosine.run_id


# ---- validation ----------------------------------------------------------------------------------------


def test_make_schedule_canonical_strings() -> None:
    assert make_schedule() == "constant"
    assert make_schedule("cosine") == "cosine:0.05"
    assert make_schedule("cosine", 0.1) == "cosine:0.1"
    assert make_schedule("cosine", 0) == "cosine:0"
    assert make_schedule("cosine:0.25") == make_schedule("cosine", 0.25) == "cosine:0.25"
    assert parse_schedule("cosine:0.25") == ("cosine", 0.25) and parse_schedule("constant") == ("constant", 0.0)


@pytest.mark.parametrize("schedule,warmup,argument", [
    ("linear", None, "schedule"), ("Cosine", None, "schedule"), ("constant:0.1", None, "schedule"),
    (None, None, "schedule"), ("cosine:x", None, "schedule"), ("cosine:0.1", 0.2, "schedule"),
    ("cosine", 1.0, "warmup"), ("cosine", -0.01, "warmup"), ("cosine", math.nan, "warmup"),
    ("cosine", "x", "warmup"), ("cosine:1.5", None, "warmup"), ("constant", 0.1, "warmup"),
])
def test_bad_schedules_name_the_argument(schedule: Any, warmup: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make_schedule(schedule, warmup)


def test_bad_schedule_is_refused_by_the_spec_and_the_sweep(tiny_task: TinyTask, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schedule"):
        replace(_spec(tiny_task), schedule="cosine")  # not canonical: the stored string must be exact
    with pytest.raises(ValueError, match="schedule"):
        run_sweep(tiny_task, optimizers=["sgd"], out=tmp_path, schedule="step", log=_quiet, report=False)
    with pytest.raises(ValueError, match="warmup"):
        run_sweep(tiny_task, optimizers=["sgd"], out=tmp_path, schedule="cosine", warmup=1, log=_quiet, report=False)
    assert not (tmp_path / "ledger.sqlite").exists()  # refused before anything is written


# ---- the lr the runner uses ----------------------------------------------------------------------------


def _closed_form(t: int, steps: int, warmup: int) -> float:
    """Multiplier of the lr used at optimizer step t = 1..steps (and t = steps + 1: after the end)."""
    if t <= warmup:
        return t / warmup
    return 0.5 * (1 + math.cos(math.pi * (t - 1 - warmup) / (steps - warmup)))


def test_warmup_steps_and_multiplier_edges() -> None:
    assert R.warmup_steps(1000, 0.05) == 50 and R.warmup_steps(30, 0.05) == 2  # 1.5 rounds up
    assert R.warmup_steps(100, 0.07) == 7 and R.warmup_steps(30, 0.0) == 0
    assert R.warmup_steps(1, 0.5) == 0  # at least one decay step remains
    assert R.lr_multiplier(0, 30, 0) == 1.0 and R.lr_multiplier(30, 30, 0) == 0.0
    assert R.lr_multiplier(0, 1, 0) == 1.0 and R.lr_multiplier(1, 1, 0) == 0.0
    assert R.lr_multiplier(0, 0, 0) == 1.0  # a 0-step budget schedules nothing
    assert all(R.lr_multiplier(i, 30, 3) > 0 for i in range(30))  # no step at lr 0


def _lrs_used(spec: RunSpec, task: TinyTask) -> tuple[Any, list[float]]:
    """Run ``spec`` and record the lr of every param group at the moment each optimizer step starts."""
    seen: list[list[float]] = []

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen.append([group["lr"] for group in optimizer.param_groups])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        result = run_one(spec, task)
    finally:
        handle.remove()
    assert all(len(set(lrs)) == 1 for lrs in seen)
    return result, [lrs[0] for lrs in seen]


@pytest.mark.parametrize("optimizer", ["sgd", "momo"])
def test_the_lr_used_at_each_step_is_the_closed_form(optimizer: str) -> None:
    entry = resolve_optimizer(optimizer)
    if entry.import_error() is not None:
        pytest.skip(f"{optimizer} not importable: {entry.import_error()}")
    task = make_tiny_task(steps=40)
    spec = _spec(task, optimizer, schedule="cosine:0.1", exp=-1.0)
    result, lrs = _lrs_used(spec, task)
    assert result.status == "ok" and len(lrs) == spec.steps == 40
    lr, warmup = spec.lr, 4
    expected = [lr * _closed_form(t, 40, warmup) for t in range(1, 41)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    # the shape by hand: a linear ramp lr/4, lr/2, 3lr/4, lr; the full lr once more; positive, falling to the end
    assert lrs[:5] == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr, lr], rel=1e-12)
    assert all(a > b > 0 for a, b in pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 35 / 36)), rel=1e-12)
    # the constant setting never changes the lr and creates no scheduler
    _, constant = _lrs_used(replace(spec, schedule="constant"), task)
    assert constant == [lr] * 40


def test_momo_param_group_lr_after_each_scheduler_step_ends_at_zero(tiny_task: TinyTask) -> None:
    entry = resolve_optimizer("momo")
    if entry.import_error() is not None:
        pytest.skip(f"momo not importable: {entry.import_error()}")
    steps = 20
    spec = replace(_spec(tiny_task, "momo"), steps=steps, schedule="cosine:0.25")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = entry.create(model.parameters(), lr=spec.lr)
    scheduler = R.make_scheduler(opt, spec)
    assert scheduler is not None and R.make_scheduler(opt, replace(spec, schedule="constant")) is None
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    assert opt.param_groups[0]["lr"] == pytest.approx(spec.lr / 5)  # set for step 1 by the constructor
    for t in range(1, steps + 1):
        opt.step(closure)
        scheduler.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(spec.lr * _closed_form(t + 1, steps, 5), rel=1e-12, abs=1e-15)
    assert opt.param_groups[0]["lr"] == 0.0  # cosine decay reaches exactly 0 once the budget is done


def test_every_tunefree_method_runs_under_the_schedule(tiny_task: TinyTask) -> None:
    for name in ("momo", "momo_adam", "smes", "agd", "rsgdm", "gala", "gala_adam"):
        entry = resolve_optimizer(name)
        if entry.import_error() is not None:
            continue
        result = run_one(_spec(tiny_task, name, schedule="cosine"), tiny_task)
        assert result.status == "ok", (name, result.error)


# ---- ledger ---------------------------------------------------------------------------------------------


def test_ledger_stores_the_schedule(tmp_path: Path, tiny_task: TinyTask) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.store(run_one(_spec(tiny_task, schedule="cosine:0.1"), tiny_task))
        ledger.store(run_one(_spec(tiny_task), tiny_task))
        rows = ledger.rows()
        assert sorted(r["schedule"] for r in rows) == ["constant", "cosine:0.1"]
        assert [r["schedule"] for r in ledger.rows(schedule="cosine:0.1")] == ["cosine:0.1"]
        csv_text = ledger.export_csv().read_text()
    assert csv_text.splitlines()[0].split(",").count("schedule") == 1 and "cosine:0.1" in csv_text


def _spec_from_row(row: dict[str, Any]) -> RunSpec:
    names = {f.name for f in fields(RunSpec)}
    data = {k: v for k, v in row["spec"].items() if k in names}
    data["trace_stats"] = tuple(data.get("trace_stats", ()))
    return RunSpec(**data)


def _check_migrated(folder: Path, tiny_task: TinyTask, before: int) -> None:
    with Ledger(folder) as ledger:
        rows = ledger.rows()
        assert len(rows) == before and {r["schedule"] for r in rows} == {"constant"}
        for row in rows:  # every old run id is still what the spec hashes to
            assert _spec_from_row(row).run_id == row["run_id"]
        assert ledger.store(run_one(_spec(tiny_task), tiny_task))
        assert ledger.store(run_one(_spec(tiny_task, schedule="cosine"), tiny_task))
        assert ledger.count() == before + 2
        assert sorted(r["schedule"] for r in ledger.rows(task="tiny", optimizer="sgd")) == ["constant", "cosine:0.05"]
    with Ledger(folder) as ledger:  # opening a migrated ledger again changes nothing
        assert ledger.count() == before + 2
    with sqlite3.connect(folder / "ledger.sqlite") as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    assert columns.count("schedule") == 1


def test_an_old_results_ledger_is_migrated_in_place(tmp_path: Path, tiny_task: TinyTask) -> None:
    if not OLD_LEDGER.exists():
        pytest.skip(f"{OLD_LEDGER} not in this checkout")
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copyfile(OLD_LEDGER, folder / "ledger.sqlite")  # the original is only read, never opened by sqlite
    with sqlite3.connect(folder / "ledger.sqlite") as conn:
        # the published copy may already be migrated (a later report opened it): undo that on the copy
        if "schedule" in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]:
            conn.execute("ALTER TABLE runs DROP COLUMN schedule")
        assert "schedule" not in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        before = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert before > 0
    _check_migrated(folder, tiny_task, before)


def test_a_ledger_of_the_old_schema_is_migrated_and_old_writers_still_work(tmp_path: Path, tiny_task: TinyTask) -> None:
    """The same without the published ledger: a ledger whose table lacks the column (dropped here)."""
    with Ledger(tmp_path) as ledger:
        ledger.store(run_one(_spec(tiny_task, "adam"), tiny_task))
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN schedule")
    _check_migrated(tmp_path, tiny_task, 1)
    # a writer of the old code names its columns without 'schedule': the default fills it in
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("CREATE TEMP TABLE copy AS SELECT * FROM runs WHERE optimizer = 'adam'")
        conn.execute("UPDATE copy SET run_id = 'old-writer'")
        names = [r[1] for r in conn.execute("PRAGMA table_info(runs)") if r[1] != "schedule"]
        conn.execute(f"INSERT INTO runs ({', '.join(names)}) SELECT {', '.join(names)} FROM copy")
    with Ledger(tmp_path) as ledger:
        assert ledger.rows(run_id="old-writer")[0]["schedule"] == "constant"


# ---- sweeps ---------------------------------------------------------------------------------------------


def test_both_settings_in_one_ledger_are_separate_runs(tmp_path: Path, tiny_task: TinyTask) -> None:
    kw: dict[str, Any] = {"optimizers": ["sgd", "adam"], "seeds": 2, "workers": 1, "progress": False,
                          "report": False, "log": _quiet, "extend_grid": True, "seeds_near_best": 0.5}
    constant = run_sweep(tiny_task, out=tmp_path / "both", **kw)
    cosine = run_sweep(tiny_task, out=tmp_path / "both", schedule="cosine", **kw)
    assert cosine.skipped == 0 and cosine.executed > 0  # nothing of the constant setting is reused
    again = run_sweep(tiny_task, out=tmp_path / "both", schedule="cosine", **kw)
    assert again.executed == 0  # resumes like any sweep
    alone = run_sweep(tiny_task, out=tmp_path / "alone", schedule="cosine", **kw)
    with Ledger(tmp_path / "both") as both, Ledger(tmp_path / "alone") as single:
        assert both.count() == constant.executed + cosine.executed
        mixed = {r["run_id"] for r in both.rows(schedule="cosine:0.05")}
        # grid extension and the near-best seeds look at the sweep's own schedule only
        assert mixed == {r["run_id"] for r in single.rows()} and len(mixed) == alone.executed
        assert both.get_meta("last_sweep")["schedule"] == "cosine:0.05"


# ---- report ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_settings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ledger with the same methods under constant lr and under the default cosine schedule."""
    out = tmp_path_factory.mktemp("settings")
    names = ["sgd", "adam"] + (["momo"] if resolve_optimizer("momo").import_error() is None else [])
    kw: dict[str, Any] = {"optimizers": names, "seeds": 2, "out": out, "workers": 1, "progress": False,
                          "report": False, "log": _quiet}
    run_sweep(make_tiny_task(), **kw)
    run_sweep(make_tiny_task(), schedule="cosine", **kw)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _m_star_by_hand(rows: list[dict[str, Any]], schedule: str) -> float:
    points: dict[tuple, list] = {}
    for r in rows:
        if r["schedule"] == schedule and r["baseline"]:
            points.setdefault((r["optimizer"], r["lr_exp"]), []).append(r["final_val"])
    return min(sum(v) / len(v) for v in points.values() if all(x is not None for x in v))


def test_each_setting_is_scored_against_its_own_baselines(both_settings: Path) -> None:
    from tunefree.bench import summarise

    (ts,) = summarise(both_settings)
    with Ledger(both_settings) as ledger:
        rows = ledger.rows()
    constant, cosine = _m_star_by_hand(rows, "constant"), _m_star_by_hand(rows, "cosine:0.05")
    assert constant != cosine
    assert ts.targets["constant"][0] == pytest.approx(constant) and ts.m_star == pytest.approx(constant)
    assert ts.targets["cosine:0.05"][0] == pytest.approx(cosine)
    assert "same cosine schedule" in ts.targets["cosine:0.05"][1]
    assert not ts.unscored
    labels = [o.label for o in ts.optimizers]
    for name in ("sgd", "adam"):
        assert name in labels and f"{name}+cosine" in labels
    # constant methods first, then the cosine ones; within each, tunefree before the baselines
    schedules = [o.schedule for o in ts.optimizers]
    assert schedules == sorted(schedules, key=lambda s: s != "constant")
    for o in ts.optimizers:
        target = constant if o.schedule == "constant" else cosine
        mine = [r for r in rows if r["optimizer"] == o.optimizer and r["schedule"] == o.schedule and r["lr_exp"] == 0.0]
        expected = sum((ts.m_init - r["final_val"]) / (ts.m_init - target) for r in mine) / len(mine)
        assert o.default_score == pytest.approx(expected)
    # the best tuned baseline of each setting scores 1 in its own setting
    for schedule in ("constant", "cosine:0.05"):
        assert max(o.tuned_score for o in ts.optimizers if o.baseline and o.schedule == schedule) == pytest.approx(1.0)


def test_report_shows_both_settings_side_by_side(both_settings: Path) -> None:
    from tunefree.bench import summarise, write_report
    from tunefree.bench.report import scoring as RP

    html_path = write_report(both_settings)
    md = (both_settings / "report.md").read_text()
    page = html_path.read_text()
    for label in ("| adam |", "| adam+cosine |", "| sgd+cosine |"):
        assert label in md
    assert "m* of the +cosine runs" in md and "best tuned baseline under the same cosine schedule" in md
    assert "ranked and scored separately" in md and "adam+cosine" in page  # the glossary explains the settings
    assert (both_settings / "figures" / "performance-profile.png").stat().st_size > 0
    # the profile compares each label with the best of its own setting
    tasks = summarise(both_settings)
    labels, ratios = RP.trials_profile(tasks)
    costs = {o.label: o.expected_trials for o in tasks[0].optimizers}
    for j, label in enumerate(labels):
        same = [c for lb, c in costs.items() if ("+cosine" in lb) == ("+cosine" in label)]
        expected = costs[label] / min(same) if math.isfinite(costs[label]) else math.inf
        assert ratios[0, j] == pytest.approx(expected)


def test_a_setting_without_baselines_is_not_scored(both_settings: Path, tmp_path: Path) -> None:
    from tunefree.bench import summarise, write_report

    folder = _copy(both_settings, tmp_path / "nobase")
    with sqlite3.connect(folder / "ledger.sqlite") as conn:
        conn.execute("DELETE FROM runs WHERE schedule != 'constant' AND baseline = 1")
    (ts,) = summarise(folder)
    (full,) = summarise(both_settings)
    assert "cosine:0.05" in ts.unscored and math.isnan(ts.targets["cosine:0.05"][0])
    assert all(o.schedule == "constant" for o in ts.optimizers)
    assert ts.m_star == full.m_star  # the constant setting is unaffected
    write_report(folder)
    md = (folder / "report.md").read_text()
    assert "Not scored: no tuned baseline" in md and "+cosine |" not in md

    # only scheduled runs without baselines: nothing is scored, the report still renders and says so
    if resolve_optimizer("momo").import_error() is not None:
        return  # the ledger has no non-baseline method then
    only = _copy(both_settings, tmp_path / "only")
    with sqlite3.connect(only / "ledger.sqlite") as conn:
        conn.execute("DELETE FROM runs WHERE schedule = 'constant' OR baseline = 1")
    (ts,) = summarise(only)
    assert ts.optimizers == [] and list(ts.unscored) == ["cosine:0.05"]
    write_report(only)
    md = (only / "report.md").read_text()
    assert "no setting scored" in md and "Not scored" in md
