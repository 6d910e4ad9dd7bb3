"""Helpers that connect tunefree optimizers to third-party trainers.

Each submodule imports its trainer library lazily (only when you import that submodule), so the core
package never depends on them. Install them with ``pip install "tunefree[integrations]"``.

* :mod:`tunefree.integrations.hf` -- Hugging Face ``transformers.Trainer``: :class:`~.hf.LossFeedMixin`,
  ``TunefreeTrainer`` and :func:`~.hf.add_loss_feed` hand the loss to MoMo / MoMo-Adam although the
  Trainer calls a bare ``optimizer.step()``.
* :mod:`tunefree.integrations.lightning` -- PyTorch Lightning: :class:`~.lightning.LossFeedMixin` for a
  ``LightningModule`` (needed for gradient accumulation and the fp16 ``GradScaler`` path).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["find_tunefree_optimizer"]


def find_tunefree_optimizer(optimizer: Any) -> Optional[Any]:
    """The tunefree optimizer inside the wrappers trainers put around it (accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), or None if there is none.

    The innermost one is returned: ``LightningOptimizer`` makes itself an instance of the wrapped class
    (it subclasses it on the fly), so the first ``isinstance`` match can still be the wrapper, whose
    attributes are not the optimizer's.
    """
    from tunefree.optim._core import TunefreeOptimizer

    found = None
    for _ in range(8):
        if optimizer is None:
            break
        if isinstance(optimizer, TunefreeOptimizer):
            found = optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return found
