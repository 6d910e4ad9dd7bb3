"""Peer optimizers (extra ``peers``): the registry builds them with their packages' defaults, they train,
they run in the benchmark, and Schedule-Free is evaluated at its averaged weights (eval mode), never at
the weights it steps. Each test skips when its peer's package is not installed."""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from conftest import make_tiny_task

from tunefree.bench import Ledger, make_task, run_sweep
from tunefree.bench.runner import run_one
from tunefree.bench.sweep import build_specs, installed_peers
from tunefree.bench.tasks import get_task
from tunefree.bench.tasks.base import Budget
from tunefree.optim.registry import OptimizerInfo, create_optimizer, get_optimizer_info

#: registry name -> the package that provides it
PEERS = {
    "prodigy": "prodigyopt",
    "dadapt_adam": "dadaptation",
    "schedulefree_adamw": "schedulefree",
    "momo_opt": "momo",
}


def _require(name: str) -> OptimizerInfo:
    pytest.importorskip(PEERS[name])
    return get_optimizer_info(name)


def _regression(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(64, 1, generator=g)
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1), x, y


def _set_mode(optimizer: torch.optim.Optimizer, mode: str) -> None:
    if callable(getattr(optimizer, mode, None)):
        getattr(optimizer, mode)()


def test_every_peer_is_listed() -> None:
    infos = {name: get_optimizer_info(name) for name in PEERS}
    assert all(info.peer and not info.baseline for info in infos.values())
    assert {info.target.split(":")[0] for info in infos.values()} == set(PEERS.values())


@pytest.mark.parametrize("name", PEERS)
def test_registry_entry_matches_the_package(name: str) -> None:
    info = _require(name)
    assert info.import_error() is None and name in installed_peers()
    cls = info.load_class()
    signature = inspect.signature(cls.__init__).parameters
    # the registry's default lr is the package's own default, and fixed kwargs are real arguments
    assert signature["lr"].default == info.default_lr
    assert set(info.fixed_kwargs) <= set(signature)

    model, x, y = _regression()
    optimizer = create_optimizer(name, model.parameters())
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == info.default_lr
    assert create_optimizer(name, model.parameters(), lr=0.25).param_groups[0]["lr"] == 0.25
    if name == "schedulefree_adamw":  # "warm-up off" in lr_meaning
        assert optimizer.param_groups[0]["warmup_steps"] == 0

    # needs_loss / needs_closure say how step() must be called: check against the package
    _set_mode(optimizer, "train")
    torch.nn.functional.mse_loss(model(x), y).backward()
    if info.needs_loss or info.needs_closure:
        with pytest.raises((AssertionError, TypeError, ValueError, RuntimeError)):
            optimizer.step()  # momo-opt asserts that it got a closure or the loss
    else:
        optimizer.step()  # a bare step after backward() works


@pytest.mark.parametrize("name", PEERS)
def test_a_few_steps_reduce_the_loss(name: str) -> None:
    info = _require(name)
    model, x, y = _regression()
    optimizer = create_optimizer(name, model.parameters())

    def full_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model(x), y))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    initial = full_loss()
    _set_mode(optimizer, "train")
    for _ in range(30):
        optimizer.step(closure)
    _set_mode(optimizer, "eval")
    final = full_loss()
    assert math.isfinite(final) and final < 0.99 * initial, (info.name, initial, final)


@pytest.mark.parametrize("name", PEERS)
def test_short_benchmark_run_on_lsq_synth_is_ok(name: str, tmp_path: Any) -> None:
    _require(name)
    # the cheapest built-in task, with a 20-step budget instead of 3000
    task = replace(get_task("lsq_synth"), budgets={"quick": Budget(steps=20, eval_every=10)})
    summary = run_sweep(task, optimizers=[name], seeds=1, out=tmp_path, workers=1, exponents=[0.0],
                        progress=False, report=False, log=lambda _: None)
    assert summary.statuses == {"ok": 1}
    with Ledger(tmp_path) as ledger:
        (row,) = ledger.rows()
    assert row["optimizer"] == name and row["steps"] == 20
    assert row["final_val"] < row["init_val"]  # log10(f - f*) went down


# --------------------------------------------------------------------------------------------------
# Schedule-Free: train() before stepping, eval() before every evaluation
# --------------------------------------------------------------------------------------------------


def test_runner_puts_schedulefree_in_eval_mode_for_every_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a bring-your-own task: every step runs in train mode and every evaluation (step 0, periodic,
    final val and test) in eval mode. Without the runner's switches the first step raises (no train())
    or the evaluations see train mode (no eval())."""
    schedulefree = pytest.importorskip("schedulefree")
    events: list[tuple[str, bool]] = []
    instances: list[torch.optim.Optimizer] = []

    class Recorded(schedulefree.AdamWScheduleFree):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            instances.append(self)

        def train(self) -> None:
            events.append(("train", self.param_groups[0]["train_mode"]))
            super().train()

        def step(self, closure: Any = None) -> Any:
            events.append(("step", self.param_groups[0]["train_mode"]))
            return super().step(closure)

    # the registry imports the class by name on every create(): it builds the recording subclass
    monkeypatch.setattr(schedulefree, "AdamWScheduleFree", Recorded)

    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    y = 2 * x - 1

    def evaluate(model: torch.nn.Module, split: str) -> dict[str, float]:
        events.append(("evaluate", instances[0].param_groups[0]["train_mode"]))
        return {"loss": float(torch.nn.functional.mse_loss(model(x), y))}

    task = make_task("sf_modes", model=lambda: torch.nn.Linear(1, 1), batches=lambda: iter(lambda: (x, y), None),
                     loss=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]), evaluate=evaluate,
                     steps=12, eval_every=4, quick_steps=12)
    spec = replace(build_specs(task, "object:sf_modes", ["schedulefree_adamw"], [0], "quick", [0.0])[0],
                   steps=12, eval_every=4)
    result = run_one(spec, task)

    assert result.status == "ok", result.error
    assert len(instances) == 1
    kinds = [kind for kind, _ in events]
    assert kinds.count("step") == 12 and kinds.count("evaluate") == len(result.evals) + 1 == 5
    assert kinds.index("train") < kinds.index("step")
    assert all(train_mode for kind, train_mode in events if kind == "step")
    assert not any(train_mode for kind, train_mode in events if kind == "evaluate")


def test_schedulefree_metrics_are_those_of_the_averaged_weights() -> None:
    """The runner's metrics equal a hand-written loop's evaluated after ``optimizer.eval()``, and differ
    clearly from the same loop evaluated at the training weights (so the check has teeth)."""
    pytest.importorskip("schedulefree")
    task = make_tiny_task(steps=30)
    spec = replace(build_specs(task, "object:tiny", ["schedulefree_adamw"], [0], "quick", [0.0])[0], lr=0.05)
    result = run_one(spec, task)
    assert result.status == "ok", result.error

    torch.manual_seed(spec.seed)
    inst = task.build(spec.seed)
    optimizer = create_optimizer("schedulefree_adamw", inst.model.parameters(), lr=spec.lr)
    optimizer.train()
    batches = inst.batches()
    for _ in range(spec.steps):
        batch = next(batches)

        def closure(batch: Any = batch) -> torch.Tensor:
            optimizer.zero_grad()
            loss = inst.loss(batch)
            loss.backward()
            return loss

        optimizer.step(closure)
    at_train_weights = inst.evaluate("test")["loss"]
    optimizer.eval()
    at_averaged_weights = inst.evaluate("test")["loss"]

    assert result.final_test["loss"] == pytest.approx(at_averaged_weights, rel=1e-5)
    assert abs(at_train_weights - at_averaged_weights) > 1e-2 * at_averaged_weights
