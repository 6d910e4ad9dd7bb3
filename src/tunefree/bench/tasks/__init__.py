"""Benchmark tasks by name, and the suites they belong to.

Each task lives in its own module of this package and exposes ``make_task() -> Task``; modules are
imported on first use, so listing tasks does not import scikit-learn, mnist1d or scipy.

* ``get_task(name)``: a fresh :class:`~tunefree.bench.tasks.base.Task` (its description is computed at
  construction, e.g. the char-level tasks name the corpus found on this machine).
* ``available_tasks(suite)``: the tasks with a budget in ``suite`` (all tasks for ``None``), whether or
  not their data is installed (call ``task.check_available()`` to find out).
* ``SUITES``: ``"quick"`` (about 2-3 s per run, zero-install tasks only) and ``"standard"`` (the CPU
  tier: at most about a minute per run on one thread).

Data is cached under ``$TUNEFREE_DATA`` or ``~/.cache/tunefree`` (see :func:`base.data_dir`).
"""

from __future__ import annotations

import importlib

from tunefree.bench.records import SUITES

from .base import Budget, Task, TaskInstance, TaskUnavailable, data_dir

__all__ = [
    "SUITES",
    "TASK_NAMES",
    "Budget",
    "Task",
    "TaskInstance",
    "TaskUnavailable",
    "available_tasks",
    "data_dir",
    "get_task",
]


#: registered task names, in report order (module ``tunefree.bench.tasks.<name>`` provides each)
TASK_NAMES: tuple[str, ...] = (
    "logreg_bc",
    "lsq_synth",
    "mlp_mnist1d",
    "cnn_fmnist",
    "gpt_char",
    "lstm_char",
    "seq2seq_sort",
    "dlrm_ctr",
    "ddpm_2d",
)


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` listing the known names if there is none."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    task: Task = module.make_task()
    return task


def available_tasks(suite: str | None = None) -> list[Task]:
    """Tasks that have a budget for ``suite`` (every task when ``suite`` is None), in registry order."""
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known suites: {', '.join(SUITES)}")
    tasks = [get_task(name) for name in TASK_NAMES]
    return tasks if suite is None else [task for task in tasks if suite in task.budgets]
