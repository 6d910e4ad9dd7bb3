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

from tunefree.optim.wrappers import find_tunefree_optimizer

__all__ = ["find_tunefree_optimizer"]
