"""The ``tunefree`` command: ``bench``, ``report``, ``export``, ``list`` and ``plot-stats``.

Usage errors (unknown task or optimizer, bad values) exit with code 2 and a one-line message; a sweep
itself never stops on a failed run (those are recorded in the ledger).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from typing import Any, Sequence

from tunefree.bench.records import MAX_GRID_DECADES, SUITES  # the leaf record module: no torch, cheap

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """A bad command line: reported in one line with exit code 2."""


#: upper bounds of the integer arguments: far beyond any real sweep, low enough to refuse a typo
MAX_SEEDS = 1000
MAX_WORKERS = 1024


def _int_in(low: int, high: int):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not (low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {value}")
        return value
    return parse


def _number_in(low: float, high: float, what: str, low_open: bool = False):  # noqa: ANN202 - an argparse type
    """A float in [low, high] (``(low, high]`` with ``low_open``); NaN is refused, Inf only if ``high`` is."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        inside = (low < value if low_open else low <= value) and value <= high  # False for NaN
        if not inside:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"expected {what} in {bracket}{low:g}, {high:g}], got {text}")
        return value
    return parse


_positive_int = _int_in(1, 10**9)


class Interrupted(Exception):
    """Ctrl-C during a sweep: reported in one line (runs stored, how to resume), exit code 130."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # one line, no usage dump: the message names the bad value and what is allowed
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunefree", description="Learning-rate robustness benchmarks for tunefree optimizers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bench = sub.add_parser("bench", help="run a sweep (resumes if OUT already has results), then write the report")
    bench.add_argument("--suite", choices=SUITES, default="quick")
    bench.add_argument("--tasks", nargs="+", metavar="NAME", help="built-in tasks (default: all of the suite)")
    bench.add_argument("--task", action="append", metavar="MODULE:FACTORY", default=[],
                       help="your own task: importable module (or file.py) and a factory returning a Task")
    bench.add_argument("--optimizers", nargs="+", metavar="NAME", help="default: the suite's optimizers")
    bench.add_argument("--optimizer", action="append", metavar="MODULE:FACTORY", default=[],
                       help="your own optimizer, beside --optimizers (or the suite's): an importable module (or "
                            "file.py) that registers FACTORY with tunefree.register_optimizer")
    bench.add_argument("--set", action="append", metavar="OPT.KEY=VALUE", default=[], dest="set_options",
                       help="fix an option of an optimizer, e.g. agd.delta=1e-8 (a Python literal; repeatable)")
    bench.add_argument("--vary", action="append", metavar="OPT.KEY=V1,V2,...", default=[],
                       help="sweep an option with the lr grid, e.g. agd.delta=1e-14,1e-8 (one option at a time "
                            "beside the default setting; repeatable)")
    bench.add_argument("--seeds", type=_int_in(1, MAX_SEEDS),
                       help="number of paired seeds (default 1 quick, 3 standard)")
    bench.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=None,
                       help="worker processes (default: CPU count); every run is in a worker, also with 1")
    bench.add_argument("--run-timeout", type=_number_in(0, math.inf, "seconds", low_open=True), default=None,
                       metavar="SECONDS", help="stop a run after this long and store it as an error "
                                               "(default 600 quick, 3600 standard; inf: no limit)")
    bench.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local process pool (default) or Ray (pip install 'tunefree[dist]')")
    bench.add_argument("--address", help="Ray cluster address for --executor ray (default: start a local instance)")
    bench.add_argument("--out", default="tunefree-results", help="output folder (ledger, report)")
    bench.add_argument("--grid-points", nargs="+", metavar="K",
                       type=_number_in(-MAX_GRID_DECADES, MAX_GRID_DECADES, "an lr exponent"),
                       help="lr exponents k (lr = default * 10**k) instead of the suite's grid")
    bench.add_argument("--no-extend", action="store_true", help="do not extend grids whose best point is on an edge")
    bench.add_argument("--seeds-near-best", type=_number_in(0, 2 * MAX_GRID_DECADES, "decades"), default=None,
                       metavar="DECADES",
                       help="run the full grid with the first seed only and the further seeds only within "
                            "DECADES of each method's best point (e.g. 0.5)")
    bench.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                       help="learning-rate schedule of every method: constant (default, the primary setting) or "
                            "cosine (linear warm-up, then cosine decay to 0; the report labels these runs "
                            "optimizer+cosine and scores them against the baselines of the same schedule)")
    bench.add_argument("--warmup", type=float, default=None, metavar="FRACTION",  # range checked below
                       help="warm-up of --schedule cosine as a fraction of the steps, in [0, 1) (default 0.05)")
    bench.add_argument("--retry-errors", action="store_true", help="re-run runs stored with status 'error'")
    bench.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")

    report = sub.add_parser("report", help="write report.md, report.html and runs.csv from a results folder")
    report.add_argument("dir")
    report.add_argument("--readme", action="store_true",
                        help="print the README's results table (Markdown) for DIR instead of writing the report")
    export = sub.add_parser("export", help="export all runs of a results folder to CSV")
    export.add_argument("dir")
    export.add_argument("--csv", help="output path (default DIR/runs.csv)")
    sub.add_parser("list", help="list tasks (suites, availability) and optimizers (default lr, what lr means)")
    plot_stats = sub.add_parser("plot-stats", help="draw a tunefree.watch CSV (adaptive quantities, alerts) as a PNG")
    plot_stats.add_argument("csv", metavar="FILE.csv")
    plot_stats.add_argument("--out", metavar="PNG", help="output path (default: FILE.png)")
    return parser


def _builtin_tasks() -> tuple[object | None, str | None]:
    """The tasks module, or the reason it cannot be imported (it is developed separately)."""
    try:
        import tunefree.bench.tasks as tasks
        tasks.get_task  # noqa: B018 - the contract this CLI relies on
        tasks.available_tasks  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return tasks, None


def _suite_tasks(tasks_module: object, suite: str | None) -> tuple[list[object], dict[str, str]]:
    """Tasks of ``suite`` (all for None) and, by name, those whose module fails to import.

    Tasks are built one by one so that a single broken task module does not hide the others."""
    names = getattr(tasks_module, "TASK_NAMES", None)
    if names is None:
        return list(tasks_module.available_tasks(suite)), {}  # type: ignore[attr-defined]
    found, broken = [], {}
    for name in names:
        try:
            task = tasks_module.get_task(name)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - report it, keep listing the others
            broken[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        if suite is None or suite in task.budgets:
            found.append(task)
    return found, broken


def _cmd_list() -> int:
    from tunefree.bench.tasks.base import TaskUnavailable
    from tunefree.optim.registry import available_optimizers

    tasks, problem = _builtin_tasks()
    print("Tasks:")
    if tasks is None:
        print(f"  (built-in tasks not available: {problem})")
    else:
        found, broken = _suite_tasks(tasks, None)
        for task in found:
            suites = [s for s in SUITES if s in task.budgets]  # type: ignore[attr-defined]
            try:
                task.check_available()  # type: ignore[attr-defined]
                status = "available"
            except TaskUnavailable as exc:
                status = f"unavailable: {exc}"
            print(f"  {task.name:<20} suites: {','.join(suites):<16} {status}")  # type: ignore[attr-defined]
            print(f"  {'':<20} {task.description}")  # type: ignore[attr-defined]
        for name, problem in broken.items():
            print(f"  {name:<20} cannot be loaded: {problem}")
    print("\nOptimizers (lr grid = default x 10^k):")
    infos = available_optimizers(include_peers=True)
    for entry in infos:
        problem = entry.import_error()
        own = "tunefree" if entry.factory is None else "user"
        kind = "baseline" if entry.baseline else ("peer" if entry.peer else own)
        state = "" if problem is None else f"  [not importable: {problem}]"
        print(f"  {entry.name:<20} {kind:<8} default lr {entry.default_lr:<8g} lr = {entry.lr_meaning}{state}")
    return 0


def _literal(node: ast.expr) -> Any:
    """A Python literal; a bare word is a string (``base=adam``) and ``inf``/``-inf`` are floats."""
    if isinstance(node, ast.Name):
        return math.inf if node.id == "inf" else node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Name):
        return -math.inf if node.operand.id == "inf" else ast.literal_eval(node)
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    return ast.literal_eval(node)


def _parse_options(items: Sequence[str], flag: str, many: bool) -> dict[str, dict[str, Any]]:
    """``{optimizer: {key: value}}`` (``many``: ``{key: [values]}``) of ``OPT.KEY=...`` items."""
    syntax = f"{flag} expects OPT.KEY={'V1,V2,...' if many else 'VALUE'}"
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, dot, key = target.strip().partition(".")
        if not (sep and dot and name and key.isidentifier() and text.strip()):
            raise UsageError(f"{syntax}, got {item!r}")
        try:
            tree = ast.parse(f"[{text}]" if many else text.strip(), mode="eval").body
            value = [_literal(e) for e in tree.elts] if many else _literal(tree)  # type: ignore[attr-defined]
        except (SyntaxError, ValueError) as exc:
            raise UsageError(f"{flag} {item}: {text!r} is not a Python literal ({type(exc).__name__})") from None
        if key in out.setdefault(name, {}):
            raise UsageError(f"{flag} {name}.{key} is given twice")
        out[name][key] = value
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    from tunefree.bench.resolve import resolve_optimizer, resolve_task
    from tunefree.bench.sweep import run_sweep

    for name in args.optimizers or []:
        try:
            resolve_optimizer(name)
        except ValueError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
    optimizers = args.optimizers
    if args.optimizer:
        from tunefree.bench.resolve import default_optimizers

        mine = []
        for ref in args.optimizer:
            if ":" not in ref:
                raise UsageError(f"--optimizer expects MODULE:FACTORY or FILE.py:FACTORY, got {ref!r}")
            try:
                mine.append(resolve_optimizer(ref).name)
            except Exception as exc:  # user code: any failure to import or register it is a usage error
                raise UsageError(f"cannot load optimizer {ref}: {exc}".splitlines()[0]) from None
        base = list(args.optimizers or default_optimizers(args.suite))
        optimizers = base + [name for name in mine if name not in base]
    fixed = _parse_options(args.set_options, "--set", many=False)
    vary = _parse_options(args.vary, "--vary", many=True)

    refs: list[str] = []
    for ref in args.task:
        if ":" not in ref:
            raise UsageError(f"--task expects MODULE:FACTORY or FILE.py:FACTORY, got {ref!r}")
        try:
            resolve_task(ref)
        except Exception as exc:  # user code: any failure to build the task is a usage error
            raise UsageError(f"cannot load task {ref}: {exc}".splitlines()[0]) from None
        refs.append(ref)

    if args.tasks or not refs:
        tasks, problem = _builtin_tasks()
        if tasks is None:
            raise UsageError(f"built-in tasks are not available ({problem}); use --task MODULE:FACTORY")
        if args.tasks:
            names = list(args.tasks)
            for name in names:
                try:
                    tasks.get_task(name)  # type: ignore[attr-defined]
                except (KeyError, ValueError) as exc:
                    raise UsageError(str(exc).strip("'\"").splitlines()[0]) from None
                except Exception as exc:  # noqa: BLE001 - a task module that fails to import
                    raise UsageError(f"task {name!r} cannot be loaded: {type(exc).__name__}: {exc}"
                                     .splitlines()[0]) from None
        else:
            found, broken = _suite_tasks(tasks, args.suite)
            for name, problem in broken.items():
                print(f"skipping task {name}: cannot be loaded: {problem}")
            names = [t.name for t in found]  # type: ignore[attr-defined]
        refs = list(names) + refs

    if args.grid_points is not None and len(set(args.grid_points)) != len(args.grid_points):
        raise UsageError("--grid-points must not repeat a value")
    if args.seeds_near_best is not None and not (0 <= args.seeds_near_best < math.inf):
        raise UsageError(f"--seeds-near-best must be a number of decades >= 0, got {args.seeds_near_best}")
    if args.warmup is not None:
        if args.schedule != "cosine":
            raise UsageError(f"--warmup needs --schedule cosine (the schedule is {args.schedule})")
        if not (0 <= args.warmup < 1):  # also refuses nan
            raise UsageError(f"--warmup must be a fraction of the steps in [0, 1), got {args.warmup}")
    executor = None
    if args.executor == "ray":
        from tunefree.bench.executors import RayExecutor

        try:
            RayExecutor._import_ray()
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        executor = RayExecutor(address=args.address, workers=args.workers)
    elif args.address is not None:
        raise UsageError("--address needs --executor ray")
    try:
        summary = run_sweep(
            refs, optimizers=optimizers, seeds=args.seeds, out=args.out, suite=args.suite,
            optimizer_kwargs=fixed or None, vary=vary or None,
            workers=args.workers, exponents=args.grid_points,
            extend_grid=False if args.no_extend else None, retry_errors=args.retry_errors,
            seeds_near_best=args.seeds_near_best, schedule=args.schedule, warmup=args.warmup,
            run_timeout=args.run_timeout, progress=not args.no_progress, report=not args.no_report,
            executor=executor,
        )
    except ValueError as exc:  # raised before any run starts (e.g. an explicitly named optimizer won't import)
        raise UsageError(str(exc).splitlines()[0]) from None
    except KeyboardInterrupt:
        raise Interrupted(args.out) from None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())) or "nothing new"
    print(f"done: {summary.executed} runs executed ({counts}), {summary.skipped} already stored; "
          f"ledger {summary.ledger_path}")
    return 0


def _cmd_report(folder: str, readme: bool = False) -> int:
    from tunefree.bench.ledger import Ledger
    from tunefree.bench.report import readme_table, write_report

    if not Ledger.exists(folder):
        raise UsageError(f"no ledger in {folder!r} (run `tunefree bench --out {folder}` first)")
    if readme:
        sys.stdout.write(readme_table(folder))
        return 0
    print(write_report(folder))
    return 0


def _cmd_export(folder: str, csv_path: str | None) -> int:
    from tunefree.bench.ledger import Ledger

    if not Ledger.exists(folder):
        raise UsageError(f"no ledger in {folder!r}")
    with Ledger(folder) as ledger:
        print(ledger.export_csv(csv_path))
    return 0


def _cmd_plot_stats(csv_path: str, out: str | None) -> int:
    from tunefree.monitor.plot import plot_stats

    if not os.path.isfile(csv_path):
        raise UsageError(f"no such file {csv_path!r}")
    try:
        print(plot_stats(csv_path, out))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tunefree`` console script; returns the exit code."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return _cmd_list()
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "report":
            return _cmd_report(args.dir, args.readme)
        if args.command == "export":
            return _cmd_export(args.dir, args.csv)
        if args.command == "plot-stats":
            return _cmd_plot_stats(args.csv, args.out)
    except UsageError as exc:
        print(f"tunefree: error: {str(exc).removeprefix('tunefree: ')}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        from tunefree.bench.ledger import LEDGER_NAME, Ledger

        folder = str(exc)
        try:
            stored = f"{Ledger.stored_runs(folder)} runs stored in {os.path.join(folder, LEDGER_NAME)}"
        except Exception:  # noqa: BLE001 - the message must come out whatever the ledger's state
            stored = f"the runs finished so far are stored in {folder}"
        print(f"\ntunefree: interrupted; {stored}; run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a sweep (a report, a listing): nothing to resume
        print("\ntunefree: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - environment failures: one line, not a traceback
        from tunefree.bench.ledger import LedgerError

        if isinstance(exc, LedgerError):
            print(f"tunefree: error: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError) and exc.filename:
            print(f"tunefree: error: cannot write {exc.filename}: {exc.strerror}; free space or fix the "
                  f"permissions, then run the same command again", file=sys.stderr)
            return 1
        raise
    return 2


if __name__ == "__main__":
    sys.exit(main())
