"""The sweep: the orchestrator at the top of the harness.

:func:`run_sweep` resolves optimizers and tasks (:mod:`tunefree.bench.resolve`), plans run specs
(:mod:`tunefree.bench.plan`), hands the ones not yet in the ledger to an executor
(:mod:`tunefree.bench.executors`), which calls the runner (:mod:`tunefree.bench.runner`) for each, stores
every result in the ledger (:mod:`tunefree.bench.ledger`) as it arrives, and finally writes the report
(:mod:`tunefree.bench.report`). Nothing below this module imports it.

The names below that live in lower modules are re-exported so that ``tunefree.bench.sweep`` keeps its
public names.
"""

from __future__ import annotations

import functools
import math
import pickle
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from tunefree.bench.executors import Executor, SerialExecutor, make_executor
from tunefree.bench.ledger import Ledger, SweepLock
from tunefree.bench.plan import (
    SweepPlan,
    build_specs,
    exponents_near_best,
    grid_step,
    option_settings,
    propose_grid_extension,
)
from tunefree.bench.records import (
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SEEDS,
    DEFAULT_WARMUP,
    QUICK_OPTIMIZERS,
    SCHEDULES,
    SUITE_EXPONENTS,
    SUITES,
    RunResult,
    RunSpec,
    canonical_kwargs,
    check_exponents,
    lr_grid,
    make_schedule,
    parse_schedule,
)
from tunefree.bench.report import write_report
from tunefree.bench.resolve import (
    check_options,
    code_version,
    default_optimizers,
    installed_peers,
    resolve_optimizer,
    resolve_task,
    run_code_version,
)
from tunefree.bench.runner import run_one
from tunefree.bench.tasks.base import Task, TaskUnavailable
from tunefree.optim.registry import OptimizerInfo

__all__ = [
    "SUITES", "SUITE_EXPONENTS", "QUICK_OPTIMIZERS", "DEFAULT_SEEDS", "SCHEDULES", "DEFAULT_WARMUP",
    "make_schedule", "parse_schedule", "RunSpec", "resolve_optimizer", "installed_peers", "default_optimizers",
    "resolve_task", "code_version", "lr_grid", "canonical_kwargs", "build_specs", "propose_grid_extension",
    "exponents_near_best", "SweepSummary", "run_sweep",
]


@dataclass
class SweepSummary:
    """What a sweep did: where its results are and how many runs it executed or found finished."""

    out: Path
    ledger_path: Path
    total: int = 0
    executed: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    skipped_tasks: dict[str, str] = field(default_factory=dict)
    report_path: Path | None = None



def _run_with_tasks(tasks: dict[str, Task], spec: RunSpec) -> RunResult:
    """Run function for Task objects handed to the sweep directly (pickled with the partial)."""
    return run_one(spec, tasks.get(spec.task))


#: most seeds one sweep may ask for (a typo like --seeds 1000000 must not plan a million runs per point)
MAX_SEEDS = 1000


def _normalise_seeds(seeds: int | Sequence[int] | None, suite: str) -> list[int]:
    if seeds is None:
        seeds = DEFAULT_SEEDS.get(suite, 1)
    if isinstance(seeds, int):
        if not (1 <= seeds <= MAX_SEEDS):
            raise ValueError(f"seeds must be a count in [1, {MAX_SEEDS}], got {seeds}")
        return list(range(seeds))
    values = [int(s) for s in seeds]
    if not values:
        raise ValueError("seeds must not be empty")
    return values



def run_sweep(
    task: str | Task | Sequence[str | Task],
    optimizers: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    out: str | Path = "tunefree-results",
    *,
    suite: str = "quick",
    workers: int | None = None,
    exponents: Sequence[float] | None = None,
    optimizer_kwargs: dict[str, dict[str, Any]] | None = None,
    vary: dict[str, dict[str, Sequence[Any]]] | None = None,
    extend_grid: bool | None = None,
    max_extension_rounds: int = 4,
    retry_errors: bool = False,
    seeds_near_best: float | None = None,
    schedule: str = "constant",
    warmup: float | None = None,
    run_timeout: float | None = None,
    progress: bool = True,
    report: bool = True,
    executor: Any = None,
    log: Callable[[str], None] = print,
) -> SweepSummary:
    """Sweep optimizers x learning-rate grid x seeds on one or more tasks; store every run in
    ``out/ledger.sqlite``; write the report unless ``report=False``.

    ``task`` is a built-in task name, ``"module:factory"``, ``"file.py:factory"``, a :class:`Task`
    (see :func:`tunefree.bench.make_task` for plain callables), or a list of these. ``optimizers``
    defaults to the suite's list; ``seeds`` is a count (seeds ``0..N-1``) or explicit seeds; the grid
    is the suite's exponents unless ``exponents`` is given. ``extend_grid`` (default: on for the
    standard suite) adds points beyond an edge that holds a method's best result. Finished runs in the
    ledger are skipped, so calling this again resumes a killed sweep.

    ``seeds_near_best=R`` (decades) spends the extra seeds where they matter when time is short: the
    whole grid (and its extension) runs with the first seed only, then every further seed runs only at the
    exponents within ``R`` decades of each method's best first-seed point on each task. Called again
    with more seeds or a larger ``R``, it adds just the missing runs.

    ``schedule`` is the learning-rate schedule every method gets: ``"constant"`` (default, the primary
    setting) or ``"cosine"``: linear warm-up over the first ``warmup`` fraction of the steps (default
    0.05), then cosine decay to 0 at the end of the budget, applied by the runner as a multiplier on
    every param group's lr. Cosine runs are separate runs in the same ledger (their id includes the
    schedule); the report shows them as their own methods (``adam+cosine``) scored against the baselines
    of the same schedule.

    ``optimizer_kwargs={"agd": {"delta": 1e-8}}`` fixes options of an optimizer for the whole sweep (the
    CLI's ``--set agd.delta=1e-8``). ``vary={"agd": {"delta": [1e-14, 1e-8]}}`` (``--vary``) measures
    the sensitivity to other options than lr: the optimizer runs its default setting (its fixed options)
    and, one varied option at a time, the fixed options with that option at each value, every setting
    on the whole lr grid; a varied setting is a method of its own in the report (a baseline's varied
    settings are not baselines: they leave the target m* alone), and the report draws score over
    (lr x value) per varied option. Optimizers are named by registry name (see
    :func:`tunefree.register_optimizer` for your own) or by ``"module:factory"`` / ``"file.py:factory"``.
    Every option is checked by building the optimizer once before anything runs; a ``ValueError``
    names the optimizer, the option and its constructor's signature.

    Every run executes in a worker process (also with ``workers=1``), so a run that calls ``sys.exit``
    or ``os._exit``, crashes or hangs is stored as that run's ``error`` and the sweep goes on;
    ``run_timeout`` seconds (default: ``DEFAULT_RUN_TIMEOUT`` of the suite, ``math.inf`` for none) stops
    a hanging run. Task objects that cannot be pickled (lambdas) run in this process instead, without
    that protection. A second sweep into the same ``out`` while this one runs is refused, naming its pid.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; available: {', '.join(SUITES)}")
    schedule = make_schedule(schedule, warmup)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    seed_list = _normalise_seeds(seeds, suite)
    if seeds_near_best is not None and not (seeds_near_best >= 0 and math.isfinite(seeds_near_best)):
        raise ValueError(f"seeds_near_best must be a number of decades >= 0, got {seeds_near_best}")
    grid_seeds = seed_list[:1] if seeds_near_best is not None else seed_list
    extend = (suite == "standard") if extend_grid is None else extend_grid
    exps = check_exponents(SUITE_EXPONENTS[suite] if exponents is None else exponents)
    timeout = DEFAULT_RUN_TIMEOUT[suite] if run_timeout is None else run_timeout
    if not (isinstance(timeout, (int, float)) and timeout > 0):  # also refuses NaN
        raise ValueError(f"run_timeout must be a number of seconds > 0 (math.inf: no limit), got {run_timeout!r}")

    entries = _resolve_optimizers(optimizers, suite, log)
    optimizer_kwargs, vary = _check_options(entries, optimizer_kwargs, vary)
    summary = SweepSummary(out=Path(out), ledger_path=Path(out) / "ledger.sqlite")
    resolved, object_tasks = _resolve_tasks(task, suite, summary, log)
    run_fn, executor = _run_function(object_tasks, executor, workers, timeout, log)
    names = [e.name for e in entries]

    lock = SweepLock(out)  # one sweep per folder at a time: a second one is refused, naming this pid
    lock.acquire()
    try:
        ledger = Ledger(out)
    except BaseException:
        lock.release()
        raise
    try:
        ledger.set_meta("last_sweep", {
            "suite": suite, "seeds": seed_list, "optimizers": names,
            "tasks": [t.name for t, _ in resolved], "exponents": list(exps), "schedule": schedule,
            "options": optimizer_kwargs, "vary": vary,
            "python": platform.python_version(), "torch": torch.__version__,
        })
        versions = {obj.name: code_version(obj) for obj, _ in resolved}
        plan = SweepPlan(tuple(resolved), tuple(entries), suite, versions, optimizer_kwargs, schedule, vary)
        specs = plan.specs(grid_seeds, exps)
        summary.total = len(specs)
        if schedule != "constant":
            log(f"learning-rate schedule: {schedule} (warm-up fraction, then cosine decay to 0)")

        def results(
            obj: Task, entry: OptimizerInfo, kw: str, wanted: Sequence[int]
        ) -> list[tuple[float, float | None]]:
            # the stored runs of one method of this sweep: same code version, kwargs and schedule
            rows = ledger.rows(task=obj.name, suite=suite, optimizer=entry.name,
                               code_version=run_code_version(versions[obj.name], entry), kwargs=kw,
                               schedule=schedule)
            return [(r["lr_exp"], r["final_val"]) for r in rows if r["seed"] in set(wanted)]

        def execute(candidates: list[RunSpec], desc: str) -> None:
            _execute(executor, run_fn, ledger, candidates, summary, retry_errors, progress, desc)

        step = grid_step(exps)
        for round_index in range(max_extension_rounds + 1):
            done = ledger.finished_ids(include_errors=not retry_errors)
            todo = [s for s in specs if s.run_id not in done]
            if round_index == 0:
                summary.skipped += len(specs) - len(todo)
                log(f"{len(specs)} runs: {len(todo)} to run, {len(specs) - len(todo)} already in {ledger.path}")
            elif todo:
                log(f"grid extension round {round_index}: {len(todo)} more runs")
            execute(todo, "sweep" if round_index == 0 else f"extension {round_index}")
            if not extend:
                break
            new_specs = plan.extension_specs(results, grid_seeds, step, specs)
            if not new_specs:
                break
            specs += new_specs
            summary.total = len(specs)

        if seeds_near_best is not None and len(seed_list) > 1:
            more = plan.near_best_specs(results, seed_list, seeds_near_best)
            done = ledger.finished_ids(include_errors=not retry_errors)
            todo = [s for s in more if s.run_id not in done]
            summary.total += len(more)
            summary.skipped += len(more) - len(todo)
            log(f"seeds {seed_list[1:]} within {seeds_near_best:g} decades of each method's best: "
                f"{len(more)} runs, {len(todo)} to run")
            execute(todo, "more seeds")
    finally:
        ledger.close()
        lock.release()
    if report:
        summary.report_path = write_report(out)
        log(f"report: {summary.report_path}")
    return summary


def _resolve_optimizers(
    optimizers: Sequence[str] | None, suite: str, log: Callable[[str], None]
) -> list[OptimizerInfo]:
    """Registry entries of the sweep's optimizers. Unknown names are errors; an explicitly named one that
    cannot import is an error, a default one (an optional peer, say) is skipped with a note."""
    entries = []
    for name in list(optimizers) if optimizers else default_optimizers(suite):
        entry = resolve_optimizer(name)
        problem = entry.import_error()
        if problem is not None:
            if optimizers:
                raise ValueError(f"optimizer {entry.name!r} cannot be imported: {problem}")
            log(f"skipping optimizer {entry.name}: {problem}")
            continue
        entries.append(entry)
    if not entries:
        raise ValueError("no optimizer can run")
    return entries


def _check_options(
    entries: list[OptimizerInfo],
    fixed: dict[str, dict[str, Any]] | None,
    vary: dict[str, dict[str, Sequence[Any]]] | None,
) -> tuple[dict[str, dict[str, Any]] | None, dict[str, dict[str, list[Any]]] | None]:
    """``(fixed, vary)`` keyed by registry name, every setting they make checked by building the
    optimizer (:func:`check_options`); ``ValueError`` for options of an optimizer not in the sweep, a
    varied option without values or with a repeated value, or a setting the optimizer refuses."""
    by_name = {e.name: e for e in entries}

    def entry_of(name: str, what: str) -> OptimizerInfo:
        entry = by_name.get(resolve_optimizer(name).name)
        if entry is None:
            raise ValueError(f"{what} names optimizer {name!r}, which is not in this sweep "
                             f"({', '.join(by_name)})")
        return entry

    fixed_out = {entry_of(name, "optimizer_kwargs").name: dict(options) for name, options in (fixed or {}).items()}
    vary_out: dict[str, dict[str, list[Any]]] = {}
    for name, options in (vary or {}).items():
        entry = entry_of(name, "vary")
        for key, values in options.items():
            values = [values] if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) else list(values)
            if not values:
                raise ValueError(f"vary {entry.name}.{key}: give at least one value")
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                raise ValueError(f"vary {entry.name}.{key}: value {repeated[0]!r} is given twice")
            vary_out.setdefault(entry.name, {})[key] = values
    for entry in entries:
        if entry.name in fixed_out or entry.name in vary_out:
            for setting in option_settings(fixed_out.get(entry.name), vary_out.get(entry.name)):
                check_options(entry, setting)
    return fixed_out or None, vary_out or None


def _resolve_tasks(
    task: str | Task | Sequence[str | Task], suite: str, summary: SweepSummary, log: Callable[[str], None]
) -> tuple[list[tuple[Task, str]], dict[str, Task]]:
    """``([(task, reference stored in its specs)], {name: task object handed in directly})``; tasks that
    are unavailable or not part of ``suite`` are skipped and recorded in ``summary.skipped_tasks``."""
    refs = list(task) if isinstance(task, (list, tuple)) else [task]
    resolved: list[tuple[Task, str]] = []
    object_tasks: dict[str, Task] = {}
    for ref in refs:
        obj = resolve_task(ref)
        try:
            obj.check_available()
        except TaskUnavailable as exc:
            summary.skipped_tasks[obj.name] = str(exc)
            log(f"skipping task {obj.name}: {exc}")
            continue
        if suite not in obj.budgets:
            summary.skipped_tasks[obj.name] = f"not part of the {suite} suite"
            log(f"skipping task {obj.name}: not part of the {suite} suite")
            continue
        if isinstance(ref, Task):
            object_tasks[obj.name] = obj
            resolved.append((obj, f"object:{obj.name}"))
        else:
            resolved.append((obj, ref))
    return resolved, object_tasks


def _run_function(
    object_tasks: dict[str, Task], executor: Executor | None, workers: int | None, run_timeout: float,
    log: Callable[[str], None],
) -> tuple[Callable[[RunSpec], RunResult], Executor]:
    """The run function and the executor of a sweep: Task objects travel with the run function; if they
    cannot be pickled (lambdas, closures), the runs stay in this process, without isolation."""
    run_fn: Callable[[RunSpec], RunResult] = run_one
    if object_tasks:
        run_fn = functools.partial(_run_with_tasks, object_tasks)
        if executor is None:
            try:
                pickle.dumps(run_fn)
            except Exception as exc:  # lambdas/closures in a Task: cannot cross to worker processes
                log(f"task objects are not picklable ({type(exc).__name__}); running in this process, "
                    f"without isolation or run timeout (use module-level functions to get both)")
                executor = SerialExecutor()
    return run_fn, executor if executor is not None else make_executor(workers, run_timeout)


def _execute(
    executor: Executor,
    run_fn: Callable[[RunSpec], RunResult],
    ledger: Ledger,
    specs: list[RunSpec],
    summary: SweepSummary,
    replace: bool,
    progress: bool,
    desc: str,
) -> None:
    """Run ``specs`` on ``executor``, storing each result in ``ledger`` as it arrives."""
    from tqdm.auto import tqdm  # the bench extra: importing tunefree.bench must not need it

    bar = tqdm(total=len(specs), unit="run", disable=not progress or not specs, desc=desc)
    results = iter(executor.run_all(specs, run_fn))
    try:
        for result in results:
            ledger.store(result, replace=replace)
            summary.executed += 1
            summary.statuses[result.status] = summary.statuses.get(result.status, 0) + 1
            bar.update(1)
            bar.set_postfix_str(f"{result.spec.task}/{result.spec.optimizer} {result.status}", refresh=False)
    finally:
        # an interrupt or a failed store stops the executor's runs now, not at garbage collection
        close = getattr(results, "close", None)
        if close is not None:
            close()
        bar.close()
