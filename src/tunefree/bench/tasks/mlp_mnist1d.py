"""``mlp_mnist1d``: MLP classifier on MNIST-1D (a small, hard 1-D stand-in for MNIST).

* **Data**: ``mnist1d.data.make_dataset(get_dataset_args())`` with 20 000 samples (its default
  arguments otherwise, seed 42): 16 000 train / 4 000 test, 40 features, 10 classes. Generated locally
  (never ``get_dataset()``, which downloads) and cached as an .npz in the data folder (about 7 s the
  first time, milliseconds afterwards). Val: 10 % of train (1 600); train keeps 14 400.
* **Model**: MLP 40-256-256-10 with ReLU (79k parameters).
* **Loss**: mean cross-entropy. **Metric**: ``accuracy`` (higher is better); ``loss`` alongside.
* **Budget**: standard 30 epochs at batch 128 (3 360 steps, 14 evals); quick 1 200 steps (12 evals).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
from torch import nn

from ._common import ClassifierInstance, Split, init_model, to_splits
from .base import Budget, Task, cached_arrays

__all__ = ["MlpMnist1d", "make_task"]

NUM_SAMPLES = 20_000
DATA_SEED = 7
BATCH_SIZE = 128


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = NUM_SAMPLES
    # make_dataset reseeds Python's and numpy's global RNGs; restore them so building the cache has
    # no side effects on the caller.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int64),
            "x_test": data["x_test"].astype(np.float32), "y_test": data["y_test"].astype(np.int64)}


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    arrays = cached_arrays(f"mnist1d_{NUM_SAMPLES}_v1", _generate)
    return to_splits((arrays["x"], arrays["y"]), (arrays["x_test"], arrays["y_test"]), DATA_SEED)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


@dataclass(frozen=True)
class MlpMnist1d(Task):
    """Task object of ``mlp_mnist1d`` (see the module docstring)."""

    def build(self, seed: int) -> ClassifierInstance:
        return ClassifierInstance(model=init_model(seed, _mlp), seed=seed, splits=_splits(),
                                  batch_size=BATCH_SIZE)


def make_task() -> MlpMnist1d:
    return MlpMnist1d(
        name="mlp_mnist1d",
        description="MLP 40-256-256-10 on MNIST-1D (20k generated: 14.4k train / 1.6k val / 4k test); metric accuracy",
        metric="accuracy",
        higher_is_better=True,
        budgets={"quick": Budget(steps=1200, eval_every=100), "standard": Budget(steps=3360, eval_every=240)},
    )
