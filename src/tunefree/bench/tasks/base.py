"""The task contract of the harness: what a training task declares and what one instantiation provides.

A :class:`Task` is a description (name, metric, budget); :meth:`Task.build` turns it into a
:class:`TaskInstance` for one seed: the model, initialised from the seed, a deterministic stream of
training batches, the loss, and evaluation on the validation and test splits. The runner owns the
optimizer and the loop; a task never sees the optimizer.
"""

from __future__ import annotations

import abc
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch


class TaskUnavailable(RuntimeError):
    """The task's data is not present on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Budget:
    """Steps of one run and how often it is evaluated on the validation split."""

    steps: int
    eval_every: int


@dataclass(frozen=True)
class DivergenceRule:
    """When a run counts as diverged: the runner feeds it every step's training loss.

    A run diverges when a training loss is NaN/Inf, or when the exponential moving average of the
    training loss, ``ema_t = smoothing * ema_{t-1} + (1 - smoothing) * loss_t`` (``ema_1 = loss_1``),
    exceeds ``reference + (factor - 1) * |reference|`` (``factor x reference`` for a positive loss),
    where ``reference`` is the mean training loss over the first ``window`` steps; nothing but
    non-finite values is judged before the window is complete. Single mini-batch losses are noisy (with
    batch size 1 near the optimum one batch's loss can be 100x another's), so neither side of the
    comparison uses one batch alone. ``factor=math.inf`` keeps only the non-finite rule. The runner also
    stores a run as diverged when an evaluation returns a non-finite metric or the optimizer refuses a
    non-finite step (``FloatingPointError``).
    """

    factor: float = 10.0
    smoothing: float = 0.9
    window: int = 20

    def __post_init__(self) -> None:
        if not (self.factor > 1.0):  # also refuses NaN
            raise ValueError(f"DivergenceRule factor must be > 1 (or math.inf), got {self.factor!r}")
        if not (0.0 <= self.smoothing < 1.0):
            raise ValueError(f"DivergenceRule smoothing must be in [0, 1), got {self.smoothing!r}")
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"DivergenceRule window must be an integer >= 1, got {self.window!r}")

    def monitor(self) -> "DivergenceMonitor":
        """A fresh monitor of one run under this rule."""
        return DivergenceMonitor(self)


class DivergenceMonitor:
    """The state of :class:`DivergenceRule` over one run: :meth:`update` with each step's loss."""

    def __init__(self, rule: DivergenceRule) -> None:
        self.rule = rule
        self.steps = 0
        self.ema = math.nan
        self.total = 0.0
        self.reference: float | None = None

    def update(self, loss: float) -> bool:
        """Take one step's training loss; True when the run has diverged."""
        if not math.isfinite(loss):
            return True
        self.steps += 1
        self.ema = loss if self.steps == 1 else self.rule.smoothing * self.ema + (1 - self.rule.smoothing) * loss
        if self.reference is None:
            self.total += loss
            if self.steps < self.rule.window:
                return False
            self.reference = self.total / self.steps
        if math.isinf(self.rule.factor):
            return False
        return self.ema > self.reference + (self.rule.factor - 1.0) * abs(self.reference)


@dataclass
class TaskInstance(abc.ABC):
    """One seeded instantiation of a task.

    ``model`` is initialised from the seed; :meth:`batches` yields the same sequence of batches for the
    same seed (the data order is part of the paired-seed protocol: every optimizer sees the same data).
    """

    model: torch.nn.Module
    seed: int

    @abc.abstractmethod
    def batches(self) -> Iterator[Any]:
        """Endless, deterministic stream of training batches (CPU tensors)."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Mean training loss of ``self.model`` on ``batch`` (a 0-dim tensor with a graph)."""

    @abc.abstractmethod
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics on ``split`` ("val" or "test") under ``torch.no_grad()`` in eval mode.

        The returned dict contains at least the task's ``metric`` key and ``"loss"``. The model is put
        back in train mode afterwards.
        """


@dataclass(frozen=True)
class Task(abc.ABC):
    """A training task of the benchmark suite.

    ``metric`` names the key of :meth:`TaskInstance.evaluate` that the report scores;
    ``higher_is_better`` gives its direction; ``log_scale`` marks convex tasks whose metric is
    ``log10(f - f*)`` (already in log form). ``budgets`` maps a suite name ("quick", "standard") to the
    :class:`Budget` of a run in that suite; a task absent from a suite's mapping is not part of it.
    ``optimizer_kwargs`` holds per-optimizer settings the task was designed with (e.g. MoMo's
    ``lower_bound`` when the loss floor is known), keyed by registry name. ``divergence`` is the rule
    that decides when a run has diverged (:class:`DivergenceRule`).
    """

    name: str
    description: str
    metric: str
    higher_is_better: bool
    budgets: dict[str, Budget]
    log_scale: bool = False
    zero_install: bool = True
    optimizer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    divergence: DivergenceRule = DivergenceRule()

    def check_available(self) -> None:
        """Raise :class:`TaskUnavailable` (with install instructions) if the data is missing."""

    @abc.abstractmethod
    def build(self, seed: int) -> TaskInstance:
        """Data (cached after the first call in this process), model initialised from ``seed``."""


# --------------------------------------------------------------------------------------------------
# Shared helpers for task modules (data cache, minibatch order). Additive: the contract above is
# unchanged.
# --------------------------------------------------------------------------------------------------

#: environment variable that overrides the data/cache folder (default ``~/.cache/tunefree``)
DATA_ENV_VAR = "TUNEFREE_DATA"


def data_dir() -> Path:
    """The folder for cached data sets and optional downloads (created if missing).

    ``$TUNEFREE_DATA`` if set, else ``~/.cache/tunefree``.
    """
    root = os.environ.get(DATA_ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tunefree"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    Several worker processes may build the same cache at the same time; the rename is atomic on
    POSIX (and ``os.replace`` on Windows), so readers see either no file or a complete one, never a
    half-written one. The last writer wins, which is harmless because all writers produce the same
    deterministic content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates the file 0600; give it the permissions a plain open() would (shared caches)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_ARRAY_MEMO: dict[Path, dict[str, np.ndarray]] = {}


def cached_arrays(name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from ``<data_dir>/<name>.npz``, built with ``build()`` and cached on first use.

    ``name`` should carry a version suffix (``"ctr_v1"``) so that a change to the generator never
    reads a stale cache. A cache file that cannot be read (e.g. truncated by a full disk) is rebuilt.
    Results are also memoised per process, since a worker builds the same task many times.
    """
    path = data_dir() / f"{name}.npz"
    if path in _ARRAY_MEMO:
        return _ARRAY_MEMO[path]
    arrays: dict[str, np.ndarray] | None = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            arrays = None
    if arrays is None:
        arrays = {key: np.asarray(value) for key, value in build().items()}
        # np.savez appends ".npz" to names without it; the temp name ends in ".tmp", so pass a file
        # object instead of a name.
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)
    _ARRAY_MEMO[path] = arrays
    return arrays


def iterate_minibatches(generator: torch.Generator, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Endless stream of index batches over ``range(n)``: a fresh permutation each epoch.

    Sampling without replacement within an epoch (the usual data-loader order). The incomplete last
    chunk of an epoch is dropped so that every batch has the same size; it differs from epoch to epoch,
    so no example is left out for good. ``batch_size`` larger than ``n`` gives full batches of size
    ``n`` (full-batch gradient descent).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]
