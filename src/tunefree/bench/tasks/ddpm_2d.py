"""``ddpm_2d``: DDPM epsilon-prediction on a 2-D swiss roll.

* **Data**: scikit-learn ``make_swiss_roll`` (noise 0.5, fixed seed), coordinates (x, z) standardised
  to zero mean and unit variance: 50 000 train (45 000 train + 5 000 val) and 10 000 test points.
* **Diffusion**: T = 100 steps, linear betas 1e-3 .. 0.2 (the usual 1e-4 .. 0.02 rescaled by 1000/T so
  that x_T is pure noise); ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.
* **Model**: MLP epsilon-denoiser: [x_t, sinusoidal embedding of t (64)] -> 128 -> 128 -> 128 -> 2,
  SiLU (about 42k parameters).
* **Loss**: mean squared error between predicted and true noise. Each training batch carries its own
  (t, eps), drawn from the run's batch generator, so the loss is a pure function of model and batch.
* **Metric**: ``denoise_mse`` on FIXED (x0, t, eps) triples (one per val/test point, drawn once from
  the data seed), lower is better; ``loss`` is the same number.
* **Budget**: standard 3 000 steps at batch 512 (15 evals); quick 600 steps (10 evals).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import ArrayInstance, Split, init_model, to_splits
from .base import Budget, Task, cached_arrays

__all__ = ["Ddpm2d", "Denoiser", "make_task"]

T = 100
N_TRAIN, N_TEST = 50_000, 10_000
DATA_SEED = 31
BATCH_SIZE = 512
TIME_DIM = 64
HIDDEN = 128


def _alpha_bars() -> torch.Tensor:
    betas = torch.linspace(1e-3, 0.2, T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


ALPHA_BARS = _alpha_bars()


def _generate() -> dict[str, np.ndarray]:
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(N_TRAIN + N_TEST, noise=0.5, random_state=DATA_SEED)
    xy = points[:, [0, 2]]
    xy = (xy - xy.mean(axis=0)) / xy.std(axis=0)
    rng = np.random.default_rng(DATA_SEED)
    # fixed evaluation noise for every point; only the val/test rows' draws are ever used
    t = rng.integers(0, T, size=len(xy))
    eps = rng.standard_normal(xy.shape)
    return {"x0": xy.astype(np.float32), "t": t.astype(np.int64), "eps": eps.astype(np.float32)}


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    arrays = cached_arrays("swiss_roll_v1", _generate)
    rows = (arrays["x0"], arrays["t"], arrays["eps"])
    return to_splits(tuple(a[:N_TRAIN] for a in rows), tuple(a[N_TRAIN:] for a in rows), DATA_SEED)


def noisy(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward-process sample ``x_t`` from ``x0``, time indices ``t`` and noise ``eps``."""
    abar = ALPHA_BARS[t].unsqueeze(-1)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps


class Denoiser(nn.Module):
    """Epsilon-prediction MLP on [x_t, sinusoidal(t)]."""

    def __init__(self, time_dim: int = TIME_DIM, hidden: int = HIDDEN) -> None:
        super().__init__()
        half = time_dim // 2
        # geometric frequencies as in the Transformer position encoding, for t in [0, T)
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(half) / half), persistent=False)
        self.net = nn.Sequential(
            nn.Linear(2 + time_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = t.float().unsqueeze(-1) * self.freqs
        return self.net(torch.cat([x_t, angles.sin(), angles.cos()], dim=-1))


@dataclass
class DdpmInstance(ArrayInstance):
    """Batches are (x0, t, eps); training draws fresh t and eps per batch from the batch generator."""

    def make_batch(self, tensors: Split, generator: torch.Generator) -> Split:
        x0 = tensors[0]
        t = torch.randint(0, T, (len(x0),), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        return x0, t, eps

    def loss(self, batch: Split) -> torch.Tensor:
        x0, t, eps = batch
        return F.mse_loss(self.model(noisy(x0, t, eps), t), eps)

    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        mse = float(self.loss(tensors))  # the split's fixed (x0, t, eps) triples
        return {"denoise_mse": mse, "loss": mse}


@dataclass(frozen=True)
class Ddpm2d(Task):
    """Task object of ``ddpm_2d`` (see the module docstring)."""

    def build(self, seed: int) -> DdpmInstance:
        return DdpmInstance(model=init_model(seed, Denoiser), seed=seed, splits=_splits(), batch_size=BATCH_SIZE)


def make_task() -> Ddpm2d:
    return Ddpm2d(
        name="ddpm_2d",
        description=("DDPM epsilon-denoiser MLP (T=100) on a standardised 2-D swiss roll (45k/5k/10k); "
                     "metric held-out denoising MSE on fixed (x0, t, eps) triples"),
        metric="denoise_mse",
        higher_is_better=False,
        budgets={"quick": Budget(steps=600, eval_every=60), "standard": Budget(steps=3000, eval_every=200)},
    )
