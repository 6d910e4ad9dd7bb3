"""``tunefree.watch``: watch an optimizer's adaptation from its step hooks, with no change to the loop.

The watcher registers a step pre-hook and a step post-hook (``torch.optim.Optimizer.register_step_*_hook``):

* the **pre-hook** picks up the loss the step is given (``step(loss=...)``, the value the closure returns,
  or ``optimizer.observe_loss(...)``) by reference, without reading it;
* the **post-hook** counts the step, notes a step skipped by ``nonfinite="skip"`` (from the identity of the
  optimizer's skip counter, so without reading a tensor), and on every ``every``-th step reads the loss and
  every stat of every param group (``optimizer.stats``, ``optimizer.group_stats``) in **one** transfer.

That read is the only host synchronisation the watcher adds: once per ``every`` steps it waits for the
device to finish the step (on a GPU the host otherwise runs ahead of the device). On a CPU it costs the
copy of a few scalars. ``every=1`` checks every step; the default 10 keeps the cost below measurement
noise on the models of the benchmark (see ``benchmarks/watch_cost.py``).

Memory is bounded: the samples of the longest alert window (a ``deque``), the early-loss mean (a sum
and a count), and the last ``max_alerts`` alerts; nothing grows with the number of steps.
"""

from __future__ import annotations

import collections
import logging
import math
import warnings
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from tunefree.monitor.alerts import (
    CODES,
    AdaptationWarning,
    Alert,
    Context,
    EpisodeTracker,
    Sample,
    Thresholds,
    evaluate_rules,
)

__all__ = ["Sink", "Watcher", "watch"]

logger = logging.getLogger("tunefree")
# A library's records reach the handlers the application configures, and only those: without this the
# alerts would also be printed by logging's last-resort handler, next to the warning itself.
logger.addHandler(logging.NullHandler())

#: a sink receives (step, {name: value}, [alerts raised at this step]) at every sample
Sink = Callable[[int, dict[str, float], list[AdaptationWarning]], None]

# optimizer.stats keys that are bookkeeping, not adaptive quantities: the skip counter is reported by the
# watcher itself (the optimizer only shows it on the step right after a skip), and the optimizer's step
# counter would clash with the watcher's own step
_NOT_SAMPLED = ("skipped_steps", "step")


def _innermost(optimizer: Any) -> Any:
    """The torch optimizer inside trainer wrappers (accelerate's, Lightning's): its ``step`` is the one
    that runs, so its hooks are the ones that fire."""
    from tunefree.integrations import find_tunefree_optimizer

    found = find_tunefree_optimizer(optimizer)
    if found is not None:
        return found
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"watch: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer


class Watcher:
    """Watches one optimizer; create it with :func:`watch`. See the module docstring for what it reads
    and when.

    Attributes:
        step: optimizer steps seen since attaching (1-based after the first step).
        alerts: the alerts raised so far (at most ``max_alerts``, oldest dropped), as
            :class:`~tunefree.monitor.alerts.Alert` ``(step, code, message)`` tuples.
        alert_counts: alerts raised per code (all of them, also those dropped from ``alerts``).
        latest: the values of the last sample, ``{name: float}``.
    """

    def __init__(
        self,
        optimizer: Any,
        every: int = 10,
        *,
        thresholds: Optional[Thresholds] = None,
        sinks: Optional[Sequence[Union[str, Sink]]] = None,
        csv: Optional[str] = None,
        tensorboard: Any = None,
        warn: bool = True,
        disable: Sequence[str] = (),
        max_alerts: int = 1000,
    ) -> None:
        from tunefree.monitor.sinks import CSVSink, LoggingSink, TensorBoardSink

        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(
                f"watch: every must be an integer >= 1 (read the stats every that many steps), got {every!r}"
            )
        unknown = [code for code in disable if code not in CODES]
        if unknown:
            raise ValueError(f"watch: disable names unknown alert codes {unknown}; the codes are {list(CODES)}")
        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise TypeError(f"watch: thresholds must be a tunefree.Thresholds, got {type(thresholds).__name__}")
        self.optimizer = _innermost(optimizer)
        self.every = every
        self.thresholds = thresholds or Thresholds()
        self.warn = bool(warn)
        self.disable = tuple(disable)
        self.sinks: list[Sink] = []
        for sink in ("logging",) if sinks is None else sinks:
            if sink == "logging":
                self.sinks.append(LoggingSink())
            elif callable(sink):
                self.sinks.append(sink)
            else:
                raise ValueError(f"watch: a sink must be 'logging' or a callable (step, values, alerts), got {sink!r}")
        if csv is not None:
            self.sinks.append(CSVSink(csv))
        if tensorboard is not None:
            self.sinks.append(TensorBoardSink(tensorboard))

        self.step = 0
        self.alerts: collections.deque[Alert] = collections.deque(maxlen=max_alerts)
        self.alert_counts: collections.Counter[str] = collections.Counter()
        self.latest: dict[str, float] = {}
        # every sample the longest window needs, plus one
        self._samples: collections.deque[Sample] = collections.deque(
            maxlen=math.ceil(self.thresholds.longest_window / every) + 1
        )
        t = self.thresholds
        self._episodes = EpisodeTracker({code: t.rearm_steps + t.window_of(code) for code in CODES})
        self._early_sum, self._early_count = 0.0, 0
        self._initial_lr: dict[int, float] = {}
        self._pending_loss: Any = None
        self._user_loss = False
        self._skip_counter = self._skip_tensor()
        self._skips_since_sample = 0
        self._skipped_total = 0
        # Stats an optimizer measures only on request (RSGDM's correction ratio): on while watched.
        self._extra_stats_before = getattr(self.optimizer, "extra_stats", None)
        if self._extra_stats_before is not None:
            self.optimizer.extra_stats = True
        self._handles = [
            self.optimizer.register_step_pre_hook(self._before_step),
            self.optimizer.register_step_post_hook(self._after_step),
        ]
        self.closed = False

    # ------------------------------------------------------------------ loss intake
    def observe(self, loss: Any) -> None:
        """Hand the watcher the loss of the coming step (for an optimizer that is not given it, e.g.
        ``torch.optim.Adam`` in a plain loop). Kept by reference; read only on a sampled step."""
        self._pending_loss = loss.detach() if isinstance(loss, Tensor) else loss
        self._user_loss = True

    def _before_step(self, optimizer: Any, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
        if self._user_loss:
            return None
        if kwargs.get("loss") is not None:
            self._pending_loss = kwargs["loss"]
            return None
        observed = getattr(optimizer, "_observed_loss", None)
        if observed is not None:
            self._pending_loss = observed
            return None
        # the closure's value: wrap the closure (GALA calls it twice: keep the first, the step's loss)
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            return None
        self._pending_loss = None

        def recording_closure() -> Any:
            value = closure()
            if self._pending_loss is None and value is not None:
                self._pending_loss = value.detach() if isinstance(value, Tensor) else value
            return value

        if "closure" in kwargs:
            return args, {**kwargs, "closure": recording_closure}
        return (args[0], recording_closure, *args[2:]), kwargs

    # ------------------------------------------------------------------ sampling
    def _skip_tensor(self) -> Any:
        state = getattr(self.optimizer, "global_state", None)
        return state.get("skipped_steps") if isinstance(state, dict) else None

    def _after_step(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.step += 1
        loss, self._pending_loss, self._user_loss = self._pending_loss, None, False
        # A skip replaces the optimizer's counter by a new tensor: noticed without reading it.
        counter = self._skip_tensor()
        skipped = counter is not None and counter is not self._skip_counter
        self._skip_counter = counter
        if skipped:
            self._skips_since_sample += 1
            self._skipped_total += 1
        if self.step % self.every == 0:
            self._sample(None if skipped else loss)

    def _sample(self, loss: Any) -> None:
        optimizer = self.optimizer
        stats = getattr(optimizer, "stats", None) or {}
        groups = getattr(optimizer, "group_stats", None) or ([dict(stats)] if stats else [])
        stat_keys = [key for key in stats if key not in _NOT_SAMPLED]
        group_keys = [list(g) for g in groups]
        tensors = [stats[key] for key in stat_keys] + [g[key] for g, keys in zip(groups, group_keys) for key in keys]
        if loss is not None:
            tensors.append(loss if isinstance(loss, Tensor) else torch.tensor(float(loss)))
        values = _read_all(tensors)  # the one host synchronisation
        loss_value = values.pop() if loss is not None else None
        flat = dict(zip(stat_keys, values))
        per_group: list[dict[str, float]] = []
        position = len(stat_keys)
        for k, keys in enumerate(group_keys):
            per_group.append(dict(zip(keys, values[position:position + len(keys)])))
            position += len(keys)
            for key in keys:
                flat.setdefault(key if k == 0 else f"{key}/group{k}", per_group[k][key])
        if loss_value is not None:
            flat["loss"] = loss_value
        if hasattr(optimizer, "global_state"):
            flat["skipped_steps"] = float(self._skipped_total)
        sample = Sample(self.step, loss_value, self._skips_since_sample, per_group)
        self._skips_since_sample = 0
        self._samples.append(sample)
        if loss_value is not None and math.isfinite(loss_value) and self.step <= self.thresholds.early_steps:
            self._early_sum += loss_value
            self._early_count += 1
        for k, g in enumerate(per_group):
            if "lr" in g and k not in self._initial_lr and math.isfinite(g["lr"]):
                self._initial_lr[k] = g["lr"]
        self.latest = flat

        ctx = Context(
            step=self.step, samples=self._samples, thresholds=self.thresholds,
            param_groups=optimizer.param_groups,
            early_loss=self._early_sum / self._early_count if self._early_count else None,
            initial_lr=self._initial_lr,
        )
        raised = []
        for code, group, message in self._episodes.update(self.step, evaluate_rules(ctx, self.disable)):
            raised.append(self._raise(code, group, message))
        for sink in self.sinks:
            sink(self.step, flat, raised)

    def _raise(self, code: str, group: Optional[int], message: str) -> AdaptationWarning:
        warning = AdaptationWarning(code, self.step, message, group)
        self.alerts.append(Alert(self.step, code, message))
        self.alert_counts[code] += 1
        logger.warning("%s", warning)
        if self.warn:
            # stacklevel 5: warn <- _raise <- _sample <- _after_step <- the optimizer's step wrapper
            warnings.warn(warning, stacklevel=5)
        return warning

    # ------------------------------------------------------------------ summaries
    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"last", "mean", "min", "max"}}`` of every per-group stat and the loss over the
        samples kept (the longest alert window)."""
        columns: dict[str, list[float]] = {}
        for sample in self._samples:
            for k, values in enumerate(sample.groups):
                for key, value in values.items():
                    columns.setdefault(key if k == 0 else f"{key}/group{k}", []).append(value)
            if sample.loss is not None:
                columns.setdefault("loss", []).append(sample.loss)
        return {
            name: {"last": v[-1], "mean": sum(v) / len(v), "min": min(v), "max": max(v)}
            for name, v in columns.items()
        }

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Remove the hooks and close the sinks (flushing files); the recorded alerts stay readable."""
        if self.closed:
            return
        self.closed = True
        for handle in self._handles:
            handle.remove()
        if self._extra_stats_before is not None:
            self.optimizer.extra_stats = self._extra_stats_before
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Watcher({type(self.optimizer).__name__}, every={self.every}, step={self.step}, "
                f"alerts={dict(self.alert_counts)})")


def _read_all(tensors: Sequence[Tensor]) -> list[float]:
    """The values of 0-dim tensors as floats, in one device-to-host transfer."""
    if not tensors:
        return []
    device = tensors[0].device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    with torch.no_grad():
        packed = torch.stack([t.detach().reshape(()).to(device=device, dtype=dtype) for t in tensors])
    return packed.tolist()


def watch(optimizer: Any, every: int = 10, **options: Any) -> Watcher:
    """Watch ``optimizer``'s adaptation: read its stats every ``every`` steps, raise
    :class:`~tunefree.AdaptationWarning` once per episode of degenerate adaptation, and send the values to
    sinks. No change to the training loop: it hooks ``optimizer.step``.

    Args:
        optimizer: a tunefree optimizer (any ``torch.optim.Optimizer`` works for the loss checks), also
            inside a trainer's wrapper.
        every: read the stats on every ``every``-th step (one host synchronisation each time).
        thresholds: a :class:`~tunefree.Thresholds` (default: ``Thresholds()``).
        sinks: where the values go: ``"logging"`` (INFO records of the ``tunefree`` logger; the default)
            and/or callables ``sink(step, values, alerts)``; ``[]`` for none.
        csv: a CSV file to write every sample to (draw it with ``tunefree plot-stats FILE``).
        tensorboard: a log directory or a ``SummaryWriter`` (needs ``pip install "tunefree[monitor]"``).
        warn: raise each alert with ``warnings.warn`` (default True); alerts are logged as WARNING records
            of the ``tunefree`` logger and kept in ``watcher.alerts`` either way.
        disable: alert codes not to check.
        max_alerts: how many alerts ``watcher.alerts`` keeps.

    Returns:
        the :class:`Watcher`; ``close()`` it (or use it as a context manager) to detach.
    """
    return Watcher(optimizer, every, **options)
