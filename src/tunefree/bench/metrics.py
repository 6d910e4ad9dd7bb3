"""Learning-rate robustness metrics (pure numpy, no torch, no I/O).

All functions take plain numbers or arrays so they can be checked against hand-computed examples.
Conventions (see ``notes/benchmarks.md`` section 3b):

* A *score* ``s`` is the normalised quality of one run: ``s = (m_init - m) / (m_init - m*)`` where
  ``m_init`` is the metric before training and ``m*`` the best tuned baseline. ``s = 1`` means "as good
  as the best tuned baseline", ``s = 0`` "no better than the initialisation". Diverged runs score
  ``-inf`` and are never dropped.
* A *grid* is a sorted list of learning-rate exponents ``k`` (decades relative to the optimizer's
  documented default: ``lr = default * 10**k``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "normalized_score",
    "seed_mean",
    "robust_width",
    "expected_trials",
    "expected_best_of",
    "steps_to_target",
    "best_metric",
]


def normalized_score(m: float | None, m_init: float, m_star: float) -> float:
    """Normalised score of a final metric ``m``.

    ``(m_init - m) / (m_init - m_star)`` is the same expression for lower- and higher-is-better
    metrics: for accuracy both numerator and denominator flip sign, so the mirroring is implicit once
    ``m_star`` is the best value in the metric's own direction. ``None``/NaN/Inf (a diverged run) gives
    ``-inf``. A degenerate target (``m_star == m_init``: the best baseline did not move the metric at
    all) gives NaN, because no finite scale exists; the report flags it instead of inventing one.
    """
    if m is None or not math.isfinite(m):
        return -math.inf
    denom = m_init - m_star
    if denom == 0 or not math.isfinite(denom):
        return math.nan
    return (m_init - m) / denom


def best_metric(values: Sequence[float | None], higher_is_better: bool) -> float:
    """Best finite value in the metric's direction; NaN if there is none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan
    return max(finite) if higher_is_better else min(finite)


def seed_mean(scores: Sequence[float]) -> float:
    """Mean over seeds where any ``-inf`` (a diverged seed) makes the mean ``-inf``.

    A divergence in one seed is a failure of that learning rate, not an outlier to be averaged away.
    NaN scores (no defined scale) propagate as NaN.
    """
    arr = np.asarray(list(scores), dtype=float)
    if arr.size == 0:
        return math.nan
    if np.isnan(arr).any():
        return math.nan
    if np.isneginf(arr).any():
        return -math.inf
    return float(arr.mean())


def robust_width(
    exponents: Sequence[float],
    scores: Sequence[float],
    threshold: float = 0.95,
    spacing: float | None = None,
) -> float:
    """Width in decades of the longest contiguous stretch of the grid with ``score >= threshold``.

    ``exponents`` are the grid points in decades (any order; they are sorted here) and ``scores`` their
    seed-mean scores. Each good point counts ``spacing`` decades (default: the smallest gap of the grid,
    0.5 on the standard grid), so one isolated good point is worth 0.5 decades, not 0. Two good points
    separated by a bad one are *not* contiguous; neither are two good points with a missing grid point
    between them (a gap larger than ``spacing``), since nothing was measured there.
    """
    if len(exponents) != len(scores):
        raise ValueError("exponents and scores must have the same length")
    if not exponents:
        return 0.0
    order = np.argsort(np.asarray(exponents, dtype=float))
    ks = np.asarray(exponents, dtype=float)[order]
    ss = np.asarray(scores, dtype=float)[order]
    if spacing is None:
        gaps = np.diff(ks)
        gaps = gaps[gaps > 0]
        spacing = float(gaps.min()) if gaps.size else 0.5
    best = current = 0
    previous_k: float | None = None
    for k, s in zip(ks, ss):
        good = bool(s >= threshold)  # NaN compares False: an undefined score is not good
        contiguous = previous_k is not None and (k - previous_k) <= spacing * 1.0001
        if good:
            current = current + 1 if (current and contiguous) else 1
            best = max(best, current)
        else:
            current = 0
        previous_k = k
    return best * spacing


def expected_trials(n: int, k: int) -> float:
    """Expected number of random draws *without replacement* from ``n`` grid points until one of the
    ``k`` good points is drawn: ``(n + 1) / (k + 1)``; ``inf`` when ``k == 0``."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got n={n}, k={k}")
    if k == 0:
        return math.inf
    return (n + 1) / (k + 1)


def expected_best_of(scores: Sequence[float], b: int) -> float:
    """Expected best score after ``b`` random grid trials drawn without replacement.

    Exact order statistics: with the ``n`` scores sorted ascending, ``s_(1) <= ... <= s_(n)``, the best
    of a uniformly random ``b``-subset is ``s_(i)`` with probability ``C(i-1, b-1) / C(n, b)``. Points
    with zero probability are skipped, so a ``-inf`` that can never be the maximum does not poison the
    sum; one that can be (all drawn points diverged) makes the expectation ``-inf``, which is the honest
    answer. ``b`` larger than ``n`` is clipped to ``n``.
    """
    values = sorted(float(s) for s in scores)
    n = len(values)
    if n == 0:
        return math.nan
    if b < 1:
        raise ValueError(f"b must be >= 1, got {b}")
    b = min(b, n)
    total = math.comb(n, b)
    expectation = 0.0
    for i, value in enumerate(values, start=1):
        ways = math.comb(i - 1, b - 1)
        if ways == 0:
            continue
        if math.isnan(value):
            return math.nan
        if value == -math.inf:
            return -math.inf
        expectation += value * ways / total
    return expectation


def steps_to_target(
    steps: Sequence[int], scores: Sequence[float], threshold: float = 0.95
) -> float:
    """First evaluated step whose score reaches ``threshold``; ``inf`` if none does."""
    for step, score in zip(steps, scores):
        if score is not None and math.isfinite(score) and score >= threshold:
            return float(step)
    return math.inf
