"""``lsq_synth``: synthetic least squares with condition number 1e3 and closed-form optimum.

* **Data** (generated, fixed data seed): d = 200 features with population covariance
  ``V diag(s^2) V^T``, ``s^2`` log-spaced from 1 down to 1e-3. The 1000 **train** rows are built so
  that their empirical Hessian ``X^T X / n`` is *exactly* that matrix (condition number exactly 1e3);
  val (100 rows) and test (1000 rows) are drawn from the population. Targets ``y = x w_true + 0.1 eps``.
* **Model**: ``nn.Linear(200, 1, bias=False)`` in float64.
* **Loss**: ``1/2 mean (x w - y)^2``; f* of the training objective from ``numpy.linalg.lstsq``.
* **Metric**: ``log10_subopt`` = log10(f(w) - f*) on the full training objective (lower is better,
  floored at 1e-15). Extras: ``subopt``, ``objective``, held-out ``loss``.
* **Budget**: ~100 epochs at batch 32 (3000 steps, 15 evals), in both suites (under a second).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._common import Split, init_model
from ._convex import ConvexInstance
from .base import Budget, Task, cached_arrays

__all__ = ["LsqSynth", "make_task"]

DATA_SEED = 1234
N_TRAIN, N_VAL, N_TEST, DIM = 1000, 100, 1000, 200
CONDITION = 1e3
NOISE = 0.1
BATCH_SIZE = 32
#: ~100 epochs at batch 32; under a second on one thread, so the quick suite runs it in full too
BUDGET = Budget(steps=3000, eval_every=200)


def _generate() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    scales = np.sqrt(np.logspace(0.0, -np.log10(CONDITION), DIM))  # s, so that s^2 spans [1/cond, 1]
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))  # V
    # Train: orthonormal columns U (U^T U = I), X = sqrt(n) U diag(s) V^T  =>  X^T X / n = V diag(s^2) V^T.
    u, _ = np.linalg.qr(rng.standard_normal((N_TRAIN, DIM)))
    x_train = np.sqrt(N_TRAIN) * (u * scales) @ rotation.T
    # Held-out rows from the population with the same covariance
    x_val = (rng.standard_normal((N_VAL, DIM)) * scales) @ rotation.T
    x_test = (rng.standard_normal((N_TEST, DIM)) * scales) @ rotation.T
    w_true = rng.standard_normal(DIM)
    ys = [x @ w_true + NOISE * rng.standard_normal(len(x)) for x in (x_train, x_val, x_test)]
    w_star = np.linalg.lstsq(x_train, ys[0], rcond=None)[0]
    f_star = 0.5 * np.mean((x_train @ w_star - ys[0]) ** 2)
    return {"x_train": x_train, "y_train": ys[0], "x_val": x_val, "y_val": ys[1],
            "x_test": x_test, "y_test": ys[2], "f_star": np.array(f_star)}


@functools.lru_cache(maxsize=1)
def _data() -> tuple[dict[str, Split], float]:
    arrays = cached_arrays("lsq_synth_v1", _generate)
    splits = {name: (torch.from_numpy(arrays[f"x_{name}"]), torch.from_numpy(arrays[f"y_{name}"]))
              for name in ("train", "val", "test")}
    return splits, float(arrays["f_star"])


def _half_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (pred - y).pow(2).mean()


@dataclass(frozen=True)
class LsqSynth(Task):
    """Task object of ``lsq_synth`` (see the module docstring)."""

    def build(self, seed: int) -> ConvexInstance:
        splits, f_star = _data()
        model = init_model(seed, lambda: nn.Linear(DIM, 1, bias=False).double())
        return ConvexInstance(model=model, seed=seed, splits=splits, batch_size=BATCH_SIZE,
                              data_loss=_half_mse, l2=0.0, f_star=f_star)


def make_task() -> LsqSynth:
    return LsqSynth(
        name="lsq_synth",
        description=("synthetic least squares, 1000 x 200, train Hessian condition number exactly 1e3, "
                     "noise 0.1, float64; metric log10(f - f*) of the full training objective, "
                     "f* in closed form"),
        metric="log10_subopt",
        higher_is_better=False,
        log_scale=True,
        budgets={"quick": BUDGET, "standard": BUDGET},
    )
