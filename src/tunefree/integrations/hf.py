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

``transformers`` is imported only when ``TunefreeTrainer`` is accessed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tunefree.integrations import find_tunefree_optimizer

__all__ = ["LossFeedMixin", "TunefreeTrainer", "add_loss_feed", "feed_micro_batch_loss"]  # noqa: F822 (lazy, see __getattr__)

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


def __getattr__(name: str) -> Any:
    # ``TunefreeTrainer`` subclasses transformers.Trainer, so it is built on first access only.
    global _trainer_class
    if name == "TunefreeTrainer":
        if _trainer_class is None:
            from transformers import Trainer

            class TunefreeTrainer(LossFeedMixin, Trainer):
                """``transformers.Trainer`` that hands the mini-batch loss to loss-aware tunefree
                optimizers (MoMo, MoMo-Adam); see :mod:`tunefree.integrations.hf`."""

            TunefreeTrainer.__module__ = __name__
            _trainer_class = TunefreeTrainer
        return _trainer_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
