"""A small regression problem and a training driver for the watcher tests."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

import tunefree


def make_problem(seed: int = 0, scale: float = 2.0, noise: float = 0.1, n: int = 256, target: str = "tanh"):
    """An MLP and data: ``target="tanh"``: the loss stays below 1.5; ``"linear"``: linear targets of size
    ``scale * sqrt(8)``, whose curvature keeps MoMo's adaptive step below its default cap."""
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, 8, generator=generator)
    w = torch.randn(8, 1, generator=generator)
    y = (torch.tanh(x @ w / 3) if target == "tanh" else x @ w) + noise * torch.randn(n, 1, generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, x, y


def train(
    model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, steps: int,
    poison: Callable[[int], bool] = lambda step: False, mode: str = "closure",
    watcher: Optional[tunefree.Watcher] = None,
) -> list[float]:
    """``steps`` steps over a cycle of batches of 32; ``poison(step)`` (1-based) makes that step's loss NaN.
    ``mode``: how the loss reaches the optimizer (``closure``, ``loss`` keyword, ``observe_loss``,
    ``watcher`` = ``watcher.observe`` + bare ``step()``)."""
    losses = []
    for index in range(steps):
        rows = (torch.arange(32) + 32 * index) % x.shape[0]
        bad = poison(index + 1)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = ((model(x[rows]) - y[rows]) ** 2).mean()
            loss.backward()
            return loss * float("nan") if bad else loss

        if mode == "closure":
            loss = optimizer.step(closure)
        else:
            loss = closure()
            if mode == "loss":
                optimizer.step(loss=loss)
            elif mode == "observe_loss":
                optimizer.observe_loss(loss)
                optimizer.step()
            else:
                watcher.observe(loss)
                optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def watched_codes(make_optimizer: Callable[[nn.Module], Any], steps: int, problem: Optional[dict] = None,
                  **watch_options: Any) -> tuple[list[tuple[str, int]], tunefree.Watcher, Any]:
    """Train a fresh problem with a watcher (every=1 unless given); return the (code, step) of every
    AdaptationWarning raised, the watcher and the optimizer."""
    model, x, y = make_problem(**(problem or {}))
    optimizer = make_optimizer(model)
    poison = watch_options.pop("poison", lambda step: False)
    watch_options.setdefault("every", 1)
    watch_options.setdefault("sinks", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tunefree.watch(optimizer, **watch_options) as watcher:
            train(model, optimizer, x, y, steps, poison=poison)
    codes = [(w.message.code, w.message.step) for w in caught if isinstance(w.message, tunefree.AdaptationWarning)]
    return codes, watcher, optimizer
