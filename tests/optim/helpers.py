"""A small multi-tensor model, fixed data and a training driver shared by the optimizer tests."""

from __future__ import annotations

import copy
import io
from typing import Any, Callable

import torch
from torch import nn

#: Where the optimizer tests' models and data live. ``pytest --device cuda`` (tests/conftest.py) sets it, so
#: that the whole optimizer contract runs on a GPU; the default is the CPU.
DEVICE = torch.device("cpu")


def make_model(
    seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> nn.Module:
    """An MLP with six parameter tensors of different shapes (weights and biases)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.to(dtype=dtype, device=device or DEVICE)


def make_data(
    n: int = 64, seed: int = 1, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator, dtype=dtype)
    y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=generator, dtype=dtype)
    return x.to(device or DEVICE), y.to(device or DEVICE)


def batches(step: int, x: torch.Tensor, y: torch.Tensor, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic cycle of mini-batches (the loss is stochastic, as in training)."""
    start = (step * size) % x.shape[0]
    return x[start:start + size], y[start:start + size]


def make_closure(
    model: nn.Module, optimizer: Any, batch: tuple[torch.Tensor, torch.Tensor]
) -> Callable[[], torch.Tensor]:
    xb, yb = batch

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(xb) - yb) ** 2).mean()
        loss.backward()
        return loss

    return closure


def train(model: nn.Module, optimizer: Any, steps: int, start: int = 0, data=None) -> list[float]:
    """Run ``steps`` closure steps; return the losses."""
    first = next(model.parameters())
    x, y = data if data is not None else make_data(dtype=first.dtype, device=first.device)
    losses = []
    for step in range(start, start + steps):
        losses.append(float(optimizer.step(make_closure(model, optimizer, batches(step, x, y)))))
    return losses


def clone_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def checkpoint_and_resume(
    cls: type, kwargs: dict[str, Any], steps: int = 10, source: Any = None, target: Any = None
) -> tuple[nn.Module, nn.Module, Any]:
    """Train ``steps`` steps on ``source``, save model and optimizer through ``torch.save``, train ``steps``
    more; then build a model (other init) and optimizer on ``target`` from the checkpoint, loaded as saved.

    Returns (the model trained on, the resumed model, its optimizer); the caller continues the resumed one.
    """
    model = make_model(device=source)
    optimizer = cls(model.parameters(), **kwargs)
    train(model, optimizer, steps)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    train(model, optimizer, steps, start=steps)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = make_model(seed=123, device=target)  # different init: everything comes from the checkpoint
    resumed_model.load_state_dict(saved["model"])
    resumed = cls(resumed_model.parameters(), **kwargs)
    resumed.load_state_dict(saved["optimizer"])
    return model, resumed_model, resumed
