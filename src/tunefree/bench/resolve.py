"""Resolution of names into objects, and the code version of a task's runs.

* optimizers: the registry's entries plus the optional peers (Prodigy, D-Adaptation, Schedule-Free,
  momo-opt) that are used only when their package imports;
* tasks: a built-in name, ``"module:factory"``, ``"path/file.py:factory"`` or a Task object;
* :func:`code_version`: the hash of everything a run's numbers depend on, part of every run id.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import tunefree
from tunefree.bench.records import QUICK_OPTIMIZERS
from tunefree.bench.tasks.base import Task
from tunefree.optim.registry import OptimizerInfo, available_optimizers, get_optimizer_info

__all__ = ["resolve_optimizer", "installed_peers", "default_optimizers", "resolve_task", "code_version"]


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
