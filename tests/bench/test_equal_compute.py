"""Equal compute: two-gradient methods (GALA) scored at half their steps from their own traces."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import TASK_FILE, make_tiny_task

from tunefree.bench import run_one, run_sweep, summarise, write_report
from tunefree.bench.report.equal_compute import HALF_SUFFIX, equal_compute, half_step_row
from tunefree.bench.sweep import build_specs


def _quiet(_: str) -> None:
    return None


def _row(**changes):
    row = dict(task="t", suite="quick", optimizer="gala", kwargs="{}", schedule="constant", lr_exp=0.0, seed=0,
               metric="loss", status="ok", steps=30, steps_done=30, grad_evals=59, diverged_step=None,
               final_val=0.1, final_test=0.1, wall_s=3.0, cpu_s=3.0,
               evals=[(0, {"loss": 1.0}), (10, {"loss": 0.5}), (20, {"loss": 0.2}), (30, {"loss": 0.1})])
    row.update(changes)
    return row


def test_half_step_row_reads_the_last_evaluation_at_or_before_half_the_steps() -> None:
    half = half_step_row(_row())  # half of 30 is 15, between the evaluations at 10 and 20
    assert half["final_val"] == 0.5 and half["steps_done"] == 10 and half["status"] == "ok"
    assert half["optimizer"] == "gala" + HALF_SUFFIX and half["final_test"] is None
    assert half["grad_evals"] == round(59 / 3) and math.isclose(half["cpu_s"], 1.0)
    on_grid = half_step_row(_row(steps=40, steps_done=40, evals=_row()["evals"] + [(40, {"loss": 0.05})]))
    assert on_grid["final_val"] == 0.2 and on_grid["steps_done"] == 20


def test_divergence_counts_only_when_it_happened_by_the_half_step() -> None:
    late = half_step_row(_row(status="diverged", diverged_step=25, steps_done=24, final_val=None))
    assert late["status"] == "ok" and late["final_val"] == 0.5
    early = half_step_row(_row(status="diverged", diverged_step=8, steps_done=7, final_val=None,
                               evals=[(0, {"loss": 1.0}), (10, {"loss": math.inf})]))
    assert early is None or early["status"] == "diverged"
    at_ten = half_step_row(_row(status="diverged", diverged_step=10, steps_done=9))
    assert at_ten["status"] == "diverged"
    # the truncated run costs what the run did up to its last step, never more
    assert at_ten["steps_done"] == 9 and at_ten["cpu_s"] == 3.0 and at_ten["grad_evals"] == 59


def test_scheduled_errored_or_untraced_runs_are_not_truncated() -> None:
    assert half_step_row(_row(schedule="cosine:0.05")) is None
    assert half_step_row(_row(status="error")) is None
    assert half_step_row(_row(evals=[(0, {"loss": 1.0})])) is None


def test_the_truncated_trace_is_the_run_with_half_the_steps() -> None:
    """The premise of the section: under the constant schedule, GALA's first T/2 steps are the T/2-step run."""
    long_task, short_task = make_tiny_task(steps=40), make_tiny_task(steps=20)
    long_spec = build_specs(long_task, "object:tiny", ["gala"], [0], "quick", [0.0])[0]
    short_spec = build_specs(short_task, "object:tiny", ["gala"], [0], "quick", [0.0])[0]
    long_run, short_run = run_one(long_spec, long_task), run_one(short_spec, short_task)
    assert long_run.status == short_run.status == "ok"
    at_half = dict(long_run.evals)[20]
    assert at_half["loss"] == short_run.final_val["loss"]


def test_report_has_the_equal_compute_section_for_gala_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(f"{TASK_FILE}:make_tiny_task", optimizers=["gala", "sgd", "adam"], seeds=1, out=out, workers=1,
              exponents=[-1.0, 0.0, 1.0], progress=False, report=False, log=_quiet)
    (ts,) = summarise(out)
    pairs = equal_compute(ts)
    assert [full.label for full, _, _ in pairs] == ["gala"]
    full, half, step = pairs[0]
    assert (ts.steps, step) == (30, 10) and half.label == "gala" + HALF_SUFFIX  # evaluated every 10 steps
    sgd = next(o for o in ts.optimizers if o.label == "sgd")
    # at most the baselines' gradient budget per run (here less: the half step falls between evaluations)
    assert half.grad_evals_per_step * half.steps_per_run <= sgd.grad_evals_per_step * sgd.steps_per_run
    assert full.grad_evals_per_step * full.steps_per_run > sgd.grad_evals_per_step * sgd.steps_per_run
    text = write_report(out).with_suffix(".md").read_text()
    assert "## Equal compute: two-gradient methods at half their steps" in text
    assert f"| tiny | gala | {ts.steps} / {step} |" in text
