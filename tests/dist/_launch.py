"""Launch code for the multi-process tests: a small pool of ``gloo`` ranks on CPU.

Starting processes and importing torch costs seconds, so the ranks are started once (a session fixture,
see ``conftest.py``) and then run many scenarios: :meth:`DistWorkers.run` sends a module-level function and
its arguments to every rank and returns the per-rank results, or raises with every failing rank's
traceback. A scenario that fails or hangs (one rank stuck in a collective the other never entered) breaks
the process group, so the ranks are then killed and started afresh for the next scenario.

Results cross process boundaries by pickling: return numpy arrays or Python values, not tensors (torch
shares tensors through file descriptors that die with the worker).
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import queue
import socket
import traceback
from typing import Any, Callable, Optional

WORLD_SIZE = 2
#: gloo collectives give up after this long, so a deadlocked scenario ends instead of hanging the suite
COLLECTIVE_TIMEOUT_S = 30.0
#: how long the parent waits for all ranks of one scenario
RESULT_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_main(rank: int, world_size: int, port: int, tasks: Any, results: Any) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # the ranks share the machine's cores
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    except BaseException:  # noqa: BLE001 - reported to the parent
        results.put((rank, "error", traceback.format_exc()))
        return
    results.put((rank, "ready", None))
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args, kwargs = task
        try:
            results.put((rank, "ok", fn(*args, **kwargs)))
        except BaseException:  # noqa: BLE001 - reported to the parent
            results.put((rank, "error", traceback.format_exc()))
    # The parent has every result already. Skip destroy_process_group and interpreter teardown: with
    # subgroups and FSDP state alive they can take seconds, and nothing is left to flush.
    os._exit(0)


class DistError(AssertionError):
    """A scenario failed (or timed out) on at least one rank."""


class DistWorkers:
    """``world_size`` spawned processes with an initialised ``gloo`` default process group."""

    def __init__(self, world_size: int = WORLD_SIZE) -> None:
        self.world_size = world_size
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = []
        self._tasks: list[Any] = []
        self._results: Optional[Any] = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        port = free_port()
        self._results = self._ctx.Queue()
        self._tasks = [self._ctx.Queue() for _ in range(self.world_size)]
        self._procs = [
            self._ctx.Process(
                target=_worker_main, args=(rank, self.world_size, port, self._tasks[rank], self._results),
                daemon=True,
            )
            for rank in range(self.world_size)
        ]
        for proc in self._procs:
            proc.start()
        self._collect("ready", RESULT_TIMEOUT_S)

    def close(self) -> None:
        for tasks, proc in zip(self._tasks, self._procs):
            if proc.is_alive():
                try:
                    tasks.put(None)
                except (OSError, ValueError):
                    pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._procs, self._tasks, self._results = [], [], None

    def __enter__(self) -> "DistWorkers":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------- running scenarios
    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = RESULT_TIMEOUT_S, **kwargs: Any) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` on every rank (``fn`` must be importable: a module-level function);
        return the results ordered by rank."""
        if not self._procs or not all(proc.is_alive() for proc in self._procs):
            self.close()
            self.start()
        for tasks in self._tasks:
            tasks.put((fn, args, kwargs))
        try:
            return self._collect("ok", timeout)
        except DistError:
            # The process group is now unusable (a rank may be stuck in a collective): start afresh next time.
            self.close()
            raise

    def _collect(self, expected: str, timeout: float) -> list[Any]:
        assert self._results is not None
        got: dict[int, Any] = {}
        errors: dict[int, str] = {}
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        while len(got) + len(errors) < self.world_size:
            remaining = (deadline - datetime.datetime.now()).total_seconds()
            try:
                rank, kind, value = self._results.get(timeout=min(max(remaining, 0.01), 0.5))
            except queue.Empty:
                missing = sorted(set(range(self.world_size)) - set(got) - set(errors))
                dead = [rank for rank in missing if not self._procs[rank].is_alive()]
                if dead:
                    errors.update({rank: f"process died (exit code {self._procs[rank].exitcode})" for rank in dead})
                elif remaining <= 0:
                    errors.update({rank: "no answer (hung, e.g. in a collective)" for rank in missing})
                    break
                continue
            if kind == expected:
                got[rank] = value
            else:
                errors[rank] = value
                # The other ranks may now wait in a collective until the gloo timeout: give them a moment
                # to report their own error, then give up on them.
                deadline = min(deadline, datetime.datetime.now() + datetime.timedelta(seconds=3))
        if errors:
            report = "\n".join(f"--- rank {rank}:\n{text}" for rank, text in sorted(errors.items()))
            raise DistError(f"distributed scenario failed on rank(s) {sorted(errors)}:\n{report}")
        return [got[rank] for rank in range(self.world_size)]
