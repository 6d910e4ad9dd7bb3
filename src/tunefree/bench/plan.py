"""Sweep planning: pure functions from a sweep's settings and the results stored so far to run specs.

Nothing here reads the ledger or runs anything: :func:`build_specs` expands optimizer x lr grid x seed;
:func:`propose_grid_extension` and :func:`exponents_near_best` decide, from ``(lr_exp, final validation
metric)`` pairs of one method, where the grid grows past an edge and where further seeds pay off; a
:class:`SweepPlan` applies them to every (task, optimizer) of a sweep, given a lookup of its results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from tunefree.bench.records import SUITE_EXPONENTS, RunSpec, canonical_kwargs, lr_grid, make_schedule
from tunefree.bench.resolve import code_version, optimizer_source, resolve_optimizer, run_code_version
from tunefree.bench.tasks.base import Budget, Task
from tunefree.optim.registry import OptimizerInfo

__all__ = ["build_specs", "option_settings", "propose_grid_extension", "exponents_near_best", "grid_step",
           "SweepPlan", "MethodResults"]

#: ``(task, optimizer, canonical kwargs, seeds) -> [(lr_exp, final validation metric or None)]`` of the
#: stored runs of one method of this sweep (same code version, kwargs and schedule): how the planner
#: sees the ledger
MethodResults = Callable[[Task, OptimizerInfo, str, Sequence[int]], list[tuple[float, "float | None"]]]


def option_settings(base: dict[str, Any] | None, vary: dict[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """The option settings one optimizer runs in a sweep: ``base`` (the fixed options, the default
    setting) first, then, one varied option at a time, ``base`` with that option set to each of its
    values, in the order given (a value equal to ``base``'s own is not repeated)."""
    base = dict(base or {})
    settings = [base]
    for key, values in (vary or {}).items():
        for value in values:
            setting = {**base, key: value}
            if setting not in settings:
                settings.append(setting)
    return settings


def build_specs(
    task: Task,
    task_ref: str,
    optimizers: Sequence[str],
    seeds: Sequence[int],
    suite: str,
    exponents: Sequence[float] | None = None,
    optimizer_kwargs: dict[str, dict[str, Any]] | None = None,
    version: str | None = None,
    schedule: str = "constant",
    vary: dict[str, dict[str, Sequence[Any]]] | None = None,
) -> list[RunSpec]:
    """All run specs of one task: optimizer x option setting x lr grid x seed (seed innermost, so
    partial results of a killed sweep cover whole grid points across seeds early), under one
    learning-rate ``schedule`` (a :func:`make_schedule` string). ``version`` is the task's code version;
    the option settings of each optimizer are :func:`option_settings` of its ``optimizer_kwargs`` and
    ``vary`` entries."""
    schedule = make_schedule(schedule)
    version = version if version is not None else code_version(task)
    exps = SUITE_EXPONENTS[suite] if exponents is None else tuple(exponents)
    specs = []
    for name in optimizers:
        entry = resolve_optimizer(name)
        settings = option_settings((optimizer_kwargs or {}).get(entry.name), (vary or {}).get(entry.name))
        for index, setting in enumerate(settings):
            specs += _setting_specs(task, task_ref, entry, canonical_kwargs(setting), index == 0, seeds, suite,
                                    exps, version, schedule)
    return specs


def _setting_specs(
    task: Task, task_ref: str, entry: OptimizerInfo, kwargs: str, is_base: bool, seeds: Sequence[int],
    suite: str, exponents: Sequence[float], version: str, schedule: str,
) -> list[RunSpec]:
    """The specs of one optimizer setting (canonical ``kwargs``) on one task: lr grid x seed. A varied
    setting of a baseline is not a baseline: the target m* stays that of the baselines' own setting."""
    budget: Budget = task.budgets[suite]
    return [
        RunSpec(
            task=task.name, suite=suite, steps=budget.steps, eval_every=budget.eval_every,
            optimizer=entry.name, lr=lr, seed=int(seed), kwargs=kwargs,
            code_version=run_code_version(version, entry), schedule=schedule, task_ref=task_ref,
            lr_exp=k, default_lr=entry.default_lr, metric=task.metric, higher_is_better=task.higher_is_better,
            log_scale=task.log_scale, baseline=entry.baseline and is_base, trace_stats=entry.trace_stats,
            optimizer_ref=optimizer_source(entry),
        )
        for k, lr in lr_grid(entry.default_lr, exponents)
        for seed in seeds
    ]


def propose_grid_extension(
    results: Iterable[tuple[float, float | None]],
    higher_is_better: bool,
    step: float = 0.5,
    max_abs_exp: float = 4.0,
) -> list[float]:
    """Extra grid exponents for one (task, optimizer) whose best point lies on an edge of its grid.

    ``results`` holds ``(lr_exp, final validation metric or None if diverged/failed)`` for every finished
    run (all seeds). A point with any failed seed cannot be the best. If the best seed-mean lies on the
    lowest/highest exponent, propose one more point beyond that edge (never past ``max_abs_exp``
    decades). If every point failed, propose a smaller learning rate, since that is where a working
    region must be. Returns the new exponents (empty when the optimum is interior).
    """
    grid, means = _seed_means_by_exponent(results)
    if not grid:
        return []
    proposals: list[float] = []
    if not means:
        candidate = grid[0] - step
        return [candidate] if abs(candidate) <= max_abs_exp + 1e-9 else []
    pick = max if higher_is_better else min
    best = pick(means, key=lambda k: means[k])
    if best == grid[-1] and best + step <= max_abs_exp + 1e-9:
        proposals.append(round(best + step, 6))
    if best == grid[0] and abs(best - step) <= max_abs_exp + 1e-9:
        proposals.append(round(best - step, 6))
    return [k for k in proposals if k not in grid]


def _seed_means_by_exponent(
    results: Iterable[tuple[float, float | None]],
) -> tuple[list[float], dict[float, float]]:
    """(every measured exponent sorted, seed-mean metric of the exponents where no seed failed)."""
    by_exp: dict[float, list[float | None]] = {}
    for k, value in results:
        by_exp.setdefault(round(float(k), 6), []).append(value)
    means = {
        k: sum(values) / len(values)  # type: ignore[arg-type]
        for k, values in by_exp.items()
        if all(v is not None and math.isfinite(v) for v in values)
    }
    return sorted(by_exp), means


def exponents_near_best(
    results: Iterable[tuple[float, float | None]], higher_is_better: bool, radius: float
) -> list[float]:
    """The measured exponents within ``radius`` decades of the best seed-mean point (none if every point
    failed): where further seeds pay off first, because that is where a method's good region and its
    W95 are decided."""
    grid, means = _seed_means_by_exponent(results)
    if not means:
        return []
    pick = max if higher_is_better else min
    best = pick(means, key=lambda k: means[k])
    return [k for k in grid if abs(k - best) <= radius + 1e-9]


def grid_step(exponents: Sequence[float]) -> float:
    """Spacing of a grid of exponents (the smallest gap; 0.5 for a single point): how far an extension
    reaches past an edge."""
    ordered = sorted(exponents)
    return min((b - a for a, b in zip(ordered, ordered[1:]) if b > a), default=0.5)


@dataclass(frozen=True)
class SweepPlan:
    """What one sweep compares: its tasks (with the reference stored in their specs), optimizers, suite,
    fixed and varied optimizer options, learning-rate schedule and the code version of each task. Its
    methods turn seeds and stored results into run specs; they read nothing and run nothing."""

    tasks: tuple[tuple[Task, str], ...]
    optimizers: tuple[OptimizerInfo, ...]
    suite: str
    versions: dict[str, str]
    optimizer_kwargs: dict[str, dict[str, Any]] | None = None
    schedule: str = "constant"
    #: per optimizer, option -> values, each swept with the lr grid (see option_settings)
    vary: dict[str, dict[str, Sequence[Any]]] | None = None

    def specs(self, seeds: Sequence[int], exponents: Sequence[float]) -> list[RunSpec]:
        """The whole grid: every task x optimizer x option setting x exponent x seed."""
        return self._specs_at(lambda task, entry, kwargs: exponents, seeds)

    def extension_specs(
        self, results: MethodResults, seeds: Sequence[int], step: float, existing: Iterable[RunSpec]
    ) -> list[RunSpec]:
        """Specs for the grid points :func:`propose_grid_extension` proposes for every (task, optimizer,
        setting) from its stored ``results`` of ``seeds``, less those already in ``existing``."""
        known = {s.run_id for s in existing}
        new = self._specs_at(lambda task, entry, kwargs: propose_grid_extension(
            results(task, entry, kwargs, seeds), task.higher_is_better, step=step), seeds)
        return [spec for spec in new if spec.run_id not in known]

    def near_best_specs(self, results: MethodResults, seeds: Sequence[int], radius: float) -> list[RunSpec]:
        """Specs of ``seeds[1:]`` at the exponents within ``radius`` decades of each (task, optimizer,
        setting)'s best point of ``seeds[0]``."""
        return self._specs_at(lambda task, entry, kwargs: exponents_near_best(
            results(task, entry, kwargs, seeds[:1]), task.higher_is_better, radius), seeds[1:])

    def settings(self, entry: OptimizerInfo) -> list[str]:
        """The canonical kwargs of every option setting ``entry`` runs, its default setting first."""
        return [canonical_kwargs(s) for s in option_settings(
            (self.optimizer_kwargs or {}).get(entry.name), (self.vary or {}).get(entry.name))]

    def _specs_at(
        self, exponents_of: Callable[[Task, OptimizerInfo, str], Sequence[float]], seeds: Sequence[int]
    ) -> list[RunSpec]:
        specs: list[RunSpec] = []
        for task, ref in self.tasks:
            for entry in self.optimizers:
                for index, kwargs in enumerate(self.settings(entry)):
                    exps = exponents_of(task, entry, kwargs)
                    if exps:
                        specs += _setting_specs(task, ref, entry, kwargs, index == 0, seeds, self.suite, exps,
                                                self.versions[task.name], self.schedule)
        return specs
