"""Sensitivity to options other than lr: which scored settings of one optimizer form a sweep of one of
its options (``tunefree bench --vary OPT.KEY=...``), found from the summaries alone.

Two settings of an optimizer (under one schedule) belong to the sweep of option ``key`` when they are
equal except for ``key``; the setting without ``key`` is the default one and shows as ``"default"``.
So the report finds a sweep whatever sweep (or sweeps) stored the runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunefree.bench.records import canonical_kwargs, decode_kwargs
from tunefree.bench.report.scoring import OptimizerSummary, TaskSummary

__all__ = ["DEFAULT_VALUE", "OptionSweep", "option_sweeps"]

#: the value shown for the setting that leaves the option at the optimizer's own default
DEFAULT_VALUE = "default"


@dataclass
class OptionSweep:
    """One varied option of one optimizer: its values (``DEFAULT_VALUE`` first, then sorted when they
    are all numbers, else in the order met) and, per task, the summary of each value's setting."""

    optimizer: str
    key: str
    schedule: str
    #: canonical JSON of the options every setting of the sweep shares
    base: str
    values: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, OptimizerSummary]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        fixed = "" if self.base == "{}" else f" (with {self.base})"
        suffix = "" if self.schedule == "constant" else f", {self.schedule}"
        return f"{self.optimizer}.{self.key}{fixed}{suffix}"


def _value_text(value: object) -> str:
    return repr(value)


def option_sweeps(tasks: list[TaskSummary]) -> list[OptionSweep]:
    """Every option sweep in the scored settings, ordered by optimizer and option."""
    sweeps: dict[tuple[str, str, str, str], OptionSweep] = {}
    raw: dict[tuple[str, str, str, str], list[object]] = {}
    for ts in tasks:
        by_setting = {(o.optimizer, o.schedule, o.kwargs): o for o in ts.optimizers}
        for o in ts.optimizers:
            options = decode_kwargs(o.kwargs)
            for key, value in options.items():
                base = canonical_kwargs({k: v for k, v in options.items() if k != key})
                ident = (o.optimizer, o.schedule, key, base)
                sweep = sweeps.setdefault(ident, OptionSweep(o.optimizer, key, o.schedule, base))
                raw.setdefault(ident, [])
                cells = sweep.cells.setdefault(f"{ts.task} [{ts.suite}]", {})
                cells[_value_text(value)] = o
                if value not in raw[ident]:
                    raw[ident].append(value)
                default = by_setting.get((o.optimizer, o.schedule, base))
                if default is not None:
                    cells[DEFAULT_VALUE] = default
    out = []
    for ident, sweep in sorted(sweeps.items()):
        values = raw[ident]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            values = sorted(values)  # type: ignore[type-var]
        has_default = any(DEFAULT_VALUE in cells for cells in sweep.cells.values())
        sweep.values = ([DEFAULT_VALUE] if has_default else []) + [_value_text(v) for v in values]
        if len(sweep.values) >= 2:  # one setting alone is a fixed option, not a sweep
            out.append(sweep)
    return out
