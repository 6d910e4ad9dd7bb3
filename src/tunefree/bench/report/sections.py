"""The report's content: the sections of ``report.md``/``report.html`` as one list of document blocks
(:mod:`tunefree.bench.report.document`), built from the scoring's summaries, the ledger's run counts and
the figures (written to ``figures/`` as they are made).

The order answers first: the ranking of the optimizers on the headline measures with a verdict written from
the numbers (:mod:`tunefree.bench.report.ranking`), then the measures over tasks, one section per task (a
short table and the lr figure; every other column, the raw metrics and the learning curves behind an
expandable block), the run details, and the glossary of every term at the end.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tunefree.bench.report import figures as F
from tunefree.bench.report import ranking as R
from tunefree.bench.report.document import (
    Block,
    Bullets,
    Cell,
    CellLike,
    Code,
    Details,
    Figure,
    Heading,
    KeyValues,
    Link,
    Mono,
    Paragraph,
    Table,
    markdown_table,
)
from tunefree.bench.report.equal_compute import equal_compute
from tunefree.bench.report.options import option_sweeps
from tunefree.bench.report.scoring import (
    BEST_OF,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HIT_WITHIN,
    PROFILE_TAU_MAX,
    TARGET,
    OptimizerSummary,
    TaskSummary,
    default_alerts,
    describe_schedule,
    profile_columns,
    row_label,
    row_schedule,
    schedule_label,
    trials_profile,
    w95_interval,
)
from tunefree.optim.registry import get_optimizer_info, is_builtin

__all__ = ["TITLE", "report_blocks", "aggregate_table", "aggregate_note"]

TITLE = "tunefree learning-rate robustness report"

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


#: the per-task columns a reader needs; the rest are behind the task's details
_BRIEF_HEADER = ["optimizer", "default s", "tuned s", "best lr (val)", "test @best", "W95 [dec]", "E[trials]",
                 "diverged/runs"]
_FULL_HEADER = ["optimizer", "default s", "tuned s", "best lr (val)", "val @best", "test @best",
                "W95 [dec]", "W99 [dec]", "W95 per seed", "E[trials]", "P(hit) b=1/3",
                "E[best] div=0 b=1/3/9", "E[best] literal b=1/3/9",
                "steps->0.95 best/default", "ms/step", "grads/step", "diverged/error/runs"]


def _num(x: float | None, digits: int = 3) -> Cell:
    """A number as a cell whose sort key is the number (NaN and None sort as text)."""
    key = None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
    return Cell(_fmt(x, digits), sort=key)


def _brief_rows(ts: TaskSummary) -> list[list[CellLike]]:
    return [[o.label, _num(o.default_score), _num(o.tuned_score),
             Cell(f"{_fmt(o.best_lr)}{' (edge!)' if o.best_on_edge else ''}", sort=o.best_lr),
             _num(o.best_test, 4), _num(o.w95, 2), _num(o.expected_trials, 3),
             Cell(f"{o.n_diverged + o.n_error}/{o.n_runs}", sort=(o.n_diverged + o.n_error) / max(o.n_runs, 1))]
            for o in ts.optimizers]


def _full_table(ts: TaskSummary) -> Table:
    """Every per-task column, less those that say nothing on this task: W95 per seed with one seed per
    optimizer, and the literal E[best] when it is -inf on most rows."""
    rows = []
    for o in ts.optimizers:
        edge = " (edge!)" if o.best_on_edge else ""
        rows.append([
            o.label, _num(o.default_score), _num(o.tuned_score), Cell(f"{_fmt(o.best_lr)}{edge}", sort=o.best_lr),
            _num(o.best_val, 4), _num(o.best_test, 4), _num(o.w95, 2), _num(o.w99, 2),
            Cell(f"{_fmt(o.w95_seed_mean, 2)} ± {_fmt(o.w95_seed_std, 2)}", sort=o.w95_seed_mean),
            _num(o.expected_trials, 3),
            " / ".join(_fmt(o.p_hit[b], 2) for b in HIT_WITHIN),
            " / ".join(_fmt(o.best_of_div0[b]) for b in BEST_OF),
            " / ".join(_fmt(o.best_of[b]) for b in BEST_OF),
            f"{_fmt(o.steps_to_target_best)} / {_fmt(o.steps_to_target_default)}",
            _num(o.wall_ms_per_step, 3), _num(o.grad_evals_per_step, 2),
            f"{o.n_diverged}/{o.n_error}/{o.n_runs}",
        ])
    drop, notes = set(), []
    if all(o.n_seeds <= 1 for o in ts.optimizers):
        drop.add("W95 per seed")
        notes.append("W95 per seed is left out: one seed per optimizer.")
    if 2 * sum(o.best_of[BEST_OF[0]] == -math.inf for o in ts.optimizers) > len(ts.optimizers):
        drop.add("E[best] literal b=1/3/9")
        notes.append("E[best] with diverged runs kept at -inf is left out: it is -inf on most rows.")
    keep = [i for i, h in enumerate(_FULL_HEADER) if h not in drop]
    return Table.of([_FULL_HEADER[i] for i in keep], [[r[i] for i in keep] for r in rows], note=" ".join(notes))


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
            f"{describe_schedule(schedule)})")


def _unscored_text(ts: TaskSummary, schedule: str) -> str:
    labels = ts.unscored[schedule]
    runs = sum(1 for r in ts.rows if row_schedule(r) == schedule)
    return (f"Not scored: no tuned baseline (sgd, adam, adamw) ran under the {schedule_label(schedule)} schedule "
            f"({describe_schedule(schedule)}) on this task, so its {runs} run(s) ({', '.join(labels)}) have no "
            "target m* of their own setting; run the baselines with the same schedule to score them.")



_AGGREGATE_HEADER = ["optimizer", "tasks", "mean W95 [95% CI]", "mean W99", "one-shot success (default s>=0.95)",
                     "median default s", "median tuned s", "median E[trials]", "mean P(hit) b=1/3",
                     "median E[best] div=0 b=1/3/9", f"profile area tau 1-{PROFILE_TAU_MAX:g}"]


def _by_label(tasks: list[TaskSummary]) -> dict[str, list[OptimizerSummary]]:
    per_opt: dict[str, list[OptimizerSummary]] = defaultdict(list)
    for ts in tasks:
        for o in ts.optimizers:
            per_opt[o.label].append(o)
    return per_opt


def aggregate_table(tasks: list[TaskSummary]) -> tuple[list[str], list[list[str]]]:
    """Every aggregate measure per optimizer label (alphabetical; the ranking orders them). The W95
    interval cell is "n/a" where a task has one seed; :func:`aggregate_note` says why, once."""
    labels, ratios = trials_profile(tasks)
    area = dict(zip(labels, profile_columns(ratios)[0]))
    body = []
    for label, items in sorted(_by_label(tasks).items()):
        def med(values: list[float]) -> float:
            vals = [v for v in values if not math.isnan(v)]
            return float(np.median(vals)) if vals else math.nan

        def mean(values: list[float]) -> float:
            vals = [v for v in values if not math.isnan(v)]
            return float(np.mean(vals)) if vals else math.nan

        interval = w95_interval(items)
        ci = "n/a" if interval is None else f"[{_fmt(interval[0], 3)}, {_fmt(interval[1], 3)}]"
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


def _kind(name: str) -> str:
    """"tunefree", "peer" (another package's method) or "yours" (a registered user optimizer)."""
    if not is_builtin(name):
        return "yours"
    return "peer" if get_optimizer_info(name).peer else "tunefree"


def summary_table(tasks: list[TaskSummary], schedule: str = "constant") -> str:
    """The short Markdown table of the README's results: per setting of ``schedule``, what kind it is, its
    one-shot success (default lr reaches s >= 0.95), mean W95 and median E[trials], most one-shot
    successes first (then the wider W95). ``tunefree report DIR --readme`` prints it."""
    ranked = []
    for label, items in _by_label(tasks).items():
        if items[0].schedule != schedule:
            continue
        kind = "baseline" if items[0].baseline else _kind(items[0].optimizer)
        hits = sum(o.default_score >= TARGET for o in items)
        w95 = float(np.mean([o.w95 for o in items]))
        trials = float(np.median([o.expected_trials for o in items]))
        ranked.append(((-hits, -w95, label), [label, kind, f"{hits}/{len(items)}", _fmt(w95, 3), _fmt(trials, 3)]))
    header = ["optimizer", "kind", "one-shot success", "mean W95 (decades)", "median E[trials] to reach the target"]
    return markdown_table(Table.of(header, [cells for _, cells in sorted(ranked)])) + "\n"


def aggregate_note(tasks: list[TaskSummary]) -> str:
    """What an "n/a" interval means, said once for the whole table."""
    missing = {label: sum(o.w95_bootstrap is None for o in items)
               for label, items in _by_label(tasks).items() if w95_interval(items) is None}
    if not missing:
        return ""
    counts = {len(items) for items in _by_label(tasks).values()}
    if len(set(missing.values())) == 1 and len(counts) == 1:
        single = next(iter(missing.values()))
        who = "every optimizer" if len(missing) == len(_by_label(tasks)) else ", ".join(sorted(missing))
        return (f"95% CI n/a: {single}/{next(iter(counts))} tasks with 1 seed (an interval needs at least two "
                f"seeds on every task) for {who}.")
    parts = ", ".join(f"{label} {n}/{len(_by_label(tasks)[label])}" for label, n in sorted(missing.items()))
    return f"95% CI n/a where a task has 1 seed (an interval needs at least two); tasks with 1 seed: {parts}."


def _environment() -> list[tuple[str, str]]:
    import torch

    import tunefree

    return [
        ("date", _dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ("tunefree", tunefree.__version__), ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("machine", f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"),
    ]


_GLOSSARY: tuple[tuple[str, str], ...] = (
    ("s (score)", "s = (m_init - m) / (m_init - m*), m = final validation metric, m_init = metric at step 0, "
     "m* = seed-mean final validation metric of the best tuned baseline (sgd, adam, adamw) on the task; s = 1 "
     "matches the best tuned baseline, diverged runs score -inf. A grid point's score is the seed mean (-inf if "
     "any seed diverged)."),
    ("target", f"s >= {TARGET:g}: within {100 * (1 - TARGET):.0f} % of the best tuned baseline's improvement over "
     "the initial model."),
    ("default s / tuned s", "the score at the documented default lr (no tuning) / at the best grid point, selected "
     "on validation; 'test @best' is the test metric of that choice. '(edge!)' marks a best lr on the edge of "
     "the grid: the optimum may lie outside it."),
    ("one-shot success", "tasks where the default lr reaches the target: what you get with no tuning at all."),
    ("W95 / W99", "width in decades of the longest contiguous stretch of the grid with s >= 0.95 / 0.99; each "
     "point counts its grid's spacing (a 1-decade grid counts 1 decade per good point, a half-decade grid "
     "0.5), and a point missing inside the range breaks contiguity, since nothing was measured there."),
    ("W95 per seed", "mean ± std over the seeds measured at every grid point of the optimizer (seeds added only "
     "near the best point are left out); shown only with more than one seed."),
    ("E[trials]", "expected random-search trials without replacement to reach the target, (n+1)/(k+1) with k of "
     "the n grid points good; inf if no point is."),
    ("runs to target", "in the ranking: the mean of E[trials] over the tasks where the grid reaches the target, "
     "i.e. how many training runs a random search over the grid needs on average; the tasks where it never gets "
     "there are counted beside it."),
    ("compute vs best baseline", "in the ranking: the expected runs to target of each task times the measured "
     "cost of one run on it (median CPU time per step x mean steps per run; gradient evaluations per run, two "
     "per step for GALA), summed over the tasks both the method and the best baseline (the highest-ranked "
     "baseline) reach, divided by the baseline's sum. Below 1 = cheaper to tune. CPU times come from the "
     "machine that ran the sweep; gradient evaluations do not depend on it."),
    ("ranking", "by the mean of the ranks on one-shot success, runs to target (first how many tasks are reached "
     "at all) and mean W95; ties share the average rank. ▲ / ▼ mark the best / worst value of a column."),
    ("P(hit)", "probability that b random grid trials without replacement include a point with s >= 0.95, "
     "1 - C(n-k, b)/C(n, b), exact whatever the other points did."),
    ("E[best]", "expected best s after b random grid trials (exact order statistics; b is clipped to the grid "
     "size n); 'div=0' counts every diverged run as s = 0 (no progress) before the seed mean, 'literal' keeps "
     "diverged = -inf and is -inf whenever a point with a diverged seed can be the best of the b draws."),
    ("steps->0.95", "first evaluation step reaching s >= 0.95 at the best / default lr (seed mean; inf if a seed "
     "never does)."),
    ("mean W95 [95% CI]", "mean over the optimizer's tasks, with a percentile bootstrap interval over seeds: "
     f"{BOOTSTRAP_RESAMPLES} resamples (RNG seed {BOOTSTRAP_SEED}); per task the seeds are resampled with "
     "replacement (the same resample for every optimizer, since seeds are paired), seed-mean scores and W95 are "
     "recomputed, and the resampled W95 are averaged over tasks. A grid point none of whose seeds was drawn keeps "
     "its full-sample mean, so points measured with fewer seeds vary less. n/a where a task has a single seed; "
     "with 2 seeds a task has only 3 distinct resamples, so the interval is coarse."),
    ("profile area", "AlgoPerf-style performance profile of E[trials]: rho(tau) = fraction of the tasks where the "
     "optimizer's E[trials] is within tau times the best optimizer's on that task (inf never counts, nor does a "
     "task the optimizer did not run); the area under rho over tau in "
     f"[1, {PROFILE_TAU_MAX:g}] divided by {PROFILE_TAU_MAX - 1:g}, so 1 = fewest expected trials on every task, "
     f"0 = never within {PROFILE_TAU_MAX:g}x of the best."),
    ("schedules", "constant lr is the primary setting; a secondary setting gives every method the same linear "
     "warm-up + cosine decay to 0, and its runs are methods of their own (optimizer+cosine), ranked and scored "
     "separately: their m* is the best tuned baseline under the same schedule (compare settings on the raw "
     "validation metric). A schedule under which no baseline ran on a task is not scored there. The schedule "
     "scales the step size for SGD/Adam/AdamW, the cap on the adaptive step for MoMo, only the starting rate "
     "for GALA; Schedule-Free is meant to run without one."),
)

_GRID_TITLE = "Grid measured (lr = documented default x 10^k):"


def _figure(fig: Any, folder: Path, name: str, alt: str) -> Figure:
    data = F.save_png(fig, folder / "figures" / name)
    return Figure(alt=alt, path=f"figures/{name}", data=data)


def stale_text(ts: TaskSummary) -> str:
    """What the report says about runs of older code versions of a task: which, and how to re-measure."""
    counts: dict[str, int] = defaultdict(int)
    for row in ts.stale:
        counts[row_label(row)] += 1
    listed = ", ".join(f"{label} ({n})" for label, n in sorted(counts.items()))
    versions = ", ".join(sorted({r["code_version"] for r in ts.stale}))
    return (f"{len(ts.stale)} stale run(s) not scored: measured with an older code version ({versions}) of this "
            f"task or of the optimizers than the newest, {ts.code_version}, which alone is scored here "
            f"(and in m_init and m*). Stale: {listed}. Re-running the sweep command with these optimizers "
            f"re-measures them at the current version.")


def _task_blocks(ts: TaskSummary, folder: Path) -> list[Block]:
    slug = f"{ts.task}-{ts.suite}".replace("/", "_").replace(" ", "_")
    direction = "higher is better" if ts.higher_is_better else "lower is better"
    scale = ", log10(f - f*) scale" if ts.log_scale else ""
    targets = [_target_text(ts, schedule) for schedule in ts.targets if schedule not in ts.unscored]
    info = (f"metric `{ts.metric}` ({direction}{scale}), {ts.steps} steps; m_init = {_fmt(ts.m_init, 5)}, "
            + ("; ".join(targets) or "no setting scored"))
    blocks: list[Block] = [Heading(f"{ts.task} [{ts.suite}]"), Paragraph.of(info)]
    blocks += [Paragraph.of(_unscored_text(ts, schedule), bold=True) for schedule in ts.unscored]
    if ts.stale:
        blocks.append(Paragraph.of(stale_text(ts), bold=True))
    more: list[Block] = []
    if ts.optimizers:  # else nothing is scored on this task (its runs are in runs.csv)
        raw_header, raw_body = _raw_table(ts)
        blocks += [Table.of(_BRIEF_HEADER, _brief_rows(ts)),
                   _figure(F.figure_lr_sensitivity(ts), folder, f"{slug}-lr.png", f"{ts.task} lr")]
        more += [Paragraph.of("All columns:"), _full_table(ts),
                 Paragraph.of(_GRID_TITLE), Bullets(tuple(_grid_lines(ts))),
                 Paragraph.of("Seed-mean final validation metric per grid point (fail = a seed diverged or errored):"),
                 Table.of(raw_header, raw_body)]
        made = [("curves", F.figure_learning_curves(ts)), ("stats", F.figure_stats(ts))]
        more += [_figure(fig, folder, f"{slug}-{kind}.png", f"{ts.task} {kind}")
                 for kind, fig in made if fig is not None]
    errors = [r for r in ts.rows if r["status"] == "error"]
    if errors:
        more += [Paragraph.of(f"{len(errors)} run(s) failed with an error; first traceback:"),
                 Code((errors[0]["error"] or "").strip()[-2000:])]
    if more:
        blocks.append(Details(f"{ts.task} [{ts.suite}]: all columns, grid, raw metrics, learning curves", tuple(more)))
    return blocks


_OPTIONS_TEXT = (
    "Each varied option (tunefree bench --vary OPT.KEY=V1,V2,...) ran every value on the whole lr grid, "
    "one option at a time, beside the default setting (the optimizer with only its fixed options). The "
    "heatmap shows the seed-mean score s over lr and value; the table gives W95 (decades of lr with "
    f"s >= {TARGET}) per value and task, and its mean over the tasks. Each setting is also a method of its "
    "own in the tables below; the target m* stays that of the baselines' own setting."
)


def _option_blocks(tasks: list[TaskSummary], folder: Path) -> list[Block]:
    """Section "Sensitivity to other options": per varied option a heatmap and a W95 table."""
    sweeps = option_sweeps(tasks)
    if not sweeps:
        return []
    blocks: list[Block] = [Heading("Sensitivity to other options"), Paragraph.of(_OPTIONS_TEXT)]
    for sweep in sweeps:
        slug = f"{sweep.optimizer}-{sweep.key}"
        if sweep.base != "{}" or sweep.schedule != "constant":  # a stable name per setting
            slug += f"-{zlib.crc32(f'{sweep.base} {sweep.schedule}'.encode()):08x}"
        names = list(sweep.cells)
        header = [sweep.key] + [f"W95 {name}" for name in names] + ["mean W95"]
        rows = []
        for value in sweep.values:
            widths = [sweep.cells[name][value].w95 if value in sweep.cells[name] else math.nan for name in names]
            finite = [w for w in widths if not math.isnan(w)]
            mean = float(np.mean(finite)) if len(finite) == len(widths) else math.nan
            rows.append([value] + [_fmt(w, 2) for w in widths] + [_fmt(mean, 2)])
        blocks += [Heading(sweep.title, level=3),
                   _figure(F.figure_option_sensitivity(sweep), folder, f"options-{slug}.png",
                           f"{sweep.title} sensitivity"),
                   Table.of(header, rows)]
    return blocks


def _ratio_cell(ratio: float, mark: str) -> Cell:
    return Cell("n/a" if math.isnan(ratio) else f"{ratio:.2g}x", sort=None if math.isnan(ratio) else ratio, mark=mark)


def _ranking_blocks(tasks: list[TaskSummary], schedule: str) -> list[Block]:
    ranked = R.standings(tasks, schedule)
    if not ranked:
        return []
    reference = R.best_baseline(ranked)
    ref = reference.label if reference else "best baseline"
    max_seeds = max(o.seeds_per_point[1] for ts in tasks for o in ts.optimizers if o.schedule == schedule)
    marks = {m: R.marks(ranked, m) for m in R.MEASURES}
    cpu = {s.label: s.cpu_ratio for s in ranked if s is not reference and not math.isnan(s.cpu_ratio)}
    grad = {s.label: s.grad_ratio for s in ranked if s is not reference and not math.isnan(s.grad_ratio)}

    def ratio_mark(values: dict[str, float], label: str) -> str:
        if len(set(values.values())) < 2 or label not in values:
            return ""
        if values[label] == min(values.values()):
            return "best"
        return "worst" if values[label] == max(values.values()) else ""

    rows = []
    for s in ranked:
        runs = "never" if not s.reached else f"{s.runs:.2g}" + (f" ({s.reached}/{s.n_tasks} tasks)"
                                                                 if s.reached < s.n_tasks else "")
        rows.append([
            Cell(str(s.rank), sort=s.rank), s.label, "baseline" if s.baseline else _kind(s.optimizer),
            Cell(f"{s.one_shot}/{s.n_tasks}", sort=s.one_shot / max(s.n_tasks, 1),
                 mark=marks["one_shot"].get(s.label, "")),
            Cell(runs, sort=s.key("runs"), mark=marks["runs"].get(s.label, "")),
            Cell(f"{s.w95:.2g}", sort=s.w95, mark=marks["w95"].get(s.label, "")),
            _ratio_cell(s.cpu_ratio, ratio_mark(cpu, s.label)), _ratio_cell(s.grad_ratio, ratio_mark(grad, s.label)),
            Cell(f"{s.mean_rank:.3g}", sort=s.mean_rank),
        ])
    header = ["rank", "optimizer", "kind", "default works (one-shot)", "runs to target", "W95 [decades]",
              f"CPU to target vs {ref}", f"grad evals to target vs {ref}", "mean rank"]
    title = "Ranking" if schedule == "constant" else f"Ranking under the {schedule_label(schedule)} schedule"
    note = ("▲ best, ▼ worst in a column. Runs to target: expected training runs of a random search over the grid "
            "until s >= 0.95, mean over the tasks reached. Compute: those runs times the measured cost per run, "
            f"relative to {ref}. Definitions in the glossary.")
    return [Heading(title), Paragraph.of(" ".join(R.verdict(ranked, max_seeds)), lead=True),
            Table.of(header, rows, note=note)]


_ALERTS_TEXT = (
    "Every run is watched by tunefree.watch (every 10 steps, as a user's run would be; see docs/monitoring.md). "
    "Per setting and task: the alerts raised by its runs at the default lr, as code, runs that raised it / runs, "
    "and the first step it fired at; 'none': no alert in any run. An alert is a statement about the run (cap_bound: "
    "the adaptive step sat at its lr cap, so the method ran as SGD-M/Adam at lr = cap), not by itself a failure: "
    "read it beside the score. The stats figures of each task mark the first seed's alerts."
)


def _alert_cell(found: Any) -> Cell:
    if found is None:
        return Cell("-", sort=None)
    if not found.recorded:
        return Cell("not recorded", sort=None)
    if not found.codes:
        return Cell("none", sort=0)
    text = "; ".join(f"{code} {count}/{found.recorded} (step {first})"
                     for code, (count, first) in sorted(found.codes.items()))
    return Cell(text, sort=sum(count for count, _ in found.codes.values()))


def _alert_blocks(tasks: list[TaskSummary]) -> list[Block]:
    """Section "Adaptation alerts at the default lr": one row per setting, one column per task."""
    per_task = {ts.task + (f" [{ts.suite}]" if len({t.suite for t in tasks}) > 1 else ""): default_alerts(ts)
                for ts in tasks}
    if not any(found.recorded for alerts in per_task.values() for found in alerts.values()):
        return []  # a ledger from before runs were watched
    labels = sorted({label for alerts in per_task.values() for label in alerts})
    rows = [[label] + [_alert_cell(per_task[task].get(label)) for task in per_task] for label in labels]
    total = sum(len(found.alerts) for alerts in per_task.values() for found in alerts.values())
    runs = sum(found.recorded for alerts in per_task.values() for found in alerts.values())
    lead = (f"{total} alert{'s' if total != 1 else ''} in {runs} watched run{'s' if runs != 1 else ''}"
            " at the default lr.")
    return [Heading("Adaptation alerts at the default lr"), Paragraph.of(lead + " " + _ALERTS_TEXT),
            Table.of(["optimizer", *per_task], rows)]


_EQUAL_COMPUTE_TEXT = (
    "Methods that evaluate two gradients per step, scored again at half their steps, i.e. at the gradient "
    "budget of every other method; the baselines keep their full steps and m*. Under the constant schedule "
    "a run's first half is exactly the shorter run, so the half-budget score is read off the run's "
    "validation trace at the last evaluation at or before half the steps (the step is given); a run that "
    "diverged by then counts as diverged. One-shot: the default lr reaches s >= 0.95."
)


def _equal_compute_blocks(tasks: list[TaskSummary]) -> list[Block]:
    """Section "Equal compute": each two-gradient setting at its full budget and at half its steps."""
    rows: list[list[CellLike]] = []
    by_label: dict[str, list[tuple[OptimizerSummary, OptimizerSummary]]] = defaultdict(list)
    for ts in tasks:
        for full, half, step in equal_compute(ts):
            rows.append([ts.task, full.label, f"{ts.steps} / {step}",
                         _num(full.default_score), _num(half.default_score),
                         _num(full.tuned_score), _num(half.tuned_score),
                         Cell(f"{full.w95:.2g}", sort=full.w95), Cell(f"{half.w95:.2g}", sort=half.w95)])
            by_label[full.label].append((full, half))
    if not rows:
        return []
    lead = []
    for label, pairs in sorted(by_label.items()):
        fulls, halves = [full for full, _ in pairs], [half for _, half in pairs]
        n = len(pairs)
        lead.append(f"{label}: the default lr reaches the target on "
                    f"{sum(o.default_score >= TARGET for o in halves)}/{n} tasks at half the steps "
                    f"({sum(o.default_score >= TARGET for o in fulls)}/{n} at full steps); mean W95 "
                    f"{float(np.mean([o.w95 for o in halves])):.2g} decades "
                    f"({float(np.mean([o.w95 for o in fulls])):.2g} at full steps).")
    header = ["task", "setting", "steps full / half", "default s full", "default s half", "tuned s full",
              "tuned s half", "W95 full", "W95 half"]
    return [Heading("Equal compute: two-gradient methods at half their steps"),
            Paragraph.of(" ".join(lead), lead=True), Paragraph.of(_EQUAL_COMPUTE_TEXT), Table.of(header, rows)]


def _scope_text(tasks: list[TaskSummary], all_rows: list[dict[str, Any]]) -> str:
    suites = sorted({ts.suite for ts in tasks})
    labels = sorted({o.label for ts in tasks for o in ts.optimizers})
    seeds = sorted({o.seeds_per_point[1] for ts in tasks for o in ts.optimizers})
    return (f"{len(tasks)} task{'s' if len(tasks) != 1 else ''} ({', '.join(suites)} suite), {len(labels)} optimizers, "
            f"{len(all_rows)} training runs; each optimizer's lr = its documented default x 10^k on a grid, up to "
            f"{seeds[-1] if seeds else 0} seed{'s' if seeds and seeds[-1] > 1 else ''} per point. "
            "Score s = 1 means as good as the best tuned baseline (sgd, adam, adamw).")


def report_blocks(folder: Path, tasks: list[TaskSummary], all_rows: list[dict[str, Any]], csv_name: str) -> list[Block]:
    """Every section of the report, in order: the answer (ranking and verdict) first, the measures over
    tasks, each task, the run details, and the glossary last; figures are written to ``folder/figures``."""
    statuses: dict[str, int] = defaultdict(int)
    for r in all_rows:
        statuses[r["status"]] += 1
    versions = sorted({r["code_version"] for r in all_rows})
    env = _environment() + [
        ("runs in ledger", f"{len(all_rows)} ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})"),
        ("code versions", ", ".join(versions) or "-"),
    ]
    blocks: list[Block] = [Heading(TITLE, level=1)]
    if tasks:
        blocks.append(Paragraph.of(_scope_text(tasks, all_rows)))
        for schedule in R.settings_of(tasks):
            blocks += _ranking_blocks(tasks, schedule)
        header, rows = aggregate_table(tasks)
        blocks.append(Heading("Aggregate over tasks"))
        if any(ts.optimizers for ts in tasks):
            blocks.append(_figure(F.figure_profile(tasks), folder, "performance-profile.png", "performance profile"))
        blocks.append(Details("Every measure over tasks", (Table.of(header, rows, note=aggregate_note(tasks)),)))
        blocks += _alert_blocks(tasks)
        blocks += _equal_compute_blocks(tasks)
    else:
        blocks.append(Paragraph.of("No runs in the ledger yet."))
    blocks += _option_blocks(tasks, folder)
    for ts in tasks:
        blocks += _task_blocks(ts, folder)
    blocks += [Heading("Run details"), KeyValues(tuple(env)),
               Paragraph.of("All runs: ", Link(csv_name, csv_name), "; raw traces in ", Mono("ledger.sqlite"), "."),
               Heading("Glossary"), KeyValues(_GLOSSARY)]
    return blocks
