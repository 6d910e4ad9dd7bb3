"""tunefree.bench: learning-rate robustness sweeps, a resumable SQLite ledger and reports.

Public API::

    from tunefree.bench import run_sweep, make_task, write_report

    summary = run_sweep("mlp_mnist1d", optimizers=["sgd", "adam", "momo"], seeds=3, out="results")
    task = make_task("mine", model=..., batches=..., loss=..., evaluate=...)   # bring your own model
    run_sweep(task, optimizers=["adamw", "gala"], out="ab")

Data flows one way: CLI -> sweep plan -> run specs -> executor -> runner -> ledger -> report, and no
module imports one above it (see docs/benchmark.md, "How it fits together"; the layering is tested).
"""

from tunefree.bench.custom import CallableTask, make_task
from tunefree.bench.executors import Executor, LocalProcessExecutor, SerialExecutor
from tunefree.bench.ledger import Ledger, LedgerError
from tunefree.bench.plan import build_specs, propose_grid_extension
from tunefree.bench.records import SUITE_EXPONENTS, RunResult, RunSpec, lr_grid
from tunefree.bench.report import summarise, write_report
from tunefree.bench.resolve import resolve_optimizer, resolve_task
from tunefree.bench.runner import run_one
from tunefree.bench.sweep import SweepSummary, run_sweep
from tunefree.bench.tasks.base import DivergenceRule

__all__ = [
    "CallableTask", "DivergenceRule", "Executor", "Ledger",
    "LedgerError", "LocalProcessExecutor", "RunResult", "RunSpec",
    "SUITE_EXPONENTS", "SerialExecutor", "SweepSummary", "build_specs", "lr_grid", "make_task",
    "propose_grid_extension", "resolve_optimizer", "resolve_task", "run_one", "run_sweep", "summarise",
    "write_report",
]
