"""Resolution of names into objects, and the code version of a task's runs.

* optimizers: the registry's entries plus the optional peers (Prodigy, D-Adaptation, Schedule-Free,
  momo-opt) that are used only when their package imports, and a user's own optimizer, registered with
  :func:`tunefree.register_optimizer` and named by its registry name or by ``"module:factory"`` /
  ``"path/file.py:factory"``; :func:`check_options` validates the options a sweep passes to one;
* tasks: a built-in name, ``"module:factory"``, ``"path/file.py:factory"`` or a Task object;
* :func:`code_version`: the hash of everything a run's numbers depend on, part of every run id
  (:func:`run_code_version` adds a user optimizer's own source).
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
from tunefree.bench.records import QUICK_OPTIMIZERS, canonical_kwargs, decode_kwargs
from tunefree.bench.tasks.base import Task
from tunefree.optim import native
from tunefree.optim.registry import OptimizerInfo, available_optimizers, get_optimizer_info, is_builtin

__all__ = ["resolve_optimizer", "optimizer_source", "check_options", "installed_peers", "default_optimizers",
           "resolve_task", "code_version", "run_code_version"]

#: prefix of the module names under which ``path/file.py`` references are imported
_FILE_MODULE_PREFIX = "_tunefree_user_"


def resolve_optimizer(ref: str, source: str = "") -> OptimizerInfo:
    """Registry entry of an optimizer: a registered name (tunefree methods, torch baselines, optional
    peers, a user's optimizer), or ``"module:factory"`` / ``"path/file.py:factory"`` naming a factory
    that the module registers with :func:`tunefree.register_optimizer` when imported (or the
    ``OptimizerInfo`` that call returned).

    ``source`` (a run spec's ``optimizer_ref``) is imported when ``ref`` is a name not registered in
    this process: how a fresh worker process finds a user's optimizer. Raises ``ValueError`` naming the
    known optimizers for an unknown name, or saying how to register an unregistered factory.
    """
    if ":" in ref:
        return _registered(ref)
    try:
        return get_optimizer_info(ref)
    except ValueError:
        if not source:
            raise
    _registered(source)
    return get_optimizer_info(ref)


def _registered(ref: str) -> OptimizerInfo:
    """The registry entry of the factory (or OptimizerInfo) that ``ref`` names, after importing it."""
    obj = _load_reference(ref, "optimizer")
    if isinstance(obj, OptimizerInfo):
        return get_optimizer_info(obj.name)
    for info in available_optimizers(include_peers=True):
        if info.factory is obj:
            return info
    module_part, attribute = ref.rsplit(":", 1)
    raise ValueError(f"{ref}: {attribute} is not a registered optimizer; register it in {module_part} with "
                     f"tunefree.register_optimizer('name', {attribute}, default_lr=..., lr_meaning=...)")


def optimizer_source(entry: OptimizerInfo) -> str:
    """Where a worker process imports a user's optimizer from (``"module:factory"`` or
    ``"/abs/file.py:factory"``); ``""`` for the built-ins and for a factory that cannot be imported by
    reference (a closure): a worker then finds it only if its own imports register it."""
    factory = entry.factory
    if factory is None or is_builtin(entry.name):
        return ""
    qualname = getattr(factory, "__qualname__", "")
    module_name = getattr(factory, "__module__", "") or ""
    module = sys.modules.get(module_name)
    if not qualname or "<" in qualname or module is None:
        return ""
    if module_name.startswith(_FILE_MODULE_PREFIX) or module_name in ("__main__", "__mp_main__"):
        file = getattr(module, "__file__", None)
        return f"{Path(file).resolve()}:{qualname}" if file else ""
    return f"{module_name}:{qualname}"


def _signature(entry: OptimizerInfo) -> str:
    factory = entry.load_class()
    name = getattr(factory, "__name__", entry.name)
    try:
        signature = inspect.signature(factory)
        # the names and defaults are what a user needs; annotations would double the line
        plain = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
        return f"{name}{signature.replace(parameters=plain, return_annotation=inspect.Signature.empty)}"
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return f"{name}(...)"


def check_options(entry: OptimizerInfo, options: dict[str, Any]) -> None:
    """Refuse options a run of ``entry`` could not use, before anything runs: ``lr`` (the grid sweeps
    it), a keyword the constructor does not take, a value that does not survive the run spec's JSON
    (numbers, strings, booleans, None and tuples of these do; JSON lists come back as tuples), and any
    setting the constructor itself rejects (it is built once on a dummy parameter).

    Raises ``ValueError`` in one line naming the optimizer, the option and the constructor signature.
    """
    import torch

    if "lr" in options:
        raise ValueError(f"{entry.name}.lr is the learning rate the grid sweeps (lr = {entry.default_lr:g} x "
                         "10^k); choose the grid with --grid-points / exponents instead")
    factory = entry.load_class()
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        parameters = None
    if parameters is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        allowed = [p.name for p in parameters if p.name not in ("self", "params", "lr") and p.kind in
                   (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        for key in options:
            if key not in allowed:
                raise ValueError(f"{entry.name} has no option {key!r}; allowed: {', '.join(allowed) or 'none'} "
                                 f"(signature {_signature(entry)})")
    for key, value in options.items():
        if not _plain(value):
            raise ValueError(f"{entry.name}.{key}={value!r}: an option must be a number, string, boolean, None "
                             "or a tuple of these")
    decoded = decode_kwargs(canonical_kwargs(options))  # what a run will get
    try:
        entry.create([torch.zeros(2, requires_grad=True)], **decoded)
    except Exception as exc:  # noqa: BLE001 - whatever the constructor refuses, said in one line
        setting = ", ".join(f"{k}={v!r}" for k, v in decoded.items())
        raise ValueError(f"{entry.name}({setting}) is refused: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def _plain(value: Any) -> bool:
    """A value that JSON stores as itself (tuples and lists as JSON lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def installed_peers() -> list[str]:
    """Peer methods whose package is installed."""
    return [info.name for info in available_optimizers(include_peers=True)
            if info.peer and info.import_error() is None]


def default_optimizers(suite: str) -> list[str]:
    """Optimizers a suite compares when none are named: quick = tunefree's six + the torch baselines;
    standard = every built-in optimizer plus the installed peers (a user's optimizer runs when named)."""
    if suite == "quick":
        return list(QUICK_OPTIMIZERS)
    return [info.name for info in available_optimizers() if is_builtin(info.name)] + installed_peers()


# --------------------------------------------------------------------------------------------------
# tasks: by registry name, "module:factory", "path/file.py:factory", or a Task object
# --------------------------------------------------------------------------------------------------

_TASK_CACHE: dict[str, Task] = {}


def _load_file_module(path: Path) -> Any:
    """Import a Python file by path under a stable, path-derived module name (so classes defined in it
    pickle by reference within a process that loaded it the same way)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"{_FILE_MODULE_PREFIX}{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_reference(ref: str, kind: str) -> Any:
    """The attribute that ``"package.module:attribute"`` or ``"path/to/file.py:attribute"`` names, after
    importing its module (a file by path); ``ValueError`` naming the ``kind`` of thing for a missing
    file, module or attribute."""
    module_part, attribute = ref.rsplit(":", 1)
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part)
        if not path.exists():
            raise ValueError(f"{kind} file not found: {module_part}")
        module = _load_file_module(path)
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise ValueError(f"cannot import {kind} module {module_part!r}: {exc}") from None
    if not hasattr(module, attribute):
        raise ValueError(f"{module_part!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


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
        factory = _load_reference(ref, "task")
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
    on Python's help text: different numbers under the same task name), and which kernel tier the CPU
    steps take (the native C kernels, also hashed, and the foreach kernels agree to rounding, not bitwise).

    ``TUNEFREE_CODE_VERSION`` in the environment pins the version instead, e.g. to resume a long sweep
    across an edit known not to change results (a comment, a docstring); use it knowingly.
    """
    pinned = os.environ.get("TUNEFREE_CODE_VERSION")
    if pinned:
        return pinned
    package = Path(tunefree.__file__).parent
    files = [
        *(package / "optim").rglob("*.py"),
        *(package / "optim").rglob("*.c"),
        *(package / "bench" / "tasks").rglob("*.py"),
        package / "bench" / "runner.py",
        *_task_source_files(task),
    ]
    tier = "native" if native.library() is not None else "foreach"
    return f"{tunefree.__version__}+{_hash_files(files, extra=task.description + tier)}"


def run_code_version(task_version: str, entry: OptimizerInfo) -> str:
    """The code version of a run of ``entry`` on a task whose :func:`code_version` is ``task_version``:
    the task's version for a built-in optimizer (its sources are in it already), else the task's version
    plus a hash of the file that defines the user's factory, so editing that file re-runs its runs."""
    if entry.factory is None or is_builtin(entry.name):
        return task_version
    try:
        source = inspect.getsourcefile(entry.factory)
    except TypeError:  # a builtin or C callable: no source file
        source = None
    files = [Path(source)] if source else []
    return f"{task_version}+{entry.name}.{_hash_files(files, extra=entry.target)}"
