"""Sweep specification: which optimizers, learning rates, seeds and tasks; expanded into run specs.

A :class:`RunSpec` is the complete, hashable description of one training run. Its ``run_id`` is a
content hash of (task, suite budget, optimizer, lr, extra kwargs, seed, learning-rate schedule unless
constant) and the code version (tunefree's version plus a hash of the optimizer sources and the task
module), so the ledger can tell a finished run from a new one and a code change invalidates old results
instead of silently mixing them.

This module also owns the optimizer table of the harness: the registry's optimizers plus the optional
peers (Prodigy, D-Adaptation, Schedule-Free, momo-opt) that are used only when their package imports.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

import tunefree
from tunefree.bench.tasks.base import Budget, Task
from tunefree.optim.registry import OptimizerInfo, available_optimizers, get_optimizer_info

__all__ = [
    "SUITES",
    "SUITE_EXPONENTS",
    "QUICK_OPTIMIZERS",
    "DEFAULT_SEEDS",
    "SCHEDULES",
    "DEFAULT_WARMUP",
    "make_schedule",
    "parse_schedule",
    "RunSpec",
    "resolve_optimizer",
    "installed_peers",
    "default_optimizers",
    "resolve_task",
    "code_version",
    "lr_grid",
    "build_specs",
    "propose_grid_extension",
]

SUITES = ("quick", "standard")

#: learning-rate exponents k (lr = default * 10**k) of each suite: 9 half-decade points (standard) or
#: 5 whole-decade points (quick), always centred on the method's documented default.
SUITE_EXPONENTS: dict[str, tuple[float, ...]] = {
    "quick": (-2.0, -1.0, 0.0, 1.0, 2.0),
    "standard": tuple(k / 2 for k in range(-4, 5)),
}

#: the quick suite compares every tunefree method against the torch baselines (no peers: keep it short)
QUICK_OPTIMIZERS = ("momo", "momo_adam", "smes", "agd", "rsgdm", "gala", "sgd", "adam", "adamw")

DEFAULT_SEEDS = {"quick": 1, "standard": 3}

#: learning-rate schedules of a sweep: "constant" (the primary setting of notes/benchmarks.md 3c) and
#: "cosine" (the secondary one: linear warm-up, then cosine decay to 0, the same for every method)
SCHEDULES = ("constant", "cosine")
#: default warm-up of "cosine": this fraction of the budget's steps
DEFAULT_WARMUP = 0.05


def make_schedule(schedule: str = "constant", warmup: float | None = None) -> str:
    """The canonical schedule string of a run: ``"constant"`` or ``"cosine:<warm-up fraction>"``.

    ``schedule`` is ``"constant"``, ``"cosine"`` (warm-up ``warmup``, default :data:`DEFAULT_WARMUP`) or an
    already canonical ``"cosine:W"``. The string is what a run stores and hashes, so the warm-up is part
    of the run's identity and readable in the ledger. Raises ``ValueError`` naming ``schedule`` or
    ``warmup`` for an unknown schedule, a warm-up outside [0, 1), or a warm-up given with "constant".
    """
    name, sep, given = schedule.partition(":") if isinstance(schedule, str) else ("", "", "")
    if name not in SCHEDULES or (sep and name != "cosine"):
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if name == "constant":
        if warmup is not None:
            raise ValueError(f"warmup applies only to schedule='cosine', got warmup={warmup!r} with 'constant'")
        return "constant"
    if sep:
        try:
            from_string = float(given)
        except ValueError:
            raise ValueError(f"schedule {schedule!r}: the warm-up after ':' must be a number") from None
        if warmup is not None and float(warmup) != from_string:
            raise ValueError(f"schedule {schedule!r} and warmup={warmup!r} disagree")
        warmup = from_string
    value = DEFAULT_WARMUP if warmup is None else warmup
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {warmup!r}") from None
    if not (0.0 <= value < 1.0):  # also refuses NaN
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {value!r}")
    return f"cosine:{value:g}"


def parse_schedule(schedule: str) -> tuple[str, float]:
    """``(name, warm-up fraction)`` of a schedule string (``("constant", 0.0)`` for constant); raises
    ``ValueError`` for a string :func:`make_schedule` would not produce."""
    canonical = make_schedule(schedule)
    if canonical != schedule:
        raise ValueError(f"schedule {schedule!r} is not canonical; use {canonical!r}")
    if canonical == "constant":
        return "constant", 0.0
    return "cosine", float(canonical.partition(":")[2])


# --------------------------------------------------------------------------------------------------
# optimizers: registry entries and optional peers
# --------------------------------------------------------------------------------------------------


def resolve_optimizer(name: str) -> OptimizerInfo:
    """Registry entry for ``name`` (tunefree methods, torch baselines and optional peers).

    Raises ``ValueError`` naming the known optimizers for an unknown name.
    """
    return get_optimizer_info(name)


def installed_peers() -> list[str]:
    """Peer methods whose package is installed."""
    return [info.name for info in available_optimizers(include_peers=True)
            if info.peer and info.import_error() is None]


def default_optimizers(suite: str) -> list[str]:
    """Optimizers a suite compares when none are named: quick = tunefree's six + the torch baselines;
    standard = every registered optimizer plus the installed peers."""
    if suite == "quick":
        return list(QUICK_OPTIMIZERS)
    return [info.name for info in available_optimizers()] + installed_peers()


# --------------------------------------------------------------------------------------------------
# tasks: by registry name, "module:factory", "path/file.py:factory", or a Task object
# --------------------------------------------------------------------------------------------------

_TASK_CACHE: dict[str, Task] = {}


def _load_file_module(path: Path) -> Any:
    """Import a Python file by path under a stable, path-derived module name (so classes defined in it
    pickle by reference within a process that loaded it the same way)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_tunefree_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve_task(ref: str | Task) -> Task:
    """Turn a task reference into a :class:`Task` (cached per process, so data loads once per worker).

    ``ref`` is a built-in task name (``tunefree.bench.tasks.get_task``), ``"package.module:factory"``,
    ``"path/to/file.py:factory"`` (the factory returns a Task, or is a Task object itself), or a Task.
    """
    if isinstance(ref, Task):
        return ref
    if ref in _TASK_CACHE:
        return _TASK_CACHE[ref]
    if ":" in ref:
        module_part, attribute = ref.rsplit(":", 1)
        if module_part.endswith(".py") or "/" in module_part:
            path = Path(module_part)
            if not path.exists():
                raise ValueError(f"task file not found: {module_part}")
            module = _load_file_module(path)
        else:
            try:
                module = importlib.import_module(module_part)
            except ImportError as exc:
                raise ValueError(f"cannot import task module {module_part!r}: {exc}") from None
        if not hasattr(module, attribute):
            raise ValueError(f"{module_part!r} has no attribute {attribute!r}")
        factory = getattr(module, attribute)
        task = factory if isinstance(factory, Task) else factory()
        if not isinstance(task, Task):
            raise ValueError(f"{ref} returned {type(task).__name__}, not a tunefree.bench Task")
    else:
        try:
            from tunefree.bench.tasks import get_task  # written by the tasks owner; may not exist yet
        except ImportError as exc:
            raise ValueError(f"built-in tasks are not available ({exc}); use --task module:factory") from None
        task = get_task(ref)  # raises for an unknown name with the list of known ones
    _TASK_CACHE[ref] = task
    return task


def _task_source_files(task: Task) -> list[Path]:
    """Source files whose change should invalidate this task's results."""
    files: list[Path] = []
    extra = getattr(task, "source_files", None)
    if callable(extra):
        files.extend(Path(p) for p in extra())
    try:
        source = inspect.getsourcefile(type(task))
    except (TypeError, OSError):
        source = None
    if source:
        files.append(Path(source))
    return files


def _hash_files(files: Iterable[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in sorted(set(files)):
        try:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<missing>")
    return digest.hexdigest()[:12]


def code_version(task: Task) -> str:
    """``"<tunefree version>+<hash>"`` over everything a run's numbers depend on: the optimizer sources,
    the runner, the built-in task modules (they share data and model code), the task's own module, and
    the task's description, which names its data (the char tasks train on Shakespeare or, without it,
    on Python's help text: different numbers under the same task name).

    ``TUNEFREE_CODE_VERSION`` in the environment pins the version instead, e.g. to resume a long sweep
    across an edit known not to change results (a comment, a docstring); use it knowingly.
    """
    pinned = os.environ.get("TUNEFREE_CODE_VERSION")
    if pinned:
        return pinned
    package = Path(tunefree.__file__).parent
    files = [
        *(package / "optim").rglob("*.py"),
        *(package / "bench" / "tasks").rglob("*.py"),
        package / "bench" / "runner.py",
        *_task_source_files(task),
    ]
    return f"{tunefree.__version__}+{_hash_files(files, extra=task.description)}"


# --------------------------------------------------------------------------------------------------
# run specs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One training run. Only the fields in :meth:`identity` define the run; the rest is carried along
    so that the worker and the report need nothing but the spec."""

    task: str
    suite: str
    steps: int
    eval_every: int
    optimizer: str
    lr: float
    seed: int
    kwargs: str = "{}"  # canonical JSON of extra optimizer kwargs given by the sweep
    code_version: str = ""
    #: "constant" or "cosine:<warm-up fraction>" (see make_schedule); hashed only when not constant
    schedule: str = "constant"
    # carried, not hashed
    task_ref: str = ""
    lr_exp: float = 0.0
    default_lr: float = 0.0
    metric: str = "loss"
    higher_is_better: bool = False
    log_scale: bool = False
    baseline: bool = False
    trace_stats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_schedule(self.schedule)  # a bad schedule fails here, not in a worker

    def identity(self) -> dict[str, Any]:
        identity = {
            "task": self.task, "suite": self.suite, "steps": self.steps, "eval_every": self.eval_every,
            "optimizer": self.optimizer, "lr": repr(float(self.lr)), "kwargs": self.kwargs,
            "seed": self.seed, "code_version": self.code_version,
        }
        # only a non-constant schedule enters the hash: constant-lr runs keep the ids they had before
        # schedules existed, so existing ledgers stay valid
        if self.schedule != "constant":
            identity["schedule"] = self.schedule
        return identity

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    @property
    def kwargs_dict(self) -> dict[str, Any]:
        return json.loads(self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_grid(default_lr: float, exponents: Sequence[float]) -> list[tuple[float, float]]:
    """``[(k, lr)]`` with ``lr = default_lr * 10**k`` rounded to 6 significant digits (stable ids,
    readable numbers; the rounding error is far below anything a learning rate can resolve)."""
    return [(float(k), float(f"{default_lr * 10.0 ** k:.6g}")) for k in exponents]


def canonical_kwargs(kwargs: dict[str, Any] | None) -> str:
    """Canonical JSON of optimizer kwargs (sorted keys) so equal settings hash equally."""
    return json.dumps(kwargs or {}, sort_keys=True, default=repr)


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
) -> list[RunSpec]:
    """All run specs of one task: optimizer x lr grid x seed (seed innermost, so partial results of a
    killed sweep cover whole grid points across seeds early), under one learning-rate ``schedule``
    (a :func:`make_schedule` string)."""
    schedule = make_schedule(schedule)
    budget: Budget = task.budgets[suite]
    version = version if version is not None else code_version(task)
    exps = SUITE_EXPONENTS[suite] if exponents is None else tuple(exponents)
    specs = []
    for name in optimizers:
        entry = resolve_optimizer(name)
        kw = canonical_kwargs((optimizer_kwargs or {}).get(entry.name))
        for k, lr in lr_grid(entry.default_lr, exps):
            for seed in seeds:
                specs.append(RunSpec(
                    task=task.name, suite=suite, steps=budget.steps, eval_every=budget.eval_every,
                    optimizer=entry.name, lr=lr, seed=int(seed), kwargs=kw, code_version=version,
                    schedule=schedule, task_ref=task_ref, lr_exp=k, default_lr=entry.default_lr, metric=task.metric,
                    higher_is_better=task.higher_is_better, log_scale=task.log_scale,
                    baseline=entry.baseline, trace_stats=entry.trace_stats,
                ))
    return specs


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


# --------------------------------------------------------------------------------------------------
# the sweep: specs -> executor -> runner -> ledger (-> report)
# --------------------------------------------------------------------------------------------------


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


def _run_with_tasks(tasks: dict[str, Task], spec: RunSpec) -> Any:
    """Run function for Task objects handed to the sweep directly (pickled with the partial)."""
    from tunefree.bench.runner import run_one

    return run_one(spec, tasks.get(spec.task))


def _normalise_seeds(seeds: int | Sequence[int] | None, suite: str) -> list[int]:
    if seeds is None:
        seeds = DEFAULT_SEEDS.get(suite, 1)
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
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
    extend_grid: bool | None = None,
    max_extension_rounds: int = 4,
    retry_errors: bool = False,
    seeds_near_best: float | None = None,
    schedule: str = "constant",
    warmup: float | None = None,
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
    """
    from tqdm.auto import tqdm

    from tunefree.bench.executors import SerialExecutor, make_executor
    from tunefree.bench.ledger import Ledger
    from tunefree.bench.runner import run_one
    from tunefree.bench.tasks.base import TaskUnavailable

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
    exps = tuple(SUITE_EXPONENTS[suite] if exponents is None else exponents)
    step = min((b - a for a, b in zip(sorted(exps), sorted(exps)[1:]) if b > a), default=0.5)

    # optimizers: unknown names are errors; an explicitly named one that cannot import is an error,
    # a default one (a tunefree method still being written, say) is skipped with a note
    names = list(optimizers) if optimizers else default_optimizers(suite)
    entries = []
    for name in names:
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

    refs = list(task) if isinstance(task, (list, tuple)) else [task]
    summary = SweepSummary(out=Path(out), ledger_path=Path(out) / "ledger.sqlite")
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

    run_fn: Callable[[RunSpec], Any] = run_one
    if object_tasks:
        import functools
        import pickle

        run_fn = functools.partial(_run_with_tasks, object_tasks)
        if executor is None and workers != 1:
            try:
                pickle.dumps(run_fn)
            except Exception as exc:  # lambdas/closures in a Task: cannot cross to worker processes
                log(f"task objects are not picklable ({type(exc).__name__}); running in this process")
                executor = SerialExecutor()
    if executor is None:
        executor = make_executor(workers)

    ledger = Ledger(out)
    try:
        import platform

        ledger.set_meta("last_sweep", {
            "suite": suite, "seeds": seed_list, "optimizers": [e.name for e in entries],
            "tasks": [t.name for t, _ in resolved], "exponents": list(exps), "schedule": schedule,
            "python": platform.python_version(), "torch": torch.__version__,
        })
        specs: list[RunSpec] = []
        versions = {}
        for obj, ref in resolved:
            versions[obj.name] = code_version(obj)
            specs += build_specs(obj, ref, [e.name for e in entries], grid_seeds, suite, exps,
                                 optimizer_kwargs, versions[obj.name], schedule)
        summary.total = len(specs)
        if schedule != "constant":
            log(f"learning-rate schedule: {schedule} (warm-up fraction, then cosine decay to 0)")

        def execute(candidates: list[RunSpec], desc: str) -> None:
            bar = tqdm(total=len(candidates), unit="run", disable=not progress or not candidates, desc=desc)
            for result in executor.run_all(candidates, run_fn):
                ledger.store(result, replace=retry_errors)
                summary.executed += 1
                summary.statuses[result.status] = summary.statuses.get(result.status, 0) + 1
                bar.update(1)
                bar.set_postfix_str(f"{result.spec.task}/{result.spec.optimizer} {result.status}", refresh=False)
            bar.close()

        for round_index in range(max_extension_rounds + 1):
            done = ledger.finished_ids(include_errors=not retry_errors)
            todo = [s for s in specs if s.run_id not in done]
            summary.skipped += len(specs) - len(todo) if round_index == 0 else 0
            if round_index == 0:
                log(f"{len(specs)} runs: {len(todo)} to run, {len(specs) - len(todo)} already in {ledger.path}")
            elif todo:
                log(f"grid extension round {round_index}: {len(todo)} more runs")
            execute(todo, "sweep" if round_index == 0 else f"extension {round_index}")
            if not extend:
                break
            new_specs = _extension_specs(ledger, resolved, entries, grid_seeds, suite, step,
                                         optimizer_kwargs, versions, specs, schedule)
            if not new_specs:
                break
            specs += new_specs
            summary.total = len(specs)

        if seeds_near_best is not None and len(seed_list) > 1:
            more = _near_best_specs(ledger, resolved, entries, seed_list, suite, seeds_near_best,
                                    optimizer_kwargs, versions, schedule)
            done = ledger.finished_ids(include_errors=not retry_errors)
            todo = [s for s in more if s.run_id not in done]
            summary.total += len(more)
            summary.skipped += len(more) - len(todo)
            log(f"seeds {seed_list[1:]} within {seeds_near_best:g} decades of each method's best: "
                f"{len(more)} runs, {len(todo)} to run")
            execute(todo, "more seeds")
    finally:
        ledger.close()
    if report:
        from tunefree.bench.report import write_report

        summary.report_path = write_report(out)
        log(f"report: {summary.report_path}")
    return summary


def _method_results(
    ledger: Any,
    resolved: list[tuple[Task, str]],
    entries: list[OptimizerInfo],
    seeds: Iterable[int],
    suite: str,
    optimizer_kwargs: dict[str, dict[str, Any]] | None,
    versions: dict[str, str],
    schedule: str,
) -> Iterator[tuple[Task, str, OptimizerInfo, list[tuple[float, float | None]]]]:
    """Per (task, optimizer): ``(lr_exp, final validation metric)`` of its stored runs with the given
    seeds, code version, kwargs and schedule (the other schedule's runs of an optimizer are another
    method)."""
    wanted = set(seeds)
    for obj, ref in resolved:
        for entry in entries:
            kw = canonical_kwargs((optimizer_kwargs or {}).get(entry.name))
            rows = ledger.rows(task=obj.name, suite=suite, optimizer=entry.name,
                               code_version=versions[obj.name], kwargs=kw, schedule=schedule)
            yield obj, ref, entry, [(r["lr_exp"], r["final_val"]) for r in rows if r["seed"] in wanted]


def _near_best_specs(
    ledger: Any,
    resolved: list[tuple[Task, str]],
    entries: list[OptimizerInfo],
    seeds: list[int],
    suite: str,
    radius: float,
    optimizer_kwargs: dict[str, dict[str, Any]] | None,
    versions: dict[str, str],
    schedule: str = "constant",
) -> list[RunSpec]:
    """Specs of seeds[1:] at the exponents near each (task, optimizer)'s best point of seeds[0]."""
    new: list[RunSpec] = []
    for obj, ref, entry, results in _method_results(ledger, resolved, entries, seeds[:1], suite,
                                                     optimizer_kwargs, versions, schedule):
        near = exponents_near_best(results, obj.higher_is_better, radius)
        if near:
            new += build_specs(obj, ref, [entry.name], seeds[1:], suite, near,
                               optimizer_kwargs, versions[obj.name], schedule)
    return new


def _extension_specs(
    ledger: Any,
    resolved: list[tuple[Task, str]],
    entries: list[OptimizerInfo],
    seeds: list[int],
    suite: str,
    step: float,
    optimizer_kwargs: dict[str, dict[str, Any]] | None,
    versions: dict[str, str],
    existing: list[RunSpec],
    schedule: str = "constant",
) -> list[RunSpec]:
    """Specs for grid points proposed by :func:`propose_grid_extension` from the ledger's results."""
    known = {s.run_id for s in existing}
    new: list[RunSpec] = []
    for obj, ref, entry, results in _method_results(ledger, resolved, entries, seeds, suite,
                                                     optimizer_kwargs, versions, schedule):
        extra = propose_grid_extension(results, obj.higher_is_better, step=step)
        for spec in build_specs(obj, ref, [entry.name], seeds, suite, extra,
                                optimizer_kwargs, versions[obj.name], schedule):
            if spec.run_id not in known:
                new.append(spec)
    return new
