"""PyTorch Lightning support for loss-aware tunefree optimizers (MoMo, MoMo-Adam).

How Lightning 2.x (automatic optimization) calls ``optimizer.step``, and what MoMo gets:

* ``precision="32-true"``, ``"64-true"``, ``"bf16-mixed"``, ``"bf16-true"``, ``"16-true"``: Lightning calls
  ``optimizer.step(closure=...)``; the closure runs ``training_step`` + backward and returns the loss, so
  MoMo works **without any helper** -- as long as ``accumulate_grad_batches == 1``.
* ``precision="16-mixed"`` (a ``GradScaler``; on GPU -- on CPU Lightning replaces it by ``"bf16-mixed"``
  with a warning): Lightning calls the closure itself, then ``scaler.step(optimizer)``, i.e. a **bare**
  ``step()``; MoMo raises its missing-loss error.
* ``accumulate_grad_batches = N > 1``: the first ``N - 1`` micro-batches run their closure outside the
  optimizer; the closure passed to ``step`` only covers the **last** micro-batch, and returns its loss
  divided by ``N``. MoMo would silently compute its step from a loss about ``N`` times too small.

:class:`LossFeedMixin` fixes both: it wraps the closure in ``LightningModule.optimizer_step`` so that it
returns (and hands to ``observe_loss``, for the ``GradScaler`` path) the sum of the ``loss / N`` values of
all micro-batches of the step -- the mean loss of the accumulated batch, unscaled, the loss whose gradient
the optimizer steps on (on a short last accumulation of an epoch Lightning still divides by ``N``; the sum
then matches the equally scaled gradient). The earlier micro-batches' losses are collected in
``on_train_batch_end``; if you override that hook, call ``super().on_train_batch_end(...)``, otherwise the
mixin raises a ``RuntimeError`` at the next step instead of passing a wrong loss.

Closure-based optimizers (GALA) need no helper: Lightning's closure re-runs ``training_step`` + backward
and zeroes the gradients first, as GALA requires (``accumulate_grad_batches`` must stay 1 for GALA).

Monitoring: ``WatchCallback`` (``Trainer(callbacks=[WatchCallback()])``) attaches :func:`tunefree.watch` to
every optimizer at ``on_train_start`` (reading the stats every ``log_every_n_steps`` steps) and logs the
latest values and alert counts with ``LightningModule.log_dict`` after each training batch, as
``tunefree/<name>`` and ``tunefree/alerts/<code>``: whatever logger is configured (CSV, TensorBoard, W&B,
MLflow) records them.

``lightning`` is imported only when ``WatchCallback`` is accessed; the mixin only relies on
``LightningModule``'s hooks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from tunefree.integrations import find_tunefree_optimizer

__all__ = ["LossFeedMixin", "WatchCallback"]  # noqa: F822 (WatchCallback is lazy, see __getattr__)


class LossFeedMixin:
    """Mix into a ``LightningModule`` (before it in the bases)::

        class MyModule(LossFeedMixin, L.LightningModule): ...

    so that MoMo / MoMo-Adam get the mean loss of each (accumulated) batch with every precision, including
    the ``16-mixed`` ``GradScaler`` path where Lightning calls a bare ``step()``.
    """

    _tunefree_pending: Any = None
    _tunefree_pending_batches: int = 0
    _tunefree_stepped: bool = False

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Optional[Callable[[], Any]] = None,
    ) -> None:
        pending, seen = self._tunefree_pending, self._tunefree_pending_batches
        self._tunefree_pending, self._tunefree_pending_batches = None, 0
        self._tunefree_stepped = True
        tunefree_opt = find_tunefree_optimizer(optimizer)
        if tunefree_opt is None or not tunefree_opt.needs_loss or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)  # type: ignore[misc]

        accumulate = int(getattr(getattr(self, "trainer", None), "accumulate_grad_batches", 1) or 1)
        expected = batch_idx % accumulate
        if seen != expected:
            raise RuntimeError(
                f"{type(self).__name__}: LossFeedMixin saw {seen} accumulated "
                f"micro-batches before this optimizer step, expected {expected} (accumulate_grad_batches="
                f"{accumulate}). If you override on_train_batch_end, call super().on_train_batch_end(...)."
            )

        def closure() -> Any:
            loss = optimizer_closure()
            if loss is None:  # training_step returned None: Lightning skips backward and step
                return None
            total = loss.detach() if pending is None else pending + loss.detach()
            tunefree_opt.observe_loss(total)  # read by a bare step() (GradScaler path)
            return total  # used by step(closure) (all other paths)

        return super().optimizer_step(epoch, batch_idx, optimizer, closure)  # type: ignore[misc]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        parent = getattr(super(), "on_train_batch_end", None)
        if parent is not None:
            parent(outputs, batch, batch_idx)
        if self._tunefree_stepped:  # this batch ended an accumulation window
            self._tunefree_stepped = False
            return
        self._tunefree_pending_batches += 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "detach"):
            loss = loss.detach()
            self._tunefree_pending = loss if self._tunefree_pending is None else self._tunefree_pending + loss


_callback_class: Optional[type] = None


def _build_callback_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:  # the standalone package
        from pytorch_lightning import Callback

    from tunefree.monitor.trainer_logs import TrainerLogs

    class WatchCallback(Callback):
        """Watch the Lightning trainer's optimizers with :func:`tunefree.watch` and log their stats and
        alert counts with ``log_dict`` (``tunefree/<name>``, ``tunefree/alerts/<code>``).

        Args:
            every: read the stats every ``every`` optimizer steps (default: the trainer's
                ``log_every_n_steps``, when Lightning hands logged values to the logger).
            **watch_options: passed to :func:`tunefree.watch` (``thresholds``, ``warn``, ``csv``, ...).
        """

        def __init__(self, every: Optional[int] = None, **watch_options: Any) -> None:
            self.logs = TrainerLogs(every, watch_options)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.logs.attach(list(trainer.optimizers), int(getattr(trainer, "log_every_n_steps", 50) or 1))

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            metrics = self.logs.metrics()
            if metrics:
                pl_module.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, logger=True)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.logs.close()

    WatchCallback.__module__ = __name__
    return WatchCallback


def __getattr__(name: str) -> Any:
    # ``WatchCallback`` subclasses Lightning's Callback: built on first access only.
    global _callback_class
    if name == "WatchCallback":
        if _callback_class is None:
            _callback_class = _build_callback_class()
        return _callback_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
