"""Command line: usage errors exit 2 with one line; list, bench, report and export work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TASK_FILE

from tunefree.cli import main

TASK = f"{TASK_FILE}:make_tiny_task"


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_optimizer(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _error(capsys, ["bench", "--task", TASK, "--optimizers", "sgd", "nope", "--out", str(tmp_path)])
    assert "unknown optimizer 'nope'" in err and "adam" in err


def test_unknown_task(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "nosuch" in _error(capsys, ["bench", "--tasks", "nosuch", "--out", str(tmp_path)])
    assert "nothing.py" in _error(capsys, ["bench", "--task", "nothing.py:make", "--out", str(tmp_path)])
    assert "MODULE:FACTORY" in _error(capsys, ["bench", "--task", "no_colon", "--out", str(tmp_path)])


@pytest.mark.parametrize("flag,value", [("--seeds", "0"), ("--seeds", "x"), ("--workers", "0"), ("--suite", "big"),
                                        ("--seeds-near-best", "-1"), ("--seeds-near-best", "nan"),
                                        ("--schedule", "linear"), ("--warmup", "x")])
def test_bad_values(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str) -> None:
    err = _error(capsys, ["bench", "--task", TASK, flag, value, "--out", str(tmp_path)])
    assert flag in err


@pytest.mark.parametrize("argv,needle", [
    (["--schedule", "cosine", "--warmup", "1"], "--warmup must be a fraction of the steps in [0, 1), got 1.0"),
    (["--schedule", "cosine", "--warmup", "-0.1"], "--warmup must be a fraction"),
    (["--schedule", "cosine", "--warmup", "nan"], "--warmup must be a fraction"),
    (["--warmup", "0.1"], "--warmup needs --schedule cosine"),
    (["--schedule", "constant", "--warmup", "0.1"], "--warmup needs --schedule cosine"),
])
def test_bad_schedule_values(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needle: str) -> None:
    err = _error(capsys, ["bench", "--task", TASK, *argv, "--out", str(tmp_path)])
    assert needle in err
    assert not (tmp_path / "ledger.sqlite").exists()


def test_bench_with_a_cosine_schedule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "res"
    base = ["bench", "--task", TASK, "--optimizers", "sgd", "--workers", "1", "--out", str(out), "--no-progress",
            "--grid-points", "0"]
    assert main([*base, "--schedule", "cosine", "--warmup", "0.1"]) == 0
    assert "1 runs executed" in capsys.readouterr().out
    assert main([*base, "--schedule", "cosine"]) == 0  # the default warm-up is another setting
    assert main(base) == 0  # and constant lr a third, in the same ledger
    assert "1 runs executed" in capsys.readouterr().out.splitlines()[-1]
    csv_text = (out / "runs.csv").read_text()
    assert "cosine:0.1" in csv_text and "cosine:0.05" in csv_text and ",constant," in csv_text
    md = (out / "report.md").read_text()
    assert "| sgd+cosine:0.1 |" in md and "| sgd+cosine |" in md and "| sgd |" in md


def test_report_of_a_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no ledger" in _error(capsys, ["report", str(tmp_path / "none")])


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Tasks:" in out and "Optimizers" in out
    for name in ("sgd", "adam", "adamw", "momo", "gala"):
        assert name in out
    assert "default lr 0.1" in out  # sgd


def test_bench_report_export_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "res"
    argv = ["bench", "--task", TASK, "--optimizers", "sgd", "adamw", "--workers", "1", "--out", str(out),
            "--no-progress", "--grid-points", "-1", "0", "1"]
    assert main(argv) == 0
    assert "6 runs executed" in capsys.readouterr().out
    assert (out / "report.html").exists() and (out / "runs.csv").exists()
    assert main(argv) == 0  # resumes: nothing left to do
    assert "0 runs executed" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert main(["export", str(out), "--csv", str(tmp_path / "x.csv")]) == 0
    assert len((tmp_path / "x.csv").read_text().strip().splitlines()) == 7


def test_console_script_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "tunefree.cli", "bench", "--seeds", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--seeds" in proc.stderr
