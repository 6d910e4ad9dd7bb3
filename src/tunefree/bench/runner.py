"""Train one run spec and return its measurements; never raises.

The loop is the same for every optimizer: a closure that re-evaluates the current batch is passed to
``step`` (torch optimizers call it once, MoMo needs the loss it returns, GALA calls it twice). Outcomes:

* ``ok``: the budget finished with finite metrics;
* ``diverged``: the loss became NaN/Inf or exceeded 10x its first value, the optimizer refused a
  non-finite step (``FloatingPointError``), or the final validation metric is not finite. The run stops
  early; this is a result, not a crash;
* ``error``: any other exception (the traceback is kept), so one broken run never stops a sweep.

Optimizers with ``train()``/``eval()`` methods (Schedule-Free: the weights it steps are not the weights
to evaluate) are put in eval mode for every evaluation and in train mode before every step; the first
``train()`` comes before the first step. torch's optimizers have no such methods and are untouched.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tunefree.bench.sweep import RunSpec, resolve_optimizer, resolve_task
from tunefree.bench.tasks.base import Task

__all__ = ["RunResult", "run_one", "subsample", "MAX_TRACE_POINTS", "DIVERGENCE_FACTOR"]

#: loss above this multiple of the first step's loss counts as divergence
DIVERGENCE_FACTOR = 10.0
#: per-step traces longer than this are subsampled before storage (the ledger stays small)
MAX_TRACE_POINTS = 512


@dataclass
class RunResult:
    """Everything measured in one run (JSON-friendly: plain floats, lists and dicts)."""

    spec: RunSpec
    status: str  # "ok" | "diverged" | "error"
    error: str | None = None
    steps_done: int = 0
    grad_evals: int = 0
    diverged_step: int | None = None
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    #: [(step, {metric: value})], step 0 = before training
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: {stat name: (steps, values)}
    stats: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    final_val: dict[str, float] | None = None
    final_test: dict[str, float] | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subsample(steps: list[int], values: list[float], limit: int = MAX_TRACE_POINTS) -> tuple[list[int], list[float]]:
    """At most ``limit`` evenly spaced points, always keeping the first and the last one."""
    n = len(values)
    if n <= limit:
        return list(steps), list(values)
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [steps[i] for i in idx], [values[i] for i in idx]


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _set_mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """Call ``opt.train()`` or ``opt.eval()`` if the optimizer has it (Schedule-Free keeps the point to
    evaluate apart from the point it steps); a no-op for torch's optimizers, which have neither."""
    method = getattr(opt, mode, None)
    if callable(method):
        method()


def run_one(spec: RunSpec, task: Task | None = None) -> RunResult:
    """Run ``spec`` to completion, divergence or error. Deterministic given the spec: the seed fixes the
    initialisation (``torch.manual_seed`` + ``task.build(seed)``) and the data order, and torch uses one
    thread during the run so that reductions do not depend on the executor."""
    result = RunResult(spec=spec, status="ok")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(spec, task, result)
    except FloatingPointError as exc:  # tunefree optimizers refuse non-finite steps with a subclass of this
        result.status = "diverged"
        result.diverged_step = result.steps_done + 1
        result.error = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - any failure of one run is recorded, never raised into the sweep
        result.status = "error"
        result.error = traceback.format_exc(limit=20)
    finally:
        torch.set_num_threads(threads)
        result.wall_s = time.perf_counter() - wall0
        result.cpu_s = time.process_time() - cpu0
    result.loss_steps, result.losses = subsample(result.loss_steps, result.losses)
    for key, (steps, values) in list(result.stats.items()):
        result.stats[key] = subsample(steps, values)
    return result


def _train(spec: RunSpec, task: Task | None, result: RunResult) -> None:
    task = task if task is not None else resolve_task(spec.task_ref or spec.task)
    entry = resolve_optimizer(spec.optimizer)
    torch.manual_seed(spec.seed)
    inst = task.build(spec.seed)
    kwargs = {**task.optimizer_kwargs.get(spec.optimizer, {}), **spec.kwargs_dict}
    opt = entry.create(inst.model.parameters(), lr=spec.lr, **kwargs)
    trace_keys = tuple(spec.trace_stats) or entry.trace_stats

    # step 0: the metric at initialisation is m_init of the normalised score; then train mode, which
    # Schedule-Free requires before its first step
    _set_mode(opt, "eval")
    result.evals.append((0, _finite_metrics(inst.evaluate("val"))))
    _set_mode(opt, "train")

    batch_iter = iter(inst.batches())
    first_loss: float | None = None
    for step in range(1, spec.steps + 1):
        batch = next(batch_iter)
        closure_losses: list[float] = []

        def closure(batch: Any = batch) -> torch.Tensor:
            opt.zero_grad()
            loss = inst.loss(batch)
            loss.backward()
            closure_losses.append(float(loss.detach()))
            result.grad_evals += 1
            return loss

        returned = opt.step(closure)
        # the loss at the pre-step parameters: what step() returns, else the first closure evaluation
        if returned is not None:
            loss_value = float(returned.detach()) if torch.is_tensor(returned) else float(returned)
        elif closure_losses:
            loss_value = closure_losses[0]
        else:
            loss_value = math.nan
        result.steps_done = step
        result.loss_steps.append(step)
        result.losses.append(loss_value)
        stats = getattr(opt, "stats", None) or {}
        for key in trace_keys:
            if key in stats:
                steps_list, values = result.stats.setdefault(key, ([], []))
                steps_list.append(step)
                values.append(float(stats[key]))

        if first_loss is None:
            first_loss = loss_value
        if not math.isfinite(loss_value) or (
            math.isfinite(first_loss) and loss_value > DIVERGENCE_FACTOR * abs(first_loss)
        ):
            result.status = "diverged"
            result.diverged_step = step
            return

        if step % spec.eval_every == 0 or step == spec.steps:
            _set_mode(opt, "eval")
            result.evals.append((step, _finite_metrics(inst.evaluate("val"))))
            if step < spec.steps:  # after the last step stay in eval mode: val and test see the same weights
                _set_mode(opt, "train")

    _set_mode(opt, "eval")  # a no-op after the last evaluation; matters only for a 0-step budget
    result.final_val = dict(result.evals[-1][1])  # the loop always evaluates at the last step
    result.final_test = _finite_metrics(inst.evaluate("test"))
    if not math.isfinite(result.final_val.get(spec.metric, math.nan)):
        result.status = "diverged"
        result.diverged_step = spec.steps
