"""What counts as degenerate adaptation: the alert codes, their thresholds and the rules that test them.

Each rule looks at the samples a :class:`~tunefree.monitor.watcher.Watcher` read over a window of recent
steps and answers "is the condition on now, and what should the user be told?". The watcher turns the
answers into alerts, one per episode (see :class:`EpisodeTracker`).

The rules are keyed on the stats an optimizer publishes, not on its class, so any optimizer that
publishes MoMo's ``tau``/``tau_cap``, AGD's ``frac_sgd_like`` or GALA's ``lr`` is checked the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Optional, Sequence

from tunefree.optim.validation import check_range

__all__ = ["AdaptationWarning", "Alert", "CODES", "EpisodeTracker", "Sample", "Thresholds", "evaluate_rules"]

#: every alert code, in the order the rules run
CODES = ("no_progress", "cap_bound", "switch_saturated", "lr_collapsed", "diverging", "skipped_steps")

# tau counts as "at the cap" within this relative distance (tau = min(cap, polyak) equals it exactly there;
# the slack absorbs a cap recomputed in another precision)
_AT_CAP_RTOL = 1e-6


class AdaptationWarning(UserWarning):
    """The optimizer's adaptation degenerated; ``code`` says how, ``step`` when (the watcher's step
    count, 1-based), ``group`` in which param group (None: the whole optimizer), and the message says
    what happened and what to do."""

    def __init__(self, code: str, step: int, message: str, group: Optional[int] = None) -> None:
        super().__init__(f"[{code}] step {step}: {message}")
        self.code = code
        self.step = step
        self.group = group
        self.message = message


class Alert(NamedTuple):
    """One alert as the watcher records it (``watcher.alerts``): plain values, ready for a ledger."""

    step: int
    code: str
    message: str


@dataclass(frozen=True)
class Thresholds:
    """When each alert fires. Windows are counted in optimizer steps; the rules see the samples read in
    them (one every ``every`` steps), so a window should span several samples.

    Attributes:
        no_progress_steps: ``no_progress`` when MoMo's ``tau`` is 0 on every sample of this many steps.
        cap_window, cap_fraction, cap_clear_fraction: ``cap_bound`` when ``tau`` equals its cap on at
            least ``cap_fraction`` of the samples of the last ``cap_window`` steps; the episode ends only
            when that share falls below ``cap_clear_fraction`` (hysteresis: a share that wanders around
            ``cap_fraction`` is one episode, not many).
        switch_window, switch_fraction: ``switch_saturated`` when AGD's ``frac_sgd_like`` averages at least
            ``switch_fraction`` over the last ``switch_window`` steps (a fraction near 0 never alerts).
        collapse_decades, collapse_steps: ``lr_collapsed`` when GALA's ``lr`` stays at its floor
            ``lr_min`` or ``collapse_decades`` decades below its first value on every sample of the last
            ``collapse_steps`` steps.
        early_steps, diverge_factor, diverge_steps: ``diverging`` when the loss is NaN/Inf, or when it
            exceeds ``diverge_factor`` times its early level (the mean of the samples of the first
            ``early_steps`` steps) on every sample of the last ``diverge_steps`` steps.
        skip_window, skip_count: ``skipped_steps`` when at least ``skip_count`` steps of the last
            ``skip_window`` were skipped by ``nonfinite="skip"``.
        rearm_steps: an alert fires again only after its condition was clear for this many steps plus
            the rule's window (one good sample clears a condition for a whole window: without the extra
            window an alert would re-fire on every isolated good step).
    """

    no_progress_steps: int = 50
    cap_window: int = 200
    cap_fraction: float = 0.95
    cap_clear_fraction: float = 0.5
    switch_window: int = 100
    switch_fraction: float = 0.99
    collapse_decades: float = 3.0
    collapse_steps: int = 50
    early_steps: int = 20
    diverge_factor: float = 10.0
    diverge_steps: int = 10
    skip_window: int = 100
    skip_count: int = 1
    rearm_steps: int = 50

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"Thresholds: {spec.name} must be an integer >= 1, got {value!r}")
        for name in ("cap_fraction", "switch_fraction"):
            check_range("Thresholds", name, getattr(self, name), 0.0, 1.0, low_inclusive=False)
        check_range("Thresholds", "cap_clear_fraction", self.cap_clear_fraction, 0.0, self.cap_fraction)
        check_range("Thresholds", "collapse_decades", self.collapse_decades, 0.0, low_inclusive=False)
        check_range("Thresholds", "diverge_factor", self.diverge_factor, 1.0, low_inclusive=False)

    def window_of(self, code: str) -> int:
        """The number of steps the rule of ``code`` looks back over."""
        return {
            "no_progress": self.no_progress_steps, "cap_bound": self.cap_window,
            "switch_saturated": self.switch_window, "lr_collapsed": self.collapse_steps,
            "diverging": self.diverge_steps, "skipped_steps": self.skip_window,
        }[code]

    @property
    def longest_window(self) -> int:
        """The longest window any rule looks back over (steps): what the watcher must keep."""
        return max(self.no_progress_steps, self.cap_window, self.switch_window, self.collapse_steps,
                   self.diverge_steps, self.skip_window)


@dataclass
class Sample:
    """What the watcher read at one step: the loss (None if it saw none; a skipped step's loss is
    dropped), the steps skipped since the previous sample, and each param group's stats."""

    step: int
    loss: Optional[float]
    new_skips: int
    groups: Sequence[dict[str, float]]


@dataclass
class Context:
    """What the rules need besides the samples: the optimizer's groups and the watcher's long-run facts."""

    step: int
    samples: Sequence[Sample]
    thresholds: Thresholds
    param_groups: Sequence[dict[str, Any]]
    early_loss: Optional[float]
    initial_lr: dict[int, float]

    def window(self, steps: int) -> list[Sample]:
        """The samples of the last ``steps`` steps (empty until the watcher has seen that many)."""
        if self.step < steps:
            return []
        return [s for s in self.samples if s.step > self.step - steps]

    def group_value(self, group: int, key: str) -> Any:
        return self.param_groups[group].get(key) if group < len(self.param_groups) else None


#: a rule's verdict for every condition that is on now: (code, group or None, message, firing); firing False
#: means "not on, but not clear either" (between a rule's two thresholds): an episode under way goes on
Finding = tuple[str, Optional[int], str, bool]


def _group_indices(samples: Sequence[Sample], key: str) -> list[int]:
    last = samples[-1].groups if samples else ()
    return [k for k, values in enumerate(last) if key in values]


def _where(group: int, n_groups: int) -> str:
    return f" (param group {group})" if n_groups > 1 else ""


def _no_progress(ctx: Context) -> list[Finding]:
    window = ctx.window(ctx.thresholds.no_progress_steps)
    found = []
    for k in _group_indices(window, "tau"):
        if window and all(s.groups[k].get("tau") == 0.0 for s in window if k < len(s.groups)):
            bound = ctx.group_value(k, "lower_bound")
            found.append(("no_progress", k, (
                f"the step size tau was 0 on every step read over the last {ctx.thresholds.no_progress_steps} "
                f"steps{_where(k, len(window[-1].groups))}: the loss model never rises above lower_bound="
                f"{bound!r}, so the parameters do not move. Set lower_bound to a value the loss can reach "
                f"(0 for most losses) or pass estimate_lower_bound=True."
            ), True))
    return found


def _cap_bound(ctx: Context) -> list[Finding]:
    window = ctx.window(ctx.thresholds.cap_window)
    found = []
    for k in _group_indices(window, "tau_cap"):
        values = [s.groups[k] for s in window if k < len(s.groups)]
        at_cap = [v["tau"] >= v["tau_cap"] * (1.0 - _AT_CAP_RTOL) for v in values]
        share = sum(at_cap) / len(at_cap)
        if share >= ctx.thresholds.cap_clear_fraction:
            lr = ctx.group_value(k, "lr")
            found.append(("cap_bound", k, (
                f"the step size tau sat at its cap (lr={lr!r}) on {share:.0%} of the steps read over the last "
                f"{ctx.thresholds.cap_window} steps{_where(k, len(window[-1].groups))}: MoMo is acting as plain "
                f"SGD-momentum (MoMo-Adam: Adam) with the fixed learning rate lr, not adapting. Either lr is "
                f"too small (raise it, e.g. 10x, so the adaptive step can act) or lower_bound is far below the "
                f"lowest loss this model reaches (set it closer, or pass estimate_lower_bound=True)."
            ), share >= ctx.thresholds.cap_fraction))
    return found


def _switch_saturated(ctx: Context) -> list[Finding]:
    window = ctx.window(ctx.thresholds.switch_window)
    found = []
    for k in _group_indices(window, "frac_sgd_like"):
        values = [s.groups[k]["frac_sgd_like"] for s in window if k < len(s.groups)]
        mean = sum(values) / len(values)
        if mean >= ctx.thresholds.switch_fraction:
            delta, lr = ctx.group_value(k, "delta"), ctx.group_value(k, "lr")
            found.append(("switch_saturated", k, (
                f"on average {mean:.1%} of the coordinates took AGD's SGD-like step over the last "
                f"{ctx.thresholds.switch_window} steps{_where(k, len(window[-1].groups))}: delta={delta!r} is "
                f"above the size of the gradient differences, so AGD is SGD-momentum with learning rate "
                f"lr/delta={_ratio(lr, delta)}. Lower delta (the default is 1e-5; 1e-8 or smaller for "
                f"Transformers) or lower lr with it."
            ), True))
    return found


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{float(a) / float(b):g}"
    except (TypeError, ValueError, ZeroDivisionError):
        return "?"


def _lr_collapsed(ctx: Context) -> list[Finding]:
    t = ctx.thresholds
    window = ctx.window(t.collapse_steps)
    found = []
    for k in _group_indices(window, "lr"):
        start = ctx.initial_lr.get(k)
        if start is None or not start > 0:
            continue
        values = [s.groups[k]["lr"] for s in window if k < len(s.groups)]
        lr_min = ctx.group_value(k, "lr_min") or 0.0
        floor = max(float(lr_min) * (1.0 + 1e-9), start * 10.0 ** (-t.collapse_decades))
        if all(v <= floor for v in values):
            last = values[-1]
            below = "its floor lr_min" if last <= float(lr_min) * (1.0 + 1e-9) else (
                f"{math.log10(start / last):.1f} decades below its start" if last > 0 else "0")
            found.append(("lr_collapsed", k, (
                f"GALA's learning rate fell to {last:g} ({below}; it started at {start:g}) and stayed there "
                f"for the last {t.collapse_steps} steps{_where(k, len(window[-1].groups))}: the gradient "
                f"alignment turned negative (the steps overshoot) and training has stalled. Restart with a "
                f"smaller initial lr, or keep the rate near it with delta > 0, or set lr_min as a floor."
            ), True))
    return found


def _diverging(ctx: Context) -> list[Finding]:
    t = ctx.thresholds
    latest = ctx.samples[-1] if ctx.samples else None
    if latest is not None and latest.step == ctx.step and latest.loss is not None and not math.isfinite(latest.loss):
        return [("diverging", None, (
            f"the loss is {latest.loss}: training has diverged. Lower lr (for MoMo/MoMo-Adam the cap, for "
            f"GALA lr_max), add gradient clipping, and check the data and the loss for NaN/Inf."
        ), True)]
    early = ctx.early_loss
    if early is None or early == 0.0 or ctx.step <= t.early_steps:
        return []
    window = [s for s in ctx.window(t.diverge_steps) if s.loss is not None]
    limit = early + (t.diverge_factor - 1.0) * abs(early)
    if window and all(s.loss > limit for s in window):
        return [("diverging", None, (
            f"the loss {window[-1].loss:g} stayed above {t.diverge_factor:g}x its early level {early:g} (the "
            f"mean of the first {t.early_steps} steps) over the last {t.diverge_steps} steps: training is "
            f"diverging. Lower lr (for MoMo/MoMo-Adam the cap, for GALA lr_max) or add gradient clipping."
        ), True)]
    return []


def _skipped_steps(ctx: Context) -> list[Finding]:
    t = ctx.thresholds
    window = [s for s in ctx.samples if s.step > ctx.step - t.skip_window]
    skipped = sum(s.new_skips for s in window)
    if skipped >= t.skip_count:
        return [("skipped_steps", None, (
            f"{skipped} of the last {min(t.skip_window, ctx.step)} steps were skipped because the loss or a "
            f"gradient was NaN/Inf (nonfinite='skip'); the parameters did not move on those steps. Find the "
            f"source: lower lr, add gradient clipping, or check the data (fp16: use a GradScaler)."
        ), True)]
    return []


_RULES = (_no_progress, _cap_bound, _switch_saturated, _lr_collapsed, _diverging, _skipped_steps)


def evaluate_rules(ctx: Context, disabled: Sequence[str] = ()) -> list[Finding]:
    """Every condition that is on at ``ctx.step``, in :data:`CODES` order."""
    found: list[Finding] = []
    for rule, code in zip(_RULES, CODES):
        if code not in disabled:
            found += rule(ctx)
    return found


class EpisodeTracker:
    """Once per episode: a condition fires when it comes on, and can fire again only after it was clear
    for ``rearm_steps[code]`` steps. Holds one entry per (code, group) ever seen: bounded by the codes and
    the param groups, not by the steps."""

    def __init__(self, rearm_steps: dict[str, int]) -> None:
        self.rearm_steps = rearm_steps
        self._active: dict[tuple[str, Optional[int]], Optional[int]] = {}  # key -> step it cleared, None: on

    def update(self, step: int, findings: Sequence[Finding]) -> list[tuple[str, Optional[int], str]]:
        """``(code, group, message)`` of the findings that start a new episode at ``step``."""
        new = [(code, group, message) for code, group, message, firing in findings
               if firing and (code, group) not in self._active]
        on = {(code, group) for code, group, _, firing in findings if firing or (code, group) in self._active}
        for key in on:
            self._active[key] = None
        for key, cleared in list(self._active.items()):
            if key in on:
                continue
            if cleared is None:
                self._active[key] = step
            elif step - cleared >= self.rearm_steps[key[0]]:
                del self._active[key]
        return new
