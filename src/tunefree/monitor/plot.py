"""The figure of a watcher's CSV file (``tunefree plot-stats FILE.csv``): one panel per adaptive quantity
against the step (MoMo's ``tau`` with its cap and uncapped value), the loss last, and every alert marked
as a vertical line in every panel.

Needs matplotlib (``pip install "tunefree[monitor]"``).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Optional

from tunefree.monitor.sinks import ALERTS_COLUMN

__all__ = ["plot_stats", "read_stats_csv"]

# Columns that are counters or bookkeeping rather than adaptive quantities: drawn only when they move.
_COUNTERS = ("step", "skipped_steps", "dropped_feedback")


def read_stats_csv(path: str) -> tuple[list[int], dict[str, list[float]], list[tuple[int, str]]]:
    """``(steps, {column: values}, [(step, alert label)])`` of a CSV written by ``watch(csv=...)``.
    Empty cells read as NaN."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"plot-stats: {path} is not a watcher CSV (no 'step' column)")
        names = [n for n in reader.fieldnames if n not in ("step", ALERTS_COLUMN)]
        steps: list[int] = []
        columns: dict[str, list[float]] = {n: [] for n in names}
        alerts: list[tuple[int, str]] = []
        for row in reader:
            step = int(row["step"])
            steps.append(step)
            for n in names:
                cell = row.get(n) or ""
                try:
                    columns[n].append(float(cell))
                except ValueError:
                    columns[n].append(math.nan)
            for label in filter(None, (row.get(ALERTS_COLUMN) or "").split(";")):
                alerts.append((step, label))
    return steps, columns, alerts


def _moves(values: list[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) != max(finite)


def _log_scale(values: list[float]) -> bool:
    """Positive values spanning more than two decades read better on a log axis."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def plot_stats(path: str, out: Optional[str] = None) -> str:
    """Draw the CSV at ``path`` into a PNG (default: next to it, ``.png`` instead of ``.csv``); returns
    the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, columns, alerts = read_stats_csv(path)
    if not steps:
        raise ValueError(f"plot-stats: {path} has no rows")
    # MoMo's step size is drawn with its cap and its uncapped value in one panel (where the cap binds is
    # the point); every other column gets its own panel, the loss last
    overlays = {n: [m for m in (f"{n}_cap", f"{n}_polyak") if m in columns] for n in columns}
    overlaid = {m for ms in overlays.values() for m in ms}
    names = [n for n in columns if n != "loss" and n not in overlaid and (n not in _COUNTERS or _moves(columns[n]))]
    if "loss" in columns:
        names.append("loss")
    out = out or os.path.splitext(path)[0] + ".png"
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.9 * len(names) + 0.6), sharex=True, squeeze=False)
    codes = sorted({label for _, label in alerts})
    colours = {code: plt.get_cmap("tab10")(i % 10) for i, code in enumerate(codes)}
    for ax, name in zip(axes[:, 0], names):
        values = columns[name]
        ax.plot(steps, values, lw=1.2, color="black", label=name)
        for other, style in zip(overlays[name], ("--", ":")):
            ax.plot(steps, columns[other], lw=1.0, color="grey", ls=style, label=other)
            values = values + columns[other]
        if overlays[name]:
            ax.legend(fontsize=7, loc="lower right")
        if _log_scale(values):
            ax.set_yscale("log")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(alpha=0.3)
        for step, label in alerts:
            ax.axvline(step, color=colours[label], lw=1.5, ls="--")
    axes[-1, 0].set_xlabel("step")
    if codes:
        handles = [plt.Line2D([], [], color=colours[c], ls="--", lw=1.5) for c in codes]
        # a figure legend: the first panel may have a legend of its own (tau, tau_cap, tau_polyak)
        fig.legend(handles, codes, title="alerts", fontsize=8, loc="upper right")
    fig.suptitle(os.path.basename(path), fontsize=10)
    fig.tight_layout()
    folder = os.path.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
