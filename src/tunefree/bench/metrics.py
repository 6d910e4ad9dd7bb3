"""Learning-rate robustness metrics (pure numpy, no torch, no I/O).

All functions take plain numbers or arrays so they can be checked against hand-computed examples.
Conventions (the protocol in docs/benchmark.md):

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
    "robust_widths",
    "grid_spacing",
    "expected_trials",
    "prob_target_within",
    "expected_best_of",
    "steps_to_target",
    "best_metric",
    "bootstrap_seed_counts",
    "bootstrap_seed_means",
    "percentile_interval",
    "performance_ratios",
    "performance_profile",
    "profile_area",
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


def seed_mean(scores: Sequence[float], diverged: float | None = None) -> float:
    """Mean over seeds where any ``-inf`` (a diverged seed) makes the mean ``-inf``.

    A divergence in one seed is a failure of that learning rate, not an outlier to be averaged away.
    NaN scores (no defined scale) propagate as NaN. With ``diverged`` given, each ``-inf`` is replaced
    by that value first (``diverged=0.0``: a diverged run counts as "no progress"), so the mean stays
    finite; that is the convention of the "diverged = 0" expected-best numbers.
    """
    arr = np.asarray(list(scores), dtype=float)
    if diverged is not None:
        arr = np.where(np.isneginf(arr), float(diverged), arr)
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
    return float(robust_widths(exponents, [list(scores)], threshold, spacing)[0])


def grid_spacing(exponents: Sequence[float]) -> float:
    """Smallest gap between distinct grid exponents (the width one grid point counts in W95); 0.5 for a
    grid of fewer than two distinct points."""
    gaps = np.diff(np.sort(np.asarray(list(exponents), dtype=float)))
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 0.5


def robust_widths(
    exponents: Sequence[float],
    score_rows: np.ndarray | Sequence[Sequence[float]],
    threshold: float = 0.95,
    spacing: float | None = None,
) -> np.ndarray:
    """:func:`robust_width` of every row of a ``(rows, points)`` array of scores on one grid.

    Vectorised over rows (bootstrap resamples), with the same conventions: NaN is not good, a gap
    larger than ``spacing`` (default: the grid's smallest gap) breaks contiguity.
    """
    rows = np.asarray(score_rows, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != len(exponents):
        raise ValueError(f"score_rows must have shape (rows, {len(exponents)}), got {rows.shape}")
    if not len(exponents):
        return np.zeros(rows.shape[0])
    order = np.argsort(np.asarray(exponents, dtype=float))
    ks = np.asarray(exponents, dtype=float)[order]
    good = rows[:, order] >= threshold  # NaN compares False
    if spacing is None:
        spacing = grid_spacing(ks)
    contiguous = np.diff(ks) <= spacing * 1.0001
    current = good[:, 0].astype(int)
    best = current.copy()
    for j in range(1, ks.size):
        current = np.where(good[:, j], np.where(contiguous[j - 1], current + 1, 1), 0)
        best = np.maximum(best, current)
    return best * spacing


def expected_trials(n: int, k: int) -> float:
    """Expected number of random draws *without replacement* from ``n`` grid points until one of the
    ``k`` good points is drawn: ``(n + 1) / (k + 1)``; ``inf`` when ``k == 0``."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got n={n}, k={k}")
    if k == 0:
        return math.inf
    return (n + 1) / (k + 1)


def prob_target_within(n: int, k: int, b: int) -> float:
    """Probability that ``b`` random grid trials without replacement hit at least one of the ``k`` good
    points among ``n``: ``1 - C(n-k, b) / C(n, b)``.

    Exact and well defined whatever the other points scored (diverged included). ``b`` larger than
    ``n`` is clipped to ``n``; NaN for an empty grid.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got n={n}, k={k}")
    if b < 1:
        raise ValueError(f"b must be >= 1, got {b}")
    if n == 0:
        return math.nan
    b = min(b, n)
    return 1.0 - math.comb(n - k, b) / math.comb(n, b)


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



# --------------------------------------------------------------------------------------------------
# bootstrap over seeds
# --------------------------------------------------------------------------------------------------


def bootstrap_seed_counts(n_seeds: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n_seeds)`` multiplicities of each seed in a resample of ``n_seeds`` seeds drawn
    with replacement (each row sums to ``n_seeds``)."""
    if n_seeds < 1 or n_resamples < 1:
        raise ValueError(f"need n_seeds >= 1 and n_resamples >= 1, got {n_seeds}, {n_resamples}")
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_resamples)


def bootstrap_seed_means(scores: np.ndarray, measured: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Seed-mean scores of every grid point under every seed resample.

    ``scores`` is ``(points, seeds)``: the score of each run; ``measured`` marks the runs that exist
    (grid points may have fewer seeds than others); ``counts`` is ``(resamples, seeds)`` from
    :func:`bootstrap_seed_counts`. A drawn seed counts as often as it was drawn, with the conventions
    of :func:`seed_mean` (a drawn ``-inf`` makes the point ``-inf``, a drawn NaN makes it NaN). A point
    none of whose measured seeds was drawn keeps its full-sample seed mean, so a point measured with
    one seed contributes no resampling variation. Returns ``(resamples, points)``.
    """
    scores = np.asarray(scores, dtype=float)
    measured = np.asarray(measured, dtype=bool)
    counts = np.asarray(counts, dtype=float)
    if scores.shape != measured.shape or counts.ndim != 2 or counts.shape[1] != scores.shape[1]:
        raise ValueError(f"shapes do not match: scores {scores.shape}, measured {measured.shape}, "
                         f"counts {counts.shape}")
    full = np.array([seed_mean(scores[p, measured[p]]) for p in range(scores.shape[0])])
    neginf = measured & np.isneginf(scores)
    nan = measured & np.isnan(scores)
    values = np.where(measured & ~neginf & ~nan, scores, 0.0)
    weight = counts @ measured.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ values.T) / weight
    means[(counts @ neginf.T.astype(float)) > 0] = -np.inf
    means[(counts @ nan.T.astype(float)) > 0] = np.nan
    empty = weight == 0
    means[empty] = np.broadcast_to(full, means.shape)[empty]
    return means


def percentile_interval(samples: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap ``samples`` (``level`` = 0.95: 2.5 % and 97.5 %)."""
    arr = np.asarray(samples, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(arr, [tail, 100.0 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# performance profiles (AlgoPerf style)
# --------------------------------------------------------------------------------------------------


def performance_ratios(costs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Per task (row), each method's (column) cost divided by the best method's cost on that task.

    Costs are e.g. expected trials to target; ``inf`` or NaN (target never reached, method not run)
    gives ratio ``inf``, and a task no method solved gives ``inf`` for every method.
    """
    arr = np.asarray(costs, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"costs must be (tasks, methods), got shape {arr.shape}")
    arr = np.where(np.isfinite(arr), arr, np.inf)
    if (arr <= 0).any():
        raise ValueError("costs must be positive")
    best = arr.min(axis=1, keepdims=True) if arr.size else np.zeros((arr.shape[0], 1))
    with np.errstate(invalid="ignore"):
        ratios = arr / best
    ratios[~np.isfinite(arr)] = np.inf
    return ratios


def performance_profile(ratios: np.ndarray | Sequence[Sequence[float]], taus: Sequence[float]) -> np.ndarray:
    """``rho[m, t]``: fraction of tasks on which method ``m``'s ratio is ``<= taus[t]``.

    ``ratios`` is ``(tasks, methods)`` from :func:`performance_ratios`; infinite ratios never count.
    """
    arr = np.asarray(ratios, dtype=float)
    if arr.shape[0] == 0:
        return np.full((arr.shape[1] if arr.ndim == 2 else 0, len(taus)), np.nan)
    tau = np.asarray(taus, dtype=float)
    return (arr[:, :, None] <= tau[None, None, :] * (1 + 1e-12)).mean(axis=0)


def profile_area(ratios: np.ndarray | Sequence[Sequence[float]], tau_max: float = 4.0) -> np.ndarray:
    """Area under each method's performance profile over ``[1, tau_max]``, divided by ``tau_max - 1``.

    Exact for the step function: a task with ratio ``r`` adds ``(tau_max - r) / (tau_max - 1)`` (1 for
    ``r = 1``, 0 for ``r >= tau_max`` or ``inf``), averaged over tasks. 1 = best on every task.
    """
    arr = np.asarray(ratios, dtype=float)
    if tau_max <= 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max}")
    if arr.shape[0] == 0:
        return np.full(arr.shape[1] if arr.ndim == 2 else 0, np.nan)
    share = np.clip((tau_max - arr) / (tau_max - 1.0), 0.0, 1.0)
    share[~np.isfinite(arr)] = 0.0
    return share.mean(axis=0)
