"""Elementwise (Adam-like) helpers shared by SMES, AGD and RSGDM: per-tensor step counters with bias
corrections computed from them on the device, and coupled / decoupled weight decay."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "advance_step_counters",
    "bias_correction",
    "coupled_weight_decay",
    "decoupled_weight_decay_",
    "new_step_counter",
]


def new_step_counter(param: Tensor) -> Tensor:
    """A per-tensor step counter: 0-dim, on ``param``'s device, float64 (float32 where the device has no
    float64, e.g. MPS). Stored under the state key ``"step"`` so that ``load_state_dict`` keeps its dtype
    (torch casts every other floating state entry to the parameter's dtype, and bf16 cannot count)."""
    dtype = torch.float32 if param.device.type == "mps" else torch.float64
    return torch.zeros((), dtype=dtype, device=param.device)


def advance_step_counters(steps: list[Tensor]) -> Tensor:
    """Add 1 to each per-tensor step counter (in place) and return them stacked, shape ``(n,)``.

    The bias corrections of all tensors are then a few vectorised ops on this stack (no host sync); use
    ``.unbind(0)`` to turn a per-tensor scalar vector into the list of 0-dim tensors that ``_foreach_*``
    ops broadcast against their tensor lists.
    """
    torch._foreach_add_(steps, 1.0)
    return torch.stack(steps)


def bias_correction(steps: Tensor, beta: float) -> Tensor:
    """``1 - beta**t`` elementwise for a vector of step counts (0 at ``t = 0``)."""
    return 1.0 - torch.pow(beta, steps)


def coupled_weight_decay(params: list[Tensor], grads: list[Tensor], weight_decay: float) -> list[Tensor]:
    """``g + weight_decay * x`` as new tensors (L2 added to the gradient; ``p.grad`` is left untouched).
    Returns ``grads`` itself when ``weight_decay`` is 0."""
    if weight_decay == 0:
        return grads
    return torch._foreach_add(grads, params, alpha=weight_decay)


def decoupled_weight_decay_(params: list[Tensor], factor: float) -> None:
    """``x <- factor * x`` in place (AdamW-style decay, ``factor = 1 - lr * weight_decay``); no-op at 1."""
    if factor != 1.0:
        torch._foreach_mul_(params, factor)
