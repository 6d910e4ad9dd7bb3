"""Machinery shared by the task modules: seeding, splits, tensor-backed instances, classification eval.

Every task keeps two kinds of randomness apart:

* the **data seed** (a constant per task) fixes the data set and its train/val/test split, so every
  run of the benchmark sees the same data;
* the **run seed** fixes the model initialisation (:func:`init_model`) and the batch order
  (:func:`batch_generator`), so two optimizers run with the same seed are paired.
"""

from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import TaskInstance, iterate_minibatches

__all__ = [
    "ArrayInstance",
    "ClassifierInstance",
    "Split",
    "batch_generator",
    "carve_validation",
    "eval_mode",
    "init_model",
    "to_splits",
]

M = TypeVar("M", bound=nn.Module)

#: tensors of one split, all with the same first dimension (e.g. ``(x, y)``)
Split = tuple[torch.Tensor, ...]

# An arbitrary odd constant mixed into the run seed for the batch-order generator, so that the
# initialisation stream (global RNG seeded with ``seed``) and the batch stream are not the same
# Mersenne-Twister sequence.
_BATCH_SALT = 0x9E3779B97F4A7C15


def batch_generator(seed: int) -> torch.Generator:
    """A CPU generator for the batch order of run ``seed`` (independent of the global RNG)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + _BATCH_SALT) % (2**63))


def init_model(seed: int, factory: Callable[[], M]) -> M:
    """Build the model with ``torch.manual_seed(seed)`` without touching the caller's RNG state.

    The runner seeds the global RNG before ``build``, but building data in between may or may not
    consume global random numbers (first build vs. cached); seeding right here makes the
    initialisation depend on the seed alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def carve_validation(n: int, fraction: float, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, val) index arrays; val is ``fraction`` of ``n``, fixed by ``data_seed``."""
    perm = np.random.default_rng(data_seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_splits(
    train: tuple[np.ndarray, ...],
    test: tuple[np.ndarray, ...],
    data_seed: int,
    val_fraction: float = 0.1,
    dtypes: tuple[torch.dtype, ...] | None = None,
) -> dict[str, Split]:
    """Torch splits ``{"train", "val", "test"}``: val carved from ``train`` (LR selection), test kept apart.

    ``dtypes`` gives one dtype per array (default: as numpy has them).
    """
    train_idx, val_idx = carve_validation(len(train[0]), val_fraction, data_seed)

    def convert(arrays: tuple[np.ndarray, ...], idx: np.ndarray | None) -> Split:
        out = []
        for i, array in enumerate(arrays):
            part = np.ascontiguousarray(array if idx is None else array[idx])
            if not part.flags.writeable:  # e.g. np.frombuffer views; torch warns on read-only memory
                part = part.copy()
            tensor = torch.from_numpy(part)
            if dtypes is not None:
                tensor = tensor.to(dtypes[i])
            out.append(tensor)
        return tuple(out)

    return {"train": convert(train, train_idx), "val": convert(train, val_idx), "test": convert(test, None)}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``no_grad`` for the block; the model is back in train mode afterwards, even on error."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()


@dataclass
class ArrayInstance(TaskInstance):
    """A task instance whose data are in-memory tensors split into train/val/test.

    :meth:`batches` draws index batches with :func:`iterate_minibatches` (a fresh permutation each
    epoch, from :func:`batch_generator`) and passes them through :meth:`make_batch`, where a task can
    add per-batch randomness drawn from the same generator (e.g. diffusion noise), so that
    :meth:`loss` stays a pure function of model and batch. Subclasses implement :meth:`loss` and
    :meth:`metrics`.
    """

    splits: dict[str, Split]
    batch_size: int

    def batches(self) -> Iterator[Any]:
        generator = batch_generator(self.seed)
        train = self.splits["train"]
        for idx in iterate_minibatches(generator, len(train[0]), self.batch_size):
            yield self.make_batch(tuple(t[idx] for t in train), generator)

    def make_batch(self, tensors: Split, generator: torch.Generator) -> Any:
        """Turn the selected training rows into a batch (default: as they are)."""
        return tensors

    @abc.abstractmethod
    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        """Metrics of the model on ``tensors`` (called in eval mode under ``no_grad``)."""

    def evaluate(self, split: str) -> dict[str, float]:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        with eval_mode(self.model):
            return self.metrics(split, self.splits[split])


def chunked_forward(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``model(x)`` in chunks, to bound the activation memory of large evaluation sets."""
    return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])


@dataclass
class ClassifierInstance(ArrayInstance):
    """Splits ``(x, y)`` with integer labels; model returns logits. Loss: mean cross-entropy.

    Metrics: ``accuracy`` (fraction correct) and ``loss`` (mean cross-entropy in nats).
    """

    def loss(self, batch: Split) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def metrics(self, split: str, tensors: Split) -> dict[str, float]:
        x, y = tensors
        logits = chunked_forward(self.model, x)
        return {
            "accuracy": float((logits.argmax(dim=1) == y).double().mean()),
            "loss": float(F.cross_entropy(logits, y)),
        }


def safe_log10(value: float, floor: float) -> float:
    """``log10(max(value, floor))``: suboptimality can round to <= 0 at the optimum; NaN/inf pass through."""
    if math.isnan(value) or math.isinf(value):
        return value
    return math.log10(max(value, floor))
