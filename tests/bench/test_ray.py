"""The Ray executor: same run function and ledger as the local pool; a killed driver resumes cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from tunefree.bench.executors import RayExecutor, SerialExecutor  # noqa: E402
from tunefree.bench.ledger import Ledger  # noqa: E402
from tunefree.bench.sweep import run_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent
TASK_FILE = HERE / "conftest.py"
OPTIMIZERS = ["sgd", "momo"]
EXPONENTS = [-1.0, 0.0, 1.0]  # 2 optimizers x 3 lrs x 2 seeds = 12 runs


@pytest.fixture(scope="module")
def ray_address():
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()


def _sweep(out: Path, executor) -> None:
    run_sweep(f"{TASK_FILE}:make_tiny_task", optimizers=OPTIMIZERS, seeds=2, exponents=EXPONENTS, out=out,
              executor=executor, extend_grid=False, progress=False, report=False, log=lambda _: None)


def _stored(out: Path) -> list[tuple[str, str, float | None]]:
    with Ledger(out) as ledger:
        return [(r["run_id"], r["status"], r["final_val"]) for r in ledger.rows()]


def test_ray_sweep_stores_each_run_once_same_results_as_serial(ray_address, tmp_path):
    _sweep(tmp_path / "ray", RayExecutor())
    rows = _stored(tmp_path / "ray")
    assert len(rows) == 12 and len({r[0] for r in rows}) == 12
    assert {r[1] for r in rows} <= {"ok", "diverged"}, rows
    # the same run function: identical results to running in this process
    _sweep(tmp_path / "serial", SerialExecutor())
    assert sorted(rows) == sorted(_stored(tmp_path / "serial"))
    # a second sweep finds everything stored and runs nothing
    _sweep(tmp_path / "ray", RayExecutor())
    assert len(_stored(tmp_path / "ray")) == 12


def test_ray_task_failure_is_recorded_not_raised(ray_address, tmp_path):
    def crash(spec):  # raises inside the Ray worker
        raise RuntimeError("boom")

    from tunefree.bench.sweep import build_specs, resolve_task

    task = resolve_task(f"{TASK_FILE}:make_tiny_task")
    specs = build_specs(task, f"{TASK_FILE}:make_tiny_task", ["sgd"], [0], "quick", [0.0], None, "v")
    results = list(RayExecutor().run_all(specs, crash))
    assert len(results) == 1 and results[0].status == "error" and "boom" in results[0].error


@pytest.mark.slow
def test_killed_ray_driver_resumes_every_run_once(ray_address, tmp_path):
    # a task file of its own: ~1.5 s per run, so the driver is surely killed mid-sweep
    task_file = tmp_path / "slow_task.py"
    task_file.write_text(textwrap.dedent(f"""
        import importlib.util, sys
        _spec = importlib.util.spec_from_file_location("tiny_task_conftest", {str(TASK_FILE)!r})
        _mod = importlib.util.module_from_spec(_spec)
        sys.modules[_spec.name] = _mod
        _spec.loader.exec_module(_mod)

        def make():
            return _mod.make_tiny_task(steps=30, sleep=0.05, name="tiny_ray_slow")
    """))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tunefree.cli", "bench", "--task", f"{task_file}:make",
           "--optimizers", *OPTIMIZERS, "--seeds", "2", "--grid-points", *map(str, EXPONENTS),
           "--out", str(out), "--executor", "ray", "--address", ray_address,
           "--no-extend", "--no-report", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 90
    while Ledger.stored_runs(out) < 2:
        assert driver.poll() is None, driver.stdout.read()
        assert time.monotonic() < deadline, "no results stored in time"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stdout.close()
    stored = Ledger.stored_runs(out)
    assert 2 <= stored < 12, f"the kill did not land mid-sweep ({stored} stored)"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"done: {12 - stored} runs executed" in rerun.stdout, rerun.stdout
    assert f"{stored} already stored" in rerun.stdout, rerun.stdout
    rows = _stored(out)
    assert len(rows) == 12 and len({r[0] for r in rows}) == 12
    assert {status for _, status, _ in rows} <= {"ok", "diverged"}, rows  # no run lost to the kill
