"""Shared records of the harness (the bottom layer: every other bench module may import it, it imports
nothing of tunefree): the suites and their grids, the learning-rate schedule grammar, :class:`RunSpec`
(one training run, with its content-hash ``run_id``) and :class:`RunResult` (what a run measured).

A :class:`RunSpec`'s ``run_id`` is a content hash of (task, suite budget, optimizer, lr, extra kwargs,
seed, learning-rate schedule unless constant) and the code version (see
:func:`tunefree.bench.resolve.code_version`), so the ledger can tell a finished run from a new one and a
code change invalidates old results instead of silently mixing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

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
    "RunResult",
    "lr_grid",
    "canonical_kwargs",
    "MAX_GRID_DECADES",
    "check_exponents",
    "DEFAULT_RUN_TIMEOUT",
    "decode_kwargs",
]

#: the benchmark suites: "quick" (a few seconds per run, zero-install tasks) and "standard" (the full
#: protocol); a task's ``budgets`` says which suites it belongs to
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

#: seconds one run may take before the executor stops it and stores an ``error`` (``--run-timeout``):
#: about 100x a built-in task's run time on one thread, so only a hang reaches it
DEFAULT_RUN_TIMEOUT = {"quick": 600.0, "standard": 3600.0}

#: grid exponents are limited to [-MAX_GRID_DECADES, MAX_GRID_DECADES]: 10**20 between the smallest and
#: the largest lr is far beyond any useful sweep, and 10**k stays a finite float
MAX_GRID_DECADES = 10.0

#: learning-rate schedules of a sweep: "constant" (the primary setting of the protocol, see
#: docs/benchmark.md) and "cosine" (the secondary one: linear warm-up, then cosine decay to 0, the same
#: for every method)
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
    kwargs: str = "{}"  # canonical JSON of extra optimizer kwargs given by the sweep (see canonical_kwargs)
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
    #: where a worker imports a user's optimizer from ("module:factory" or "/abs/file.py:factory");
    #: empty for the built-ins. Its code is in ``code_version``, so the reference itself is not hashed
    optimizer_ref: str = ""

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
        return decode_kwargs(self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_grid(default_lr: float, exponents: Sequence[float]) -> list[tuple[float, float]]:
    """``[(k, lr)]`` with ``lr = default_lr * 10**k`` rounded to 6 significant digits (stable ids,
    readable numbers; the rounding error is far below anything a learning rate can resolve)."""
    return [(float(k), float(f"{default_lr * 10.0 ** k:.6g}")) for k in exponents]


def check_exponents(exponents: Sequence[float], name: str = "exponents") -> tuple[float, ...]:
    """The grid exponents as floats, checked before anything runs: at least one, each a finite number in
    [-MAX_GRID_DECADES, MAX_GRID_DECADES], none repeated. Raises ``ValueError`` naming ``name``, the bad
    value and the allowed range (a NaN or Inf learning rate would otherwise be stored or dropped)."""
    values = []
    for k in exponents:
        try:
            value = float(k)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {k!r} is not a number; give lr exponents k (lr = default x 10**k)") from None
        if not (abs(value) <= MAX_GRID_DECADES):  # also refuses NaN
            raise ValueError(f"{name}: {k!r} is outside [-{MAX_GRID_DECADES:g}, {MAX_GRID_DECADES:g}]; give "
                             f"finite lr exponents k (lr = default x 10**k) in that range")
        values.append(value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a value, got {list(exponents)}")
    return tuple(values)


def canonical_kwargs(kwargs: dict[str, Any] | None) -> str:
    """Canonical JSON of optimizer kwargs (sorted keys) so equal settings hash equally; no kwargs is
    ``"{}"``, the string every run had before options could be swept, so such runs keep their ids."""
    return json.dumps(kwargs or {}, sort_keys=True, default=repr)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def decode_kwargs(text: str) -> dict[str, Any]:
    """The optimizer kwargs of :func:`canonical_kwargs`' JSON. JSON has no tuples: its lists come back
    as tuples, torch's convention for options like ``betas``."""
    return {key: _tuples(value) for key, value in json.loads(text or "{}").items()}


@dataclass
class RunResult:
    """Everything measured in one run (JSON-friendly: plain floats, lists and dicts)."""

    spec: RunSpec
    status: str  # "ok" | "diverged" | "error"
    error: str | None = None
    steps_done: int = 0
    grad_evals: int = 0
    diverged_step: int | None = None
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    #: [(step, {metric: value})], step 0 = before training
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: {stat name: (steps, values)}
    stats: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    #: alerts of the run's watcher (tunefree.watch): [(step, code, message)]; None where none was attached
    alerts: list[tuple[int, str, str]] | None = None
    final_val: dict[str, float] | None = None
    final_test: dict[str, float] | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
