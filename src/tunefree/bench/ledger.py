"""The results ledger: one SQLite file per output folder, one row per run, keyed by the run's content hash.

Only the sweep's parent process writes (workers return results; the parent stores each as it arrives,
one transaction per run), so there is never more than one writer. WAL mode keeps readers (a report
built while a sweep runs) from blocking the writer. Because a row is committed in a single transaction
and keyed by ``run_id`` (``INSERT OR IGNORE``), a sweep killed at any point leaves only complete rows,
and re-running it stores every remaining run exactly once.

Schema changes are additive: a ledger written before a column existed is migrated in place when it is
opened (``ALTER TABLE ... ADD COLUMN`` with the value every old row implicitly had, e.g. ``schedule =
'constant'``: runs before learning-rate schedules were all constant-lr). Old code can still write to a
migrated ledger, since it names its columns and the new ones have defaults.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from tunefree.bench.records import RunResult

__all__ = ["Ledger", "LEDGER_NAME", "LOCK_NAME", "CSV_COLUMNS", "LedgerError", "SweepLock"]

LEDGER_NAME = "ledger.sqlite"
#: the lock file a sweep holds in its output folder (see SweepLock)
LOCK_NAME = ".sweep.lock"


class LedgerError(RuntimeError):
    """The results folder or its ledger cannot be used; the message names the path and the remedy (the
    CLI prints it as one line). Raised before anything is written to a damaged or foreign file."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    suite TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    lr REAL NOT NULL,
    lr_exp REAL NOT NULL,
    default_lr REAL NOT NULL,
    seed INTEGER NOT NULL,
    kwargs TEXT NOT NULL,
    schedule TEXT NOT NULL DEFAULT 'constant',
    steps INTEGER NOT NULL,
    eval_every INTEGER NOT NULL,
    code_version TEXT NOT NULL,
    baseline INTEGER NOT NULL,
    metric TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    log_scale INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    diverged_step INTEGER,
    steps_done INTEGER NOT NULL,
    grad_evals INTEGER NOT NULL,
    wall_s REAL NOT NULL,
    cpu_s REAL NOT NULL,
    init_val REAL,
    final_val REAL,
    final_test REAL,
    final_val_all TEXT,
    final_test_all TEXT,
    losses TEXT NOT NULL,
    evals TEXT NOT NULL,
    stats TEXT NOT NULL,
    alerts TEXT,
    spec TEXT NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_task_opt ON runs (task, suite, optimizer);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

#: columns added after the first schema: (name, declaration used by ALTER TABLE on an older ledger)
_ADDED_COLUMNS = (
    ("schedule", "TEXT NOT NULL DEFAULT 'constant'"),
    # the run's watcher alerts as JSON [[step, code, message], ...]; NULL: recorded before runs were watched
    ("alerts", "TEXT"),
)

#: scalar columns exported to CSV (the traces stay in the database)
CSV_COLUMNS = (
    "run_id", "task", "suite", "optimizer", "lr", "lr_exp", "default_lr", "seed", "kwargs", "schedule", "steps",
    "eval_every", "code_version", "baseline", "metric", "higher_is_better", "log_scale", "status",
    "diverged_step", "steps_done", "grad_evals", "wall_s", "cpu_s", "init_val", "final_val",
    "final_test", "final_val_all", "final_test_all", "alerts", "finished_at", "error",
)


def _json_float(value: float | None) -> float | None:
    """SQLite REAL cannot hold NaN (it becomes NULL); keep non-finite values as NULL explicitly."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class Ledger:
    """SQLite store of run results in ``folder / ledger.sqlite``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LEDGER_NAME
        _make_folder(self.folder)
        if self.path.exists() and not self.path.is_file():
            raise LedgerError(f"{self.path} is not a file; move it away or choose another --out")
        try:
            self._conn = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open {self.path}: {exc}; check the folder's permissions or choose "
                              f"another --out") from None
        try:
            # the integrity check comes first: nothing is written into a damaged or foreign file
            self._check_integrity()
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose the tail)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.commit()
            self._migrate()
        except LedgerError:
            self._conn.close()
            raise
        except sqlite3.Error as exc:
            self._conn.close()
            raise _write_error(self.path, exc) from None

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` of an existing ledger; :class:`LedgerError` with the remedy if it fails."""
        remedy = (f"nothing was written to it. Move it away (e.g. rename it to {LEDGER_NAME}.damaged) and "
                  f"re-run to start a new ledger in {self.folder}, or restore a copy")
        try:
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:  # "file is not a database" and the like
            raise LedgerError(f"{self.path} is not a readable tunefree ledger (SQLite: {exc}); {remedy}") from None
        if problems != ["ok"]:
            raise LedgerError(f"{self.path} is damaged (SQLite quick_check: {problems[0]}); {remedy}")

    def _migrate(self) -> None:
        """Add the columns a ledger from an older schema lacks (in place, one transaction)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        missing = [(name, decl) for name, decl in _ADDED_COLUMNS if name not in have]
        for name, decl in missing:
            try:
                with self._conn:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as exc:  # another process migrated it in between
                if "duplicate column" not in str(exc):
                    raise

    # ---- writing -------------------------------------------------------------------------------

    def store(self, result: RunResult, replace: bool = False) -> bool:
        """Store one result in its own transaction. Returns False if the run was already stored (and
        ``replace`` is False): a run is never stored twice."""
        spec = result.spec
        init_val = result.evals[0][1].get(spec.metric) if result.evals else None
        final_val = (result.final_val or {}).get(spec.metric) if result.status == "ok" else None
        final_test = (result.final_test or {}).get(spec.metric) if result.status == "ok" else None
        row = {
            "run_id": spec.run_id, "task": spec.task, "suite": spec.suite, "optimizer": spec.optimizer,
            "lr": spec.lr, "lr_exp": spec.lr_exp, "default_lr": spec.default_lr, "seed": spec.seed,
            "kwargs": spec.kwargs, "schedule": spec.schedule, "steps": spec.steps, "eval_every": spec.eval_every,
            "code_version": spec.code_version, "baseline": int(spec.baseline), "metric": spec.metric,
            "higher_is_better": int(spec.higher_is_better), "log_scale": int(spec.log_scale),
            "status": result.status, "error": result.error, "diverged_step": result.diverged_step,
            "steps_done": result.steps_done, "grad_evals": result.grad_evals,
            "wall_s": result.wall_s, "cpu_s": result.cpu_s,
            "init_val": _json_float(init_val), "final_val": _json_float(final_val),
            "final_test": _json_float(final_test),
            "final_val_all": json.dumps(result.final_val), "final_test_all": json.dumps(result.final_test),
            "losses": json.dumps([result.loss_steps, result.losses]),
            "evals": json.dumps(result.evals),
            "stats": json.dumps({k: [list(s), list(v)] for k, (s, v) in result.stats.items()}),
            "alerts": None if result.alerts is None else json.dumps([list(a) for a in result.alerts]),
            "spec": json.dumps(spec.to_dict()),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        try:
            with self._conn:  # one transaction per run: committed whole or not at all
                cursor = self._conn.execute(f"{verb} INTO runs ({columns}) VALUES ({marks})", row)
        except sqlite3.Error as exc:
            raise _write_error(self.path, exc) from None
        return cursor.rowcount > 0

    def set_meta(self, key: str, value: Any) -> None:
        try:
            with self._conn:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        except sqlite3.Error as exc:
            raise _write_error(self.path, exc) from None

    # ---- reading -------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def finished_ids(self, include_errors: bool = True) -> set[str]:
        """Run ids already stored (``error`` rows excluded when they should be retried)."""
        query = "SELECT run_id FROM runs" + ("" if include_errors else " WHERE status != 'error'")
        return {r[0] for r in self._conn.execute(query)}

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        """All rows as dicts with the JSON columns decoded; ``where`` filters on equal column values."""
        query = "SELECT * FROM runs"
        if where:
            query += " WHERE " + " AND ".join(f"{k} = :{k}" for k in where)
        query += " ORDER BY task, suite, optimizer, schedule, lr_exp, seed"
        cursor = self._conn.execute(query, where)
        names = [d[0] for d in cursor.description]
        out = []
        for values in cursor:
            row = dict(zip(names, values))
            for key in ("final_val_all", "final_test_all", "losses", "evals", "stats", "spec", "alerts"):
                row[key] = json.loads(row[key]) if row[key] is not None else None
            for key in ("baseline", "higher_is_better", "log_scale"):
                row[key] = bool(row[key])
            out.append(row)
        return out

    def iter_scalar_rows(self) -> Iterator[dict[str, Any]]:
        cursor = self._conn.execute(
            f"SELECT {', '.join(CSV_COLUMNS)} FROM runs ORDER BY task, suite, optimizer, schedule, lr_exp, seed"
        )
        for values in cursor:
            yield dict(zip(CSV_COLUMNS, values))

    def export_csv(self, path: str | Path | None = None) -> Path:
        """Write every run's scalar columns to CSV (default ``runs.csv`` beside the ledger)."""
        target = Path(path) if path is not None else self.folder / "runs.csv"
        with open(target, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in self.iter_scalar_rows():
                writer.writerow(row)
        return target

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / LEDGER_NAME).exists()

    @staticmethod
    def stored_runs(folder: str | Path) -> int:
        """Runs stored so far, read without taking a writer's lock (safe while a sweep is writing)."""
        path = Path(folder) / LEDGER_NAME
        if not path.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def _make_folder(folder: Path) -> None:
    """Create the results folder; :class:`LedgerError` naming it when it is a file or not writable."""
    if folder.exists() and not folder.is_dir():
        raise LedgerError(f"{folder} is a file, not a folder; give --out a folder (a new one, or one holding "
                          f"a {LEDGER_NAME})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise LedgerError(f"cannot create {folder}: a parent of it is a file; choose another --out") from None
    except OSError as exc:
        raise LedgerError(f"cannot create {folder}: {exc.strerror}; choose another --out or fix the "
                          f"permissions") from None


def _write_error(path: Path, exc: sqlite3.Error) -> LedgerError:
    """The one-line error of a failed ledger operation, with the remedy for the usual causes."""
    text = str(exc)
    if "full" in text:
        remedy = "free disk space, then run the same command again to resume (stored runs are kept)"
    elif "readonly" in text or "unable to open" in text or "permission" in text.lower():
        remedy = "make the folder and the ledger writable, or choose another --out"
    elif "locked" in text or "busy" in text:
        remedy = "another process holds the ledger; wait for it to finish or choose another --out"
    else:
        remedy = "check the file, or move it away and re-run to start a new ledger"
    return LedgerError(f"cannot write {path} (SQLite: {text}); {remedy}")


class SweepLock:
    """The exclusive claim of one sweep on a results folder: an ``fcntl`` lock on ``folder/.sweep.lock``
    holding the owner's pid. A second sweep into the same folder is refused with a message naming that
    pid (each run is still executed once; reports and exports only read and need no lock). The OS
    drops the lock when the owner ends, however it ends (SIGKILL included), so a stale lock never blocks
    a resume. Where ``fcntl`` is missing (Windows) there is no lock.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:
            return
        _make_folder(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(f"cannot create {self.path}: {exc.strerror}; make {self.folder} writable or "
                              f"choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LedgerError(f"{self.folder} is in use by another sweep (pid {owner}); wait for it to finish "
                              f"(then run this command again: it resumes), or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> "SweepLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
