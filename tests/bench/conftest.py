"""A tiny synthetic task for the harness tests (no dependency on the real tasks).

Linear regression with 4 features: a few milliseconds per run. The module is also loaded by path
(``--task tests/bench/conftest.py:make_tiny_task``) in CLI subprocess tests, so keep its top level free
of test-only side effects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from tunefree.bench.tasks.base import Budget, Task, TaskInstance

HERE = Path(__file__).resolve().parent
TASK_FILE = HERE / "conftest.py"

_W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _split(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ _W + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


@dataclass
class TinyInstance(TaskInstance):
    task: "TinyTask" = None  # type: ignore[assignment]

    def batches(self) -> Iterator[Any]:
        x, y = _split(1000, 256)
        g = torch.Generator().manual_seed(self.seed)  # the seed fixes the data order
        while True:
            idx = torch.randint(0, 256, (16,), generator=g)
            yield x[idx], y[idx]

    def loss(self, batch: Any) -> torch.Tensor:
        if self.task.crash_at is not None:
            self.task_calls = getattr(self, "task_calls", 0) + 1
            if self.task_calls >= self.task.crash_at:
                raise RuntimeError("tiny task crashed on purpose")
        if self.task.sleep:
            time.sleep(self.task.sleep)
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def evaluate(self, split: str) -> dict[str, float]:
        x, y = _split(2000 if split == "val" else 3000, 128)
        self.model.eval()
        with torch.no_grad():
            mse = float(torch.nn.functional.mse_loss(self.model(x), y))
        self.model.train()
        return {"loss": mse, "neg_mse": -mse}


@dataclass(frozen=True)
class TinyTask(Task):
    sleep: float = 0.0
    crash_at: int | None = None

    def build(self, seed: int) -> TaskInstance:
        torch.manual_seed(seed)
        return TinyInstance(model=torch.nn.Linear(4, 1), seed=seed, task=self)


def make_tiny_task(steps: int = 30, sleep: float = 0.0, crash_at: int | None = None,
                   name: str = "tiny", higher_is_better: bool = False) -> TinyTask:
    return TinyTask(
        name=name, description="tiny linear regression",
        metric="neg_mse" if higher_is_better else "loss", higher_is_better=higher_is_better,
        budgets={"quick": Budget(steps=steps, eval_every=10), "standard": Budget(steps=steps, eval_every=10)},
        sleep=sleep, crash_at=crash_at,
    )


def make_slow_task() -> TinyTask:
    """~0.3 s per run: slow enough to kill a sweep in the middle."""
    return make_tiny_task(steps=30, sleep=0.01, name="tiny_slow")


def make_slower_task() -> TinyTask:
    """~1.5 s per run: a 30-run sweep on 2 workers lasts ~20 s, so a test can start a second sweep (a fresh
    interpreter importing torch, several seconds on a loaded machine) and still interrupt the first."""
    return make_tiny_task(steps=30, sleep=0.05, name="tiny_slower")


@pytest.fixture
def tiny_task() -> TinyTask:
    return make_tiny_task()
