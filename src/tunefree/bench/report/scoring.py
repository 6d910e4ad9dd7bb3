"""Report scoring: robustness summaries per optimizer and task, from the ledger's rows.

Reads only the ledger (nothing upstream), so a report can be rebuilt at any time, also while a sweep
is still running. Scores follow the protocol in docs/benchmark.md: ``s = (m_init - m) / (m_init - m*)``
with ``m*`` the best tuned baseline (sgd, adam, adamw) by seed-mean final validation metric; diverged
runs score ``-inf``; learning rates are selected on validation and the test metric of the selection is
reported separately.

Runs under a learning-rate schedule other than constant (the protocol's secondary setting) are methods of
their own, labelled ``optimizer+cosine``, and each setting is self-contained: a scheduled run's ``m*`` is
the best tuned baseline under the same schedule, its performance-profile ratios are to the best method of
the same schedule, and a schedule without baseline runs on a task is not scored there (the constant
setting keeps its fallback to the best of all its runs).

Which stored rows are scored is decided in one place, :func:`select_rows`.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunefree.bench import metrics as M
from tunefree.bench.ledger import Ledger
from tunefree.bench.records import DEFAULT_WARMUP, parse_schedule

__all__ = ["TARGET", "BEST_OF", "HIT_WITHIN", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "PROFILE_TAU_MAX",
           "OptimizerSummary", "TaskSummary", "select_rows", "summarise_rows", "split_versions",
           "row_schedule", "row_label", "schedule_label",
           "describe_schedule", "summarise", "trials_profile", "profile_columns", "w95_interval",
           "rows_at", "DefaultAlerts", "default_alerts"]

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
    #: canonical JSON of the runs' extra optimizer options ("{}" for none)
    kwargs: str = "{}"
    #: mean steps per run (a diverged run stops early): with the per-step costs, the cost of one trial
    steps_per_run: float = math.nan


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
    #: the code version scored (the newest) and the rows of older versions, which are not scored
    code_version: str = ""
    stale: list[dict[str, Any]] = field(default_factory=list)


def row_schedule(row: dict[str, Any]) -> str:
    return row.get("schedule") or "constant"  # rows of an unmigrated dict (tests, old exports): constant


def schedule_label(schedule: str) -> str:
    """The suffix a schedule adds to a method's label: "" for constant, "cosine" for the default
    warm-up, else the schedule string itself (e.g. "cosine:0.1")."""
    if schedule == "constant":
        return ""
    return "cosine" if schedule == f"cosine:{DEFAULT_WARMUP:g}" else schedule


def describe_schedule(schedule: str) -> str:
    name, warmup = parse_schedule(schedule)
    if name == "constant":
        return "constant lr"
    return f"linear warm-up over the first {100 * warmup:.3g}% of the steps, then cosine decay to 0"


def row_label(row: dict[str, Any]) -> str:
    suffix = schedule_label(row_schedule(row))
    name = f"{row['optimizer']}+{suffix}" if suffix else row["optimizer"]
    return name if row["kwargs"] in ("{}", "", None) else f"{name} {row['kwargs']}"


def rows_at(ts: "TaskSummary", label: str, exp: float | None) -> list[dict[str, Any]]:
    """The task's scored runs of the setting ``label`` at lr exponent ``exp`` (0: the default lr), by seed."""
    if exp is None:
        return []
    return sorted((r for r in ts.rows if row_label(r) == label and round(r["lr_exp"], 6) == exp),
                  key=lambda r: r["seed"])


@dataclass
class DefaultAlerts:
    """The watcher alerts of one setting's runs at its default lr on one task."""

    runs: int  # runs at the default lr
    recorded: int  # of those, runs whose alerts were recorded (ledgers before 0.2.0 have none)
    #: alert code -> (runs that raised it, first step it fired at in any of them)
    codes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (seed, step, code) of every alert, in seed order
    alerts: list[tuple[int, int, str]] = field(default_factory=list)


def default_alerts(ts: "TaskSummary") -> dict[str, DefaultAlerts]:
    """Per scored setting of the task (constant lr and schedules alike): the alerts at its default lr."""
    out: dict[str, DefaultAlerts] = {}
    for opt in ts.optimizers:
        rows = rows_at(ts, opt.label, 0.0)
        if not rows:
            continue
        found = DefaultAlerts(runs=len(rows), recorded=sum(r.get("alerts") is not None for r in rows))
        for row in rows:
            seen: set[str] = set()
            for step, code, _message in row.get("alerts") or []:
                found.alerts.append((int(row["seed"]), int(step), str(code)))
                count, first = found.codes.get(code, (0, int(step)))
                found.codes[code] = (count + (code not in seen), min(first, int(step)))
                seen.add(code)
        out[opt.label] = found
    return out


def split_versions(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(current, stale)``: per (task, suite), the rows of the newest code version (the version of the
    most recently finished run) and the rows of every older one. Runs of different code versions
    (another task model, another optimizer source) are never compared: not in a score, not in ``m*``,
    not in the ``m_init`` average."""
    newest: dict[tuple, tuple[str, str]] = {}
    for row in rows:
        key = (row["task"], row["suite"])
        if key not in newest or row["finished_at"] > newest[key][0]:
            newest[key] = (row["finished_at"], row["code_version"])
    current, stale = [], []
    for row in rows:
        (current if row["code_version"] == newest[(row["task"], row["suite"])][1] else stale).append(row)
    return current, stale


def select_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the report scores: those of each task's newest code version (:func:`split_versions`), one
    per (task, suite, optimizer, kwargs, schedule, lr, seed), the most recent one. Every rule about
    which stored runs may be compared with which belongs here."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in split_versions(rows)[0]:
        key = (row["task"], row["suite"], row["optimizer"], row["kwargs"], row_schedule(row),
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


def summarise_rows(label: str, rows: list[dict[str, Any]], m_init: float, m_star: float) -> OptimizerSummary:
    """The robustness numbers of one setting's runs (``rows``: one per lr point and seed) against the
    task's ``m_init`` and ``m*``."""
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
        schedule=row_schedule(rows[0]), kwargs=rows[0]["kwargs"] or "{}",
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
        steps_per_run=steps_done / len(rows),
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
        stored = ledger.rows()
    rows = select_rows(stored)
    stale_by_task: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in split_versions(stored)[1]:
        stale_by_task[(row["task"], row["suite"])].append(row)
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
            by_schedule[row_schedule(r)].append(r)
        settings = sorted(by_schedule, key=lambda sc: (sc != "constant", sc))
        targets: dict[str, tuple[float, str]] = {}
        unscored: dict[str, list[str]] = {}
        for schedule in settings:
            setting_rows = by_schedule[schedule]
            baseline_rows = [r for r in setting_rows if r["baseline"]]
            if not baseline_rows and schedule != "constant":
                targets[schedule] = (math.nan, f"no baseline ran under the {schedule_label(schedule)} schedule")
                unscored[schedule] = sorted({row_label(r) for r in setting_rows})
                continue
            source_rows = baseline_rows or setting_rows
            if schedule == "constant":
                source = "best tuned baseline" if baseline_rows else "best of all optimizers (no baseline ran)"
            else:
                source = f"best tuned baseline under the same {schedule_label(schedule)} schedule"
            points: dict[tuple, list[float | None]] = defaultdict(list)
            for r in source_rows:
                points[(row_label(r), round(r["lr_exp"], 6))].append(r["final_val"] if r["status"] == "ok" else None)
            targets[schedule] = (M.best_metric([_seed_mean_finite(v) for v in points.values()], higher), source)
        primary = next((sc for sc in settings if sc not in unscored), settings[0])
        m_star, target_source = targets[primary]
        summary = TaskSummary(task=task, suite=suite, metric=first["metric"], higher_is_better=higher,
                              log_scale=first["log_scale"], steps=first["steps"], m_init=m_init,
                              m_star=m_star, target_source=target_source, rows=group, targets=targets,
                              unscored=unscored, code_version=first["code_version"],
                              stale=stale_by_task[(task, suite)])
        by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in group:
            if row_schedule(r) not in unscored:
                by_label[row_label(r)].append(r)
        order = {sc: i for i, sc in enumerate(settings)}
        for label in sorted(by_label, key=lambda lb: (order[row_schedule(by_label[lb][0])],
                                                      by_label[lb][0]["baseline"], lb)):
            schedule = row_schedule(by_label[label][0])
            summary.optimizers.append(summarise_rows(label, by_label[label], m_init, targets[schedule][0]))
        _bootstrap_w95(summary)
        out.append(summary)
    return out


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


def profile_columns(ratios: np.ndarray, taus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Area (and rho over ``taus``) of each label over the tasks of its own setting (rows not NaN)."""
    area = np.full(ratios.shape[1], np.nan)
    rho = None if taus is None else np.full((ratios.shape[1], len(taus)), np.nan)
    for j in range(ratios.shape[1]):
        column = ratios[~np.isnan(ratios[:, j]), j][:, None]
        area[j] = M.profile_area(column, PROFILE_TAU_MAX)[0]
        if rho is not None:
            rho[j] = M.performance_profile(column, taus)[0]
    return area, rho



def w95_interval(items: list[OptimizerSummary], level: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval of the mean W95 over one optimizer's tasks, or None where a task has a
    single seed for it (no resampling exists; a zero-width interval would be fake).

    The resamples of different tasks are independent; resample ``r`` of the mean is the mean over
    tasks of each task's resample ``r``.
    """
    if not items or any(o.w95_bootstrap is None for o in items):
        return None
    return M.percentile_interval(np.mean([o.w95_bootstrap for o in items], axis=0), level)

