"""Robustness metrics against hand-computed examples and brute force."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tunefree.bench import metrics as M
from tunefree.bench.sweep import SUITE_EXPONENTS, lr_grid, propose_grid_extension

STANDARD = list(SUITE_EXPONENTS["standard"])


def test_score_loss_and_mirrored_accuracy() -> None:
    # loss: from 10 at init to the target 2; a run ending at 4 covered 6 of the 8 units
    assert M.normalized_score(4.0, 10.0, 2.0) == pytest.approx(0.75)
    assert M.normalized_score(2.0, 10.0, 2.0) == pytest.approx(1.0)
    assert M.normalized_score(11.0, 10.0, 2.0) == pytest.approx(-0.125)
    # accuracy (higher is better): init 0.1, best baseline 0.9, run 0.5 -> half way
    assert M.normalized_score(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert M.normalized_score(0.95, 0.1, 0.9) == pytest.approx(1.0625)
    # negating the metric (accuracy <-> error) leaves the score unchanged: the mirroring is exact
    assert M.normalized_score(-0.5, -0.1, -0.9) == pytest.approx(0.5)


def test_score_diverged_is_minus_inf_and_degenerate_target_is_nan() -> None:
    assert M.normalized_score(None, 10.0, 2.0) == -math.inf
    assert M.normalized_score(math.nan, 10.0, 2.0) == -math.inf
    assert M.normalized_score(math.inf, 10.0, 2.0) == -math.inf
    assert math.isnan(M.normalized_score(3.0, 2.0, 2.0))


def test_best_metric_respects_direction_and_ignores_failures() -> None:
    assert M.best_metric([3.0, None, 1.0, math.nan], higher_is_better=False) == 1.0
    assert M.best_metric([0.3, None, 0.8], higher_is_better=True) == 0.8
    assert math.isnan(M.best_metric([None], higher_is_better=True))


def test_seed_mean_one_diverged_seed_fails_the_point() -> None:
    assert M.seed_mean([0.9, 1.0]) == pytest.approx(0.95)
    assert M.seed_mean([0.9, -math.inf, 1.0]) == -math.inf


def test_w95_on_grid_with_a_gap() -> None:
    #        k: -2   -1.5  -1    -0.5  0     0.5   1     1.5   2
    scores = [0.2, 0.96, 0.97, 0.5, 0.99, 0.995, 0.98, 0.96, -math.inf]
    # good stretches: {-1.5, -1} (2 points) and {0 .. 1.5} (4 points) -> 4 x 0.5 decades
    assert M.robust_width(STANDARD, scores, 0.95) == pytest.approx(2.0)
    # >= 0.99: {0, 0.5} -> 1.0 decade
    assert M.robust_width(STANDARD, scores, 0.99) == pytest.approx(1.0)
    # order of the input does not matter
    perm = list(range(9))
    random.Random(0).shuffle(perm)
    assert M.robust_width([STANDARD[i] for i in perm], [scores[i] for i in perm], 0.95) == pytest.approx(2.0)


def test_width_counts_single_points_and_breaks_on_missing_grid_points() -> None:
    assert M.robust_width(STANDARD, [0.0] * 4 + [0.97] + [0.0] * 4) == pytest.approx(0.5)
    assert M.robust_width(STANDARD, [0.0] * 9) == 0.0
    assert M.robust_width(STANDARD, [1.0] * 9) == pytest.approx(4.5)
    # k = 0 was never measured: the two good pairs are not one stretch
    assert M.robust_width([-1.0, -0.5, 0.5, 1.0], [1.0] * 4, spacing=0.5) == pytest.approx(1.0)
    # quick grid: whole decades
    assert M.robust_width(list(SUITE_EXPONENTS["quick"]), [0.0, 1.0, 1.0, 1.0, 0.0]) == pytest.approx(3.0)
    # NaN (undefined score) is not good
    assert M.robust_width([0.0, 0.5], [math.nan, 1.0]) == pytest.approx(0.5)


def test_expected_trials() -> None:
    assert M.expected_trials(9, 3) == pytest.approx(2.5)
    assert M.expected_trials(9, 9) == pytest.approx(1.0)
    assert M.expected_trials(9, 1) == pytest.approx(5.0)
    assert M.expected_trials(9, 0) == math.inf
    with pytest.raises(ValueError):
        M.expected_trials(3, 4)


def _brute_best_of(scores: list[float], b: int) -> float:
    subsets = list(itertools.combinations(scores, b))
    maxima = [max(s) for s in subsets]
    if any(m == -math.inf for m in maxima):
        return -math.inf
    return sum(maxima) / len(maxima)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("b", [1, 2, 3, 5, 9])
def test_expected_best_of_matches_enumeration(seed: int, b: int) -> None:
    rng = random.Random(seed)
    scores = [rng.uniform(-1, 1.1) for _ in range(9)]
    if seed % 2:
        scores[rng.randrange(9)] = -math.inf  # a diverged point
    assert M.expected_best_of(scores, b) == pytest.approx(_brute_best_of(scores, b))


def test_expected_best_of_hand_examples() -> None:
    assert M.expected_best_of([0.0, 1.0], 1) == pytest.approx(0.5)
    assert M.expected_best_of([0.0, 1.0], 2) == pytest.approx(1.0)
    # 3 points, b=2: pairs (0,.5)->.5, (0,1)->1, (.5,1)->1 -> 2.5/3
    assert M.expected_best_of([1.0, 0.0, 0.5], 2) == pytest.approx(2.5 / 3)
    # all but one diverged: b=1 can draw a diverged point
    assert M.expected_best_of([-math.inf, -math.inf, 1.0], 1) == -math.inf
    assert M.expected_best_of([-math.inf, 1.0], 2) == pytest.approx(1.0)
    assert M.expected_best_of([0.2, 0.4], 5) == pytest.approx(0.4)  # b clipped to n


def test_steps_to_target() -> None:
    assert M.steps_to_target([0, 10, 20, 30], [0.0, 0.5, 0.96, 0.99]) == 20
    assert M.steps_to_target([0, 10], [0.0, -math.inf]) == math.inf


def test_lr_grid_is_centred_on_the_default() -> None:
    grid = lr_grid(1e-3, SUITE_EXPONENTS["standard"])
    assert len(grid) == 9
    assert dict(grid)[0.0] == 1e-3
    assert dict(grid)[-2.0] == pytest.approx(1e-5)
    assert dict(grid)[0.5] == pytest.approx(10 ** -2.5, rel=1e-5)
    assert [k for k, _ in lr_grid(0.1, SUITE_EXPONENTS["quick"])] == [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_grid_extension_only_when_the_best_point_is_on_an_edge() -> None:
    # lower is better; 2 seeds per point
    def results(means: list[float | None]) -> list[tuple[float, float | None]]:
        return [(k, m) for k, m in zip(STANDARD, means) for _ in range(2)]

    upper = [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert propose_grid_extension(results(upper), higher_is_better=False) == [2.5]
    assert propose_grid_extension(results(upper[::-1]), higher_is_better=False) == [-2.5]
    interior = [9, 8, 7, 6, 1, 6, 7, 8, 9]
    assert propose_grid_extension(results(interior), higher_is_better=False) == []
    # the same numbers as accuracy: the best is now on the lower edge
    assert propose_grid_extension(results(upper), higher_is_better=True) == [-2.5]
    # a point with a diverged seed cannot be the best
    mixed = [(k, m) for k, m in results(upper)] + [(2.0, None)]
    assert propose_grid_extension(mixed, higher_is_better=False) == []
    # everything diverged: look at smaller learning rates
    assert propose_grid_extension(results([None] * 9), higher_is_better=False) == [-2.5]
    # never beyond the cap
    assert propose_grid_extension([(4.0, 1.0), (3.5, 2.0)], higher_is_better=False) == []
