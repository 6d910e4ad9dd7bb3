"""MoMo / MoMo-Adam through Hugging Face Accelerate's prepared optimizer, on the CPU.

``accelerator.prepare`` wraps the optimizer in an ``AcceleratedOptimizer`` whose ``step(closure)`` has no
``loss=`` and which has no ``observe_loss``; ``tunefree.unwrap_optimizer`` reaches the tunefree optimizer,
and ``observe_loss`` on it followed by the wrapper's bare ``step()`` must equal a plain loop bitwise, also
with Accelerate's gradient accumulation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402

import tunefree  # noqa: E402
from tunefree import MoMo, MoMoAdam  # noqa: E402

STEPS = 6


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps process-wide singletons (state, gradient-accumulation settings): reset them so that
    each test builds its own Accelerator."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(torch.float64)
    x = torch.randn(32, 4, dtype=torch.float64)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    return model, x, y


def loss_of(model, x, y):
    return (model(x) - y).pow(2).mean()


def plain_run(cls, batch: int, **kwargs):
    """The reference: the plain loop with ``step(loss=)``, batches of ``batch`` rows."""
    model, x, y = model_and_data()
    optimizer = cls(model.parameters(), **kwargs)
    for step in range(STEPS):
        rows = slice(step * batch % 32, step * batch % 32 + batch)
        optimizer.zero_grad()
        loss = loss_of(model, x[rows], y[rows])
        loss.backward()
        optimizer.step(loss=loss)
    return [p.detach().clone() for p in model.parameters()], optimizer


@pytest.mark.parametrize("cls,kwargs", [(MoMo, {"lr": 1.0}), (MoMoAdam, {"lr": 0.1})], ids=["momo", "momo_adam"])
def test_observe_loss_through_the_prepared_optimizer(cls, kwargs):
    model, x, y = model_and_data()
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, cls(model.parameters(), **kwargs))
    assert not isinstance(optimizer, tunefree.optim._core.TunefreeOptimizer)
    inner = tunefree.unwrap_optimizer(optimizer)
    assert isinstance(inner, cls)
    with pytest.raises(TypeError):  # what users hit first: the wrapper's step has no loss= keyword
        optimizer.step(loss=torch.tensor(1.0))
    for step in range(STEPS):
        rows = slice(step * 8 % 32, step * 8 % 32 + 8)
        optimizer.zero_grad()
        loss = loss_of(model, x[rows], y[rows])
        accelerator.backward(loss)
        inner.observe_loss(loss)
        optimizer.step()
    expected, reference = plain_run(cls, 8, **kwargs)
    for got, want in zip(model.parameters(), expected):
        assert torch.equal(got.detach(), want)
    assert torch.equal(inner.stats["tau"], reference.stats["tau"])


def test_gradient_accumulation_feeds_the_mean_loss():
    """``accelerator.accumulate`` with 2 micro-batches of 8 rows = the plain loop on batches of 16 rows,
    when the mean of the micro-batch losses is observed at the synchronising micro-step."""
    model, x, y = model_and_data()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model, optimizer = accelerator.prepare(model, MoMo(model.parameters(), lr=1.0))
    inner = tunefree.unwrap_optimizer(optimizer)
    total = torch.zeros((), dtype=torch.float64)
    for micro in range(2 * STEPS):
        rows = slice(micro * 8 % 32, micro * 8 % 32 + 8)
        with accelerator.accumulate(model):
            loss = loss_of(model, x[rows], y[rows])
            accelerator.backward(loss)  # divides by gradient_accumulation_steps: the gradient of the mean
            total = total + loss.detach() / 2
            if accelerator.sync_gradients:
                inner.observe_loss(total)
                total = torch.zeros((), dtype=torch.float64)
            optimizer.step()
            optimizer.zero_grad()
    expected, _ = plain_run(MoMo, 16, lr=1.0)
    assert int(inner.global_state["step"]) == STEPS
    for got, want in zip(model.parameters(), expected):
        assert float((got.detach() - want).abs().max()) <= 1e-12


def test_unwrap_optimizer_finds_nothing_in_a_torch_optimizer():
    model, _, _ = model_and_data()
    with pytest.raises(ValueError, match="no tunefree optimizer inside AdamW"):
        tunefree.unwrap_optimizer(torch.optim.AdamW(model.parameters()))
    momo = MoMo(model.parameters())
    assert tunefree.unwrap_optimizer(momo) is momo
