"""Sensitivity beyond lr (--set / --vary, run_sweep's optimizer_kwargs / vary) and a user's own optimizer
(tunefree.register_optimizer, --optimizer MODULE:FACTORY)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import TASK_FILE, make_tiny_task

import tunefree
from tunefree.bench import resolve
from tunefree.bench.plan import build_specs, option_settings
from tunefree.bench.records import RunSpec
from tunefree.bench.sweep import run_sweep
from tunefree.bench.tasks.base import Budget
from tunefree.cli import main
from tunefree.optim import registry

TASK = f"{TASK_FILE}:make_tiny_task"
BENCH = ["bench", "--task", TASK, "--no-progress", "--grid-points", "-1", "0"]

USER_OPTIMIZER = '''
import torch
import tunefree


class Halved(torch.optim.SGD):
    """SGD at half the given lr: an in-house optimizer for the tests."""

    def __init__(self, params, lr=0.1, momentum=0.0):
        super().__init__(params, lr=lr / 2, momentum=momentum)


tunefree.register_optimizer("halved", Halved, default_lr=0.1, lr_meaning="twice the SGD step", replace=True)
'''


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "runs.csv").open()))


@pytest.fixture
def clean_registry():
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_a_run_without_options_keeps_its_id() -> None:
    # the id of a spec without options, computed before options could be swept (same fields, same hash)
    spec = RunSpec(task="tiny", suite="quick", steps=30, eval_every=10, optimizer="sgd", lr=0.1, seed=0,
                   code_version="pinned")
    assert spec.run_id == "e5342a9a3e3f20f767d3692b"
    task = make_tiny_task()
    plain = build_specs(task, TASK, ["agd"], [0], "quick", [0.0], version="v")
    varied = build_specs(task, TASK, ["agd"], [0], "quick", [0.0], version="v", vary={"agd": {"delta": [1e-8]}})
    assert [s.run_id for s in varied[:1]] == [s.run_id for s in plain]
    assert varied[1].kwargs == '{"delta": 1e-08}' and varied[1].run_id != plain[0].run_id


def test_option_settings_are_the_default_then_one_option_at_a_time() -> None:
    assert option_settings({"a": 1}, {"b": [2, 3], "a": [1, 4]}) == [
        {"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 4}]


def test_vary_and_set_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    argv = [*BENCH, "--optimizers", "sgd", "adam", "--workers", "1", "--out", str(out),
            "--vary", "sgd.momentum=0,0.5", "--vary", "adam.betas=(0.9,0.99),(0.5,0.9)", "--set", "adam.eps=1e-6"]
    assert main(argv) == 0
    rows = _rows(out)
    settings = {(r["optimizer"], r["kwargs"], r["baseline"]) for r in rows}
    assert settings == {
        ("sgd", "{}", "1"), ("sgd", '{"momentum": 0}', "0"), ("sgd", '{"momentum": 0.5}', "0"),
        ("adam", '{"eps": 1e-06}', "1"), ("adam", '{"betas": [0.9, 0.99], "eps": 1e-06}', "0"),
        ("adam", '{"betas": [0.5, 0.9], "eps": 1e-06}', "0"),
    }
    assert len(rows) == 6 * 2 and all(r["status"] == "ok" for r in rows)
    # momentum 0 and 0.5 really change the runs (the option reached the optimizer)
    finals = {(r["kwargs"], r["lr_exp"]): r["final_val"] for r in rows if r["optimizer"] == "sgd"}
    assert finals[("{}", "-1.0")] != finals[('{"momentum": 0}', "-1.0")]
    md = (out / "report.md").read_text()
    assert "## Sensitivity to other options" in md and "### sgd.momentum" in md
    assert '### adam.betas (with {"eps": 1e-06})' in md
    assert (out / "figures" / "options-sgd-momentum.png").stat().st_size > 1000
    assert main(argv) == 0  # resumes: nothing new
    assert "0 runs executed" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("argv,needles", [
    (["--optimizers", "agd", "--vary", "agd.dleta=1e-8"], ["agd has no option 'dleta'", "delta", "AGD(params"]),
    (["--optimizers", "agd", "--set", "agd.delta=-1"], ["agd(delta=-1) is refused", "delta"]),
    (["--optimizers", "agd", "--set", "adam.eps=1e-8"], ["'adam'", "not in this sweep (agd)"]),
    (["--optimizers", "agd", "--vary", "nope.x=1"], ["unknown optimizer 'nope'", "adam"]),
    (["--optimizers", "agd", "--vary", "agd.delta"], ["--vary expects OPT.KEY=V1,V2,..."]),
    (["--optimizers", "agd", "--vary", "agd.delta=1e-8,1e-8"], ["value 1e-08 is given twice"]),
    (["--optimizers", "agd", "--set", "agd.lr=1"], ["agd.lr is the learning rate the grid sweeps"]),
    (["--optimizers", "agd", "--set", "agd.delta=[1"], ["not a Python literal"]),
    (["--optimizer", "nothing.py:F"], ["optimizer file not found: nothing.py"]),
    (["--optimizer", "torch:nn"], ["nn is not a registered optimizer", "tunefree.register_optimizer"]),
])
def test_bad_options_are_one_line_errors_before_any_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needles: list[str]
) -> None:
    err = _error(capsys, [*BENCH, *argv, "--out", str(tmp_path / "r")])
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "r").exists()


def test_run_sweep_validates_vary_like_the_cli(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="momo has no option 'bogus'; allowed: .*lower_bound"):
        run_sweep(make_tiny_task(), ["momo"], out=tmp_path, vary={"momo": {"bogus": [1]}}, report=False)
    with pytest.raises(ValueError, match="give at least one value"):
        run_sweep(make_tiny_task(), ["momo"], out=tmp_path, vary={"momo": {"beta": []}}, report=False)
    assert not (tmp_path / "ledger.sqlite").exists()


def test_register_optimizer_refuses_builtins_and_silent_replacement(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="'adam' is a built-in optimizer and cannot be replaced"):
        tunefree.register_optimizer("Adam", torch.optim.NAdam, default_lr=1e-3, lr_meaning="step", replace=True)
    info = tunefree.register_optimizer("nadam_mine", torch.optim.NAdam, default_lr=2e-3, lr_meaning="step size")
    assert tunefree.register_optimizer("nadam_mine", torch.optim.NAdam, default_lr=2e-3,
                                       lr_meaning="step size") is info  # the same registration again
    with pytest.raises(ValueError, match="already registered .*replace=True"):
        tunefree.register_optimizer("nadam_mine", torch.optim.RAdam, default_lr=1e-3, lr_meaning="step")
    tunefree.register_optimizer("nadam_mine", torch.optim.RAdam, default_lr=1e-3, lr_meaning="step", replace=True)
    opt = tunefree.create_optimizer("nadam_mine", [torch.zeros(1, requires_grad=True)])
    assert isinstance(opt, torch.optim.RAdam) and opt.param_groups[0]["lr"] == 1e-3
    for bad in (dict(default_lr=0.0), dict(default_lr=float("nan")), dict(lr_meaning=" ")):
        with pytest.raises(ValueError, match="register_optimizer"):
            tunefree.register_optimizer("x", torch.optim.SGD, **{"default_lr": 0.1, "lr_meaning": "s", **bad})
    with pytest.raises(ValueError, match="factory must be callable"):
        tunefree.register_optimizer("x", "sgd", default_lr=0.1, lr_meaning="s")  # type: ignore[arg-type]


def test_own_optimizer_from_a_file_runs_beside_the_builtins_in_worker_processes(
    tmp_path: Path, clean_registry: None
) -> None:
    source = tmp_path / "my_optim.py"
    source.write_text(USER_OPTIMIZER)
    out = tmp_path / "r"
    # two workers: spawned processes find the optimizer through the spec's reference to the file
    argv = [*BENCH, "--optimizers", "sgd", "--optimizer", f"{source}:Halved", "--workers", "2", "--out", str(out),
            "--set", "halved.momentum=0.5"]
    assert main(argv) == 0
    rows = _rows(out)
    mine = [r for r in rows if r["optimizer"] == "halved"]
    assert len(mine) == 2 and all(r["status"] == "ok" for r in mine), mine
    assert {r["lr"] for r in mine} == {"0.01", "0.1"}  # the grid is centred on its default_lr
    sgd_version = {r["code_version"] for r in rows if r["optimizer"] == "sgd"}.pop()
    version = mine[0]["code_version"]
    assert version.startswith(sgd_version + "+halved.")
    # editing the optimizer's file gives new run ids: the sweep runs it again, the built-ins stay
    source.write_text(USER_OPTIMIZER + "\n# tuned\n")
    registry._REGISTRY.pop("halved")
    resolve_cache = [k for k in list(__import__("sys").modules) if k.startswith("_tunefree_user_my_optim")]
    for name in resolve_cache:
        del __import__("sys").modules[name]
    assert main(argv) == 0
    rows = _rows(out)
    assert len([r for r in rows if r["optimizer"] == "halved"]) == 4 and len(rows) == 6
    assert "| halved" in (out / "report.md").read_text()


def test_the_issue_example_on_a_short_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """tunefree bench --tasks logreg_bc mlp_mnist1d --optimizers agd --vary agd.delta=1e-14,1e-8,1e-5,1e-2,
    with the tasks' quick budget cut to 20 steps (serial, so the shortened tasks are the ones that run)."""
    from tunefree.bench import tasks

    real = tasks.get_task

    def short(name: str):
        return dataclasses.replace(real(name), budgets={"quick": Budget(steps=20, eval_every=10)})

    monkeypatch.setattr(tasks, "get_task", short)
    monkeypatch.setattr(resolve, "_TASK_CACHE", {})
    out = tmp_path / "r"
    argv = ["bench", "--tasks", "logreg_bc", "mlp_mnist1d", "--optimizers", "agd",
            "--vary", "agd.delta=1e-14,1e-8,1e-5,1e-2", "--workers", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    rows = _rows(out)
    assert len(rows) == 2 * 5 * 5 and {r["steps"] for r in rows} == {"20"}
    md = (out / "report.md").read_text()
    section = md.split("### agd.delta", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| delta | W95 logreg_bc [quick] | W95 mlp_mnist1d [quick] | mean W95 |"
    assert [line.split(" | ")[0] for line in table[1:]] == ["| default", "| 1e-14", "| 1e-08", "| 1e-05", "| 0.01"]
    # delta = 1e-5 is AGD's own default: the same numbers as the default setting
    assert table[1].split(" | ")[1:] == table[4].split(" | ")[1:]
