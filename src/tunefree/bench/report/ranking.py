"""The report's answer: the optimizers ranked on the headline measures, and a verdict in plain words
written from those numbers.

Per setting (learning-rate schedule) and optimizer label, over the tasks it ran on:

- **one-shot success**: tasks where the documented default lr reaches the target (``s >= TARGET``) with
  no tuning at all;
- **runs to target**: the mean, over the tasks where its grid reaches the target, of the expected number
  of random-search training runs to get there (``E[trials]``); the tasks it never reaches are counted
  beside it;
- **W95**: the mean width in decades of its good learning-rate range;
- **compute to target** relative to the best baseline: the expected runs of each task times the measured
  cost of one run (CPU seconds; gradient evaluations, which count GALA's two per step), summed over the
  tasks both reach, divided by the same sum for the best baseline.

The order is by mean rank over the three measures (ties share the average rank); a measure's best and
worst values are marked. :func:`verdict` turns the standings into sentences whose wording depends on the
numbers, including the case where no method beats the best baseline.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tunefree.bench.report.scoring import TARGET, OptimizerSummary, TaskSummary

__all__ = ["Standing", "standings", "verdict", "settings_of", "MEASURES"]

#: the headline measures, in the ranking's column order
MEASURES = ("one_shot", "runs", "w95")


@dataclass
class Standing:
    """One optimizer label's headline numbers over the tasks of one setting."""

    label: str
    optimizer: str
    baseline: bool
    schedule: str
    items: list[OptimizerSummary] = field(repr=False)
    tasks: list[str] = field(repr=False)
    rank: int = 0
    mean_rank: float = math.nan
    #: expected compute to target relative to the best baseline (NaN: no common task reached, or no baseline)
    cpu_ratio: float = math.nan
    grad_ratio: float = math.nan
    #: how many tasks the ratios were taken over
    ratio_tasks: int = 0

    @property
    def n_tasks(self) -> int:
        return len(self.items)

    @property
    def one_shot(self) -> int:
        return sum(o.default_score >= TARGET for o in self.items)

    @property
    def reached(self) -> int:
        return sum(math.isfinite(o.expected_trials) for o in self.items)

    @property
    def runs(self) -> float:
        """Mean expected runs to target over the tasks where the grid reaches it (inf if none does)."""
        values = [o.expected_trials for o in self.items if math.isfinite(o.expected_trials)]
        return float(np.mean(values)) if values else math.inf

    @property
    def w95(self) -> float:
        return float(np.mean([o.w95 for o in self.items]))

    @property
    def grad_evals_per_step(self) -> float:
        return float(np.mean([o.grad_evals_per_step for o in self.items]))

    def key(self, measure: str) -> float:
        """Sort key of a measure, smaller is better."""
        if measure == "one_shot":
            return -self.one_shot / max(self.n_tasks, 1)
        if measure == "runs":  # first how many tasks it reaches at all, then how many runs
            return (self.n_tasks - self.reached) * 1e6 + min(self.runs, 1e5)
        if measure == "w95":
            return -self.w95
        raise ValueError(f"standing key: unknown measure {measure!r}; use one of {MEASURES}")


def settings_of(tasks: list[TaskSummary]) -> list[str]:
    """The scored settings in report order: constant lr first."""
    found = {o.schedule for ts in tasks for o in ts.optimizers}
    return sorted(found, key=lambda sc: (sc != "constant", sc))


def _average_ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _run_costs(o: OptimizerSummary) -> tuple[float, float]:
    """(CPU seconds, gradient evaluations) of one run of this optimizer on its task."""
    return o.cpu_ms_per_step / 1e3 * o.steps_per_run, o.grad_evals_per_step * o.steps_per_run


def standings(tasks: list[TaskSummary], schedule: str = "constant") -> list[Standing]:
    """The optimizers of one setting, ranked (best first)."""
    groups: dict[str, list[tuple[str, OptimizerSummary]]] = defaultdict(list)
    for ts in tasks:
        for o in ts.optimizers:
            if o.schedule == schedule:
                groups[o.label].append((f"{ts.task} [{ts.suite}]", o))
    out = [Standing(label=label, optimizer=pairs[0][1].optimizer, baseline=pairs[0][1].baseline, schedule=schedule,
                    items=[o for _, o in pairs], tasks=[t for t, _ in pairs])
           for label, pairs in sorted(groups.items())]
    if not out:
        return out
    ranks = [_average_ranks([s.key(m) for s in out]) for m in MEASURES]
    for i, s in enumerate(out):
        s.mean_rank = float(np.mean([r[i] for r in ranks]))
    out.sort(key=lambda s: (s.mean_rank, s.key("runs"), s.label))
    for i, s in enumerate(out, 1):
        s.rank = i
    best = best_baseline(out)
    if best is not None:
        reference = dict(zip(best.tasks, best.items))
        for s in out:
            common = [(o, reference[t]) for t, o in zip(s.tasks, s.items)
                      if t in reference and math.isfinite(o.expected_trials)
                      and math.isfinite(reference[t].expected_trials)]
            if not common:
                continue
            mine = np.sum([np.multiply(o.expected_trials, _run_costs(o)) for o, _ in common], axis=0)
            theirs = np.sum([np.multiply(b.expected_trials, _run_costs(b)) for _, b in common], axis=0)
            s.cpu_ratio, s.grad_ratio = (float(m / t) if t > 0 else math.nan for m, t in zip(mine, theirs))
            s.ratio_tasks = len(common)
    return out


def best_baseline(ranked: list[Standing]) -> Standing | None:
    """The highest-ranked baseline (the reference of the compute ratios)."""
    return next((s for s in ranked if s.baseline), None)


def marks(ranked: list[Standing], measure: str) -> dict[str, str]:
    """``{label: "best" | "worst"}`` for the labels at the best and worst value of a measure (every tie
    is marked; nothing when all are equal)."""
    keys = {s.label: s.key(measure) for s in ranked}
    if len(set(keys.values())) < 2:
        return {}
    lo, hi = min(keys.values()), max(keys.values())
    return {label: ("best" if k == lo else "worst") for label, k in keys.items() if k in (lo, hi)}


def _runs_text(s: Standing) -> str:
    if not s.reached:
        return "never reaches the target on the grid"
    text = f"{s.runs:.2g} training run{'s' if s.runs != 1 else ''} per task"
    if s.reached < s.n_tasks:
        text += f" on the {s.reached} of {s.n_tasks} tasks where it gets there at all"
    return text


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2g}x"


def verdict(ranked: list[Standing], max_seeds: int = 1) -> list[str]:
    """Sentences that answer "which one should I use here", written from the standings: the best
    adaptive method against the baselines on one-shot success, runs and compute to target, robust width,
    the last-ranked method, and how much one seed can be trusted."""
    if not ranked:
        return ["Nothing was scored yet."]
    baselines = [s for s in ranked if s.baseline]
    adaptive = [s for s in ranked if not s.baseline]
    target = (f"the target (s >= {TARGET:g}: {100 * TARGET:.0f} % of the improvement the best tuned baseline "
              "makes over the initial model)")
    if not baselines:
        top = ranked[0]
        return [f"No tuned baseline (sgd, adam, adamw) ran, so there is nothing to beat: {top.label} ranks first, "
                f"its default reaching {target} on {top.one_shot}/{top.n_tasks} tasks."]
    if not adaptive:
        top = ranked[0]
        return [f"Only baselines ran: {top.label} ranks first, its default reaching {target} on "
                f"{top.one_shot}/{top.n_tasks} tasks."]
    a = adaptive[0]
    b_shot = max(baselines, key=lambda s: (s.one_shot / s.n_tasks, -s.rank))
    b_ref = baselines[0]
    n = a.n_tasks
    out = []
    fewer_runs = a.key("runs") < b_ref.key("runs")
    wider = a.w95 > b_ref.w95
    # the adaptive method whose default succeeds most often (ties: the higher-ranked)
    a_shot = max(adaptive, key=lambda s: (s.one_shot / s.n_tasks, -s.rank))
    if a_shot.one_shot / a_shot.n_tasks <= b_shot.one_shot / b_shot.n_tasks:
        same = ("as many as" if a_shot.one_shot * b_shot.n_tasks == b_shot.one_shot * a_shot.n_tasks
                else "more than")
        out.append(f"No method clearly beats a tuned {b_shot.label} here: at its default lr, {b_shot.label} already "
                   f"reaches {target} on {b_shot.one_shot}/{b_shot.n_tasks} tasks, {same} any adaptive method "
                   f"(best: {a_shot.label}, {a_shot.one_shot}/{a_shot.n_tasks}; top-ranked: {a.label}, "
                   f"{a.one_shot}/{n}).")
        if fewer_runs or wider:
            gains = [w for w, ok in (("needs fewer runs to get there", fewer_runs),
                                     ("has a wider good learning-rate range", wider)) if ok]
            out.append(f"{a.label} still {' and '.join(gains)} (below).")
    elif fewer_runs and a.w95 >= b_ref.w95:
        out.append(f"{a.label} is the one to try first here: at its default lr it reaches {target} on "
                   f"{a.one_shot}/{n} tasks without any tuning (best baseline: {b_shot.label}, "
                   f"{b_shot.one_shot}/{b_shot.n_tasks}).")
    else:
        out.append(f"{a.label} succeeds without tuning more often than any baseline ({a.one_shot}/{n} tasks at its "
                   f"default lr vs {b_shot.label}'s {b_shot.one_shot}/{b_shot.n_tasks}), but it does not win on "
                   f"every measure: see the ranking below.")
    saving = (f"Tuning by random search over the grid until {target.split(' (')[0]} is reached, {a.label} needs "
              f"{_runs_text(a)}, the best baseline {b_ref.label} {_runs_text(b_ref)}")
    if math.isfinite(a.cpu_ratio):
        on = "" if a.ratio_tasks == min(a.n_tasks, b_ref.n_tasks) else f" (on the {a.ratio_tasks} tasks both reach)"
        saving += (f"; in compute that is {_ratio_text(a.cpu_ratio)} the CPU time and {_ratio_text(a.grad_ratio)} "
                   f"the gradient evaluations of {b_ref.label}{on}")
        if a.grad_evals_per_step > 1.05:
            saving += f" ({a.label} evaluates {a.grad_evals_per_step:.2g} gradients per step)"
    out.append(saving + ".")
    out.append(f"Its good learning-rate range (W95) is {a.w95:.2g} decades wide on average; {b_ref.label}'s "
               f"{b_ref.w95:.2g}.")
    last = ranked[-1]
    if last is not a:
        out.append(f"Last: {last.label}, whose default reaches the target on {last.one_shot}/{last.n_tasks} tasks "
                   f"and which needs {_runs_text(last)}.")
    if max_seeds <= 1:
        out.append("Every grid point ran with one seed, so a difference of one task in these counts is within "
                   "run-to-run noise.")
    return out
