"""Equal compute: methods that evaluate two gradients per step (GALA) scored at half their steps.

A per-step comparison gives GALA twice the gradient evaluations of every other method. Under the
constant schedule a run's first ``T/2`` steps are exactly the run it would have made with ``T/2`` steps
(nothing in the update, the data order or the evaluation depends on the step budget), so its validation
metric at step ``T/2`` is the score of "GALA given half the steps", at the baselines' gradient budget,
without extra runs. The trace is evaluated every ``eval_every`` steps; when ``T/2`` is not on that grid,
the last evaluation before it is used (fewer steps still: the comparison never favours GALA). A run that
diverged at or before that step counts as diverged; one that diverged later does not.

The baselines keep their full budget and ``m*`` stays the task's (the best tuned baseline at the full
steps). Cosine-schedule runs are left out: their schedule depends on the budget, so a truncated run is
not a shorter run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tunefree.bench.report.scoring import OptimizerSummary, TaskSummary, row_label, row_schedule, summarise_rows

__all__ = ["HALF_SUFFIX", "TWO_GRADIENT_MIN", "half_step_row", "equal_compute"]

#: label suffix of a setting scored at half its steps
HALF_SUFFIX = "@half-steps"
#: gradient evaluations per step from which a method counts as a two-gradient method
TWO_GRADIENT_MIN = 1.5


def half_step_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """The run truncated at half its steps (see the module docstring), or None when it cannot be: an
    error, a scheduled run, or no evaluation after step 0 at or before half the steps."""
    if row["status"] not in ("ok", "diverged") or row_schedule(row) != "constant":
        return None
    half = row["steps"] // 2
    evals = [(int(step), values) for step, values in (row["evals"] or []) if int(step) <= half]
    if len(evals) < 2:
        return None
    step, values = evals[-1]
    diverged = row["diverged_step"] is not None and row["diverged_step"] <= step
    value = None if diverged else values.get(row["metric"])
    done = min(row["steps_done"], step)
    share = done / max(row["steps_done"], 1)  # of the run's gradient evaluations and time
    truncated = dict(row)
    truncated.update(
        optimizer=f"{row['optimizer']}{HALF_SUFFIX}",
        status="diverged" if diverged or value is None else "ok",
        final_val=value,
        final_test=None,  # the test split is evaluated only at the end of a run
        steps=half,
        steps_done=done,
        grad_evals=round(row["grad_evals"] * share),
        evals=evals,
        wall_s=row["wall_s"] * share,
        cpu_s=row["cpu_s"] * share,
    )
    return truncated


def equal_compute(ts: TaskSummary) -> list[tuple[OptimizerSummary, OptimizerSummary, int]]:
    """``(full, half, step)`` per two-gradient setting of the task's constant schedule: its summary at the
    full budget, at half the steps, and the step the half-budget scores were read at."""
    full = {o.label: o for o in ts.optimizers}
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in ts.rows:
        label = row_label(row)
        summary = full.get(label)
        if summary is None or summary.schedule != "constant" or summary.grad_evals_per_step < TWO_GRADIENT_MIN:
            continue
        truncated = half_step_row(row)
        if truncated is not None:
            by_label[label].append(truncated)
    out = []
    for label, rows in sorted(by_label.items()):
        half = summarise_rows(f"{label}{HALF_SUFFIX}", rows, ts.m_init, ts.m_star)
        out.append((full[label], half, max(int(r["evals"][-1][0]) for r in rows)))
    return out
