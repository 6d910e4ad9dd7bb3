"""Bring your own model: turn plain callables into a :class:`Task` the harness can sweep.

Example::

    from tunefree.bench import make_task, run_sweep

    task = make_task(
        "my_problem",
        model=lambda: MyNet(),                          # initialised under torch.manual_seed(seed)
        batches=lambda seed: my_loader(seed),           # endless, deterministic for the seed
        loss=lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]),
        evaluate=lambda model, split: {"accuracy": acc(model, split)},
        metric="accuracy", higher_is_better=True, steps=500,
    )
    run_sweep(task, optimizers=["adamw", "momo", "gala"], seeds=3, out="ab-test")

Use module-level functions instead of lambdas to run on several worker processes (lambdas do not
pickle; the sweep then falls back to running in the calling process and says so).
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from tunefree.bench.tasks.base import Budget, DivergenceRule, Task, TaskInstance

__all__ = ["CallableTask", "make_task"]


def _call_with_optional_seed(fn: Callable[..., Any], seed: int) -> Any:
    """Call ``fn(seed)`` if it takes an argument, else ``fn()`` (the global seed is already set)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn(seed)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return fn(seed) if positional else fn()


@dataclass
class _CallableInstance(TaskInstance):
    task: "CallableTask" = None  # type: ignore[assignment]

    def batches(self) -> Iterator[Any]:
        stream = _call_with_optional_seed(self.task.batches_fn, self.seed)
        # a finite iterable (a DataLoader, a list) is cycled so a run never runs out of batches;
        # the cycle replays the same order, which keeps the run deterministic
        return itertools.cycle(stream) if not isinstance(stream, Iterator) else stream

    def loss(self, batch: Any) -> torch.Tensor:
        return self.task.loss_fn(self.model, batch)

    def evaluate(self, split: str) -> dict[str, float]:
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.task.eval_fn(self.model, split)
        finally:
            self.model.train()
        if isinstance(out, dict):
            return {k: float(v) for k, v in out.items()}
        return {self.task.metric: float(out)}


@dataclass(frozen=True)
class CallableTask(Task):
    """A task assembled from callables (see :func:`make_task`)."""

    model_fn: Callable[..., torch.nn.Module] | None = None
    batches_fn: Callable[..., Iterable[Any]] | None = None
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None
    eval_fn: Callable[[torch.nn.Module, str], Any] | None = None

    def __post_init__(self) -> None:
        for name in ("model_fn", "batches_fn", "loss_fn", "eval_fn"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable")

    def build(self, seed: int) -> TaskInstance:
        torch.manual_seed(seed)
        model = _call_with_optional_seed(self.model_fn, seed)  # type: ignore[arg-type]
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model factory returned {type(model).__name__}, not a torch.nn.Module")
        model.train()
        return _CallableInstance(model=model, seed=seed, task=self)

    def source_files(self) -> list[str]:
        """Files defining the callables: a change there changes the code version of the runs."""
        files = []
        for fn in (self.model_fn, self.batches_fn, self.loss_fn, self.eval_fn):
            try:
                source = inspect.getsourcefile(fn)  # type: ignore[arg-type]
            except TypeError:
                source = None
            if source and Path(source).exists():
                files.append(source)
        return files


def make_task(
    name: str,
    *,
    model: Callable[..., torch.nn.Module],
    batches: Callable[..., Iterable[Any]],
    loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    evaluate: Callable[[torch.nn.Module, str], Any],
    metric: str = "loss",
    higher_is_better: bool = False,
    steps: int = 200,
    eval_every: int | None = None,
    quick_steps: int | None = None,
    log_scale: bool = False,
    optimizer_kwargs: dict[str, dict[str, Any]] | None = None,
    description: str = "",
    divergence: DivergenceRule | None = None,
) -> CallableTask:
    """A :class:`Task` from plain callables.

    ``model([seed])`` returns the model (called after ``torch.manual_seed(seed)``); ``batches([seed])``
    returns the training batches (an endless iterator, or an iterable that is cycled; it must give the
    same order for the same seed); ``loss(model, batch)`` the mean loss tensor; ``evaluate(model, split)``
    a dict of metrics (or one number, the ``metric``) for ``split`` in ``"val"``/``"test"``.
    ``steps`` is the standard budget, ``quick_steps`` (default ``steps // 4``) the quick one.
    ``divergence`` decides when a run counts as diverged (default :class:`DivergenceRule`: a NaN/Inf
    loss, or the smoothed training loss above 10x the mean loss of the first 20 steps); e.g.
    ``DivergenceRule(factor=math.inf)`` keeps only the NaN/Inf rule for a loss that legitimately grows.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    every = eval_every or max(1, steps // 10)
    quick = quick_steps or max(1, steps // 4)
    budgets = {
        "quick": Budget(steps=quick, eval_every=max(1, min(every, quick // 5 or 1))),
        "standard": Budget(steps=steps, eval_every=every),
    }
    return CallableTask(
        name=name, description=description or f"user task {name}", metric=metric,
        higher_is_better=higher_is_better, budgets=budgets, log_scale=log_scale,
        optimizer_kwargs=dict(optimizer_kwargs or {}),
        model_fn=model, batches_fn=batches, loss_fn=loss, eval_fn=evaluate,
        divergence=divergence or DivergenceRule(),
    )
