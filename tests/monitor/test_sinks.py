"""The watcher's sinks (CSV, TensorBoard, callables) and ``tunefree plot-stats``."""

from __future__ import annotations

import math

import pytest

import tunefree
from tunefree import MoMo, Thresholds
from tunefree.cli import main
from tunefree.monitor.plot import read_stats_csv

from .problems import make_problem, train


def _degenerate_run(tmp_path, **watch_options):
    """MoMo with lower_bound above the loss (no_progress at step 20), watched every 2 steps."""
    model, x, y = make_problem()
    optimizer = MoMo(model.parameters(), lower_bound=5.0)
    watch_options.setdefault("sinks", [])
    with tunefree.watch(optimizer, every=2, warn=False, thresholds=Thresholds(no_progress_steps=20),
                        **watch_options) as watcher:
        train(model, optimizer, x, y, 40)
    return watcher


def test_csv_has_every_sample_and_the_alerts(tmp_path):
    path = tmp_path / "sub" / "stats.csv"
    watcher = _degenerate_run(tmp_path, csv=str(path))
    steps, columns, alerts = read_stats_csv(str(path))
    assert steps == list(range(2, 41, 2))
    assert {"tau", "tau_cap", "tau_polyak", "lower_bound", "loss", "skipped_steps"} <= set(columns)
    assert all(v == 0.0 for v in columns["tau"])
    assert alerts == [(20, "no_progress")] == [(a.step, a.code) for a in watcher.alerts]
    assert columns["loss"][-1] == pytest.approx(watcher.latest["loss"], rel=1e-15)


def test_callable_sink_gets_values_and_alerts(tmp_path):
    received = []
    _degenerate_run(tmp_path, sinks=[lambda step, values, alerts: received.append((step, dict(values), alerts))])
    assert len(received) == 20
    fired = [(step, [a.code for a in alerts]) for step, _, alerts in received if alerts]
    assert fired == [(20, ["no_progress"])]
    assert received[-1][1]["tau"] == 0.0


def test_plot_stats_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "stats.csv"
    _degenerate_run(tmp_path, csv=str(path))
    out = tmp_path / "figure.png"
    assert main(["plot-stats", str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot-stats", str(path)]) == 0  # default: next to the CSV
    assert (tmp_path / "stats.png").exists()


def test_plot_stats_refuses_a_missing_or_foreign_file(tmp_path, capsys):
    assert main(["plot-stats", str(tmp_path / "missing.csv")]) == 2
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    assert main(["plot-stats", str(foreign)]) == 2
    assert "no 'step' column" in capsys.readouterr().err


def test_tensorboard_sink_writes_scalars_and_alert_text(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _degenerate_run(tmp_path, tensorboard=str(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    taus = events.Scalars("tunefree/tau")
    assert [e.step for e in taus] == list(range(2, 41, 2)) and all(e.value == 0.0 for e in taus)
    assert all(math.isfinite(e.value) for e in events.Scalars("tunefree/loss"))
    assert "tunefree/alerts/text_summary" in events.Tags()["tensors"]
