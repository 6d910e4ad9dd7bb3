"""GALA beyond the generic contract: the closure protocol, side effects of the extra pass, NaN in the second
evaluation, and whether the learning rate really adapts (issue 3's acceptance, reported honestly)."""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Callable

import pytest
import torch
from torch import nn

from tunefree import GALA

from .helpers import batches, make_closure, make_data, make_model, train


@pytest.fixture
def one_thread():
    """Single-threaded torch: the tiny problems below are faster and timing-stable on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------- closure protocol
def test_missing_closure_is_a_clear_error() -> None:
    model = make_model()
    optimizer = GALA(model.parameters())
    loss = ((model(torch.ones(2, 6, dtype=torch.float64))) ** 2).mean()
    loss.backward()
    for call in (lambda: optimizer.step(), lambda: optimizer.step(loss=loss)):
        with pytest.raises(ValueError, match="closure") as info:
            call()
        assert "twice" in str(info.value)
    assert not optimizer.state and not optimizer.global_state


def test_closure_calls_one_then_two_per_step() -> None:
    model = make_model()
    optimizer = GALA(model.parameters())
    x, y = make_data()
    counts = []
    for step in range(5):
        inner = make_closure(model, optimizer, batches(step, x, y))
        calls = []

        def closure(inner=inner, calls=calls):
            calls.append(1)
            return inner()

        before = [p.detach().clone() for p in model.parameters()]
        returned = optimizer.step(closure)
        counts.append(len(calls))
        # step() returns the loss of the first call, at the parameters before the step
        for p, q in zip(model.parameters(), before):
            p.data, q.data = q.data, p.data
        assert torch.equal(returned.detach(), inner().detach())
        for p, q in zip(model.parameters(), before):
            p.data, q.data = q.data, p.data
    assert counts == [1, 2, 2, 2, 2]


def test_gradients_after_step_are_those_of_the_current_point() -> None:
    """The extra pass puts back g_t: .grad after step() is the first call's gradient, not ghat."""
    model = make_model()
    optimizer = GALA(model.parameters(), lr=1e-2)
    x, y = make_data()
    train(model, optimizer, 2)
    closure = make_closure(model, optimizer, batches(2, x, y))
    reference = copy.deepcopy(model)
    ref_loss = ((reference(batches(2, x, y)[0]) - batches(2, x, y)[1]) ** 2).mean()
    ref_loss.backward()
    optimizer.step(closure)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)


# ---------------------------------------------------------------------------------------- BN / dropout
def _bn_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.Dropout(0.5), nn.Tanh(), nn.Linear(12, 1)).double()


def _bn_closure(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> Callable:
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        return loss

    return closure


def _bn_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    xb = torch.randn(16, 5, generator=generator, dtype=torch.float64)
    return xb, xb.sum(dim=1, keepdim=True).sin()


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in model[1].buffers()]


@pytest.mark.parametrize("how", ["constructor", "attach"])
def test_extra_pass_leaves_batchnorm_and_rng_as_one_plain_forward(how: str) -> None:
    model = _bn_dropout_model()
    if how == "constructor":
        optimizer = GALA(model.parameters(), lr=1e-2, model=model)
    else:
        optimizer = GALA(model.parameters(), lr=1e-2).attach(model)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    torch.manual_seed(1)
    for step in range(4):
        xb, yb = _bn_data(step)
        # What one plain forward/backward at the current parameters does to BN buffers and the RNG:
        plain = copy.deepcopy(model)  # the hook is copied too: it records the plain pass's mask
        rng = torch.get_rng_state()
        masks.clear()
        _bn_closure(plain, torch.optim.SGD(plain.parameters(), lr=0.0), xb, yb)()
        expected_buffers, expected_rng, plain_mask = _bn_buffers(plain), torch.get_rng_state(), masks[0]
        torch.set_rng_state(rng)
        masks.clear()

        optimizer.step(_bn_closure(model, optimizer, xb, yb))

        assert len(masks) == (1 if step == 0 else 2)
        assert torch.equal(masks[0], plain_mask)
        for got, want in zip(_bn_buffers(model), expected_buffers):
            assert torch.equal(got, want)
        assert int(model[1].num_batches_tracked) == step + 1
        assert torch.equal(torch.get_rng_state(), expected_rng), "the RNG stream must continue as after one pass"
        if step > 0:
            assert torch.equal(masks[0], masks[1]), "both passes must draw the same dropout masks"


def test_without_model_batchnorm_updates_twice_but_masks_still_match() -> None:
    """Documented behaviour without attach(): running stats see both passes; RNG replay still works."""
    model = _bn_dropout_model()
    optimizer = GALA(model.parameters(), lr=1e-2)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    for step in range(3):
        masks.clear()
        optimizer.step(_bn_closure(model, optimizer, *_bn_data(step)))
    assert int(model[1].num_batches_tracked) == 1 + 2 + 2
    assert torch.equal(masks[0], masks[1])


def test_rng_replay_can_be_switched_off() -> None:
    model = _bn_dropout_model()
    optimizer = GALA(model.parameters(), lr=1e-2, model=model, replay_rng=False)
    masks: list[torch.Tensor] = []
    model[2].register_forward_hook(lambda module, inputs, output: masks.append(output != 0))
    for step in range(2):
        masks.clear()
        optimizer.step(_bn_closure(model, optimizer, *_bn_data(step)))
    assert not torch.equal(masks[0], masks[1])


def test_attach_rejects_bad_arguments() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="buffers"):
        GALA(model.parameters(), model=model, buffers="some")
    with pytest.raises(ValueError, match="model"):
        GALA(model.parameters()).attach("not a module")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- NaN in the 2nd pass
@pytest.mark.parametrize("nonfinite", ["raise", "skip", "off"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_second_evaluation_drops_only_its_feedback(nonfinite: str, bad: float) -> None:
    model = make_model()
    # lr_min > 0 keeps the parameters moving, so the base step after the dropped feedback is visible
    optimizer = GALA(model.parameters(), lr=1e-2, lr_min=1e-3, nonfinite=nonfinite)
    train(model, optimizer, 3)
    before = {k: v.clone() for k, v in optimizer.global_state.items()}
    x, y = make_data()
    xb, yb = batches(3, x, y)
    calls = []

    def second_call_poisoned() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        if len(calls) == 2:
            next(model.parameters()).grad[0, 0] = bad
        return loss

    params_before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(second_call_poisoned)
    state = optimizer.global_state
    assert torch.equal(state["A"], before["A"]) and torch.equal(state["B"], before["B"])
    assert torch.equal(state["eta"], before["eta"])
    assert float(optimizer.stats["dropped_feedback"]) == 1
    # the base step from the finite g_t still happened, and nothing became non-finite
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), params_before))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(v).all() for v in optimizer.global_state.values())
    train(model, optimizer, 3, start=4)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_eta_can_leave_zero() -> None:
    """At eta = 0 the parameters stop, dx = 0 gives L = 0, and the alignment <g, u_prev> still moves A."""
    weights = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    optimizer = GALA([weights], lr=1e-3, momentum=0.0)
    optimizer.global_state.update(
        step=torch.tensor(5.0, dtype=torch.float64), eta=torch.tensor(0.0, dtype=torch.float64),
        A=torch.tensor(-1e-3, dtype=torch.float64), B=torch.tensor(1.0, dtype=torch.float64),
        dropped_feedback=torch.tensor(0.0, dtype=torch.float64),
    )
    optimizer.state[weights] = {"prev_param": weights.detach().clone(), "momentum_buffer": torch.tensor([1.0, 2.0], dtype=torch.float64)}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * (weights ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert float(optimizer.stats["curvature"]) == 0.0
    assert float(optimizer.stats["alignment"]) == pytest.approx(5.0)
    assert float(optimizer.stats["lr"]) == pytest.approx((5.0 - 1e-3) / 1.0)
