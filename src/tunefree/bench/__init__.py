"""tunefree.bench: learning-rate robustness sweeps, a resumable SQLite ledger and reports.

Public API::

    from tunefree.bench import run_sweep, make_task, write_report

    summary = run_sweep("mlp_mnist1d", optimizers=["sgd", "adam", "momo"], seeds=3, out="results")
    task = make_task("mine", model=..., batches=..., loss=..., evaluate=...)   # bring your own model
    run_sweep(task, optimizers=["adamw", "gala"], out="ab")

Data flows one way: sweep spec -> run specs -> executor -> runner -> ledger -> report.
"""

from tunefree.bench.custom import CallableTask, make_task
from tunefree.bench.executors import Executor, LocalProcessExecutor, SerialExecutor
from tunefree.bench.ledger import Ledger
from tunefree.bench.report import summarise, write_report
from tunefree.bench.runner import RunResult, run_one
from tunefree.bench.sweep import (
    SUITE_EXPONENTS,
    RunSpec,
    SweepSummary,
    build_specs,
    lr_grid,
    propose_grid_extension,
    resolve_optimizer,
    resolve_task,
    run_sweep,
)

__all__ = [
    "CallableTask", "Executor", "Ledger", "LocalProcessExecutor", "RunResult", "RunSpec",
    "SUITE_EXPONENTS", "SerialExecutor", "SweepSummary", "build_specs", "lr_grid", "make_task",
    "propose_grid_extension", "resolve_optimizer", "resolve_task", "run_one", "run_sweep", "summarise",
    "write_report",
]
