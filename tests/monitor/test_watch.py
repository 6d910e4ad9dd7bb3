"""tunefree.watch: each degenerate adaptation raises its alert once; healthy runs raise none; bounded memory."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

import tunefree
from tunefree import AGD, GALA, RSGDM, SMES, MoMo, MoMoAdam, Thresholds
from tunefree.monitor import watcher as watcher_module

from .problems import make_problem, train, watched_codes


# ---------------------------------------------------------------------- degenerate cases: one alert each
def test_momo_lower_bound_above_the_loss_is_no_progress():
    codes, watcher, optimizer = watched_codes(lambda m: MoMo(m.parameters(), lower_bound=5.0), 200)
    assert [c for c, _ in codes] == ["no_progress"]
    assert codes[0][1] == Thresholds().no_progress_steps  # tau is 0 from the first step on
    assert watcher.alerts[0].code == "no_progress" and "estimate_lower_bound=True" in watcher.alerts[0].message


def test_momo_tiny_cap_is_cap_bound():
    codes, _, _ = watched_codes(lambda m: MoMo(m.parameters(), lr=1e-3), 300)
    assert [c for c, _ in codes] == ["cap_bound"]


def test_agd_large_delta_is_switch_saturated():
    codes, _, _ = watched_codes(lambda m: AGD(m.parameters(), delta=1.0), 200)
    assert [c for c, _ in codes] == ["switch_saturated"]


def test_agd_fraction_zero_is_not_an_alert():
    codes, watcher, _ = watched_codes(lambda m: AGD(m.parameters()), 200)
    assert watcher.summary()["frac_sgd_like"]["max"] == 0.0  # the purely adaptive regime throughout
    assert codes == []


def test_gala_collapsing_rate_is_lr_collapsed():
    codes, watcher, _ = watched_codes(lambda m: GALA(m.parameters(), lr=100.0), 150)
    assert [c for c, _ in codes] == ["lr_collapsed"]
    assert watcher.summary()["lr"]["last"] < 100.0 * 1e-3


def test_diverging_run_is_diverging():
    codes, watcher, _ = watched_codes(lambda m: RSGDM(m.parameters(), lr=30.0, nonfinite="off"), 100)
    assert [c for c, _ in codes] == ["diverging"]
    assert not math.isfinite(watcher.latest["loss"]) or watcher.latest["loss"] > 10  # it did diverge


def test_nan_skips_are_skipped_steps_not_diverging():
    codes, watcher, optimizer = watched_codes(
        lambda m: MoMo(m.parameters(), nonfinite="skip"), 150, poison=lambda step: step in (60, 61, 62))
    assert [c for c, _ in codes] == ["skipped_steps"] and codes[0][1] == 60
    assert watcher.latest["skipped_steps"] == 3.0
    assert int(optimizer.global_state["skipped_steps"]) == 3


def test_an_alert_re_arms_only_after_its_condition_cleared():
    t = Thresholds()
    # the last early skip (100) leaves the window at 100 + skip_window; re-armed rearm_steps + skip_window later
    clear_again = 100 + t.skip_window + t.rearm_steps + t.skip_window + 10
    codes, _, _ = watched_codes(
        lambda m: MoMo(m.parameters(), nonfinite="skip"), clear_again + 10,
        poison=lambda step: step in (60, 65, 100, clear_again), disable=("cap_bound",))
    assert codes == [("skipped_steps", 60), ("skipped_steps", clear_again)]


def test_thresholds_are_settable():
    codes, _, _ = watched_codes(lambda m: MoMo(m.parameters(), lower_bound=5.0), 40,
                                thresholds=Thresholds(no_progress_steps=10))
    assert codes == [("no_progress", 10)]
    codes, _, _ = watched_codes(lambda m: MoMo(m.parameters(), lower_bound=5.0), 200, disable=("no_progress",))
    assert codes == []


# ---------------------------------------------------------------------- healthy runs
@pytest.mark.parametrize("cls", [MoMo, AGD, GALA, RSGDM, SMES], ids=lambda c: c.__name__)
def test_healthy_default_runs_raise_nothing(cls):
    codes, watcher, _ = watched_codes(lambda m: cls(m.parameters()), 400, problem={"target": "linear"})
    assert codes == []
    assert watcher.step == 400 and watcher.alerts == type(watcher.alerts)(maxlen=watcher.alerts.maxlen)


def test_momo_adam_default_cap_bound_is_true_when_raised():
    # MoMo-Adam's default cap (1e-2) binds on most small problems: the alert must then be a fact.
    model, x, y = make_problem(target="linear")
    optimizer = MoMoAdam(model.parameters())
    at_cap: list[bool] = []
    optimizer.register_step_post_hook(
        lambda opt, a, k: at_cap.append(bool(opt.group_stats[0]["tau"] >= opt.group_stats[0]["tau_cap"])))
    with pytest.warns(tunefree.AdaptationWarning) as caught:
        with tunefree.watch(optimizer, every=1, sinks=[]) as watcher:
            train(model, optimizer, x, y, 400)
    assert {w.message.code for w in caught} <= {"cap_bound"}
    window = Thresholds().cap_window
    for alert in watcher.alerts:
        recent = at_cap[alert.step - window:alert.step]
        assert sum(recent) / len(recent) >= Thresholds().cap_fraction


# ---------------------------------------------------------------------- stats for every group
def _two_groups(model: nn.Module, **second) -> list[dict]:
    params = list(model.parameters())
    return [{"params": params[:2]}, {"params": params[2:], **second}]


@pytest.mark.parametrize("cls, second, key", [
    (MoMo, {"lr": 0.01}, "tau"), (MoMoAdam, {"lr": 1e-3}, "tau"), (AGD, {"delta": 1.0}, "frac_sgd_like"),
    (GALA, {"lr": 0.05}, "lr"), (RSGDM, {"correction": False}, "correction_ratio"),
    (SMES, {"alpha": 0.5}, "alpha"),
], ids=lambda v: getattr(v, "__name__", None) or "")
def test_stats_for_a_second_param_group(cls, second, key):
    model, x, y = make_problem()
    optimizer = cls(_two_groups(model, **second))
    with tunefree.watch(optimizer, every=1, sinks=[], warn=False) as watcher:
        train(model, optimizer, x, y, 5)
    assert len(optimizer.group_stats) == 2
    for values in optimizer.group_stats:
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values.values())
    first, other = (float(g[key]) for g in optimizer.group_stats)
    assert first != other, f"{key} is the same in both groups"
    assert watcher.latest[f"{key}/group1"] == other
    if key in optimizer.stats and cls is not AGD:  # AGD's stats fraction is over all groups
        assert float(optimizer.stats[key]) == first  # the first group's keys are unchanged


def test_per_group_values_match_their_definitions():
    model, x, y = make_problem()
    momo = MoMo(_two_groups(model, lr=0.1))
    train(model, momo, x, y, 3)
    assert float(momo.group_stats[1]["tau_cap"]) == pytest.approx(0.1)
    assert float(momo.group_stats[1]["tau"]) == min(0.1, float(momo.group_stats[1]["tau_polyak"]))

    model, x, y = make_problem()
    agd = AGD(_two_groups(model, delta=1.0))
    train(model, agd, x, y, 3)
    sizes = [sum(p.numel() for p in g["params"]) for g in agd.param_groups]
    fractions = [float(g["frac_sgd_like"]) for g in agd.group_stats]
    assert float(agd.stats["frac_sgd_like"]) == pytest.approx(sum(f * n for f, n in zip(fractions, sizes)) / sum(sizes))
    assert fractions[1] == 1.0


def test_rsgdm_correction_ratio_is_the_correction_over_the_momentum():
    beta = 0.9
    param = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    optimizer = RSGDM([param], lr=0.1, beta=beta, extra_stats=True)
    g1 = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([0.5, 1.0, -1.5, 2.0, 4.0], dtype=torch.float64)
    for grad in (g1, g2):
        param.grad = grad.clone()
        optimizer.step()
    # zero_diff start: n_1 = (1 - beta) g1; n_2 = beta n_1 + (1 - beta) (g2 + beta (g2 - g1))
    momentum = beta * (1 - beta) * g1 + (1 - beta) * (g2 + beta * (g2 - g1))
    expected = (beta * (g2 - g1)).norm() / momentum.norm()
    assert float(optimizer.stats["correction_ratio"]) == pytest.approx(float(expected), rel=1e-12)
    assert torch.equal(optimizer.stats["correction_ratio"], optimizer.group_stats[0]["correction_ratio"])


# ---------------------------------------------------------------------- what the watcher reads, and when
@pytest.mark.parametrize("mode", ["closure", "loss", "observe_loss"])
def test_the_watcher_sees_the_loss_the_optimizer_was_given(mode):
    model, x, y = make_problem()
    optimizer = MoMo(model.parameters())
    with tunefree.watch(optimizer, every=1, sinks=[]) as watcher:
        losses = train(model, optimizer, x, y, 3, mode=mode)
    assert watcher.latest["loss"] == pytest.approx(losses[-1], rel=1e-6)


def test_watcher_observe_for_an_optimizer_given_no_loss():
    model, x, y = make_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tunefree.watch(optimizer, every=1, sinks=[]) as watcher:
        losses = train(model, optimizer, x, y, 3, mode="watcher", watcher=watcher)
    assert watcher.latest == {"loss": pytest.approx(losses[-1], rel=1e-6)}


def test_gala_loss_is_the_first_closure_evaluation():
    model, x, y = make_problem()
    optimizer = GALA(model.parameters())
    with tunefree.watch(optimizer, every=1, sinks=[]) as watcher:
        losses = train(model, optimizer, x, y, 4)
    assert watcher.latest["loss"] == pytest.approx(losses[-1], rel=1e-6)  # step() returns the first call's loss


def test_reads_only_every_n_steps(monkeypatch):
    reads = []
    original = watcher_module._read_all
    monkeypatch.setattr(watcher_module, "_read_all", lambda tensors: reads.append(len(tensors)) or original(tensors))
    sampled: list[int] = []
    model, x, y = make_problem()
    optimizer = MoMo(model.parameters())
    with tunefree.watch(optimizer, every=10, sinks=[lambda step, values, alerts: sampled.append(step)]):
        train(model, optimizer, x, y, 35)
    assert sampled == [10, 20, 30] and len(reads) == 3


def test_close_detaches():
    model, x, y = make_problem()
    optimizer = MoMo(model.parameters())
    watcher = tunefree.watch(optimizer, every=1, sinks=[])
    train(model, optimizer, x, y, 3)
    watcher.close()
    train(model, optimizer, x, y, 3)
    assert watcher.step == 3
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_memory_is_bounded_over_10000_steps():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    x, y = torch.randn(64, 2), torch.randn(64, 1)
    optimizer = MoMo(model.parameters(), nonfinite="skip")
    watcher = tunefree.watch(optimizer, every=1, sinks=[], warn=False, max_alerts=5)

    def sizes():
        return (len(watcher._samples), len(watcher.alerts), len(watcher._episodes._active),
                len(optimizer._optimizer_step_pre_hooks), len(optimizer.group_stats), len(optimizer.stats))

    seen = {}
    for step in range(1, 10_001):
        rows = torch.arange(8) + 8 * (step % 8)
        optimizer.zero_grad()
        loss = ((model(x[rows]) - y[rows]) ** 2).mean()
        loss.backward()
        optimizer.step(loss=loss * float("nan") if step % 500 == 0 else loss)  # an episode every 500 steps
        if step in (5_000, 10_000):
            seen[step] = sizes()
    watcher.close()
    assert seen[5_000] == seen[10_000]
    assert seen[10_000][0] == watcher._samples.maxlen
    assert watcher.alert_counts["skipped_steps"] == 20 and len(watcher.alerts) == 5


# ---------------------------------------------------------------------- interface
def test_alert_is_a_user_warning_with_code_step_and_remedy(caplog):
    with caplog.at_level(logging.WARNING, logger="tunefree"):
        codes, watcher, _ = watched_codes(lambda m: MoMo(m.parameters(), lower_bound=5.0), 60)
    assert issubclass(tunefree.AdaptationWarning, UserWarning)
    records = [r for r in caplog.records if r.name == "tunefree" and "no_progress" in r.getMessage()]
    assert len(records) == 1 and "lower_bound" in records[0].getMessage()
    assert watcher.alerts[0][:2] == (50, "no_progress")


def test_warn_false_still_records_and_logs(recwarn, caplog):
    with caplog.at_level(logging.WARNING, logger="tunefree"):
        model, x, y = make_problem()
        optimizer = MoMo(model.parameters(), lower_bound=5.0)
        with tunefree.watch(optimizer, every=1, sinks=[], warn=False) as watcher:
            train(model, optimizer, x, y, 60)
    assert not [w for w in recwarn if isinstance(w.message, tunefree.AdaptationWarning)]
    assert [a.code for a in watcher.alerts] == ["no_progress"]
    assert any("no_progress" in r.getMessage() for r in caplog.records)


def test_logging_sink_is_the_default(caplog):
    model, x, y = make_problem()
    optimizer = MoMo(model.parameters())
    with caplog.at_level(logging.INFO, logger="tunefree"):
        with tunefree.watch(optimizer, every=2):
            train(model, optimizer, x, y, 4)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 2 and lines[0].startswith("step 2: tau=")


@pytest.mark.parametrize("options, match", [
    ({"every": 0}, "every must be an integer >= 1"),
    ({"disable": ("nope",)}, "unknown alert codes"),
    ({"sinks": [3]}, "a sink must be"),
])
def test_bad_options_are_refused(options, match):
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match=match):
        tunefree.watch(MoMo(model.parameters()), **options)


@pytest.mark.parametrize("field, value", [("cap_fraction", 1.5), ("no_progress_steps", 0), ("diverge_factor", 1.0),
                                          ("cap_clear_fraction", 0.99)])
def test_bad_thresholds_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Thresholds(**{field: value})


def test_rsgdm_measures_its_correction_only_while_watched_and_steps_the_same():
    runs = []
    for watched in (False, True):
        model, x, y = make_problem()
        optimizer = RSGDM(model.parameters())
        watcher = tunefree.watch(optimizer, every=1, sinks=[]) if watched else None
        assert optimizer.extra_stats is watched
        train(model, optimizer, x, y, 5)
        runs.append((model, dict(optimizer.stats)))
        if watcher is not None:
            watcher.close()
            assert optimizer.extra_stats is False
    (plain, plain_stats), (watched_model, watched_stats) = runs
    assert plain_stats == {} and set(watched_stats) == {"correction_ratio"}
    for p, q in zip(plain.parameters(), watched_model.parameters()):
        assert torch.equal(p, q)  # measuring never changes the update
