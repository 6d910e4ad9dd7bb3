"""Report figures (matplotlib, drawn headless): lr sensitivity, learning curves, adaptive statistics and
the performance profile, from the scoring's summaries; :func:`save_png` writes one and returns its bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from tunefree.bench.report.options import OptionSweep
from tunefree.bench.report.scoring import (
    PROFILE_TAU_MAX,
    TARGET,
    OptimizerSummary,
    TaskSummary,
    profile_columns,
    row_label,
    trials_profile,
)

_SCORE_FLOOR = -0.5  # scores below this (and -inf) are drawn at the floor so the good region stays legible


def figure_lr_sensitivity(ts: TaskSummary) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for opt in ts.optimizers:
        x = np.asarray(opt.exps)
        y = np.asarray(opt.mean_scores, dtype=float)
        err = np.asarray(opt.std_scores)
        shown = np.where(np.isfinite(y), np.maximum(y, _SCORE_FLOOR), _SCORE_FLOOR)
        # tunefree's methods stand out where lines overlap
        # baselines dashed; square markers for a scheduled setting (label optimizer+cosine)
        line, = ax.plot(x, shown, marker="o" if opt.schedule == "constant" else "s", ms=4, label=opt.label,
                        lw=1.5, ls="--" if opt.baseline else "-")
        ok = np.isfinite(y) & (y > _SCORE_FLOOR)
        ax.errorbar(x[ok], y[ok], yerr=err[ok], fmt="none", ecolor=line.get_color(), alpha=0.5)
        bad = ~np.isfinite(y) | (y <= _SCORE_FLOOR)
        ax.plot(x[bad], shown[bad], "x", color=line.get_color(), ms=8)
    ax.axhline(TARGET, color="k", ls=":", lw=1)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_ylim(_SCORE_FLOOR - 0.05, 1.25)
    ax.set_xlabel("log10(lr / documented default)")
    ax.set_ylabel("normalised score s (1 = best tuned baseline)")
    ax.set_title(f"{ts.task} [{ts.suite}]: learning-rate sensitivity (x = diverged or s <= {_SCORE_FLOOR})")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _pick_rows(ts: TaskSummary, opt: OptimizerSummary, exp: float | None) -> list[dict[str, Any]]:
    if exp is None:
        return []
    return sorted((r for r in ts.rows if row_label(r) == opt.label and round(r["lr_exp"], 6) == exp),
                  key=lambda r: r["seed"])


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


def figure_learning_curves(ts: TaskSummary) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    positive = True
    for ax, which in zip(axes, ("best", "default")):
        for i, opt in enumerate(ts.optimizers):
            exp = opt.best_exp if which == "best" else 0.0
            rows = _pick_rows(ts, opt, exp)
            if not rows:
                continue
            steps, mean, low, high, short = seed_curve(rows)
            if not steps.size:
                continue
            finite = np.concatenate([low, high])
            positive &= bool(np.all(finite[np.isfinite(finite)] > 0))
            color = f"C{i % 10}"
            seeds = f"{len(rows)} seeds" if len(rows) > 1 else "1 seed"
            cut = f", {short} stopped early" if short else ""
            ax.plot(steps, mean, lw=1.2, color=color, label=f"{opt.label} (lr {rows[0]['lr']:.3g}, {seeds}{cut})")
            if len(rows) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        ax.set_title(f"{ts.task}: train loss at {which} lr (seed mean, band = min-max)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mini-batch loss")
    if positive:
        axes[0].set_yscale("log")
    fig.tight_layout()
    return fig


def figure_stats(ts: TaskSummary) -> Any | None:
    import matplotlib.pyplot as plt

    traces = []
    for opt in ts.optimizers:
        rows = _pick_rows(ts, opt, 0.0)
        if rows and rows[0]["stats"]:
            for key, (steps, values) in sorted(rows[0]["stats"].items()):
                traces.append((opt.label, key, steps, values, rows[0]["lr"]))
    if not traces:
        return None
    fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3.4), squeeze=False)
    for ax, (label, key, steps, values, lr) in zip(axes[0], traces):
        ax.plot(steps, values, lw=1.2)
        ax.set_title(f"{label}: {key} (lr {lr:.3g})", fontsize=9)
        ax.set_xlabel("step")
        vals = np.asarray(values, dtype=float)
        if np.all(vals[np.isfinite(vals)] > 0) and np.nanmax(vals) / max(np.nanmin(vals), 1e-300) > 100:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ts.task}: adaptive quantities at the default lr (first seed)", fontsize=10)
    fig.tight_layout()
    return fig



def figure_profile(tasks: list[TaskSummary]) -> Any:
    import matplotlib.pyplot as plt

    labels, ratios = trials_profile(tasks)
    finite = ratios[np.isfinite(ratios) & (ratios <= PROFILE_TAU_MAX)]
    taus = np.unique(np.concatenate([[1.0, PROFILE_TAU_MAX], finite]))
    area, rho = profile_columns(ratios, taus)
    assert rho is not None
    baseline = {o.label: o.baseline for ts in tasks for o in ts.optimizers}
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for j in np.argsort(-area, kind="stable"):  # legend ordered by area
        ax.step(taus, rho[j], where="post", lw=1.5, ls="--" if baseline[labels[j]] else "-",
                label=f"{labels[j]} (area {area[j]:.2f})", color=f"C{j % 10}")
    ax.set_xlim(1.0 - 0.02 * (PROFILE_TAU_MAX - 1.0), PROFILE_TAU_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (expected trials to target / best optimizer's on the task)")
    ax.set_ylabel("fraction of tasks within tau")
    ax.set_title(f"performance profile of expected random-search trials to s >= {TARGET} ({len(tasks)} tasks)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_png(fig: Any, path: Path) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = buffer.getvalue()
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

