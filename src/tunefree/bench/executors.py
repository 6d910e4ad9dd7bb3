"""Executors: run a list of run specs with a run function and yield results as they finish.

The interface is one method, ``run_all(specs, run_fn) -> Iterator[RunResult]``; results arrive in
completion order and the caller (the sweep) stores each one as it arrives. A distributed executor (Ray)
only has to implement the same method; the runner and the ledger do not change.

``run_fn`` must be picklable for the process pool (a module-level function or a ``functools.partial``
of one).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, Sequence

from tunefree.bench.records import RunResult, RunSpec

__all__ = ["Executor", "SerialExecutor", "LocalProcessExecutor", "RayExecutor", "make_executor"]

RunFn = Callable[[RunSpec], RunResult]

#: thread-count variables pinned to 1 in workers: N workers x M threads on N cores only thrashes
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Executor(Protocol):
    """Anything that can run specs and yield their results as they finish."""

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]: ...


class SerialExecutor:
    """Runs in the calling process, one spec after the other (debugging, tiny sweeps, unpicklable tasks)."""

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
    """A ``ProcessPoolExecutor`` with the spawn context (fork + torch threads is unsafe).

    At most ``workers`` specs are in flight, so a parent killed mid-sweep has little unfinished work and
    results stream back in completion order. If a worker process dies (killed, out of memory) the pool
    is rebuilt and the specs that were in flight are resubmitted; a spec in flight during
    ``max_crashes`` pool failures is reported as an ``error`` result instead of being retried forever.
    """

    def __init__(self, workers: int | None = None, max_crashes: int = 2) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self.max_crashes = max_crashes

    def run_all(self, specs: Sequence[RunSpec], run_fn: RunFn) -> Iterator[RunResult]:
        pending = list(reversed(specs))  # pop() from the end keeps the original order
        crashes: dict[str, int] = {}
        context = multiprocessing.get_context("spawn")
        while pending:
            broken = False
            with _single_thread_env(), ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context, initializer=_init_worker
            ) as pool:
                in_flight: dict[Future, RunSpec] = {}
                try:
                    while pending or in_flight:
                        while pending and len(in_flight) < self.workers:
                            spec = pending.pop()
                            in_flight[pool.submit(run_fn, spec)] = spec
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            spec = in_flight.pop(future)
                            exc = future.exception()
                            if isinstance(exc, BrokenProcessPool):
                                in_flight[future] = spec  # counted as in flight by the handler below
                                raise exc
                            if exc is not None:  # e.g. an unpicklable result: record, don't stop
                                yield RunResult(spec=spec, status="error",
                                                error=f"executor: {type(exc).__name__}: {exc}")
                            else:
                                yield future.result()
                except BrokenProcessPool:
                    broken = True
                    for spec in in_flight.values():
                        crashes[spec.run_id] = crashes.get(spec.run_id, 0) + 1
                        if crashes[spec.run_id] >= self.max_crashes:
                            yield RunResult(spec=spec, status="error",
                                            error="worker process died while running this spec")
                        else:
                            pending.append(spec)
                finally:
                    if not broken:
                        # a consumer that stops iterating early must not wait for queued runs
                        for future in in_flight:
                            future.cancel()
            if not broken:
                break


def make_executor(workers: int | None) -> Executor:
    """Serial for one worker (no spawn start-up cost), the process pool otherwise."""
    if workers == 1:
        return SerialExecutor()
    return LocalProcessExecutor(workers)


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
