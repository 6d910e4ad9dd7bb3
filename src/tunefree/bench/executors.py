"""Executors: run a list of run specs with a run function and yield results as they finish.

The interface is one method, ``run_all(specs, run_fn) -> Iterator[RunResult]``; results arrive in
completion order and the caller (the sweep) stores each one as it arrives. A distributed executor (Ray)
only has to implement the same method; the runner and the ledger do not change.

``run_fn`` must be picklable for the process pool (a module-level function or a ``functools.partial``
of one).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import Any, Callable, Iterator, Protocol, Sequence

from tunefree.bench.records import RunResult, RunSpec

__all__ = ["Executor", "SerialExecutor", "LocalProcessExecutor", "RayExecutor", "make_executor", "exit_reason"]

RunFn = Callable[[RunSpec], RunResult]

#: thread-count variables pinned to 1 in workers: N workers x M threads on N cores only thrashes
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Executor(Protocol):
    """Anything that can run specs and yield their results as they finish."""

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]: ...


class SerialExecutor:
    """Runs in the calling process, one spec after the other (debugging, unpicklable tasks). Not
    contained: a run that calls ``os._exit``, crashes or hangs takes the sweep with it, and no run
    timeout applies."""

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]:
        for spec in specs:
            yield run_fn(spec)


def _init_worker() -> None:
    """Runs once in each spawned worker: one torch thread per worker."""
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


#: prctl option that makes the kernel send a signal to this process when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1
#: seconds between the watchdog's checks that the parent is still alive (where prctl is missing)
_WATCHDOG_PERIOD = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the sweep that started it dies, even by SIGKILL (no clean-up runs
    there): on Linux the kernel kills it (``PR_SET_PDEATHSIG``); elsewhere, and as a backstop, a daemon
    thread exits the process once its parent pid changes (the orphan was re-parented)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(_WATCHDOG_PERIOD)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="tunefree-parent-watchdog", daemon=True).start()


def _worker_main(conn: Connection, run_fn: RunFn, parent_pid: int) -> None:
    """Body of one worker process: announce readiness, then run each spec received until ``None`` or the
    parent's end of the pipe closes. Anything a run raises (``run_one`` itself never raises, a custom
    run function might; ``SystemExit`` too) becomes that spec's ``error`` result."""
    _die_with_parent(parent_pid)
    _init_worker()
    conn.send(_READY)
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        try:
            result = run_fn(spec)
        except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt of user code: the run's error
            result = RunResult(spec=spec, status="error", error=traceback.format_exc(limit=20))
        try:
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result: record, do not stop
            conn.send(RunResult(spec=spec, status="error",
                                error=f"executor: the result could not be sent back: {type(exc).__name__}: {exc}"))


_READY = "ready"
#: signals that mean the process crashed in native code rather than being stopped from outside
_CRASH_SIGNALS = {"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"}


def exit_reason(exitcode: int | None) -> str:
    """Why a worker process ended, in words (the ``error`` stored for the run it was running)."""
    if exitcode is None:
        return "the worker process ended without an exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name in _CRASH_SIGNALS:
            return f"the worker process crashed ({name}, e.g. a segfault in native code) during this run"
        if name == "SIGKILL":
            return "the worker process was killed (SIGKILL; out of memory?) during this run"
        return f"the worker process was killed by {name} during this run"
    return (f"the worker process exited with code {exitcode} during this run (os._exit in user code, or a "
            f"library that ended the process)")


class _Worker:
    """One spawned worker process, its end of the pipe, and the spec it is running (if any)."""

    def __init__(self, context: Any, run_fn: RunFn) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, run_fn, os.getpid()),
                                       name="tunefree-bench-worker", daemon=True)
        # Ctrl-C reaches every process of the terminal's group; a worker ignores SIGINT (inherited through
        # spawn's exec, so also while it imports) and is stopped by its parent instead: no tracebacks from
        # workers, and the parent decides what is kept
        with _sigint_ignored():
            self.process.start()
        child.close()
        self.ready = False
        self.spec: RunSpec | None = None
        self.deadline = math.inf
        self.started = time.monotonic()

    def send(self, spec: RunSpec, timeout: float | None) -> None:
        self.conn.send(spec)
        self.spec = spec
        self.deadline = math.inf if timeout is None else time.monotonic() + timeout

    def stop(self, wait: float) -> None:
        """End the process: politely when idle, at once when it is running a spec."""
        if self.process.is_alive():
            if self.spec is None and self.ready:
                try:
                    self.conn.send(None)
                except OSError:
                    pass
                self.process.join(wait)
            if self.process.is_alive():
                self.process.kill()
        self.process.join(wait)
        self.conn.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals cannot be changed (and Ctrl-C is not ours)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _single_thread_env() -> Iterator[None]:
    """Spawned children inherit the parent's environment at start time; OMP_NUM_THREADS must be set
    before torch is imported there, so set it around the pool's lifetime and restore it afterwards."""
    saved = {name: os.environ.get(name) for name in _THREAD_ENV}
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LocalProcessExecutor:
    """Runs every spec in a worker process (spawn context: fork + torch threads is unsafe), so that
    nothing a run does can take the sweep down.

    ``workers`` processes run one spec at a time each and are reused for the next spec (start-up, torch
    import and data caches are paid once per worker, not per run). A run that ends its worker
    (``os._exit``, a segfault, the OOM killer) or exceeds ``run_timeout`` seconds (the worker is
    killed) is reported as an ``error`` result naming the reason, and a fresh worker takes its place;
    ``sys.exit`` and other exceptions are caught inside the worker. Workers ignore SIGINT (the parent
    stops them when it is interrupted) and die with their parent, even a SIGKILLed one. At most
    ``workers`` specs are in flight, so a parent killed mid-sweep has little unfinished work.

    Raises ``RuntimeError`` if workers keep dying before they are ready (a broken environment rather
    than a broken run: ``start_failures`` in a row).
    """

    def __init__(self, workers: int | None = None, run_timeout: float | None = None,
                 start_timeout: float = 300.0, start_failures: int = 3) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if run_timeout is not None and not (run_timeout > 0):
            raise ValueError(f"run_timeout must be a number of seconds > 0 (or None: no limit), got {run_timeout!r}")
        self.workers = workers or os.cpu_count() or 1
        self.run_timeout = None if run_timeout is None or math.isinf(run_timeout) else float(run_timeout)
        self.start_timeout = start_timeout
        self.start_failures = start_failures

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]:
        pending = deque(specs)
        pool: list[_Worker] = []
        failed_starts = 0
        context = multiprocessing.get_context("spawn")
        try:
            while pending or any(w.spec is not None for w in pool):
                with _single_thread_env():
                    while len(pool) < min(self.workers, len(pending) + sum(w.spec is not None for w in pool)):
                        pool.append(_Worker(context, run_fn))
                for worker in pool:
                    if worker.ready and worker.spec is None and pending:
                        worker.send(pending.popleft(), self.run_timeout)
                now = time.monotonic()
                deadlines = [w.deadline if w.ready else w.started + self.start_timeout for w in pool]
                waitables: list[Any] = [w.conn for w in pool] + [w.process.sentinel for w in pool]
                first = min(deadlines)
                connection_wait(waitables, timeout=None if math.isinf(first) else max(0.0, first - now))
                for worker in list(pool):
                    result, reason = self._poll(worker)
                    if result is not None:
                        yield result
                    if reason is None:
                        continue
                    pool.remove(worker)
                    worker.stop(wait=1.0)
                    if worker.spec is not None:
                        failed_starts = 0
                        yield RunResult(spec=worker.spec, status="error", error=f"executor: {reason}")
                    else:
                        failed_starts += 1
                        if failed_starts >= self.start_failures:
                            raise RuntimeError(f"bench worker processes fail to start ({reason}); "
                                               f"try --workers 1 or check that the task module imports")
        finally:
            for worker in pool:  # a consumer that stops early (Ctrl-C, an error) leaves no run going
                worker.stop(wait=2.0)

    def _poll(self, worker: _Worker) -> tuple[RunResult | None, str | None]:
        """``(result received, reason the worker must go)`` after a wait; either may be None."""
        try:
            if worker.conn.poll():
                message = worker.conn.recv()
                if message == _READY:
                    worker.ready = True
                    return None, None
                worker.spec = None
                worker.deadline = math.inf
                return message, None
        except (EOFError, OSError):
            pass  # the process is gone: its exit code says why (below)
        if not worker.process.is_alive():
            worker.process.join(1.0)
            return None, exit_reason(worker.process.exitcode)
        if worker.spec is not None and time.monotonic() >= worker.deadline:
            return None, (f"the run exceeded the run timeout of {self.run_timeout:g} s and was stopped "
                          f"(--run-timeout; a hang, or a run that needs more time)")
        if not worker.ready and time.monotonic() >= worker.started + self.start_timeout:
            return None, f"the worker process did not start within {self.start_timeout:g} s"
        return None, None


def make_executor(workers: int | None, run_timeout: float | None = None) -> Executor:
    """The local executor: every run in a worker process (``workers`` of them, default one per core),
    also for one worker, so that a run that exits, crashes or hangs cannot stop the sweep."""
    return LocalProcessExecutor(workers, run_timeout=run_timeout)


def _ray_run(run_fn: RunFn, spec: RunSpec, driver_cwd: str) -> RunResult:
    """Body of one Ray task: one torch thread, the driver's working directory (when this machine has it,
    so relative ``file.py:factory`` task refs and modules next to the driver resolve), then the run."""
    import sys

    if os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)
        if driver_cwd not in sys.path:
            sys.path.insert(0, driver_cwd)
    import torch

    torch.set_num_threads(1)
    return run_fn(spec)


class RayExecutor:
    """Runs each spec as a Ray task (one CPU each) on a local Ray instance or an existing cluster.

    Same interface and run function as :class:`LocalProcessExecutor`: results come back to the driver in
    completion order and the driver stores them in the ledger. At most ``max_in_flight`` tasks are
    submitted at once (default: the cluster's CPU count), so a driver killed mid-sweep loses little work;
    when the driver dies Ray cancels its tasks, and re-running the sweep skips what the ledger holds.

    Args:
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts a
            local instance (or joins the one ``RAY_ADDRESS`` names). Ignored when Ray is already initialised
            in this process.
        workers: CPUs of a local instance that this executor starts (default: all).
        max_in_flight: tasks submitted at once (default: the cluster's CPUs).
        max_retries: Ray retries of a task whose worker process died; after that the spec is stored as
            an ``error`` result (application errors inside a run are recorded by the runner itself).

    On a multi-machine cluster every node needs tunefree and the task code installed (or a Ray
    ``runtime_env``); the ledger stays on the driver.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 max_in_flight: int | None = None, max_retries: int = 1) -> None:
        for name, value in (("workers", workers), ("max_in_flight", max_in_flight)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.address = address
        self.workers = workers
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries

    @staticmethod
    def _import_ray():  # noqa: ANN205 - the ray module
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(
                "the ray executor needs Ray: pip install 'tunefree[dist]' (or pip install 'ray[default]')"
            ) from exc
        return ray

    def _ensure_initialised(self, ray) -> None:  # noqa: ANN001
        if ray.is_initialized():
            return
        import logging

        kwargs: dict = {"address": self.address, "logging_level": logging.WARNING}
        if self.address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs.update(num_cpus=self.workers, include_dashboard=False)
        ray.init(**kwargs)

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]:
        if not specs:
            return
        ray = self._import_ray()
        self._ensure_initialised(ray)
        limit = self.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(_ray_run)
        fn_ref = ray.put(run_fn)  # serialised once, not per task
        cwd = os.getcwd()
        pending = list(reversed(specs))
        in_flight: dict = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    spec = pending.pop()
                    in_flight[remote.remote(fn_ref, spec, cwd)] = spec
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    spec = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # worker died (after retries) or the result did not deserialise
                        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                        result = RunResult(spec=spec, status="error",
                                           error=f"executor: ray: {type(exc).__name__}: {message}")
                    yield result
        finally:
            for ref in in_flight:  # a consumer that stops early must not leave tasks running
                ray.cancel(ref, force=True)
