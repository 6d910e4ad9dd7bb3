"""tunefree optimizers inside other optimizers: trainer wrappers and ``ZeroRedundancyOptimizer``.

**Wrappers** (Hugging Face Accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``, the
Hugging Face Trainer's optimizer, ``ZeroRedundancyOptimizer``) expose torch's ``step(closure)`` only: a
``step(loss=...)`` raises ``TypeError`` in the wrapper and ``observe_loss`` does not exist on it.
:func:`unwrap_optimizer` finds the tunefree optimizer inside, so that the loss can be handed to it::

    model, opt = accelerator.prepare(model, opt)
    ...
    accelerator.backward(loss)
    tunefree.unwrap_optimizer(opt).observe_loss(loss)
    opt.step()                      # the wrapper's step (GradScaler, accumulation) stays in charge

**ZeroRedundancyOptimizer** builds one optimizer per rank over that rank's *partition* of the parameters
(whole tensors, each on exactly one rank). MoMo's step size needs sums over *all* parameters, so a rank's
partial sums must be added across ZeRO's process group, not treated as the replicated sums of DDP.
:func:`enclosing_zero_redundancy_optimizer` recognises the construction (ZeRO passes no marker, so the
constructor's callers are inspected) and the optimizer then reduces accordingly
(:meth:`~tunefree.optim._core.TunefreeOptimizer.join_zero_redundancy`).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch.distributed as dist

__all__ = ["enclosing_zero_redundancy_optimizer", "find_tunefree_optimizer", "unwrap_optimizer"]

#: attributes under which wrappers keep the optimizer they wrap (accelerate/Lightning/HF; ZeRO's local one)
_INNER_ATTRIBUTES = ("optimizer", "optim")
#: how many wrappers (or constructor frames) deep the search goes
_MAX_DEPTH = 12


def find_tunefree_optimizer(optimizer: Any) -> Optional[Any]:
    """The tunefree optimizer inside the wrappers trainers put around it, or None if there is none.

    The innermost one is returned: ``LightningOptimizer`` makes itself an instance of the wrapped class
    (it subclasses it on the fly), so the first ``isinstance`` match can still be the wrapper, whose
    attributes are not the optimizer's.
    """
    from tunefree.optim._core import TunefreeOptimizer

    found = None
    for _ in range(_MAX_DEPTH):
        if optimizer is None:
            break
        if isinstance(optimizer, TunefreeOptimizer):
            found = optimizer
        inner = next((getattr(optimizer, name) for name in _INNER_ATTRIBUTES
                      if getattr(optimizer, name, None) is not None), None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return found


def unwrap_optimizer(optimizer: Any) -> Any:
    """The tunefree optimizer inside ``optimizer`` (itself if it is one); ``ValueError`` if there is none.

    Use it to reach tunefree's own API through a wrapper, e.g.
    ``tunefree.unwrap_optimizer(opt).observe_loss(loss)`` before the wrapper's bare ``opt.step()``,
    or ``tunefree.unwrap_optimizer(opt).stats``.
    """
    found = find_tunefree_optimizer(optimizer)
    if found is None:
        raise ValueError(
            f"unwrap_optimizer: no tunefree optimizer inside {type(optimizer).__name__} (looked through the "
            f"attributes {', '.join(_INNER_ATTRIBUTES)} up to {_MAX_DEPTH} levels deep); pass the optimizer "
            f"that accelerator.prepare / the trainer returned"
        )
    return found


def enclosing_zero_redundancy_optimizer() -> Optional[Any]:
    """The ``torch.distributed.optim.ZeroRedundancyOptimizer`` whose construction is calling the current
    optimizer constructor, or None. (ZeRO constructs ``optimizer_class(partition, **defaults)`` in its own
    methods, so it is the ``self`` of a calling frame.)"""
    if not dist.is_available():
        return None
    from torch.distributed.optim import ZeroRedundancyOptimizer

    frame = sys._getframe(1)
    for _ in range(_MAX_DEPTH):
        if frame is None:
            break
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ZeroRedundancyOptimizer):
            return candidate
        frame = frame.f_back
    return None
