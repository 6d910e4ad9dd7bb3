"""Tuning-cost and aggregation metrics: hit probability, expected best with diverged = 0, vectorised
W95, the seed bootstrap and performance profiles, against hand-computed examples and brute force."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from tunefree.bench import metrics as M

STANDARD = [k / 2 for k in range(-4, 5)]
QUICK = [-2.0, -1.0, 0.0, 1.0, 2.0]


# ---- P(reach the target within b trials) -----------------------------------------------------------


def test_prob_target_within_hand_examples() -> None:
    assert M.prob_target_within(9, 3, 1) == pytest.approx(1 / 3)
    # 1 - C(6,3)/C(9,3) = 1 - 20/84
    assert M.prob_target_within(9, 3, 3) == pytest.approx(64 / 84)
    # quick grid, one good point, 3 trials: 1 - C(4,3)/C(5,3) = 1 - 4/10
    assert M.prob_target_within(5, 1, 3) == pytest.approx(0.6)
    assert M.prob_target_within(9, 0, 3) == 0.0
    assert M.prob_target_within(9, 7, 3) == 1.0  # only 2 bad points: 3 trials must hit a good one
    assert M.prob_target_within(2, 1, 5) == 1.0  # b clipped to n
    assert math.isnan(M.prob_target_within(0, 0, 1))
    with pytest.raises(ValueError):
        M.prob_target_within(3, 4, 1)
    with pytest.raises(ValueError):
        M.prob_target_within(3, 1, 0)


@pytest.mark.parametrize("n,k,b", [(9, 2, 3), (10, 4, 2), (5, 2, 3), (7, 1, 7)])
def test_prob_target_within_matches_enumeration(n: int, k: int, b: int) -> None:
    points = [True] * k + [False] * (n - k)
    subsets = list(itertools.combinations(points, b))
    assert M.prob_target_within(n, k, b) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


# ---- expected best with diverged runs counted as s = 0 ------------------------------------------------


def test_seed_mean_with_diverged_as_no_progress() -> None:
    assert M.seed_mean([-math.inf, 0.98]) == -math.inf  # the literal convention is unchanged
    assert M.seed_mean([-math.inf, 0.98], diverged=0.0) == pytest.approx(0.49)
    assert M.seed_mean([-math.inf, -math.inf], diverged=0.0) == 0.0
    assert M.seed_mean([-0.3, 0.5], diverged=0.0) == pytest.approx(0.1)  # finite scores stay as they are
    assert math.isnan(M.seed_mean([math.nan, -math.inf], diverged=0.0))


def test_expected_best_with_diverged_as_zero_hand_example() -> None:
    # three grid points, two seeds each: A = (diverged, 0.98), B = (diverged, diverged), C = (0.96, 1.0)
    runs = [[-math.inf, 0.98], [-math.inf, -math.inf], [0.96, 1.0]]
    literal = [M.seed_mean(r) for r in runs]
    div0 = [M.seed_mean(r, diverged=0.0) for r in runs]
    assert div0 == pytest.approx([0.49, 0.0, 0.98])
    # b = 1: mean of the three points; b = 2: pairs AB -> .49, AC -> .98, BC -> .98
    assert M.expected_best_of(div0, 1) == pytest.approx(1.47 / 3)
    assert M.expected_best_of(div0, 2) == pytest.approx(2.45 / 3)
    assert M.expected_best_of(div0, 3) == pytest.approx(0.98)
    # the literal value stays available: -inf whenever a diverged point can be the best draw
    assert M.expected_best_of(literal, 1) == -math.inf
    assert M.expected_best_of(literal, 2) == -math.inf
    assert M.expected_best_of(literal, 3) == pytest.approx(0.98)


# ---- W95 vectorised ----------------------------------------------------------------------------------


def test_robust_widths_agrees_with_robust_width() -> None:
    rng = random.Random(1)
    for grid in (STANDARD, QUICK, [-1.0, -0.5, 0.5, 1.0], [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]):
        rows = [[rng.choice([0.2, 0.96, 1.0, -math.inf, math.nan]) for _ in grid] for _ in range(200)]
        expected = [M.robust_width(grid, row) for row in rows]
        assert M.robust_widths(grid, rows).tolist() == pytest.approx(expected)
    # explicit spacing is honoured the same way
    assert M.robust_widths(QUICK, [[1.0] * 5], spacing=0.5).tolist() == [0.5]
    with pytest.raises(ValueError):
        M.robust_widths(QUICK, [[1.0] * 4])


def test_grid_spacing() -> None:
    assert M.grid_spacing(STANDARD) == 0.5
    assert M.grid_spacing(QUICK) == 1.0
    assert M.grid_spacing([0.0]) == 0.5
    assert M.grid_spacing([1.0, -2.0, 0.0]) == 1.0  # unsorted input


# ---- bootstrap over seeds --------------------------------------------------------------------------------


def test_bootstrap_counts_are_resamples_and_deterministic() -> None:
    a = M.bootstrap_seed_counts(3, 500, np.random.default_rng(0))
    b = M.bootstrap_seed_counts(3, 500, np.random.default_rng(0))
    assert a.shape == (500, 3) and (a.sum(axis=1) == 3).all()
    assert np.array_equal(a, b)
    # every seed is drawn a third of the time on average
    assert a.mean(axis=0) == pytest.approx([1.0, 1.0, 1.0], abs=0.1)


def test_bootstrap_seed_means_hand_examples() -> None:
    inf = math.inf
    # 3 points x 2 seeds; point 2 has only seed 0 measured
    scores = np.array([[0.2, 0.4], [-inf, 1.0], [0.7, np.nan]])
    measured = np.array([[True, True], [True, True], [True, False]])
    counts = np.array([[1, 1], [2, 0], [0, 2]])
    means = M.bootstrap_seed_means(scores, measured, counts)
    # resample (0, 1): the full-sample seed means
    assert means[0].tolist() == pytest.approx([0.3, -inf, 0.7])
    # resample (0, 0): seed 0 twice
    assert means[1].tolist() == pytest.approx([0.2, -inf, 0.7])
    # resample (1, 1): seed 1 twice; point 2 has no seed 1, so it keeps its full-sample mean
    assert means[2].tolist() == pytest.approx([0.4, 1.0, 0.7])
    with pytest.raises(ValueError):
        M.bootstrap_seed_means(scores, measured, np.ones((2, 3)))


def test_bootstrap_of_identical_seeds_collapses_to_the_point_estimate() -> None:
    row = [0.1, 0.96, 0.97, 0.99, 0.5, 0.98, 0.99, -math.inf, -math.inf]
    scores = np.array([row, row, row]).T  # 9 points x 3 identical seeds
    counts = M.bootstrap_seed_counts(3, 400, np.random.default_rng(5))
    widths = M.robust_widths(STANDARD, M.bootstrap_seed_means(scores, np.ones_like(scores, bool), counts))
    point = M.robust_width(STANDARD, row)
    assert point == pytest.approx(1.5)
    assert M.percentile_interval(widths) == pytest.approx((point, point))


def test_percentile_interval() -> None:
    assert M.percentile_interval(np.arange(101)) == pytest.approx((2.5, 97.5))
    assert M.percentile_interval([2.0] * 10) == (2.0, 2.0)
    assert all(math.isnan(x) for x in M.percentile_interval([]))


# ---- performance profiles --------------------------------------------------------------------------------


def test_performance_profile_hand_example() -> None:
    inf = math.inf
    # expected trials to target; rows = tasks, columns = methods A, B, C
    costs = [[1.0, 2.0, inf],     # A best; B ratio 2; C never
             [3.0, 1.5, 6.0],     # B best; A ratio 2, C ratio 4
             [inf, inf, inf],     # nobody reaches the target: counts for nobody
             [5.0, 1.0, 2.5]]     # B best; A ratio 5 (beyond tau = 4), C ratio 2.5
    ratios = M.performance_ratios(costs)
    assert ratios.tolist() == [[1.0, 2.0, inf], [2.0, 1.0, 4.0], [inf, inf, inf], [5.0, 1.0, 2.5]]
    rho = M.performance_profile(ratios, [1.0, 2.0, 3.0, 4.0])
    assert rho[0].tolist() == pytest.approx([0.25, 0.5, 0.5, 0.5])  # A
    assert rho[1].tolist() == pytest.approx([0.5, 0.75, 0.75, 0.75])  # B
    assert rho[2].tolist() == pytest.approx([0.0, 0.0, 0.25, 0.5])  # C
    # area over [1, 4] / 3: a task with ratio r adds (4 - r)/3
    area = M.profile_area(ratios, tau_max=4.0)
    assert area.tolist() == pytest.approx([(1 + 2 / 3) / 4, (1 + 2 / 3 + 1) / 4, (0 + 0 + 1.5 / 3) / 4])
    # the exact area matches a fine numerical integral of the step function
    edges = np.linspace(1, 4, 300001)
    midpoints = (edges[1:] + edges[:-1]) / 2  # midpoint rule (numpy >= 1.24 has no trapezoid)
    numeric = M.performance_profile(ratios, midpoints).mean(axis=1)
    assert numeric == pytest.approx(area, abs=1e-4)


def test_performance_profile_ties_and_single_method() -> None:
    ratios = M.performance_ratios([[2.0, 2.0], [4.0, 8.0]])
    assert ratios.tolist() == [[1.0, 1.0], [1.0, 2.0]]
    assert M.profile_area(ratios).tolist() == pytest.approx([1.0, (1 + 2 / 3) / 2])
    assert M.profile_area(M.performance_ratios([[3.0]])).tolist() == [1.0]
    with pytest.raises(ValueError):
        M.performance_ratios([[0.0, 1.0]])
