"""Elementwise (Adam-like) helpers shared by the optimizers: per-tensor step counters with bias
corrections computed from them on the device, coupled / decoupled weight decay, and Adam's direction
(MoMo-Adam, GALA's Adam base)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from tunefree.optim.kernels import divide_into_

__all__ = [
    "adam_direction_",
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


def adam_direction_(
    exp_avg: Sequence[Tensor], exp_avg_sq: Sequence[Tensor], bias_correction2_sqrt: Tensor, eps: float,
    out: Sequence[Tensor], bias_correction1: Optional[Tensor] = None,
) -> None:
    """``out <- m / ((sqrt(v) / sqrt(1 - beta2^k) + eps) * bc1)`` in place, ``bc1 = 1 - beta1^k`` or 1 when
    ``bias_correction1`` is None (MoMo-Adam folds it into its step size; GALA's Adam base uses ``mhat``).

    ``out`` is any list of tensors shaped like the moments (a block's scratch, or fresh tensors); ``eps``
    is added outside the square root, as in Adam. The same inputs give bitwise the same direction, so a
    second pass may recompute it instead of keeping a model-sized buffer."""
    torch._foreach_copy_(out, exp_avg_sq)
    torch._foreach_sqrt_(out)
    torch._foreach_div_(out, bias_correction2_sqrt)
    torch._foreach_add_(out, eps)
    if bias_correction1 is not None:
        torch._foreach_mul_(out, bias_correction1)
    divide_into_(exp_avg, out)
