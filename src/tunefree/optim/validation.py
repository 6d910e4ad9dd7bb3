"""Hyperparameter validation shared by every tunefree optimizer: errors name the owner, the argument, the
allowed range and the value received."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["check_betas", "check_range"]


def check_range(
    owner: str,
    name: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming ``name`` and its allowed interval."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}") from None
    above = number >= low if low_inclusive else number > low
    below = number <= high if high_inclusive else number < high
    if math.isnan(number) or not (above and below):
        interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
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
