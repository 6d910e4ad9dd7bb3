"""Hyperparameter validation shared by every tunefree optimizer: errors name the owner, the argument, the
allowed range and the value received."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["check_betas", "check_range"]


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    finite: bool = True,
) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming ``name`` and its allowed interval.

    ``value`` must be a real number: a Python ``int``/``float`` or a one-element real tensor. Strings
    (``"1e-3"``), booleans and complex numbers are refused even where ``float()`` would accept them, so a
    typo fails at construction and not at the first step. NaN is always refused; ``+-inf`` too unless
    ``finite=False`` (for the few hyperparameters where infinity means something, e.g. ``lr_max=inf``).
    """
    number: Optional[float] = None
    if isinstance(value, Tensor):
        if value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
            number = float(value.detach().reshape(()).cpu())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None:
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    above = number >= low if low_inclusive else number > low
    below = number <= high if high_inclusive else number < high
    interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
    if math.isnan(number) or (finite and math.isinf(number)):
        kind = "a finite number" if finite else "a number (not NaN)"
        raise ValueError(f"{owner}: {name} must be {kind} in {interval}, got {value!r}")
    if not (above and below):
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return number


def check_betas(owner: str, betas: Sequence[float], name: str = "betas") -> tuple[float, float]:
    """Validate an Adam-style pair of EMA factors, each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: {name} must be a pair (beta1, beta2), got {betas!r}")
    return (
        check_range(owner, f"{name}[0]", betas[0], 0.0, 1.0, high_inclusive=False),
        check_range(owner, f"{name}[1]", betas[1], 0.0, 1.0, high_inclusive=False),
    )
