"""Recognising that ``torch.distributed.optim.ZeroRedundancyOptimizer`` is building a tunefree optimizer.

ZeRO builds one optimizer per rank over that rank's *partition* of the parameters (whole tensors, each on
exactly one rank). MoMo's step size needs sums over *all* parameters, so a rank's partial sums must be
added across ZeRO's process group, not treated as the already-global sums of DDP replicas (which are taken
from one rank). ZeRO passes the optimizer no marker, so the constructor's callers are inspected; the
optimizer then reduces accordingly (:meth:`~tunefree.optim._core.TunefreeOptimizer.join_zero_redundancy`).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch.distributed as dist

__all__ = ["enclosing_zero_redundancy_optimizer"]

#: how many calling frames are searched (ZeRO's method, the subclass __init__ chain)
_MAX_DEPTH = 12


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
