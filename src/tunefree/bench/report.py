"""Report: robustness metrics per optimizer and task, figures, ``report.md`` and a self-contained
``report.html`` (figures embedded as base64), plus ``runs.csv`` with every run.

Reads only the ledger (nothing upstream), so a report can be rebuilt at any time, also while a sweep
is still running. Scores follow ``notes/benchmarks.md`` 3b: ``s = (m_init - m) / (m_init - m*)`` with
``m*`` the best tuned baseline (sgd, adam, adamw) by seed-mean final validation metric; diverged runs
score ``-inf``; learning rates are selected on validation and the test metric of the selection is
reported separately.

Runs under a learning-rate schedule other than constant (the secondary setting of 3c) are methods of
their own, labelled ``optimizer+cosine``, and each setting is self-contained: a scheduled run's ``m*`` is
the best tuned baseline under the same schedule, its performance-profile ratios are to the best method of
the same schedule, and a schedule without baseline runs on a task is not scored there (the constant
setting keeps its fallback to the best of all its runs).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
import platform
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunefree.bench import metrics as M
from tunefree.bench.ledger import Ledger
from tunefree.bench.sweep import DEFAULT_WARMUP, parse_schedule

__all__ = ["TARGET", "OptimizerSummary", "TaskSummary", "schedule_label", "summarise", "trials_profile",
           "w95_interval", "write_report"]

#: score threshold of "as good as the best tuned baseline" (W95, trials and steps to target)
TARGET = 0.95
BEST_OF = (1, 3, 9)
#: numbers of random grid trials of the "P(hit)" column
HIT_WITHIN = (1, 3)
#: bootstrap over seeds of the mean W95: resamples and the fixed RNG seed (the report is deterministic)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: performance profile of expected trials to target over tau in [1, PROFILE_TAU_MAX]
PROFILE_TAU_MAX = 4.0


@dataclass
class OptimizerSummary:
    """Robustness numbers of one optimizer (label = name + extra kwargs) on one task."""

    label: str
    optimizer: str
    default_lr: float
    exps: list[float]
    lrs: list[float]
    mean_scores: list[float]
    std_scores: list[float]
    mean_val: list[float]  # seed-mean final val metric per grid point (NaN if a seed failed)
    n_seeds: int
    default_score: float
    tuned_score: float
    best_exp: float | None
    best_lr: float | None
    best_val: float
    best_test: float
    w95: float
    w99: float
    w95_seed_mean: float
    w95_seed_std: float
    expected_trials: float
    best_of: dict[int, float]  # literal: -inf whenever a diverged point can be the best of b draws
    best_of_div0: dict[int, float]  # the same with every diverged run counted as s = 0 (no progress)
    p_hit: dict[int, float]  # P(at least one point with s >= TARGET among b random grid trials)
    steps_to_target_best: float
    steps_to_target_default: float
    wall_ms_per_step: float
    cpu_ms_per_step: float
    grad_evals_per_step: float
    n_runs: int
    n_diverged: int
    n_error: int
    best_on_edge: bool
    grid_spacing: float  # decades one grid point counts in W95: the smallest gap of this grid
    seeds_per_point: tuple[int, int]  # fewest and most seeds measured at one grid point
    grid_holes: list[float]  # exponents missing inside the grid's range (they break W95 contiguity)
    run_scores: list[dict[int, float]]  # per grid point: seed -> score of that run
    baseline: bool = False
    #: W95 of each bootstrap resample of the seeds (None with a single seed: no interval exists)
    w95_bootstrap: np.ndarray | None = None
    #: the learning-rate schedule of the runs ("constant" or e.g. "cosine:0.05"): the setting scored in
    schedule: str = "constant"


@dataclass
class TaskSummary:
    task: str
    suite: str
    metric: str
    higher_is_better: bool
    log_scale: bool
    steps: int
    m_init: float
    m_star: float  # of the primary setting: constant lr if it ran, else the first scored schedule
    target_source: str
    optimizers: list[OptimizerSummary] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: per schedule that ran on the task: (m*, where it comes from); NaN m* for a schedule not scored
    targets: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: per schedule not scored on the task (no baseline ran under it): the labels of its runs
    unscored: dict[str, list[str]] = field(default_factory=dict)


def _schedule(row: dict[str, Any]) -> str:
    return row.get("schedule") or "constant"  # rows of an unmigrated dict (tests, old exports): constant


def schedule_label(schedule: str) -> str:
    """The suffix a schedule adds to a method's label: "" for constant, "cosine" for the default
    warm-up, else the schedule string itself (e.g. "cosine:0.1")."""
    if schedule == "constant":
        return ""
    return "cosine" if schedule == f"cosine:{DEFAULT_WARMUP:g}" else schedule


def _describe_schedule(schedule: str) -> str:
    name, warmup = parse_schedule(schedule)
    if name == "constant":
        return "constant lr"
    return f"linear warm-up over the first {100 * warmup:.3g}% of the steps, then cosine decay to 0"


def _label(row: dict[str, Any]) -> str:
    suffix = schedule_label(_schedule(row))
    name = f"{row['optimizer']}+{suffix}" if suffix else row["optimizer"]
    return name if row["kwargs"] in ("{}", "", None) else f"{name} {row['kwargs']}"


def _latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, suite, optimizer, kwargs, schedule, lr, seed): the most recent one. Rows of
    older code versions would otherwise count a grid point twice."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["task"], row["suite"], row["optimizer"], row["kwargs"], _schedule(row),
               round(row["lr_exp"], 6), row["seed"])
        if key not in latest or row["finished_at"] >= latest[key]["finished_at"]:
            latest[key] = row
    return list(latest.values())


def _row_score(row: dict[str, Any], m_init: float, m_star: float) -> float:
    return M.normalized_score(row["final_val"] if row["status"] == "ok" else None, m_init, m_star)


def _eval_scores(row: dict[str, Any], m_init: float, m_star: float) -> tuple[list[int], list[float]]:
    steps, scores = [], []
    for step, values in row["evals"] or []:
        steps.append(int(step))
        scores.append(M.normalized_score(values.get(row["metric"]), m_init, m_star))
    return steps, scores


def _seed_mean_finite(values: list[float | None]) -> float:
    """Mean over seeds of a raw metric; NaN if any seed has none (failed seeds are never averaged away)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return math.nan
    return float(np.mean(values))


def _summarise_optimizer(label: str, rows: list[dict[str, Any]], m_init: float, m_star: float) -> OptimizerSummary:
    by_exp: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_exp[round(row["lr_exp"], 6)].append(row)
    exps = sorted(by_exp)
    seeds = sorted({r["seed"] for r in rows})
    spacing = M.grid_spacing(exps)
    mean_scores, std_scores, lrs, mean_val, mean_test, div0_scores = [], [], [], [], [], []
    run_scores: list[dict[int, float]] = []
    per_seed: dict[int, list[float]] = {s: [] for s in seeds}
    for k in exps:
        group = by_exp[k]
        scores = [_row_score(r, m_init, m_star) for r in group]
        mean_scores.append(M.seed_mean(scores))
        div0_scores.append(M.seed_mean(scores, diverged=0.0))
        run_scores.append({r["seed"]: score for r, score in zip(group, scores)})
        finite = [s for s in scores if math.isfinite(s)]
        std_scores.append(float(np.std(finite)) if len(finite) > 1 else 0.0)
        lrs.append(group[0]["lr"])
        mean_val.append(_seed_mean_finite([r["final_val"] if r["status"] == "ok" else None for r in group]))
        mean_test.append(_seed_mean_finite([r["final_test"] if r["status"] == "ok" else None for r in group]))
        seen = {r["seed"]: _row_score(r, m_init, m_star) for r in group}
        for s in seeds:
            per_seed[s].append(seen.get(s, math.nan))

    arr = np.asarray(mean_scores, dtype=float)
    valid = ~np.isnan(arr)
    has_best = valid.any() and np.isfinite(arr[valid]).any()
    best_idx = int(np.nanargmax(np.where(valid, arr, -np.inf))) if has_best else None
    default_idx = exps.index(0.0) if 0.0 in exps else None
    # Per-seed W95 only for seeds measured on the whole grid: a seed added near the best point only
    # (--seeds-near-best) has no width of its own, and counting its unmeasured points as failures would
    # bias the spread low.
    full_seeds = [s for s in seeds if not any(math.isnan(v) for v in per_seed[s])]
    seed_widths = [M.robust_width(exps, per_seed[s], TARGET, spacing) for s in full_seeds] or [math.nan]
    k_good = int(np.sum(arr >= TARGET))

    def steps_to_target(index: int | None) -> float:
        if index is None:
            return math.inf
        hits = [M.steps_to_target(*_eval_scores(r, m_init, m_star), TARGET) for r in by_exp[exps[index]]]
        return float(np.mean(hits)) if all(math.isfinite(h) for h in hits) else math.inf

    steps_done = sum(max(r["steps_done"], 1) for r in rows)
    return OptimizerSummary(
        label=label, optimizer=rows[0]["optimizer"], default_lr=rows[0]["default_lr"],
        baseline=bool(rows[0]["baseline"]),
        schedule=_schedule(rows[0]),
        exps=exps, lrs=lrs, mean_scores=mean_scores, std_scores=std_scores, mean_val=mean_val,
        n_seeds=len(seeds),
        default_score=mean_scores[default_idx] if default_idx is not None else math.nan,
        tuned_score=float(arr[best_idx]) if best_idx is not None else -math.inf,
        best_exp=exps[best_idx] if best_idx is not None else None,
        best_lr=lrs[best_idx] if best_idx is not None else None,
        best_val=mean_val[best_idx] if best_idx is not None else math.nan,
        best_test=mean_test[best_idx] if best_idx is not None else math.nan,
        w95=M.robust_width(exps, mean_scores, TARGET, spacing),
        w99=M.robust_width(exps, mean_scores, 0.99, spacing),
        w95_seed_mean=float(np.mean(seed_widths)), w95_seed_std=float(np.std(seed_widths)),
        expected_trials=M.expected_trials(len(exps), k_good),
        best_of={b: M.expected_best_of(mean_scores, b) for b in BEST_OF},
        best_of_div0={b: M.expected_best_of(div0_scores, b) for b in BEST_OF},
        p_hit={b: M.prob_target_within(len(exps), k_good, b) for b in HIT_WITHIN},
        steps_to_target_best=steps_to_target(best_idx),
        steps_to_target_default=steps_to_target(default_idx),
        # median over runs: the first run in each process pays torch's one-off warm-up
        wall_ms_per_step=1e3 * float(np.median([r["wall_s"] / max(r["steps_done"], 1) for r in rows])),
        cpu_ms_per_step=1e3 * float(np.median([r["cpu_s"] / max(r["steps_done"], 1) for r in rows])),
        grad_evals_per_step=sum(r["grad_evals"] for r in rows) / steps_done,
        n_runs=len(rows), n_diverged=sum(r["status"] == "diverged" for r in rows),
        n_error=sum(r["status"] == "error" for r in rows),
        best_on_edge=best_idx is not None and len(exps) > 1 and best_idx in (0, len(exps) - 1),
        grid_spacing=spacing,
        seeds_per_point=(min(len(p) for p in run_scores), max(len(p) for p in run_scores)),
        grid_holes=_grid_holes(exps, spacing),
        run_scores=run_scores,
    )


def _grid_holes(exps: list[float], spacing: float) -> list[float]:
    """Exponents on the grid's own spacing between its lowest and highest point that were not run."""
    if len(exps) < 2:
        return []
    count = round((exps[-1] - exps[0]) / spacing)
    expected = [round(exps[0] + i * spacing, 6) for i in range(count + 1)]
    have = {round(e, 6) for e in exps}
    return [e for e in expected if e not in have]


def _bootstrap_w95(summary: TaskSummary) -> None:
    """Bootstrap W95 over seeds for every optimizer of one task (``w95_bootstrap``).

    The task's seeds are resampled with replacement, the same resample for every optimizer (seeds are
    paired: a seed fixes initialisation and data order for all of them); seed-mean scores and W95 are
    recomputed per resample. The RNG is seeded from BOOTSTRAP_SEED and the task's name, so the numbers
    do not depend on which other tasks are in the ledger. An optimizer with one seed gets none.
    """
    seeds = sorted({s for o in summary.optimizers for point in o.run_scores for s in point})
    if len(seeds) < 2:
        return
    rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(f"{summary.task}\0{summary.suite}".encode())])
    counts = M.bootstrap_seed_counts(len(seeds), BOOTSTRAP_RESAMPLES, rng)
    column = {s: i for i, s in enumerate(seeds)}
    for opt in summary.optimizers:
        if opt.n_seeds < 2:
            continue
        scores = np.full((len(opt.exps), len(seeds)), np.nan)
        measured = np.zeros(scores.shape, dtype=bool)
        for p, point in enumerate(opt.run_scores):
            for seed, score in point.items():
                scores[p, column[seed]] = score
                measured[p, column[seed]] = True
        means = M.bootstrap_seed_means(scores, measured, counts)
        opt.w95_bootstrap = M.robust_widths(opt.exps, means, TARGET, opt.grid_spacing)


def summarise(folder: str | Path) -> list[TaskSummary]:
    """Robustness summaries of every (task, suite) in the ledger of ``folder``."""
    with Ledger(folder) as ledger:
        rows = _latest_rows(ledger.rows())
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["suite"])].append(row)
    out = []
    for (task, suite), group in sorted(groups.items()):
        first = group[0]
        higher = first["higher_is_better"]
        # m_init: every optimizer starts from the same seeded init, so average the step-0 metric per seed
        init_by_seed: dict[int, list[float]] = defaultdict(list)
        for r in group:
            if r["init_val"] is not None:
                init_by_seed[r["seed"]].append(r["init_val"])
        m_init = float(np.mean([np.mean(v) for v in init_by_seed.values()])) if init_by_seed else math.nan
        # m* per setting (schedule), each from its own baselines: settings are self-contained
        by_schedule: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in group:
            by_schedule[_schedule(r)].append(r)
        settings = sorted(by_schedule, key=lambda sc: (sc != "constant", sc))
        targets: dict[str, tuple[float, str]] = {}
        unscored: dict[str, list[str]] = {}
        for schedule in settings:
            setting_rows = by_schedule[schedule]
            baseline_rows = [r for r in setting_rows if r["baseline"]]
            if not baseline_rows and schedule != "constant":
                targets[schedule] = (math.nan, f"no baseline ran under the {schedule_label(schedule)} schedule")
                unscored[schedule] = sorted({_label(r) for r in setting_rows})
                continue
            source_rows = baseline_rows or setting_rows
            if schedule == "constant":
                source = "best tuned baseline" if baseline_rows else "best of all optimizers (no baseline ran)"
            else:
                source = f"best tuned baseline under the same {schedule_label(schedule)} schedule"
            points: dict[tuple, list[float | None]] = defaultdict(list)
            for r in source_rows:
                points[(_label(r), round(r["lr_exp"], 6))].append(r["final_val"] if r["status"] == "ok" else None)
            targets[schedule] = (M.best_metric([_seed_mean_finite(v) for v in points.values()], higher), source)
        primary = next((sc for sc in settings if sc not in unscored), settings[0])
        m_star, target_source = targets[primary]
        summary = TaskSummary(task=task, suite=suite, metric=first["metric"], higher_is_better=higher,
                              log_scale=first["log_scale"], steps=first["steps"], m_init=m_init,
                              m_star=m_star, target_source=target_source, rows=group, targets=targets,
                              unscored=unscored)
        by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in group:
            if _schedule(r) not in unscored:
                by_label[_label(r)].append(r)
        order = {sc: i for i, sc in enumerate(settings)}
        for label in sorted(by_label, key=lambda lb: (order[_schedule(by_label[lb][0])],
                                                      by_label[lb][0]["baseline"], lb)):
            schedule = _schedule(by_label[label][0])
            summary.optimizers.append(_summarise_optimizer(label, by_label[label], m_init, targets[schedule][0]))
        _bootstrap_w95(summary)
        out.append(summary)
    return out


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

_SCORE_FLOOR = -0.5  # scores below this (and -inf) are drawn at the floor so the good region stays legible


def _figure_lr_sensitivity(ts: TaskSummary) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for opt in ts.optimizers:
        x = np.asarray(opt.exps)
        y = np.asarray(opt.mean_scores, dtype=float)
        err = np.asarray(opt.std_scores)
        shown = np.where(np.isfinite(y), np.maximum(y, _SCORE_FLOOR), _SCORE_FLOOR)
        # tunefree's methods stand out where lines overlap
        # baselines dashed; square markers for a scheduled setting (label optimizer+cosine)
        line, = ax.plot(x, shown, marker="o" if opt.schedule == "constant" else "s", ms=4, label=opt.label,
                        lw=1.5, ls="--" if opt.baseline else "-")
        ok = np.isfinite(y) & (y > _SCORE_FLOOR)
        ax.errorbar(x[ok], y[ok], yerr=err[ok], fmt="none", ecolor=line.get_color(), alpha=0.5)
        bad = ~np.isfinite(y) | (y <= _SCORE_FLOOR)
        ax.plot(x[bad], shown[bad], "x", color=line.get_color(), ms=8)
    ax.axhline(TARGET, color="k", ls=":", lw=1)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_ylim(_SCORE_FLOOR - 0.05, 1.25)
    ax.set_xlabel("log10(lr / documented default)")
    ax.set_ylabel("normalised score s (1 = best tuned baseline)")
    ax.set_title(f"{ts.task} [{ts.suite}]: learning-rate sensitivity (x = diverged or s <= {_SCORE_FLOOR})")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _pick_rows(ts: TaskSummary, opt: OptimizerSummary, exp: float | None) -> list[dict[str, Any]]:
    if exp is None:
        return []
    return sorted((r for r in ts.rows if _label(r) == opt.label and round(r["lr_exp"], 6) == exp),
                  key=lambda r: r["seed"])


def _seed_curve(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Loss trace of several seeds: ``(steps, mean, min, max, seeds cut short)``.

    The statistics are taken on the steps every seed logged, so a seed that stopped early (diverged)
    ends the curve where it stopped instead of silently dropping out of the mean; the last value counts
    how many seeds logged fewer steps than the longest one.
    """
    traces = [(np.asarray(r["losses"][0], dtype=float), np.asarray(r["losses"][1], dtype=float))
              for r in rows if r["losses"] and len(r["losses"][0])]
    if not traces:
        empty = np.zeros(0)
        return empty, empty, empty, empty, 0
    common = traces[0][0]
    for steps, _ in traces[1:]:
        common = np.intersect1d(common, steps)
    if common.size == 0:  # traces logged at different steps: show the first seed alone
        traces = traces[:1]
        common = traces[0][0]
    stack = np.stack([losses[np.searchsorted(steps, common)] for steps, losses in traces])
    longest = max(steps.size for steps, _ in traces)
    short = sum(steps.size < longest for steps, _ in traces)
    return common, stack.mean(axis=0), stack.min(axis=0), stack.max(axis=0), short


def _figure_learning_curves(ts: TaskSummary) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    positive = True
    for ax, which in zip(axes, ("best", "default")):
        for i, opt in enumerate(ts.optimizers):
            exp = opt.best_exp if which == "best" else 0.0
            rows = _pick_rows(ts, opt, exp)
            if not rows:
                continue
            steps, mean, low, high, short = _seed_curve(rows)
            if not steps.size:
                continue
            finite = np.concatenate([low, high])
            positive &= bool(np.all(finite[np.isfinite(finite)] > 0))
            color = f"C{i % 10}"
            seeds = f"{len(rows)} seeds" if len(rows) > 1 else "1 seed"
            cut = f", {short} stopped early" if short else ""
            ax.plot(steps, mean, lw=1.2, color=color, label=f"{opt.label} (lr {rows[0]['lr']:.3g}, {seeds}{cut})")
            if len(rows) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        ax.set_title(f"{ts.task}: train loss at {which} lr (seed mean, band = min-max)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mini-batch loss")
    if positive:
        axes[0].set_yscale("log")
    fig.tight_layout()
    return fig


def _figure_stats(ts: TaskSummary) -> Any | None:
    import matplotlib.pyplot as plt

    traces = []
    for opt in ts.optimizers:
        rows = _pick_rows(ts, opt, 0.0)
        if rows and rows[0]["stats"]:
            for key, (steps, values) in sorted(rows[0]["stats"].items()):
                traces.append((opt.label, key, steps, values, rows[0]["lr"]))
    if not traces:
        return None
    fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3.4), squeeze=False)
    for ax, (label, key, steps, values, lr) in zip(axes[0], traces):
        ax.plot(steps, values, lw=1.2)
        ax.set_title(f"{label}: {key} (lr {lr:.3g})", fontsize=9)
        ax.set_xlabel("step")
        vals = np.asarray(values, dtype=float)
        if np.all(vals[np.isfinite(vals)] > 0) and np.nanmax(vals) / max(np.nanmin(vals), 1e-300) > 100:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ts.task}: adaptive quantities at the default lr (first seed)", fontsize=10)
    fig.tight_layout()
    return fig


def trials_profile(tasks: list[TaskSummary]) -> tuple[list[str], np.ndarray]:
    """Optimizer labels and the ``(tasks, optimizers)`` ratios of expected trials to target to the best
    optimizer's on each task; an optimizer that did not run on a task counts as never reaching it (inf).

    Each setting (learning-rate schedule) is its own comparison: a label's ratio is to the best label of
    the same schedule, and it is NaN on a task where no method of its schedule was scored (that task is
    not one of the setting's problems). With constant-lr runs only, there is no NaN."""
    labels = sorted({o.label for ts in tasks for o in ts.optimizers})
    schedule_of = {o.label: o.schedule for ts in tasks for o in ts.optimizers}
    ratios = np.full((len(tasks), len(labels)), np.nan)
    for schedule in sorted(set(schedule_of.values())):
        cols = [j for j, label in enumerate(labels) if schedule_of[label] == schedule]
        rows = [t for t, ts in enumerate(tasks) if any(o.schedule == schedule for o in ts.optimizers)]
        costs = np.full((len(rows), len(cols)), np.inf)
        for i, t in enumerate(rows):
            for o in tasks[t].optimizers:
                if o.schedule == schedule:
                    costs[i, cols.index(labels.index(o.label))] = o.expected_trials
        if rows and cols:
            ratios[np.ix_(rows, cols)] = M.performance_ratios(costs)
    return labels, ratios


def _profile_columns(ratios: np.ndarray, taus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Area (and rho over ``taus``) of each label over the tasks of its own setting (rows not NaN)."""
    area = np.full(ratios.shape[1], np.nan)
    rho = None if taus is None else np.full((ratios.shape[1], len(taus)), np.nan)
    for j in range(ratios.shape[1]):
        column = ratios[~np.isnan(ratios[:, j]), j][:, None]
        area[j] = M.profile_area(column, PROFILE_TAU_MAX)[0]
        if rho is not None:
            rho[j] = M.performance_profile(column, taus)[0]
    return area, rho


def _figure_profile(tasks: list[TaskSummary]) -> Any:
    import matplotlib.pyplot as plt

    labels, ratios = trials_profile(tasks)
    finite = ratios[np.isfinite(ratios) & (ratios <= PROFILE_TAU_MAX)]
    taus = np.unique(np.concatenate([[1.0, PROFILE_TAU_MAX], finite]))
    area, rho = _profile_columns(ratios, taus)
    assert rho is not None
    baseline = {o.label: o.baseline for ts in tasks for o in ts.optimizers}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for j in np.argsort(-area, kind="stable"):  # legend ordered by area
        ax.step(taus, rho[j], where="post", lw=1.5, ls="--" if baseline[labels[j]] else "-",
                label=f"{labels[j]} (area {area[j]:.2f})", color=f"C{j % 10}")
    ax.set_xlim(1.0 - 0.02 * (PROFILE_TAU_MAX - 1.0), PROFILE_TAU_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (expected trials to target / best optimizer's on the task)")
    ax.set_ylabel("fraction of tasks within tau")
    ax.set_title(f"performance profile of expected random-search trials to s >= {TARGET} ({len(tasks)} tasks)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


# --------------------------------------------------------------------------------------------------
# tables and documents
# --------------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:.{digits}g}"


_SUMMARY_HEADER = ["optimizer", "default s", "tuned s", "best lr (val)", "val @best", "test @best",
                   "W95 [dec]", "W99 [dec]", "W95 per seed", "E[trials]", "P(hit) b=1/3",
                   "E[best] div=0 b=1/3/9", "E[best] literal b=1/3/9",
                   "steps->0.95 best/default", "ms/step", "grads/step", "diverged/error/runs"]


def _summary_rows(ts: TaskSummary) -> list[list[str]]:
    out = []
    for o in ts.optimizers:
        edge = " (edge!)" if o.best_on_edge else ""
        out.append([
            o.label, _fmt(o.default_score), _fmt(o.tuned_score), f"{_fmt(o.best_lr)}{edge}",
            _fmt(o.best_val, 4), _fmt(o.best_test, 4), _fmt(o.w95, 2), _fmt(o.w99, 2),
            f"{_fmt(o.w95_seed_mean, 2)} ± {_fmt(o.w95_seed_std, 2)}", _fmt(o.expected_trials, 3),
            " / ".join(_fmt(o.p_hit[b], 2) for b in HIT_WITHIN),
            " / ".join(_fmt(o.best_of_div0[b]) for b in BEST_OF),
            " / ".join(_fmt(o.best_of[b]) for b in BEST_OF),
            f"{_fmt(o.steps_to_target_best)} / {_fmt(o.steps_to_target_default)}",
            _fmt(o.wall_ms_per_step, 3), _fmt(o.grad_evals_per_step, 2),
            f"{o.n_diverged}/{o.n_error}/{o.n_runs}",
        ])
    return out


def _raw_table(ts: TaskSummary) -> tuple[list[str], list[list[str]]]:
    """Seed-mean final validation metric per optimizer and grid point: the honest raw numbers."""
    exps = sorted({e for o in ts.optimizers for e in o.exps})
    header = ["optimizer \\ log10(lr/default)"] + [f"{e:+g}" for e in exps]
    body = []
    for o in ts.optimizers:
        lookup = dict(zip(o.exps, o.mean_val))

        def cell(e: float) -> str:
            if e not in lookup:
                return ""  # not on this optimizer's grid
            return "fail" if math.isnan(lookup[e]) else _fmt(lookup[e], 4)

        body.append([o.label] + [cell(e) for e in exps])
    return header, body


def _grid_text(o: OptimizerSummary) -> str:
    lo, hi = o.seeds_per_point
    seeds = f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"
    holes = (f", missing k = {', '.join(f'{h:+g}' for h in o.grid_holes)} (breaks W95 contiguity)"
             if o.grid_holes else "")
    return (f"k = {o.exps[0]:+g}..{o.exps[-1]:+g} in {o.grid_spacing:g}-decade steps ({len(o.exps)} points"
            f"{holes}), {seeds} per point")


def _grid_lines(ts: TaskSummary) -> list[str]:
    """The grid actually measured on a task, grouped over optimizers, so that mixed 1-decade and
    half-decade grids, extended edges, holes and uneven seed counts are visible."""
    groups: dict[str, list[str]] = defaultdict(list)
    for o in ts.optimizers:
        groups[_grid_text(o)].append(o.label)
    if len(groups) == 1:
        return [f"{next(iter(groups))}: all optimizers"]
    parts = sorted(groups.items(), key=lambda item: -len(item[1]))
    return [f"{text}: {', '.join(labels)}" for text, labels in parts]


def _target_text(ts: TaskSummary, schedule: str) -> str:
    m_star, source = ts.targets[schedule]
    if schedule == "constant":
        return f"m* = {_fmt(m_star, 5)} ({source})"
    return (f"m* of the +{schedule_label(schedule)} runs = {_fmt(m_star, 5)} ({source}: "
            f"{_describe_schedule(schedule)})")


def _unscored_text(ts: TaskSummary, schedule: str) -> str:
    labels = ts.unscored[schedule]
    runs = sum(1 for r in ts.rows if _schedule(r) == schedule)
    return (f"Not scored: no tuned baseline (sgd, adam, adamw) ran under the {schedule_label(schedule)} schedule "
            f"({_describe_schedule(schedule)}) on this task, so its {runs} run(s) ({', '.join(labels)}) have no "
            "target m* of their own setting; run the baselines with the same schedule to score them.")


def w95_interval(items: list[OptimizerSummary], level: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval of the mean W95 over one optimizer's tasks, or None where a task has a
    single seed for it (no resampling exists; a zero-width interval would be fake).

    The resamples of different tasks are independent; resample ``r`` of the mean is the mean over
    tasks of each task's resample ``r``.
    """
    if not items or any(o.w95_bootstrap is None for o in items):
        return None
    return M.percentile_interval(np.mean([o.w95_bootstrap for o in items], axis=0), level)


_AGGREGATE_HEADER = ["optimizer", "tasks", "mean W95 [95% CI]", "mean W99", "one-shot success (default s>=0.95)",
                     "median default s", "median tuned s", "median E[trials]", "mean P(hit) b=1/3",
                     "median E[best] div=0 b=1/3/9", f"profile area tau 1-{PROFILE_TAU_MAX:g}"]


def _aggregate(tasks: list[TaskSummary]) -> tuple[list[str], list[list[str]]]:
    per_opt: dict[str, list[OptimizerSummary]] = defaultdict(list)
    for ts in tasks:
        for o in ts.optimizers:
            per_opt[o.label].append(o)
    labels, ratios = trials_profile(tasks)
    area = dict(zip(labels, _profile_columns(ratios)[0]))
    body = []
    for label, items in sorted(per_opt.items()):
        def med(values: list[float]) -> float:
            vals = [v for v in values if not math.isnan(v)]
            return float(np.median(vals)) if vals else math.nan

        def mean(values: list[float]) -> float:
            vals = [v for v in values if not math.isnan(v)]
            return float(np.mean(vals)) if vals else math.nan

        interval = w95_interval(items)
        if interval is None:
            single = sum(o.w95_bootstrap is None for o in items)
            ci = f"CI n/a ({single}/{len(items)} tasks with 1 seed)"
        else:
            ci = f"[{_fmt(interval[0], 3)}, {_fmt(interval[1], 3)}]"
        body.append([
            label, str(len(items)), f"{_fmt(float(np.mean([o.w95 for o in items])), 3)} {ci}",
            _fmt(float(np.mean([o.w99 for o in items])), 3),
            f"{sum(o.default_score >= TARGET for o in items)}/{len(items)}",
            _fmt(med([o.default_score for o in items])), _fmt(med([o.tuned_score for o in items])),
            _fmt(med([o.expected_trials for o in items])),
            " / ".join(_fmt(mean([o.p_hit[b] for o in items]), 2) for b in HIT_WITHIN),
            " / ".join(_fmt(med([o.best_of_div0[b] for o in items])) for b in BEST_OF),
            _fmt(float(area[label]), 2),
        ])
    return list(_AGGREGATE_HEADER), body


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _environment() -> list[tuple[str, str]]:
    import torch

    import tunefree

    return [
        ("date", _dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("tunefree", tunefree.__version__), ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("machine", f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"),
    ]


_METRICS_TEXT = (
    "Scores: s = (m_init - m) / (m_init - m*), m = final validation metric, m_init = metric at step 0, "
    "m* = seed-mean final validation metric of the best tuned baseline (sgd, adam, adamw) on the task; "
    "s = 1 matches the best tuned baseline, diverged runs score -inf. A grid point's score is the seed "
    "mean (-inf if any seed diverged). default s: at the documented default lr; tuned s: best grid point "
    "(selected on validation; 'test @best' is the test metric of that choice). W95/W99: width in decades of "
    "the longest contiguous stretch of the grid with s >= 0.95/0.99 (each point counts the grid spacing). "
    "W95 per seed: mean ± std over the seeds measured at every grid point of the optimizer (seeds added "
    "only near the best point are left out). "
    "E[trials]: expected random-search trials without replacement to reach s >= 0.95, (n+1)/(k+1) with k of "
    "the n grid points good. P(hit): probability that b random grid trials without replacement include a "
    "point with s >= 0.95, 1 - C(n-k, b)/C(n, b), exact whatever the other points did. E[best]: expected "
    "best s after b random grid trials (exact order statistics; b is clipped to the grid size n); "
    "'div=0' counts every diverged run as s = 0 (no progress) before the seed mean, 'literal' keeps "
    "diverged = -inf and is -inf whenever a point with a diverged seed can be the best of the b draws. "
    "steps->0.95: first "
    "evaluation step reaching s >= 0.95 at the best / default lr (seed mean; inf if a seed never does). "
    "'(edge!)' marks a best lr on the edge of the grid: the optimum may lie outside it. Each task states "
    "the grid measured: its spacing is the width one point counts in W95 (per optimizer and task), and a "
    "missing point inside the range breaks contiguity, since nothing was measured there. "
    "Learning-rate schedules (notes/benchmarks.md 3c: constant lr is the primary setting, a secondary setting "
    "gives every method the same linear warm-up + cosine decay to 0): a run under a schedule other than "
    "constant is a method of its own, labelled optimizer+cosine. Each setting is self-contained: its m* is "
    "the best tuned baseline (sgd, adam, adamw) under the same schedule, so s = 1 means as good as the best "
    "tuned baseline of that setting, and scores of different settings have different targets (compare the "
    "settings on the raw validation metric). A schedule under which no baseline ran on a task is not scored "
    "on that task, and the task says so; only the constant setting falls back to the best of all its runs. "
    "What the schedule scales depends on the method: the step size for SGD/Adam/AdamW, the cap on the "
    "adaptive step for MoMo, only the starting rate for GALA (its adapted rate ignores the schedule); "
    "Schedule-Free is meant to run without one."
)

_GRID_TITLE = "Grid measured (lr = documented default x 10^k):"

_AGGREGATE_TEXT = (
    "Over tasks (each task and suite counts once). mean W95 [95% CI]: mean over the optimizer's tasks, "
    f"with a percentile bootstrap interval over seeds: {BOOTSTRAP_RESAMPLES} resamples (RNG seed "
    f"{BOOTSTRAP_SEED}); per task the seeds are resampled with replacement (the same resample for every "
    "optimizer, since seeds are paired), seed-mean scores and W95 are recomputed, and the resampled W95 "
    "are averaged over tasks. A grid point none of whose seeds was drawn keeps its full-sample mean, so "
    "points measured with fewer seeds vary less. 'CI n/a' where a task has a single seed. With 2 seeds a "
    "task has only 3 distinct resamples, so the interval is coarse. W95 is in decades on each task's own "
    "grid: a 1-decade grid counts 1 decade per good point, a half-decade grid 0.5. mean P(hit): mean over "
    "tasks. profile area: AlgoPerf-style performance profile of E[trials]: rho(tau) = fraction of all "
    "tasks in the report where the optimizer's E[trials] is within tau times the best optimizer's on that "
    "task (inf never counts, nor does a task the optimizer did not run); with learning-rate schedules, per "
    "setting: the best optimizer of the same schedule, over the tasks where that schedule was scored; the "
    "area under rho over tau in "
    f"[1, {PROFILE_TAU_MAX:g}] divided by {PROFILE_TAU_MAX - 1:g}, so 1 = fewest expected trials on every "
    "task, 0 = never within 4x of the best."
)


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
    figures = folder / "figures"
    figures.mkdir(exist_ok=True)
    statuses: dict[str, int] = defaultdict(int)
    for r in all_rows:
        statuses[r["status"]] += 1
    versions = sorted({r["code_version"] for r in all_rows})
    env = _environment() + [
        ("runs in ledger", f"{len(all_rows)} ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})"),
        ("code versions", ", ".join(versions) or "-"),
    ]

    md = ["# tunefree learning-rate robustness report", ""]
    md += [f"- **{k}**: {v}" for k, v in env] + ["", _METRICS_TEXT, ""]
    body = ["<h1>tunefree learning-rate robustness report</h1><ul>"]
    body += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in env]
    body += ["</ul>", f"<p>{html.escape(_METRICS_TEXT)}</p>"]

    if tasks:
        header, rows = _aggregate(tasks)
        md += ["## Aggregate over tasks", "", _AGGREGATE_TEXT, "", _md_table(header, rows), ""]
        body += ["<h2>Aggregate over tasks</h2>", f"<p>{html.escape(_AGGREGATE_TEXT)}</p>",
                 _html_table(header, rows)]
        if any(ts.optimizers for ts in tasks):
            data = _save(_figure_profile(tasks), figures / "performance-profile.png")
            md += ["![performance profile](figures/performance-profile.png)", ""]
            body.append('<p><img alt="performance profile" '
                        f'src="data:image/png;base64,{base64.b64encode(data).decode()}"></p>')
    else:
        md += ["No runs in the ledger yet.", ""]
        body += ["<p>No runs in the ledger yet.</p>"]

    for ts in tasks:
        slug = f"{ts.task}-{ts.suite}".replace("/", "_").replace(" ", "_")
        direction = "higher is better" if ts.higher_is_better else "lower is better"
        scale = ", log10(f - f*) scale" if ts.log_scale else ""
        targets = [_target_text(ts, schedule) for schedule in ts.targets if schedule not in ts.unscored]
        info = (f"metric `{ts.metric}` ({direction}{scale}), {ts.steps} steps; m_init = {_fmt(ts.m_init, 5)}, "
                + ("; ".join(targets) or "no setting scored"))
        notes = [_unscored_text(ts, schedule) for schedule in ts.unscored]
        md += [f"## {ts.task} [{ts.suite}]", "", info, ""] + [f"**{n}**" for n in notes] + ([""] if notes else [])
        body += [f"<h2>{html.escape(ts.task)} [{html.escape(ts.suite)}]</h2>", f"<p>{html.escape(info)}</p>"]
        body += [f"<p><b>{html.escape(n)}</b></p>" for n in notes]
        if ts.optimizers:  # else nothing is scored on this task (its runs are in runs.csv)
            grid = _grid_lines(ts)
            md += [_GRID_TITLE, ""] + [f"- {g}" for g in grid] + ["", _md_table(_SUMMARY_HEADER, _summary_rows(ts)), ""]
            body += [f"<p>{html.escape(_GRID_TITLE)}</p><ul>", *(f"<li>{html.escape(g)}</li>" for g in grid), "</ul>",
                     _html_table(_SUMMARY_HEADER, _summary_rows(ts))]
            raw_header, raw_body = _raw_table(ts)
            md += ["Seed-mean final validation metric per grid point (fail = a seed diverged or errored):", "",
                   _md_table(raw_header, raw_body), ""]
            body += ["<p>Seed-mean final validation metric per grid point (fail = a seed diverged or errored):</p>",
                     _html_table(raw_header, raw_body)]
            made = [("lr", _figure_lr_sensitivity(ts)), ("curves", _figure_learning_curves(ts)),
                    ("stats", _figure_stats(ts))]
            for kind, fig in made:
                if fig is None:
                    continue
                name = f"{slug}-{kind}.png"
                data = _save(fig, figures / name)
                md += [f"![{ts.task} {kind}](figures/{name})", ""]
                body.append(f'<p><img alt="{html.escape(ts.task)} {kind}" '
                            f'src="data:image/png;base64,{base64.b64encode(data).decode()}"></p>')
        errors = [r for r in ts.rows if r["status"] == "error"]
        if errors:
            md += [f"{len(errors)} run(s) failed with an error; first traceback:", "", "```",
                   (errors[0]["error"] or "").strip()[-2000:], "```", ""]
            body += [f"<p>{len(errors)} run(s) failed with an error; first traceback:</p>",
                     f"<pre>{html.escape((errors[0]['error'] or '').strip()[-2000:])}</pre>"]

    md += [f"All runs: [`{csv_path.name}`]({csv_path.name}); raw traces in `ledger.sqlite`.", ""]
    body += [f"<p>All runs: <a href='{csv_path.name}'>{csv_path.name}</a>; raw traces in ledger.sqlite.</p>"]
    (folder / "report.md").write_text("\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tunefree report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    html_path = folder / "report.html"
    html_path.write_text(page)
    return html_path
