"""Report: hit probabilities, expected best with diverged = 0, the seed bootstrap of mean W95, the
performance profile, seed-mean learning curves and the stated grid, on ledgers that mix 1-decade and
half-decade grids, grid points with fewer seeds than others and a missing grid point."""

from __future__ import annotations

import math
import shutil
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_task

from tunefree.bench import Ledger, run_sweep, summarise, write_report
from tunefree.bench import metrics as M
from tunefree.bench.report import figures as RF
from tunefree.bench.report import scoring as R
from tunefree.bench.report import sections as RS

STANDARD = [k / 2 for k in range(-4, 5)]


def _quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny tasks in one ledger: a half-decade grid with 2 seeds, a 1-decade grid with 2 seeds, and
    a half-decade grid with 3 seeds only near each method's best first-seed point."""
    out = tmp_path_factory.mktemp("mixed")
    kw = {"optimizers": ["sgd", "adam"], "out": out, "workers": 1, "progress": False, "report": False,
          "log": _quiet, "extend_grid": False}
    run_sweep(make_tiny_task(name="half"), seeds=2, exponents=STANDARD, **kw)
    run_sweep(make_tiny_task(name="dec"), seeds=2, **kw)
    run_sweep(make_tiny_task(name="near"), seeds=3, exponents=STANDARD, seeds_near_best=0.5, **kw)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _sql(folder: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(folder / "ledger.sqlite") as conn:
        conn.execute(statement, args)


def _task(tasks: list[R.TaskSummary], name: str) -> R.TaskSummary:
    return next(ts for ts in tasks if ts.task == name)


# ---- grid measured ----------------------------------------------------------------------------------------


def test_each_task_states_its_grid_and_w95_uses_its_spacing(mixed: Path) -> None:
    tasks = summarise(mixed)
    for o in _task(tasks, "half").optimizers:
        assert o.grid_spacing == 0.5 and len(o.exps) == 9 and o.seeds_per_point == (2, 2)
        assert o.w95 == pytest.approx(M.robust_width(o.exps, o.mean_scores, 0.95, 0.5))
    for o in _task(tasks, "dec").optimizers:
        assert o.grid_spacing == 1.0 and len(o.exps) == 5 and o.seeds_per_point == (2, 2)
        assert o.w95 == pytest.approx(M.robust_width(o.exps, o.mean_scores, 0.95, 1.0))
        assert o.w95 == int(o.w95)  # whole decades on a 1-decade grid
    for o in _task(tasks, "near").optimizers:
        assert o.grid_spacing == 0.5 and o.seeds_per_point == (1, 3) and not o.grid_holes
    write_report(mixed)
    md = (mixed / "report.md").read_text()
    assert "- k = -2..+2 in 1-decade steps (5 points), 2 seeds per point: all optimizers" in md
    assert "- k = -2..+2 in 0.5-decade steps (9 points), 2 seeds per point: all optimizers" in md
    assert "- k = -2..+2 in 0.5-decade steps (9 points), 1-3 seeds per point: all optimizers" in md
    assert "1-3 seeds per point" in (mixed / "report.html").read_text()


def test_w95_per_seed_leaves_out_seeds_measured_only_near_the_best(mixed: Path) -> None:
    for o in _task(summarise(mixed), "near").optimizers:
        full = [seed for seed in (0, 1, 2) if all(seed in point for point in o.run_scores)]
        assert full == [0]  # seeds 1 and 2 ran only within half a decade of the best point
        seed0 = M.robust_width(o.exps, [point[0] for point in o.run_scores], 0.95, o.grid_spacing)
        assert o.w95_seed_mean == pytest.approx(seed0) and o.w95_seed_std == 0.0


def test_a_missing_half_decade_point_breaks_contiguity(mixed: Path, tmp_path: Path) -> None:
    folder = _copy(mixed, tmp_path / "hole")
    # make every adam run on "half" as good as the best run of the task: s = 1 on its whole grid ...
    with sqlite3.connect(folder / "ledger.sqlite") as conn:
        (best,) = conn.execute("SELECT MIN(final_val) FROM runs WHERE task = 'half'").fetchone()
    _sql(folder, "UPDATE runs SET final_val = ?, status = 'ok' WHERE task = 'half' AND optimizer = 'adam'", best)
    (adam,) = [o for o in _task(summarise(folder), "half").optimizers if o.optimizer == "adam"]
    assert adam.mean_scores == pytest.approx([1.0] * 9) and adam.w95 == pytest.approx(4.5)
    # ... then drop the point k = +0.5: the stretches -2..0 (5 points) and +1..+2 (3) are not one
    _sql(folder, "DELETE FROM runs WHERE task = 'half' AND optimizer = 'adam' AND lr_exp = 0.5")
    (adam,) = [o for o in _task(summarise(folder), "half").optimizers if o.optimizer == "adam"]
    assert adam.grid_holes == [0.5] and adam.grid_spacing == 0.5
    assert adam.w95 == pytest.approx(2.5)
    assert (adam.w95_bootstrap <= 2.5).all()  # no resample bridges the hole either
    write_report(folder)
    assert "(8 points, missing k = +0.5 (breaks W95 contiguity)), 2 seeds per point: adam" in \
        (folder / "report.md").read_text()


# ---- hit probability and expected best with diverged = 0 ------------------------------------------------


def test_hit_probability_and_expected_best_with_diverged_as_zero(mixed: Path) -> None:
    tasks = summarise(mixed)
    with Ledger(mixed) as ledger:
        rows = ledger.rows()
    saw_divergence = False
    for ts in tasks:
        for o in ts.optimizers:
            k = sum(s >= R.TARGET for s in o.mean_scores)
            for b in R.HIT_WITHIN:
                assert o.p_hit[b] == pytest.approx(M.prob_target_within(len(o.exps), k, b))
            # by hand: each diverged run counts as s = 0, then the seed mean per grid point
            points: dict[float, list[float]] = defaultdict(list)
            for r in rows:
                if r["task"] == ts.task and r["optimizer"] == o.optimizer:
                    m = r["final_val"] if r["status"] == "ok" else None
                    s = M.normalized_score(m, ts.m_init, ts.m_star)
                    points[r["lr_exp"]].append(0.0 if s == -math.inf else s)
            floored = [float(np.mean(v)) for _, v in sorted(points.items())]
            for b in R.BEST_OF:
                assert o.best_of_div0[b] == pytest.approx(M.expected_best_of(floored, b))
                assert math.isfinite(o.best_of_div0[b])
            if o.n_diverged:
                saw_divergence = True
                assert o.best_of[1] == -math.inf  # the literal value is kept, and useless
    assert saw_divergence  # sgd at 10x-100x its default diverges on the tiny task
    md = (write_report(mixed).parent / "report.md").read_text()
    for needle in ("P(hit) b=1/3", "E[best] div=0 b=1/3/9", "s = 0 (no progress)"):
        assert needle in md
    assert "E[best] literal b=1/3/9" in md or "E[best] with diverged runs kept at -inf is left out" in md


# ---- bootstrap of mean W95 over seeds -----------------------------------------------------------------


def test_bootstrap_is_deterministic(mixed: Path, tmp_path: Path) -> None:
    first, second = summarise(mixed), summarise(mixed)
    for a, b in zip(first, second):
        for oa, ob in zip(a.optimizers, b.optimizers):
            assert oa.w95_bootstrap is not None and oa.w95_bootstrap.shape == (R.BOOTSTRAP_RESAMPLES,)
            assert np.array_equal(oa.w95_bootstrap, ob.w95_bootstrap)
    # a task's resamples do not depend on which other tasks are in the ledger
    folder = _copy(mixed, tmp_path / "alone")
    _sql(folder, "DELETE FROM runs WHERE task != 'near'")
    (alone,) = summarise(folder)
    for oa, ob in zip(alone.optimizers, _task(first, "near").optimizers):
        assert np.array_equal(oa.w95_bootstrap, ob.w95_bootstrap)

    def aggregate_section(md: str) -> str:
        return md.split("### Every measure over tasks")[1].split("### ")[0]

    write_report(mixed)
    one = aggregate_section((mixed / "report.md").read_text())
    write_report(mixed)
    assert aggregate_section((mixed / "report.md").read_text()) == one
    assert "mean W95 [95% CI]" in one
    assert f"{R.BOOTSTRAP_RESAMPLES} resamples" in (mixed / "report.md").read_text().split("## Glossary")[1]


def test_interval_collapses_when_all_seeds_agree(mixed: Path, tmp_path: Path) -> None:
    folder = _copy(mixed, tmp_path / "agree")
    # every seed's run becomes a copy of seed 0's at the same grid point (initial metric included)
    _sql(folder, """UPDATE runs SET
        init_val = (SELECT r0.init_val FROM runs AS r0 WHERE r0.task = runs.task AND r0.suite = runs.suite
                    AND r0.optimizer = runs.optimizer AND r0.lr_exp = runs.lr_exp AND r0.seed = 0),
        final_val = (SELECT r0.final_val FROM runs AS r0 WHERE r0.task = runs.task AND r0.suite = runs.suite
                     AND r0.optimizer = runs.optimizer AND r0.lr_exp = runs.lr_exp AND r0.seed = 0),
        status = (SELECT r0.status FROM runs AS r0 WHERE r0.task = runs.task AND r0.suite = runs.suite
                  AND r0.optimizer = runs.optimizer AND r0.lr_exp = runs.lr_exp AND r0.seed = 0)
        WHERE seed != 0""")
    tasks = summarise(folder)
    per_opt: dict[str, list[R.OptimizerSummary]] = defaultdict(list)
    for ts in tasks:
        for o in ts.optimizers:
            assert (o.w95_bootstrap == o.w95).all()
            per_opt[o.label].append(o)
    for items in per_opt.values():
        point = float(np.mean([o.w95 for o in items]))
        assert R.w95_interval(items) == pytest.approx((point, point))


def test_interval_spreads_when_seeds_disagree(mixed: Path, tmp_path: Path) -> None:
    folder = _copy(mixed, tmp_path / "disagree")
    (sgd,) = [o for o in _task(summarise(folder), "half").optimizers if o.optimizer == "sgd"]
    # seed 1 of sgd diverges at the best point: W95 now depends on which seeds are drawn
    _sql(folder, "UPDATE runs SET status = 'diverged', final_val = NULL WHERE task = 'half' AND optimizer = 'sgd' "
         "AND seed = 1 AND lr_exp = ?", sgd.best_exp)
    (sgd,) = [o for o in _task(summarise(folder), "half").optimizers if o.optimizer == "sgd"]
    per_seed = {seed: [point[seed] for point in sgd.run_scores] for seed in (0, 1)}
    only0 = M.robust_width(sgd.exps, per_seed[0])
    only1 = M.robust_width(sgd.exps, per_seed[1])
    assert only0 > sgd.w95 and only1 <= sgd.w95  # the diverged point splits seed 1's good stretch
    # resamples are (0, 0), (0, 1), (1, 0) or (1, 1): only (0, 0), drawn a quarter of the time, keeps
    # seed 0's width; the others contain the diverged run
    boot = sgd.w95_bootstrap
    assert set(np.unique(boot).tolist()) <= {only0, only1, sgd.w95}
    assert np.mean(boot == only0) == pytest.approx(0.25, abs=0.04)
    assert M.percentile_interval(boot) == pytest.approx((min(only1, sgd.w95), only0))


def test_one_seed_task_says_the_interval_is_not_available(mixed: Path, tmp_path: Path) -> None:
    folder = _copy(mixed, tmp_path / "oneseed")
    _sql(folder, "DELETE FROM runs WHERE task = 'dec' AND seed != 0")
    tasks = summarise(folder)
    assert all(o.w95_bootstrap is None for o in _task(tasks, "dec").optimizers)
    assert all(o.w95_bootstrap is not None for o in _task(tasks, "half").optimizers)
    assert R.w95_interval([o for ts in tasks for o in ts.optimizers if o.label == "sgd"]) is None
    write_report(folder)
    md = (folder / "report.md").read_text()
    assert "95% CI n/a: 1/3 tasks with 1 seed" in md and md.count("CI n/a") == 1  # said once, not per row


# ---- performance profile --------------------------------------------------------------------------------


def test_profile_figure_and_area_column(mixed: Path) -> None:
    tasks = summarise(mixed)
    labels, ratios = R.trials_profile(tasks)
    assert labels == ["adam", "sgd"] and ratios.shape == (3, 2)
    for t, ts in enumerate(tasks):
        costs = {o.label: o.expected_trials for o in ts.optimizers}
        best = min(costs.values())
        for j, label in enumerate(labels):
            expected = costs[label] / best if math.isfinite(costs[label]) else math.inf
            assert ratios[t, j] == pytest.approx(expected)
    area = M.profile_area(ratios, R.PROFILE_TAU_MAX)
    html_path = write_report(mixed)
    assert (mixed / "figures" / "performance-profile.png").stat().st_size > 0
    assert 'alt="performance profile"' in html_path.read_text()
    md = (mixed / "report.md").read_text()
    header, body = RS.aggregate_table(tasks)
    column = header.index("profile area tau 1-4")
    assert [row[column] for row in body] == [f"{a:.2g}" for a in area]
    assert "| profile area tau 1-4 |" in md


def test_profile_counts_a_task_an_optimizer_did_not_run_as_never(mixed: Path, tmp_path: Path) -> None:
    folder = _copy(mixed, tmp_path / "absent")
    _sql(folder, "DELETE FROM runs WHERE task = 'dec' AND optimizer = 'adam'")
    labels, ratios = R.trials_profile(summarise(folder))
    dec = [ts.task for ts in summarise(folder)].index("dec")
    assert ratios[dec, labels.index("adam")] == math.inf


# ---- learning curves ------------------------------------------------------------------------------------


def test_seed_curve_mean_and_band() -> None:
    rows = [{"losses": [[1, 2, 3], [4.0, 2.0, 1.0]]}, {"losses": [[1, 2, 3], [2.0, 2.0, 3.0]]}]
    steps, mean, low, high, short = RF.seed_curve(rows)
    assert steps.tolist() == [1, 2, 3] and short == 0
    assert mean.tolist() == [3.0, 2.0, 2.0] and low.tolist() == [2.0, 2.0, 1.0] and high.tolist() == [4.0, 2.0, 3.0]
    # a seed that stopped early (diverged) ends the curve where it stopped
    steps, mean, low, high, short = RF.seed_curve(rows + [{"losses": [[1, 2], [6.0, 6.0]]}])
    assert steps.tolist() == [1, 2] and short == 1 and mean.tolist() == pytest.approx([4.0, 10 / 3])
    assert RF.seed_curve([])[0].size == 0
