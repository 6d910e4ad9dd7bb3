"""Hugging Face ``transformers.Trainer`` support: hand the mini-batch loss to MoMo / MoMo-Adam.

The Trainer calls a bare ``optimizer.step()`` (through accelerate's ``AcceleratedOptimizer``), so a
loss-aware optimizer never sees the loss and MoMo raises its missing-loss error. The fix hooks the one
place where the Trainer has the loss that matches the gradient: ``Trainer.training_step``. It runs
forward + backward for one micro-batch and returns the detached loss exactly as it was back-propagated:

* divided by the number of accumulated micro-batches (``gradient_accumulation_steps``; fewer for a short
  last accumulation of an epoch), or normalised by the token count of the whole accumulated batch when the
  model takes ``num_items_in_batch`` -- either way the **sum** of the returned losses over one optimizer
  step is the mean loss of the accumulated batch, the loss whose gradient the optimizer steps on;
* **before** fp16 loss scaling (accelerate scales inside ``accelerator.backward``), so it is unscaled.

The helper sums those values over the micro-batches of one optimizer step (it knows a new step began when
``trainer.state.global_step`` changed) and keeps ``optimizer.observe_loss(sum)`` up to date, so the bare
``step()`` that ends the accumulation finds the mean loss. Under multi-process data parallelism each rank
hands over its own loss and MoMo averages it across ranks, as DDP averages gradients.

Use one of:

* ``TunefreeTrainer`` -- ``transformers.Trainer`` with the hook (a drop-in replacement);
* :class:`LossFeedMixin` -- for your own Trainer subclass: ``class MyTrainer(LossFeedMixin, Trainer)``;
* :func:`add_loss_feed` -- patch an existing Trainer instance (e.g. a TRL trainer) in place.

With an optimizer that does not need the loss (AdamW, ...) the hook does nothing. GALA needs a closure
that re-evaluates the batch, which the Trainer cannot provide: use GALA in a plain loop or Lightning.

Monitoring: ``TunefreeTrainer`` adds a ``WatchCallback`` (unless one is already among its callbacks; for
another Trainer call :func:`add_watch`, which puts the callback first -- passed in ``callbacks=`` it would
run after the reporting callbacks and its values would miss them): it
attaches :func:`tunefree.watch` to the optimizer at ``on_train_begin`` (reading the stats every
``logging_steps`` steps) and adds the latest values and the alert counts to the Trainer's ``logs`` in
``on_log`` as ``tunefree/<name>`` and ``tunefree/alerts/<code>``, so every ``report_to`` backend
(TensorBoard, Weights & Biases, MLflow, ...) records them with no code of its own. Alerts are also
raised as :class:`~tunefree.AdaptationWarning` and logged by the ``tunefree`` logger.

``transformers`` is imported only when ``TunefreeTrainer`` or ``WatchCallback`` is accessed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tunefree.integrations import find_tunefree_optimizer

__all__ = ["LossFeedMixin", "TunefreeTrainer", "WatchCallback", "add_loss_feed", "add_watch", "feed_micro_batch_loss"]  # noqa: F822 (lazy, see __getattr__)

_STEP_ATTR = "_tunefree_feed_step"
_SUM_ATTR = "_tunefree_feed_sum"


def feed_micro_batch_loss(trainer: Any, loss: torch.Tensor) -> None:
    """Add one micro-batch's loss (as returned by ``Trainer.training_step``) to the current optimizer
    step's sum and hand the sum to the optimizer with ``observe_loss``.

    Does nothing when the Trainer's optimizer is not a loss-aware tunefree optimizer.
    """
    optimizer = find_tunefree_optimizer(getattr(trainer, "optimizer", None))
    if optimizer is None or not getattr(optimizer, "needs_loss", False):
        return
    step = trainer.state.global_step
    loss = loss.detach()
    if getattr(trainer, _STEP_ATTR, None) != step:
        total = loss  # first micro-batch of a new optimizer step
    else:
        total = getattr(trainer, _SUM_ATTR) + loss
    setattr(trainer, _STEP_ATTR, step)
    setattr(trainer, _SUM_ATTR, total)
    optimizer.observe_loss(total)


class LossFeedMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer`` in the bases) so that MoMo /
    MoMo-Adam receive the mean loss of each (accumulated) batch at the Trainer's bare ``step()``."""

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Optional[Any] = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        feed_micro_batch_loss(self, loss)
        return loss


def add_loss_feed(trainer: Any) -> Any:
    """Make an existing Trainer instance hand the loss to its optimizer (patches ``training_step`` on the
    instance); returns the trainer. Calling it twice, or on a :class:`LossFeedMixin` trainer, is a no-op."""
    if isinstance(trainer, LossFeedMixin) or getattr(trainer, "_tunefree_loss_feed", False):
        return trainer
    original = trainer.training_step

    def training_step(model: Any, inputs: Any, num_items_in_batch: Optional[Any] = None) -> torch.Tensor:
        loss = original(model, inputs, num_items_in_batch)
        feed_micro_batch_loss(trainer, loss)
        return loss

    trainer.training_step = training_step
    trainer._tunefree_loss_feed = True
    return trainer


_trainer_class: Optional[type] = None
_callback_class: Optional[type] = None


def add_watch(trainer: Any, callback: Any = None) -> Any:
    """Make ``trainer`` watch its optimizer: put ``callback`` (default: the trainer's own
    ``WatchCallback`` if it has one, e.g. from ``callbacks=``, else a new one) FIRST among its callbacks,
    so that its ``on_log`` adds the stats before the reporting callbacks (TensorBoard, W&B, ...; the
    Trainer puts them first) write the logs. Returns the trainer."""
    callback_class = __getattr__("WatchCallback")
    callbacks = trainer.callback_handler.callbacks
    present = [c for c in callbacks if isinstance(c, callback_class)]
    if callback is None:
        callback = present[0] if present else callback_class()
    for existing in present:
        callbacks.remove(existing)
    callbacks.insert(0, callback)
    return trainer


def _build_callback_class() -> type:
    from transformers import TrainerCallback

    from tunefree.monitor.trainer_logs import TrainerLogs

    class WatchCallback(TrainerCallback):
        """Watch the Trainer's optimizer with :func:`tunefree.watch` and put its stats and alert counts
        into the Trainer's logs (``tunefree/<name>``, ``tunefree/alerts/<code>``).

        Args:
            every: read the stats every ``every`` optimizer steps (default: the Trainer's
                ``logging_steps``, so the one host synchronisation per read comes when the Trainer logs).
            **watch_options: passed to :func:`tunefree.watch` (``thresholds``, ``warn``, ``csv``, ...).
        """

        def __init__(self, every: Optional[int] = None, **watch_options: Any) -> None:
            self.logs = TrainerLogs(every, watch_options)

        def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
            if optimizer is not None:
                logging_steps = getattr(state, "logging_steps", None) or args.logging_steps
                self.logs.attach([optimizer], int(logging_steps) if logging_steps >= 1 else 1)

        def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
            if logs is not None and "loss" in logs:  # training logs only (not eval or the final summary)
                logs.update(self.logs.metrics())

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.logs.close()

    WatchCallback.__module__ = __name__
    return WatchCallback


def __getattr__(name: str) -> Any:
    # ``TunefreeTrainer`` and ``WatchCallback`` subclass transformers classes: built on first access only.
    global _trainer_class, _callback_class
    if name == "WatchCallback":
        if _callback_class is None:
            _callback_class = _build_callback_class()
        return _callback_class
    if name == "TunefreeTrainer":
        if _trainer_class is None:
            from transformers import Trainer

            class TunefreeTrainer(LossFeedMixin, Trainer):
                """``transformers.Trainer`` that hands the mini-batch loss to loss-aware tunefree
                optimizers (MoMo, MoMo-Adam) and watches the adaptation (a ``WatchCallback`` unless
                ``callbacks`` already has one); see :mod:`tunefree.integrations.hf`."""

                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    add_watch(self)

            TunefreeTrainer.__module__ = __name__
            _trainer_class = TunefreeTrainer
        return _trainer_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
