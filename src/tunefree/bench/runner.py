"""Train one run spec and return its measurements; never raises.

The loop is the same for every optimizer: a closure that re-evaluates the current batch is passed to
``step`` (torch optimizers call it once, MoMo needs the loss it returns, GALA calls it twice). Outcomes:

* ``ok``: the budget finished with finite metrics;
* ``diverged``: the task's :class:`~tunefree.bench.tasks.base.DivergenceRule` fired (a NaN/Inf
  training loss, or the smoothed training loss above ``factor`` times the mean loss of the first steps),
  the optimizer refused a non-finite step (``FloatingPointError``), or an evaluation returned a
  non-finite metric. The run stops early; this is a result, not a crash;
* ``error``: any other exception, ``sys.exit`` included (the traceback is kept), or an evaluation
  whose result lacks the task's metric (the message names the metric and the keys it got), so one
  broken run never stops a sweep. A run that kills its process (``os._exit``, a segfault) or hangs is
  contained by the executor, which runs every spec in a worker process.

Optimizers with ``train()``/``eval()`` methods (Schedule-Free: the weights it steps are not the weights
to evaluate) are put in eval mode for every evaluation and in train mode before every step; the first
``train()`` comes before the first step. torch's optimizers have no such methods and are untouched.

A learning-rate schedule other than ``"constant"`` (``spec.schedule``, the secondary setting of
the protocol, see docs/benchmark.md) is applied in the same way to every optimizer: a
``torch.optim.lr_scheduler.LambdaLR`` multiplies every param group's ``lr`` by :func:`lr_multiplier` and
is stepped once after each optimizer step. What that multiplier means depends on what ``lr`` means for
the method: for SGD/Adam/AdamW it is the step size; for MoMo it is the cap on the adaptive step; for GALA
the group ``lr`` is only the starting rate ``eta_0`` (read at the first step), so the schedule changes that
and GALA's adapted rate ignores it; Schedule-Free is meant to run without a schedule. A constant schedule
creates no scheduler at all, so constant-lr runs are unchanged.

Every run is watched by :func:`tunefree.watch` (``every=WATCH_EVERY`` steps, no sinks, no warnings): the
alerts it raises, ``(step, code, message)``, are part of the result (``RunResult.alerts``), so the ledger, the
CSV and the report show where the adaptation degenerated. The watcher only reads what the optimizer already
computed; it does not change the trajectory (tested).
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

import torch

from tunefree.bench.records import RunResult, RunSpec, parse_schedule
from tunefree.bench.resolve import resolve_optimizer, resolve_task
from tunefree.bench.tasks.base import Task

__all__ = ["RunResult", "run_one", "subsample", "lr_multiplier", "warmup_steps", "make_scheduler",
           "MAX_TRACE_POINTS", "WATCH_EVERY", "MissingMetric", "attach_watcher"]

#: per-step traces longer than this are subsampled before storage (the ledger stays small)
MAX_TRACE_POINTS = 512
#: the watcher of every run reads the optimizer's stats every this many steps (tunefree.watch's default)
WATCH_EVERY = 10


def subsample(steps: list[int], values: list[float], limit: int = MAX_TRACE_POINTS) -> tuple[list[int], list[float]]:
    """At most ``limit`` evenly spaced points, always keeping the first and the last one."""
    n = len(values)
    if n <= limit:
        return list(steps), list(values)
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [steps[i] for i in idx], [values[i] for i in idx]


class MissingMetric(KeyError):
    """``evaluate`` returned no value for the task's metric: a broken task, stored as an ``error``."""

    def __str__(self) -> str:
        return str(self.args[0])


def _evaluate(inst: Any, split: str, metric: str) -> dict[str, float]:
    """``inst.evaluate(split)`` as plain floats; raises :class:`MissingMetric` naming the metric and the
    keys it got when the result lacks the task's metric (else every run would read as diverged)."""
    values = {str(k): float(v) for k, v in inst.evaluate(split).items()}
    if metric not in values:
        got = ", ".join(sorted(values)) or "none"
        raise MissingMetric(f"evaluate(model, {split!r}) returned no {metric!r}, the task's metric (keys it "
                            f"returned: {got}); return it, or set the task's metric to one of these keys")
    return values


def _stop_if_not_finite(result: RunResult, step: int, metric: str) -> bool:
    """Mark the run diverged when its latest evaluation's metric is NaN/Inf; True if so."""
    if math.isfinite(result.evals[-1][1][metric]):
        return False
    result.status = "diverged"
    result.diverged_step = step
    return True


def _set_mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """Call ``opt.train()`` or ``opt.eval()`` if the optimizer has it (Schedule-Free keeps the point to
    evaluate apart from the point it steps); a no-op for torch's optimizers, which have neither."""
    method = getattr(opt, mode, None)
    if callable(method):
        method()


def warmup_steps(steps: int, fraction: float) -> int:
    """Warm-up steps of a ``steps``-step budget: ``fraction * steps`` rounded half up, and at most
    ``steps - 1`` so that at least one step of the cosine decay remains."""
    return max(0, min(int(fraction * steps + 0.5), steps - 1))


def lr_multiplier(done: int, steps: int, warmup: int) -> float:
    """Multiplier of the base lr for the step taken after ``done`` steps (``LambdaLR``'s argument).

    Linear warm-up over the first ``warmup`` steps, ``(done + 1) / warmup`` (the first step uses
    ``lr / warmup``, never 0; step ``warmup`` uses the full lr), then cosine decay
    ``(1 + cos(pi (done - warmup) / (steps - warmup))) / 2``: the full lr right after the warm-up, still
    positive at the last step, and exactly 0 once the last step is done (``done = steps``). No step uses
    lr 0, which some methods cannot take (GALA divides by its group lr).
    """
    if done < warmup:
        return (done + 1) / warmup
    decay = steps - warmup
    if decay <= 0:  # a 0-step budget: nothing to schedule
        return 1.0
    progress = min((done - warmup) / decay, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, spec: RunSpec) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The ``LambdaLR`` of ``spec.schedule`` on ``opt`` (stepped once after each optimizer step), or None
    for a constant schedule. Constructing it already sets every group's lr for the first step."""
    name, fraction = parse_schedule(spec.schedule)
    if name == "constant":
        return None
    steps = int(spec.steps)
    warmup = warmup_steps(steps, fraction)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda done: lr_multiplier(done, steps, warmup))


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
    except MissingMetric as exc:
        result.status = "error"
        result.error = f"MissingMetric: {exc}"
    except (Exception, SystemExit):  # noqa: BLE001 - a failed run (sys.exit in user code too) is recorded
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


def attach_watcher(opt: torch.optim.Optimizer) -> Any:
    """A silent :func:`tunefree.watch` of ``opt`` (no sinks, no warnings: the alerts are only recorded),
    or None for an optimizer the watcher cannot hook (not a ``torch.optim.Optimizer``)."""
    from tunefree.monitor import watch

    try:
        return watch(opt, every=WATCH_EVERY, sinks=[], warn=False)
    except TypeError:
        return None


def _train(spec: RunSpec, task: Task | None, result: RunResult) -> None:
    task = task if task is not None else resolve_task(spec.task_ref or spec.task)
    entry = resolve_optimizer(spec.optimizer, spec.optimizer_ref)  # a fresh worker imports a user's one
    torch.manual_seed(spec.seed)
    inst = task.build(spec.seed)
    kwargs = {**task.optimizer_kwargs.get(spec.optimizer, {}), **spec.kwargs_dict}
    opt = entry.create(inst.model.parameters(), lr=spec.lr, **kwargs)
    scheduler = make_scheduler(opt, spec)
    watcher = attach_watcher(opt)
    try:
        _loop(spec, task, inst, opt, scheduler, entry, result)
    finally:  # the alerts of a run that diverged or failed are kept too: they may say why
        if watcher is not None:
            watcher.close()
            result.alerts = [(int(a.step), str(a.code), str(a.message)) for a in watcher.alerts]


def _loop(spec: RunSpec, task: Task, inst: Any, opt: torch.optim.Optimizer, scheduler: Any, entry: Any,
          result: RunResult) -> None:
    trace_keys = tuple(spec.trace_stats) or entry.trace_stats

    # step 0: the metric at initialisation is m_init of the normalised score; then train mode, which
    # Schedule-Free requires before its first step
    _set_mode(opt, "eval")
    result.evals.append((0, _evaluate(inst, "val", spec.metric)))
    _set_mode(opt, "train")

    batch_iter = iter(inst.batches())
    divergence = task.divergence.monitor()
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
        if scheduler is not None:
            scheduler.step()  # the lr of the next step; after the last step a cosine schedule is at 0
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

        if divergence.update(loss_value):
            result.status = "diverged"
            result.diverged_step = step
            return

        if step % spec.eval_every == 0 or step == spec.steps:
            _set_mode(opt, "eval")
            result.evals.append((step, _evaluate(inst, "val", spec.metric)))
            if _stop_if_not_finite(result, step, spec.metric):
                return
            if step < spec.steps:  # after the last step stay in eval mode: val and test see the same weights
                _set_mode(opt, "train")

    _set_mode(opt, "eval")  # a no-op after the last evaluation; matters only for a 0-step budget
    result.final_val = dict(result.evals[-1][1])  # the loop always evaluates at the last step
    result.final_test = _evaluate(inst, "test", spec.metric)
    if spec.steps == 0:
        _stop_if_not_finite(result, 0, spec.metric)
