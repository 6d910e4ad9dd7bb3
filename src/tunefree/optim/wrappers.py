"""Finding the tunefree optimizer inside the wrappers trainers put around it.

Wrappers (Hugging Face Accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``, the
Hugging Face Trainer's optimizer, ``ZeroRedundancyOptimizer``) expose torch's ``step(closure)`` only: a
``step(loss=...)`` raises ``TypeError`` in the wrapper and ``observe_loss`` does not exist on it.
:func:`unwrap_optimizer` finds the tunefree optimizer inside, so that the loss can be handed to it::

    model, opt = accelerator.prepare(model, opt)
    ...
    accelerator.backward(loss)
    tunefree.unwrap_optimizer(opt).observe_loss(loss)
    opt.step()                      # the wrapper's step (GradScaler, accumulation) stays in charge

``ZeroRedundancyOptimizer`` keeps its rank's optimizer under ``.optim``: it is found too (see
:mod:`tunefree.optim.zero_redundancy` for how that optimizer computes its global sums).
"""

from __future__ import annotations

from typing import Any, Optional

from tunefree.optim._core import TunefreeOptimizer

__all__ = ["find_tunefree_optimizer", "unwrap_optimizer"]

#: attributes under which wrappers keep the optimizer they wrap (accelerate/Lightning/HF; ZeRO's local one)
_INNER_ATTRIBUTES = ("optimizer", "optim")
#: how many wrappers deep the search goes
_MAX_DEPTH = 12


def find_tunefree_optimizer(optimizer: Any) -> Optional[Any]:
    """The tunefree optimizer inside the wrappers trainers put around it, or None if there is none.

    The innermost one is returned: ``LightningOptimizer`` makes itself an instance of the wrapped class
    (it subclasses it on the fly), so the first ``isinstance`` match can still be the wrapper, whose
    attributes are not the optimizer's.
    """
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
