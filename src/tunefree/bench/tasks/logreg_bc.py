"""``logreg_bc``: L2-regularised logistic regression on the breast-cancer data, known optimum.

* **Data**: scikit-learn's bundled ``load_breast_cancer`` (569 x 30, binary), zero-install. Test is a
  fixed 20 % (114 rows); val is 10 % of the rest (46 rows); train has the remaining 409 rows. Features
  are standardised with the train split's mean and std.
* **Model**: ``nn.Linear(30, 1)`` in float64 (logits).
* **Loss**: mean logistic loss + ``1e-3 / 2 * ||w||^2`` (bias not regularised).
* **f\\***: minimum of the full training objective, from scipy L-BFGS (float64, gtol 1e-12) polished
  by Newton steps; cached in the data folder.
* **Metric**: ``log10_subopt`` = log10(f(w) - f*) of the full training objective (lower is better;
  floored at 1e-15). Extras: ``subopt``, ``objective``, held-out ``loss`` and ``accuracy``.
* **Budget**: standard 100 epochs at batch 32 (1200 steps, 12 evals); quick the same (well under 1 s).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import Split, carve_validation, init_model, to_splits
from ._convex import ConvexInstance
from .base import Budget, Task, cached_arrays

__all__ = ["L2", "LogRegBC", "make_task", "solution"]

L2 = 1e-3
DATA_SEED = 20240501
BATCH_SIZE = 32


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    rest, test = carve_validation(len(y), 0.2, DATA_SEED)
    splits = to_splits((x[rest], y[rest]), (x[test], y[test]), DATA_SEED + 1,
                       dtypes=(torch.float64, torch.float64))
    # standardise with train statistics only, so val/test carry no information into training
    mean = splits["train"][0].mean(dim=0)
    std = splits["train"][0].std(dim=0)
    return {name: ((xs - mean) / std, ys) for name, (xs, ys) in splits.items()}


def _objective_np(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Objective and gradient in numpy; ``theta = [w, b]``."""
    w, b = theta[:-1], theta[-1]
    z = x @ w + b
    value = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * L2 * w @ w
    r = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
    grad = np.append(x.T @ r + L2 * w, r.sum())
    return float(value), grad


def _solve() -> dict[str, np.ndarray]:
    from scipy.optimize import minimize

    x, y = (t.numpy() for t in _splits()["train"])
    result = minimize(_objective_np, np.zeros(x.shape[1] + 1), args=(x, y), jac=True, method="L-BFGS-B",
                      options={"maxiter": 20000, "ftol": 0.0, "gtol": 1e-12})
    theta = result.x
    # A few Newton steps take L-BFGS's answer to machine precision (d = 31, so the Hessian is cheap);
    # the metric resolves suboptimality down to 1e-15, so f* must be that exact.
    xb = np.hstack([x, np.ones((len(y), 1))])
    reg = np.diag(np.append(np.full(x.shape[1], L2), 0.0))
    for _ in range(5):
        _, grad = _objective_np(theta, x, y)
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + reg
        theta = theta - np.linalg.solve(hess, grad)
    f_star, grad = _objective_np(theta, x, y)
    return {"theta": theta, "f_star": np.array(f_star), "grad_norm": np.array(np.linalg.norm(grad))}


def solution() -> tuple[float, np.ndarray]:
    """``(f*, theta*)`` of the training objective, ``theta* = [w*, b*]`` (cached on disk)."""
    arrays = cached_arrays("logreg_bc_fstar_v1", _solve)
    return float(arrays["f_star"]), arrays["theta"]


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float(((pred > 0).double() == y).double().mean())}


@dataclass(frozen=True)
class LogRegBC(Task):
    """Task object of ``logreg_bc`` (see the module docstring)."""

    def build(self, seed: int) -> ConvexInstance:
        splits = _splits()
        f_star, _ = solution()
        model = init_model(seed, lambda: nn.Linear(splits["train"][0].shape[1], 1).double())
        return ConvexInstance(model=model, seed=seed, splits=splits, batch_size=BATCH_SIZE,
                              data_loss=F.binary_cross_entropy_with_logits, l2=L2, f_star=f_star,
                              extra_metrics=_accuracy)


def make_task() -> LogRegBC:
    budget = Budget(steps=1200, eval_every=100)
    return LogRegBC(
        name="logreg_bc",
        description=("L2-regularised (1e-3) logistic regression on sklearn breast_cancer (409 train rows, "
                     "standardised), float64; metric log10(f - f*) of the full training objective, "
                     "f* from L-BFGS + Newton"),
        metric="log10_subopt",
        higher_is_better=False,
        log_scale=True,
        budgets={"quick": budget, "standard": budget},
    )
