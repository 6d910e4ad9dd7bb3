"""Faults injected into sweeps and survived: code versions never mixed in a report, honest run outcomes,
runs contained in worker processes, clean stops, refused second sweeps and one-line errors for folders
and ledgers that cannot be used (docs/benchmark.md, "Run outcomes" and "Faults and errors")."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TASK_FILE

from tunefree.bench import DivergenceRule, Ledger, LedgerError, make_task, run_one, run_sweep, summarise
from tunefree.bench.executors import exit_reason
from tunefree.bench.records import RunSpec
from tunefree.cli import main

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "TUNEFREE_CODE_VERSION": "test-robustness"}


def _quiet(_: str) -> None:
    pass


# ---- user task files ---------------------------------------------------------------------------------

TASK_SOURCE = '''
import os, sys, time
import torch
from tunefree.bench import make_task

WIDTH = {width}
X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
Y = X.sum(1, keepdim=True)

def model():
    return torch.nn.Sequential(torch.nn.Linear(2, WIDTH), torch.nn.Linear(WIDTH, 1))

def batches(seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, 64, (8,), generator=g)
        yield X[idx], Y[idx]

def ok_loss(m, batch):
    return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

def exit_loss(m, batch):
    sys.exit(3)

def os_exit_loss(m, batch):
    os._exit(7)

def sleep_loss(m, batch):
    time.sleep(120)
    return ok_loss(m, batch)

def evaluate(m, split):
    return {{"loss": float(torch.nn.functional.mse_loss(m(X), Y))}}

def _task(name, loss):
    return make_task(name, model=model, batches=batches, loss=loss, evaluate=evaluate, steps=8, quick_steps=8)

def ok_task(): return _task("ok", ok_loss)
def exit_task(): return _task("exits", exit_loss)
def os_exit_task(): return _task("os_exits", os_exit_loss)
def sleep_task(): return _task("sleeps", sleep_loss)
'''


def _task_file(folder: Path, width: int = 4) -> Path:
    path = folder / "user_task.py"
    path.write_text(TASK_SOURCE.format(width=width))
    return path


# ---- item 2: no silent mixing of code versions -------------------------------------------------------

def test_code_version_covers_the_native_kernel_source_and_the_kernel_tier(monkeypatch) -> None:
    from tunefree.bench import resolve
    from tunefree.bench.tasks import get_task

    monkeypatch.delenv("TUNEFREE_CODE_VERSION", raising=False)
    task = get_task("lsq_synth")
    hashed: list[Path] = []
    real_hash = resolve._hash_files

    def recording_hash(files, extra=""):
        files = list(files)
        hashed.extend(files)
        return real_hash(files, extra)

    monkeypatch.setattr(resolve, "_hash_files", recording_hash)
    monkeypatch.setattr(resolve.native, "library", lambda: object())
    with_native = resolve.code_version(task)
    assert "native_kernels.c" in {path.name for path in hashed}
    monkeypatch.setattr(resolve.native, "library", lambda: None)  # no compiler: the foreach kernels run
    assert resolve.code_version(task) != with_native


def test_changed_task_file_rerun_scores_only_the_newest_version(tmp_path: Path) -> None:
    path = _task_file(tmp_path, width=4)
    out = tmp_path / "out"
    kw = dict(seeds=1, out=out, workers=1, exponents=[-1.0, 0.0], progress=False, report=False, log=_quiet)
    env = os.environ.pop("TUNEFREE_CODE_VERSION", None)  # the version must follow the file
    try:
        run_sweep(f"{path}:ok_task", optimizers=["sgd", "adam", "momo"], **kw)
        path.write_text(TASK_SOURCE.format(width=16))  # the user changes the model
        run_sweep(f"{path}:ok_task", optimizers=["momo"], **kw)
    finally:
        if env is not None:
            os.environ["TUNEFREE_CODE_VERSION"] = env
    with Ledger(out) as ledger:
        rows = ledger.rows()
    assert len({r["code_version"] for r in rows}) == 2 and len(rows) == 8
    (ts,) = summarise(out)
    newest = [r for r in rows if r["code_version"] == ts.code_version]
    assert {r["optimizer"] for r in newest} == {"momo"}
    # momo is not scored against the old model's baselines, and adam/sgd's old runs are not scored at all
    assert [o.label for o in ts.optimizers] == ["momo"]
    assert ts.target_source.startswith("best of all optimizers")
    assert sorted(r["optimizer"] for r in ts.stale) == ["adam", "adam", "momo", "momo", "sgd", "sgd"]
    # m_init averages the newest version's runs only
    assert ts.m_init == pytest.approx(sum(r["init_val"] for r in newest) / len(newest))
    from tunefree.bench.report import write_report

    write_report(out)
    text = (out / "report.md").read_text()
    assert "6 stale run(s) not scored" in text and "adam (2), momo (2), sgd (2)" in text
    assert "Re-running the sweep command with these optimizers re-measures them" in text


# ---- item 3: honest outcomes -------------------------------------------------------------------------

def _spec(task, optimizer: str = "adam", lr: float = 1e-3, seed: int = 0, steps: int | None = None) -> RunSpec:
    budget = task.budgets["standard"]
    return RunSpec(task=task.name, suite="standard", steps=steps or budget.steps, eval_every=budget.eval_every,
                   optimizer=optimizer, lr=lr, seed=seed, metric=task.metric)


def _linear_task(evaluate=None, batch_size: int = 8, divergence: DivergenceRule | None = None, steps: int = 40):
    w_star = torch.tensor([[1.0, -2.0, 0.5]])
    x_val = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))

    def model() -> torch.nn.Module:
        net = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            net.weight.copy_(w_star)  # starts at the optimum: only the label noise is left
        return net

    def batches(seed: int):
        g = torch.Generator().manual_seed(seed)
        while True:
            x = torch.randn(batch_size, 3, generator=g)
            yield x, x @ w_star.T + torch.randn(batch_size, 1, generator=g)

    def loss(m, batch):
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    def mse(m, split):
        return {"loss": float(torch.nn.functional.mse_loss(m(x_val), x_val @ w_star.T)) + 1.0}

    return make_task("linear", model=model, batches=batches, loss=loss, evaluate=evaluate or mse,
                     steps=steps, divergence=divergence)


def test_missing_metric_is_an_error_naming_the_metric_and_the_keys() -> None:
    task = _linear_task(evaluate=lambda m, split: {"acc": 0.5})  # metric defaults to "loss"
    result = run_one(_spec(task), task)
    assert result.status == "error"
    assert "'loss'" in result.error and "acc" in result.error and "Traceback" not in result.error


def test_noisy_batch_size_one_run_near_its_optimum_is_not_diverged() -> None:
    task = _linear_task(batch_size=1, steps=300)
    statuses = [run_one(_spec(task, "adam", 1e-5, seed), task).status for seed in range(6)]
    assert statuses == ["ok"] * 6
    # a run that really blows up is still caught, by the smoothed loss or by a non-finite value
    assert run_one(_spec(task, "sgd", 10.0), task).status == "diverged"


def test_divergence_rule_is_set_per_task() -> None:
    rule = DivergenceRule(factor=1.5, smoothing=0.0, window=1)  # any batch 1.5x the first: diverged
    task = _linear_task(batch_size=1, steps=300, divergence=rule)
    assert run_one(_spec(task, "adam", 1e-5), task).status == "diverged"
    monitor = DivergenceRule(factor=10.0, smoothing=0.5, window=2).monitor()
    assert [monitor.update(v) for v in (1.0, 1.0, 2.0, 40.0)] == [False, False, False, True]
    assert DivergenceRule(factor=math.inf).monitor().update(math.nan) is True
    for bad in (dict(factor=1.0), dict(factor=math.nan), dict(smoothing=1.0), dict(window=0)):
        with pytest.raises(ValueError, match="DivergenceRule"):
            DivergenceRule(**bad)


@pytest.mark.parametrize("value", ["nan", "inf", "-11", "400", "1e309", "x"])
def test_bad_grid_points_are_one_line_usage_errors(value: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["bench", "--task", f"{TASK_FILE}:make_tiny_task", "--optimizers", "sgd", "--grid-points", "0",
               value, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--grid-points" in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--seeds", "100000"], ["--workers", "100000"], ["--run-timeout", "0"],
                                  ["--run-timeout", "nan"], ["--seeds-near-best", "inf"]])
def test_numeric_arguments_are_range_checked(argv: list[str], tmp_path: Path, capsys) -> None:
    rc = main(["bench", "--task", f"{TASK_FILE}:make_tiny_task", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and argv[0] in err


def test_api_refuses_non_finite_exponents(tmp_path: Path, tiny_task) -> None:
    for bad in ([math.nan], [math.inf], [400.0], []):
        with pytest.raises(ValueError, match="exponents"):
            run_sweep(tiny_task, optimizers=["sgd"], exponents=bad, out=tmp_path / "o", progress=False,
                      report=False, log=_quiet)
    assert not (tmp_path / "o").exists()


# ---- item 4: contained runs --------------------------------------------------------------------------

def test_exit_os_exit_and_hang_are_stored_as_errors_under_one_worker(tmp_path: Path) -> None:
    path = _task_file(tmp_path)
    out = tmp_path / "out"
    tasks = [arg for name in ("exit_task", "os_exit_task", "sleep_task", "ok_task")
             for arg in ("--task", f"{path}:{name}")]
    proc = subprocess.run([sys.executable, "-m", "tunefree.cli", "bench", *tasks, "--optimizers", "sgd",
                           "--grid-points", "0", "--workers", "1", "--run-timeout", "3", "--out", str(out),
                           "--no-report", "--no-progress"], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with Ledger(out) as ledger:
        rows = {r["task"]: r for r in ledger.rows()}
    assert set(rows) == {"exits", "os_exits", "sleeps", "ok"}
    assert rows["ok"]["status"] == "ok"
    assert rows["exits"]["status"] == "error" and "SystemExit: 3" in rows["exits"]["error"]
    assert rows["os_exits"]["status"] == "error" and "exited with code 7" in rows["os_exits"]["error"]
    assert rows["sleeps"]["status"] == "error" and "run timeout of 3 s" in rows["sleeps"]["error"]


def test_exit_reasons_name_the_signal() -> None:
    assert "SIGSEGV" in exit_reason(-signal.SIGSEGV) and "segfault" in exit_reason(-signal.SIGSEGV)
    assert "SIGKILL" in exit_reason(-signal.SIGKILL)
    assert "code 7" in exit_reason(7)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left for a reaper


def _assert_gone(pids: list[int], within: float = 10.0) -> None:
    """Every process of ``pids`` exits within ``within`` seconds (multiprocessing's resource tracker
    ends once the last holder of its pipe is gone, a moment after the parent)."""
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


def _slow_sweep(out: Path, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "tunefree.cli", "bench", "--task", f"{TASK_FILE}:make_slower_task",
            "--optimizers", "sgd", "adam", "--seeds", "3", "--workers", str(workers), "--out", str(out),
            "--no-report", "--no-progress"]


def _wait_for_runs(proc: subprocess.Popen, out: Path, runs: int) -> None:
    deadline = time.monotonic() + 90
    while Ledger.stored_runs(out) < runs:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.05)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@needs_proc
def test_sigint_stops_in_seconds_with_one_line_and_a_second_sweep_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # its own group: the SIGINT below is a terminal's Ctrl-C. A shell's background job (how CI may start
    # the tests) ignores SIGINT and children inherit that, so give the sweep a terminal's default.
    proc = subprocess.Popen(_slow_sweep(out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_runs(proc, out, 2)
        second = subprocess.run(_slow_sweep(out, workers=1), env=ENV, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"in use by another sweep (pid {proc.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        workers = _children(proc.pid)
        assert workers, "the sweep runs its runs in worker processes"
        os.killpg(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - stopped < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    stored = Ledger.stored_runs(out)
    assert f"interrupted; {stored} runs stored in" in err and "run the same command again to resume" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    _assert_gone(workers)


@needs_proc
def test_workers_exit_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(_slow_sweep(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for_runs(proc, out, 1)
        children = _children(proc.pid)  # workers and multiprocessing's resource tracker
        assert children
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: nobody cleans up for it
        proc.wait()
        _assert_gone(children)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- item 5: unusable folders and ledgers ------------------------------------------------------------

def _fill_ledger(out: Path, tiny_task) -> None:
    from tunefree.bench.runner import run_one as run

    with Ledger(out) as ledger:
        for seed in range(40):  # several pages of rows
            ledger.store(run(_spec(tiny_task, "sgd", 0.01, seed, steps=5), tiny_task))


def test_garbage_ledger_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database at all\n" * 300)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="not a readable tunefree ledger.*rename it"):
        Ledger(tmp_path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite"]


def test_ledger_with_a_damaged_page_is_refused_and_left_untouched(tmp_path: Path, tiny_task, capsys) -> None:
    out = tmp_path / "out"
    _fill_ledger(out, tiny_task)
    path = out / "ledger.sqlite"
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page: root * page] = bytes(page)  # zero the runs table's root page
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="damaged"):
        Ledger(out)
    rc = main(["bench", "--task", f"{TASK_FILE}:make_tiny_task", "--optimizers", "sgd", "--grid-points", "0",
               "--workers", "1", "--out", str(out), "--no-report", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "damaged" in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before and not (out / "ledger.sqlite-wal").exists()


def test_out_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results"
    target.write_text("my notes\n")
    rc = main(["bench", "--task", f"{TASK_FILE}:make_tiny_task", "--optimizers", "sgd", "--grid-points", "0",
               "--out", str(target), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "is a file, not a folder" in err and str(target) in err
    assert len(err.strip().splitlines()) == 1 and target.read_text() == "my notes\n"
    rc = main(["report", str(target)])
    assert rc != 0 and "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        rc = main(["bench", "--task", f"{TASK_FILE}:make_tiny_task", "--optimizers", "sgd", "--grid-points",
                   "0", "--out", str(folder), "--no-progress"])
    finally:
        folder.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 1 and str(folder) in err and len(err.strip().splitlines()) == 1


def test_disk_full_while_storing_names_the_ledger_and_the_remedy(tmp_path: Path, tiny_task) -> None:
    from tunefree.bench.ledger import _write_error

    error = _write_error(tmp_path / "ledger.sqlite", sqlite3.OperationalError("database or disk is full"))
    assert str(tmp_path / "ledger.sqlite") in str(error) and "free disk space" in str(error)
    assert "resume" in str(error)
    assert textwrap.dedent(str(error)).count("\n") == 0
