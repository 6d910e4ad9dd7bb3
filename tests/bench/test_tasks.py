"""Contract tests of every benchmark task: training works, runs are reproducible, evaluation is sane.

Step counts are tiny on purpose (the whole file should take well under a minute on a 2-core CPU with
the data caches warm); the timed budgets are measured separately, not here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from tunefree.bench.tasks import SUITES, TASK_NAMES, Task, TaskUnavailable, available_tasks, get_task
from tunefree.bench.tasks.base import TaskInstance, cached_arrays, iterate_minibatches

REPRO_STEPS = 3
#: tasks whose steps cost 25-60 ms and whose test split is expensive to evaluate
HEAVY = {"cnn_fmnist", "gpt_char", "lstm_char", "seq2seq_sort"}


def _smoke_steps(name: str) -> int:
    return 10 if name in HEAVY else 30


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread, as the benchmark runs: faster on a shared 2-core machine, and the same maths."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _task(name: str) -> Task:
    task = get_task(name)
    try:
        task.check_available()
    except TaskUnavailable as exc:
        pytest.skip(f"{name}: {exc}")
    return task


def _step(inst: TaskInstance, opt: torch.optim.Optimizer, batch: Any) -> float:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = inst.loss(batch)
        loss.backward()
        return loss

    return float(opt.step(closure).detach())


def _run(task: Task, seed: int, steps: int, evaluate: bool = True) -> tuple[list[float], dict[str, float]]:
    """What the runner does, in miniature: seed, build, Adam, ``steps`` closure steps, evaluate val."""
    torch.manual_seed(seed)
    inst = task.build(seed)
    opt = torch.optim.Adam(inst.model.parameters(), lr=1e-3)
    batches = inst.batches()
    losses = [_step(inst, opt, next(batches)) for _ in range(steps)]
    return losses, inst.evaluate("val") if evaluate else {}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_short_adam_run_reduces_training_loss(name: str) -> None:
    task = _task(name)
    torch.manual_seed(0)
    inst = task.build(0)
    batches = inst.batches()
    probe = next(batches)  # a fixed training batch, scored before and after
    with torch.no_grad():
        before = float(inst.loss(probe))
    opt = torch.optim.Adam(inst.model.parameters(), lr=1e-3)
    for _ in range(_smoke_steps(name)):
        _step(inst, opt, next(batches))
    with torch.no_grad():
        after = float(inst.loss(probe))
    assert math.isfinite(before) and math.isfinite(after)
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_is_bitwise_reproducible_and_seeds_differ(name: str) -> None:
    task = _task(name)
    losses_a, metrics_a = _run(task, 0, REPRO_STEPS)
    losses_b, metrics_b = _run(task, 0, REPRO_STEPS)
    assert losses_a == losses_b
    assert metrics_a == metrics_b
    losses_c, _ = _run(task, 1, REPRO_STEPS, evaluate=False)
    assert losses_c != losses_a


def _check_evaluate(name: str, splits: tuple[str, ...]) -> None:
    task = _task(name)
    inst = task.build(0)
    for split in splits:
        metrics = inst.evaluate(split)
        assert task.metric in metrics and "loss" in metrics
        assert all(type(v) is float for v in metrics.values()), metrics
        assert math.isfinite(metrics[task.metric])
        assert inst.model.training, "evaluate must put the model back in train mode"
    with pytest.raises(ValueError):
        inst.evaluate("train")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_evaluate_contract(name: str) -> None:
    # the test split of the heavy tasks takes seconds (10k images, 5k greedy decodings): see below
    _check_evaluate(name, ("val",) if name in HEAVY else ("val", "test"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_evaluate_contract_on_test_split_of_heavy_tasks(name: str) -> None:
    _check_evaluate(name, ("test",))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_declaration(name: str) -> None:
    task = get_task(name)
    assert task.name == name
    assert task.description
    assert "standard" in task.budgets
    for suite, budget in task.budgets.items():
        assert suite in SUITES
        assert 10 <= budget.steps // budget.eval_every <= 20, (suite, budget)
    if "quick" in task.budgets:
        assert task.zero_install


def test_registry() -> None:
    with pytest.raises(ValueError, match="known tasks"):
        get_task("nope")
    with pytest.raises(ValueError, match="known suites"):
        available_tasks("nope")
    assert [t.name for t in available_tasks()] == list(TASK_NAMES)
    quick = {t.name for t in available_tasks("quick")}
    assert {"logreg_bc", "lsq_synth", "mlp_mnist1d", "ddpm_2d", "dlrm_ctr"} <= quick
    assert {t.name for t in available_tasks("standard")} == set(TASK_NAMES)


def test_logreg_optimum_is_stationary() -> None:
    from tunefree.bench.tasks.logreg_bc import solution

    task = get_task("logreg_bc")
    inst = task.build(0)
    f_star, theta = solution()
    with torch.no_grad():
        inst.model.weight.copy_(torch.from_numpy(theta[:-1]).unsqueeze(0))
        inst.model.bias.fill_(float(theta[-1]))
    objective = inst.loss(inst.splits["train"])
    objective.backward()
    grad = torch.cat([p.grad.flatten() for p in inst.model.parameters()])
    assert float(grad.norm()) < 1e-9
    assert abs(float(objective.detach()) - f_star) < 1e-14
    assert inst.evaluate("val")["log10_subopt"] <= -14


@pytest.mark.parametrize("name", ["logreg_bc", "lsq_synth"])
def test_long_full_batch_run_reaches_but_never_beats_f_star(name: str) -> None:
    inst = get_task(name).build(0)
    opt = torch.optim.LBFGS(inst.model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-14,
                            tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")
    full = inst.splits["train"]
    lowest = math.inf
    for _ in range(4):
        _step(inst, opt, full)
        lowest = min(lowest, inst.train_objective())
    f_star = inst.f_star
    assert lowest >= f_star - 1e-12 * max(1.0, abs(f_star))
    assert inst.evaluate("val")["subopt"] < 1e-7


def test_char_tasks_fall_back_to_pydoc_without_shakespeare(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEFREE_DATA", str(tmp_path))
    for name in ("gpt_char", "lstm_char"):
        task = get_task(name)
        assert task.corpus.name == "pydoc"
        assert "Python help topics" in task.description
    inst = get_task("lstm_char").build(0)
    inputs, targets = next(inst.batches())
    assert inputs.shape == targets.shape == (32, 64)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_fashion_mnist_missing_raises_with_install_command(tmp_path, monkeypatch) -> None:
    from tunefree.bench.tasks import cnn_fmnist

    monkeypatch.setenv("TUNEFREE_DATA", str(tmp_path))
    monkeypatch.setattr(cnn_fmnist, "SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(TaskUnavailable, match="apt-get install -y dataset-fashion-mnist"):
        get_task("cnn_fmnist").check_available()


def test_cached_arrays_builds_once_and_writes_atomically(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEFREE_DATA", str(tmp_path))
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(5)}

    first = cached_arrays("unit_v1", build)
    assert (tmp_path / "unit_v1.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    from tunefree.bench.tasks import base

    base._ARRAY_MEMO.clear()  # force a read from disk
    second = cached_arrays("unit_v1", build)
    assert calls == [1]
    assert np.array_equal(first["a"], second["a"])


def test_iterate_minibatches_is_an_epoch_permutation() -> None:
    gen = torch.Generator().manual_seed(0)
    stream = iterate_minibatches(gen, 10, 3)
    epoch = torch.cat([next(stream) for _ in range(3)])  # 3 full batches, the 10th index dropped
    assert len(set(epoch.tolist())) == 9
    assert next(iterate_minibatches(torch.Generator(), 4, 100)).numel() == 4  # full batch
