"""Runner: determinism, divergence as a recorded outcome, errors never escape a sweep."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from conftest import TinyTask, make_tiny_task

from tunefree.bench import Ledger, make_task, run_sweep
from tunefree.bench import runner as runner_mod
from tunefree.bench.runner import run_one
from tunefree.bench.sweep import build_specs, resolve_optimizer
from tunefree.optim.registry import OptimizerInfo


def _spec(task: TinyTask, optimizer: str = "sgd", exp: float = 0.0, seed: int = 0):
    specs = build_specs(task, "object:tiny", [optimizer], [seed], "quick", [exp])
    return specs[0]


def test_same_spec_twice_gives_identical_traces(tiny_task: TinyTask) -> None:
    spec = _spec(tiny_task, "adam", exp=1.0)
    a, b = run_one(spec, tiny_task), run_one(spec, tiny_task)
    assert a.status == b.status == "ok"
    assert len(a.losses) == spec.steps
    assert a.losses == b.losses  # bitwise, not approximately
    assert a.evals == b.evals and a.final_test == b.final_test
    # a different seed changes init and data order
    c = run_one(replace(spec, seed=1), tiny_task)
    assert c.losses != a.losses


def test_paired_seeds_same_init_and_data_for_every_optimizer(tiny_task: TinyTask) -> None:
    a = run_one(_spec(tiny_task, "sgd"), tiny_task)
    b = run_one(_spec(tiny_task, "adam"), tiny_task)
    # step 0 evaluation and first mini-batch loss are taken before any update
    assert a.evals[0] == b.evals[0]
    assert a.losses[0] == b.losses[0]


def test_huge_lr_is_recorded_as_diverged_not_raised(tiny_task: TinyTask) -> None:
    spec = replace(_spec(tiny_task, "sgd"), lr=1e4)
    result = run_one(spec, tiny_task)
    assert result.status == "diverged"
    assert result.diverged_step is not None and result.diverged_step < spec.steps
    assert result.final_val is None
    assert result.steps_done == result.diverged_step


class _Refusing(torch.optim.SGD):
    """Stands in for a tunefree optimizer that refuses a non-finite step."""

    class NonFinite(FloatingPointError):
        pass

    def step(self, closure: Any = None) -> Any:
        loss = closure()
        if self.state.get("calls", 0) >= 2:
            raise self.NonFinite("non-finite gradient: step refused")
        self.state["calls"] = self.state.get("calls", 0) + 1
        super().step()
        return loss


class _TwoEvals(torch.optim.SGD):
    """Calls the closure twice per step (like GALA) and exposes stats."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, lr=lr)
        self.stats = {"lr": torch.tensor(lr)}

    def step(self, closure: Any = None) -> Any:
        loss = closure()
        super().step()
        closure()
        self.stats = {"lr": torch.tensor(float(self.param_groups[0]["lr"])), "other": torch.tensor(1.0)}
        return loss


def _patch_optimizer(monkeypatch: pytest.MonkeyPatch, cls: type, trace: tuple[str, ...] = ()) -> None:
    class Entry(OptimizerInfo):
        def load_class(self) -> type:
            return cls

    def fake(name: str, source: str = "") -> OptimizerInfo:
        if name == "sgd":
            return Entry("sgd", "x:y", 0.01, "test", trace_stats=trace)
        return resolve_optimizer(name)

    monkeypatch.setattr(runner_mod, "resolve_optimizer", fake)


def test_floating_point_error_from_the_optimizer_is_divergence(
    tiny_task: TinyTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patch_optimizer(monkeypatch, _Refusing)
    result = run_one(_spec(tiny_task, "sgd"), tiny_task)
    assert result.status == "diverged"
    assert result.diverged_step == 3
    assert "NonFinite" in (result.error or "")


def test_gradient_evaluations_and_stats_traces(tiny_task: TinyTask, monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_optimizer(monkeypatch, _TwoEvals, trace=("lr",))
    spec = replace(_spec(tiny_task, "sgd"), trace_stats=("lr",))
    result = run_one(spec, tiny_task)
    assert result.status == "ok"
    assert result.grad_evals == 2 * spec.steps
    steps, values = result.stats["lr"]
    assert steps == list(range(1, spec.steps + 1)) and all(v == pytest.approx(spec.lr) for v in values)
    assert "other" not in result.stats  # only the declared trace keys are kept


def test_crashing_task_is_an_error_and_the_sweep_goes_on(tmp_path: Any) -> None:
    crashing = make_tiny_task(crash_at=5, name="tiny_crash")
    result = run_one(_spec(crashing, "sgd"), crashing)
    assert result.status == "error"
    assert "crashed on purpose" in (result.error or "") and "Traceback" in (result.error or "")

    good = make_tiny_task(name="tiny_good")
    summary = run_sweep([crashing, good], optimizers=["sgd", "adam"], seeds=1, out=tmp_path, workers=1,
                        progress=False, report=False, log=lambda _: None)
    assert summary.executed == 20
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows()
    crash_statuses = [r["status"] for r in rows if r["task"] == "tiny_crash"]
    # huge learning rates diverge before the crash at step 5; every other run records the error
    assert set(crash_statuses) <= {"error", "diverged"} and crash_statuses.count("error") >= 6
    assert {r["status"] for r in rows if r["task"] == "tiny_good"} <= {"ok", "diverged"}
    assert len(rows) == 20


def test_diverged_run_in_a_sweep_is_stored(tmp_path: Any, tiny_task: TinyTask) -> None:
    summary = run_sweep(tiny_task, optimizers=["sgd"], seeds=1, out=tmp_path, workers=1,
                        exponents=[0.0, 5.0], progress=False, report=False, log=lambda _: None)
    assert summary.statuses == {"ok": 1, "diverged": 1}
    with Ledger(tmp_path) as ledger:
        diverged = ledger.rows(status="diverged")
    assert len(diverged) == 1 and diverged[0]["lr_exp"] == 5.0 and diverged[0]["final_val"] is None


def test_tunefree_optimizer_with_loss_and_stats(tiny_task: TinyTask) -> None:
    entry = resolve_optimizer("momo")
    if entry.import_error():
        pytest.skip(f"momo not importable yet: {entry.import_error()}")
    result = run_one(_spec(tiny_task, "momo"), tiny_task)
    assert result.status in ("ok", "diverged"), result.error
    assert "tau" in result.stats and len(result.stats["tau"][1]) == result.steps_done


def test_make_task_from_plain_callables(tmp_path: Any) -> None:
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 1

    def batches(seed: int):
        g = torch.Generator().manual_seed(seed)
        while True:
            idx = torch.randint(0, 64, (8,), generator=g)
            yield x[idx], y[idx]

    task = make_task(
        "byo_line", model=lambda: torch.nn.Linear(1, 1), batches=batches,
        loss=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]),
        evaluate=lambda m, split: {"loss": float(torch.nn.functional.mse_loss(m(x), y))},
        steps=40, quick_steps=20,
    )
    messages: list[str] = []
    # lambdas cannot cross to worker processes: the sweep says so and runs in-process
    summary = run_sweep(task, optimizers=["sgd", "adam"], seeds=2, out=tmp_path, workers=2,
                        progress=False, report=False, log=messages.append)
    assert any("not picklable" in m for m in messages)
    assert summary.executed == 20 and summary.statuses.get("error", 0) == 0
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows(optimizer="sgd", lr_exp=-1.0)
    assert all(r["steps"] == 20 and r["final_val"] < r["init_val"] for r in rows)


def test_standard_suite_extends_a_grid_whose_best_point_is_on_the_edge(tmp_path: Any, tiny_task: TinyTask) -> None:
    # Adam's default 1e-3 is far too small for 30 steps of this regression: its best grid point is the
    # upper edge (+2 decades), so the standard suite must add points beyond it until the optimum is inside
    summary = run_sweep(tiny_task, optimizers=["adam"], seeds=1, out=tmp_path, suite="standard", workers=1,
                        progress=False, report=False, log=lambda _: None)
    with Ledger(tmp_path) as ledger:
        rows = ledger.rows()
    exps = sorted({r["lr_exp"] for r in rows})
    assert exps[:9] == [k / 2 for k in range(-4, 5)]
    assert exps[-1] > 2.0 and summary.total == len(rows)
    finite = {r["lr_exp"]: r["final_val"] for r in rows if r["final_val"] is not None}
    best = min(finite, key=finite.get)
    assert best < exps[-1] or exps[-1] == 4.0  # interior now, or the extension hit its cap
