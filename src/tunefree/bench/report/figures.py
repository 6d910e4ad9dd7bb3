"""Report figures (matplotlib, drawn headless): lr sensitivity, learning curves, adaptive statistics and
the performance profile, from the scoring's summaries; :func:`save_png` writes one and returns its bytes.

Every optimizer's colour, marker and line style come from :func:`tunefree.bench.report.palette.style`
(never from matplotlib's colour cycle), so an optimizer looks the same in every figure of every report;
each drawn line carries its optimizer's label as its ``gid``. Sizes are chosen for a laptop screen: at
:data:`DPI` a figure is at most :data:`MAX_WIDTH_IN` inches (1200 px) wide and no text is under 9 pt.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from tunefree.bench.report.options import OptionSweep
from tunefree.bench.report.palette import ALERT_COLOR, style
from tunefree.bench.report.scoring import (
    PROFILE_TAU_MAX,
    TARGET,
    OptimizerSummary,
    TaskSummary,
    profile_columns,
    rows_at,
    trials_profile,
)

__all__ = ["DPI", "MAX_WIDTH_IN", "figure_lr_sensitivity", "figure_learning_curves", "figure_stats",
           "figure_profile", "seed_curve", "ema", "save_png"]

DPI = 120
MAX_WIDTH_IN = 10.0
_SCORE_FLOOR = -0.5  # scores below this (and -inf) are drawn at the floor so the good region stays legible
_TEXT = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 11}


def _plt() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _legend_right(fig: Any, ax: Any, handles: list[Any] | None = None) -> None:
    handles = handles if handles is not None else [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)


def _line_kw(label: str) -> dict[str, Any]:
    st = style(label)
    return {"color": st.color, "marker": st.marker, "ls": st.linestyle, "gid": label,
            "mfc": "white" if st.hollow else st.color, "mec": st.color}


def figure_lr_sensitivity(ts: TaskSummary) -> Any:
    plt = _plt()
    with plt.rc_context(_TEXT):
        fig, ax = plt.subplots(figsize=(8.2, 4.4))
        n = len(ts.optimizers)
        spacing = min((o.grid_spacing for o in ts.optimizers), default=1.0)
        for i, opt in enumerate(ts.optimizers):
            # a small horizontal offset per optimizer keeps markers on the same point apart
            dx = (i - (n - 1) / 2) * 0.08 * spacing / max(n - 1, 1)
            x = np.asarray(opt.exps) + dx
            y = np.asarray(opt.mean_scores, dtype=float)
            err = np.asarray(opt.std_scores)
            shown = np.where(np.isfinite(y), np.maximum(y, _SCORE_FLOOR), _SCORE_FLOOR)
            kw = _line_kw(opt.label)
            ax.plot(x, shown, ms=5, lw=1.4, alpha=0.85, label=opt.label, **kw)
            ok = np.isfinite(y) & (y > _SCORE_FLOOR)
            if opt.n_seeds > 1:
                ax.errorbar(x[ok], y[ok], yerr=err[ok], fmt="none", ecolor=kw["color"], alpha=0.45, gid=opt.label)
            bad = ~np.isfinite(y) | (y <= _SCORE_FLOOR)
            ax.plot(x[bad], shown[bad], "x", color=kw["color"], ms=9, mew=1.6, gid=opt.label)
        ax.axhline(TARGET, color="k", ls=":", lw=1)
        ax.axhline(1.0, color="grey", ls="--", lw=0.8)
        ax.set_ylim(_SCORE_FLOOR - 0.05, 1.25)
        ax.set_xlabel("log10(lr / documented default)")
        ax.set_ylabel("score s (1 = best tuned baseline)")
        ax.set_title(f"{ts.task} [{ts.suite}]: score vs learning rate\n"
                     f"(dotted line: target s = {TARGET}; x at the bottom: diverged or s <= {_SCORE_FLOOR})")
        ax.grid(alpha=0.3)
        _legend_right(fig, ax)
        fig.tight_layout()
    return fig


def _pick_rows(ts: TaskSummary, opt: OptimizerSummary, exp: float | None) -> list[dict[str, Any]]:
    return rows_at(ts, opt.label, exp)


def seed_curve(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Loss trace of several seeds: ``(steps, mean, min, max, seeds cut short)``.

    The statistics are taken on the steps every seed logged, so a seed that stopped early (diverged)
    ends the curve where it stopped instead of silently dropping out of the mean; the last value counts
    how many seeds logged fewer steps than the longest one.
    """
    traces = [(np.asarray(r["losses"][0], dtype=float), np.asarray(r["losses"][1], dtype=float))
              for r in rows if r["losses"] and len(r["losses"][0])]
    if not traces:
        empty = np.zeros(0)
        return empty, empty, empty, empty, 0
    common = traces[0][0]
    for steps, _ in traces[1:]:
        common = np.intersect1d(common, steps)
    if common.size == 0:  # traces logged at different steps: show the first seed alone
        traces = traces[:1]
        common = traces[0][0]
    stack = np.stack([losses[np.searchsorted(steps, common)] for steps, losses in traces])
    longest = max(steps.size for steps, _ in traces)
    short = sum(steps.size < longest for steps, _ in traces)
    return common, stack.mean(axis=0), stack.min(axis=0), stack.max(axis=0), short


def ema(values: np.ndarray, window_fraction: float = 0.05) -> np.ndarray:
    """Exponential moving average with bias correction (as in Adam), so the curve starts at the data.

    ``beta = 1 - 1 / w`` with ``w = max(1, window_fraction * len(values))`` points; non-finite values
    (a diverged run's last losses) are carried as they are and do not enter the average."""
    values = np.asarray(values, dtype=float)
    window = max(1.0, window_fraction * values.size)
    beta = 1.0 - 1.0 / window
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            out[i] = v
            continue
        acc = beta * acc + (1.0 - beta) * v
        weight = beta * weight + (1.0 - beta)
        out[i] = acc / weight
    return out


def figure_learning_curves(ts: TaskSummary) -> Any:
    plt = _plt()
    with plt.rc_context(_TEXT):
        fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.9), sharey=True)
        positive = True
        handles: dict[str, Any] = {}
        seed_counts: set[int] = set()
        for ax, which in zip(axes, ("best", "default")):
            for opt in ts.optimizers:
                rows = _pick_rows(ts, opt, opt.best_exp if which == "best" else 0.0)
                if not rows:
                    continue
                steps, mean, low, high, short = seed_curve(rows)
                if not steps.size:
                    continue
                finite = np.concatenate([low, high])
                positive &= bool(np.all(finite[np.isfinite(finite)] > 0))
                seed_counts.add(len(rows))
                st = style(opt.label)
                ax.plot(steps, mean, lw=0.6, color=st.color, alpha=0.18, gid=opt.label)  # raw, faint
                if len(rows) > 1:
                    ax.fill_between(steps, ema(low), ema(high), color=st.color, alpha=0.08, lw=0, gid=opt.label)
                cut = f" ({short} stopped early)" if short else ""
                line, = ax.plot(steps, ema(mean), lw=1.6, color=st.color, ls=st.linestyle, gid=opt.label,
                                label=f"{opt.label}{cut}")
                handles.setdefault(opt.label, line)
            ax.set_title(f"at the {'best' if which == 'best' else 'default'} lr")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=9)
        axes[0].set_ylabel("train loss (mini-batch)")
        if positive:
            axes[0].set_yscale("log")
        seeds = ("seed mean, band = min-max over seeds, " if max(seed_counts, default=1) > 1 else "")
        fig.suptitle(f"{ts.task}: learning curves ({seeds}smoothed; raw faint)")
        _legend_right(fig, axes[0], list(handles.values()))
        fig.tight_layout()
    return fig


def figure_stats(ts: TaskSummary) -> Any | None:
    plt = _plt()
    traces = []
    for opt in ts.optimizers:
        rows = _pick_rows(ts, opt, 0.0)
        if rows and rows[0]["stats"]:
            alerts = [(int(step), str(code)) for step, code, _ in rows[0].get("alerts") or []]
            for key, (steps, values) in sorted(rows[0]["stats"].items()):
                traces.append((opt.label, key, steps, values, rows[0]["lr"], alerts))
    if not traces:
        return None
    ncols = min(3, len(traces))
    nrows = math.ceil(len(traces) / ncols)
    with plt.rc_context(_TEXT):
        fig, axes = plt.subplots(nrows, ncols, figsize=(min(MAX_WIDTH_IN, 3.3 * ncols), 2.7 * nrows + 0.5),
                                 squeeze=False)
        for ax in axes.flat[len(traces):]:
            ax.set_visible(False)
        for ax, (label, key, steps, values, lr, alerts) in zip(axes.flat, traces):
            st = style(label)
            ax.plot(steps, values, lw=1.3, color=st.color, ls=st.linestyle, gid=label)
            # each alert of the run: a dotted line at the step it fired, its code at the top of the panel
            for step, code in alerts:
                ax.axvline(step, color=ALERT_COLOR, ls=":", lw=1.0, gid=f"alert {code}")
                ax.annotate(code, xy=(step, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                            textcoords="offset points", va="top", fontsize=9, color=ALERT_COLOR, rotation=90)
            shown = f", {len(alerts)} alert{'s' if len(alerts) != 1 else ''}" if alerts else ""
            ax.set_title(f"{label}: {key}\n(lr {lr:.3g}{shown})", fontsize=10)
            ax.set_xlabel("step")
            ax.tick_params(labelsize=9)
            vals = np.asarray(values, dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size and np.all(vals > 0) and vals.max() / max(vals.min(), 1e-300) > 100:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{ts.task}: adaptive quantities at the default lr (first seed; dotted: watcher alerts)")
        fig.tight_layout()
    return fig


def figure_profile(tasks: list[TaskSummary]) -> Any:
    plt = _plt()
    labels, ratios = trials_profile(tasks)
    finite = ratios[np.isfinite(ratios) & (ratios <= PROFILE_TAU_MAX)]
    taus = np.unique(np.concatenate([[1.0, PROFILE_TAU_MAX], finite]))
    area, rho = profile_columns(ratios, taus)
    assert rho is not None
    with plt.rc_context(_TEXT):
        fig, ax = plt.subplots(figsize=(7.6, 4.2))
        order = np.argsort(-area, kind="stable")  # legend ordered by area
        for rank, j in enumerate(order):
            st = style(labels[j])
            # equal profiles would hide each other: offset each a little and draw them translucent
            offset = (rank - (len(order) - 1) / 2) * 0.006
            ax.step(taus, rho[j] + offset, where="post", lw=1.6, ls=st.linestyle, color=st.color, alpha=0.85,
                    gid=labels[j], label=f"{labels[j]} (area {area[j]:.2f})")
        ax.set_xlim(1.0 - 0.02 * (PROFILE_TAU_MAX - 1.0), PROFILE_TAU_MAX)
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel("tau: expected trials / the best optimizer's on the task")
        ax.set_ylabel("fraction of tasks within tau")
        ax.set_title(f"Performance profile: expected random-search trials to s >= {TARGET} ({len(tasks)} tasks)")
        ax.grid(alpha=0.3)
        _legend_right(fig, ax)
        fig.tight_layout()
    return fig


def save_png(fig: Any, path: Path) -> bytes:
    """Write ``fig`` as a PNG at :data:`DPI` (extra legends included) and return its bytes.

    The image is reduced to a 256-colour palette (line plots on white need no more), which keeps the
    self-contained HTML small."""
    from PIL import Image

    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(colors=256)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    data = out.getvalue()
    path.write_bytes(data)
    return data


def figure_option_sensitivity(sweep: OptionSweep) -> Any:
    """Score over (lr exponent x option value) of one varied option, one heatmap panel per task.

    Scores are clipped to [floor, 1] for the colour (the cell text gives the value); a diverged point
    reads "div" on the floor colour, a point not measured stays blank."""
    import matplotlib.pyplot as plt

    panels = list(sweep.cells.items())
    exps = sorted({e for _, cells in panels for o in cells.values() for e in o.exps})
    width = max(7.0, 2.0 + (0.75 * len(exps) + 1.4) * len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 2.0 + 0.42 * len(sweep.values)), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (task, cells) in zip(axes[0], panels):
        grid = np.full((len(sweep.values), len(exps)), np.nan)
        for i, value in enumerate(sweep.values):
            o = cells.get(value)
            for k, score in zip(o.exps if o else [], o.mean_scores if o else []):
                grid[i, exps.index(k)] = score
        shown = np.where(np.isfinite(grid), np.clip(grid, _SCORE_FLOOR, 1.0), np.where(np.isnan(grid), np.nan,
                                                                                        _SCORE_FLOOR))
        image = ax.imshow(shown, cmap="viridis", vmin=_SCORE_FLOOR, vmax=1.0, aspect="auto")
        for (i, j), score in np.ndenumerate(grid):
            if not np.isnan(score):
                text = "div" if not np.isfinite(score) else f"{score:.2f}"
                dark = not np.isfinite(score) or score < 0.4
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_xticks(range(len(exps)), [f"{e:+g}" for e in exps], fontsize=8)
        ax.set_yticks(range(len(sweep.values)), sweep.values, fontsize=8)
        ax.set_xlabel("log10(lr / documented default)")
        ax.set_title(task, fontsize=9)
    axes[0][0].set_ylabel(sweep.key)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label=f"score s (clipped to [{_SCORE_FLOOR}, 1])")
    fig.suptitle(f"{sweep.title}: score s over lr and {sweep.key}", fontsize=10)
    return fig

