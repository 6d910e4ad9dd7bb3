"""Shared instance for the convex tasks with a known optimum (``logreg_bc``, ``lsq_synth``).

The metric is ``log10(f(w) - f*)`` of the **full training objective** f (not of the held-out split):
these tasks measure optimisation, and f* is exact. Held-out losses are reported under ``"loss"``.
Everything runs in float64 so that suboptimality down to ~1e-14 is resolvable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ._common import ArrayInstance, Split, safe_log10

__all__ = ["ConvexInstance", "SUBOPT_FLOOR"]

#: f - f* below this is reported as this (float64 rounding of a mean of ~1e3 terms is ~1e-16 relative)
SUBOPT_FLOOR = 1e-15


@dataclass
class ConvexInstance(ArrayInstance):
    """Linear model ``nn.Linear(d, 1)`` (float64) with objective ``data_loss(x w + b, y) + l2/2 ||w||^2``.

    ``data_loss(pred, y)`` is the mean per-example loss. The minibatch loss is the same expression on
    the batch, so its expectation over the batch order is the full training objective.
    """

    data_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    l2: float
    f_star: float
    #: extra metrics from (pred, y) on a split, e.g. accuracy for classification
    extra_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None

    def _objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model: nn.Linear = self.model  # type: ignore[assignment]
        value = self.data_loss(model(x).squeeze(-1), y)
        if self.l2:
            value = value + 0.5 * self.l2 * model.weight.pow(2).sum()
        return value

    def loss(self, batch: Split) -> torch.Tensor:
        return self._objective(*batch)

    def train_objective(self) -> float:
        """f(w) on the whole training split (what f* refers to)."""
        with torch.no_grad():
            return float(self._objective(*self.splits["train"]))

    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        objective = float(self._objective(*self.splits["train"]))
        subopt = objective - self.f_star
        x, y = tensors
        pred = self.model(x).squeeze(-1)
        out = {
            "log10_subopt": safe_log10(subopt, SUBOPT_FLOOR),
            "subopt": subopt,
            "objective": objective,
            # held-out data loss (no regulariser): generalisation, reported next to the metric
            "loss": float(self.data_loss(pred, y)),
        }
        if self.extra_metrics is not None:
            out.update(self.extra_metrics(pred, y))
        return out
