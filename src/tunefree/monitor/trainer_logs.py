"""What the trainer callbacks (Hugging Face, Lightning) share: watchers on the trainer's optimizers, and
their latest values and alert counts as one flat dict of metrics for the trainer's own logging.

Names: ``tunefree/<name>`` (``tunefree/tau``, ``tunefree/tau/group1``, ``tunefree/loss``, ...) and
``tunefree/alerts/<code>``, the number of alerts of that code so far (present once one fired). With several
optimizers the names of optimizer ``i >= 1`` end in ``/opt<i>``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from tunefree.monitor.alerts import AdaptationWarning
from tunefree.monitor.watcher import Watcher, watch

__all__ = ["PREFIX", "TrainerLogs"]

PREFIX = "tunefree/"


class TrainerLogs:
    """Watchers for a trainer's optimizers and the metrics they contribute to its logs.

    Args:
        every: read the stats every ``every`` steps (None: the trainer's logging interval, given to
            :meth:`attach`).
        watch_options: further keyword arguments of :func:`tunefree.watch`; ``sinks`` defaults to none
            (the trainer logs the values), alerts are still warned and logged.
    """

    def __init__(self, every: Optional[int], watch_options: dict[str, Any]) -> None:
        self.every = every
        self.watch_options = dict(watch_options)
        self.watch_options.setdefault("sinks", [])
        self.watchers: list[Watcher] = []
        self._latest: list[dict[str, float]] = []

    def attach(self, optimizers: Sequence[Any], default_every: int) -> None:
        """Watch each optimizer (a second call replaces the watchers, e.g. on a second ``fit``)."""
        self.close()
        self._latest = [{} for _ in optimizers]
        for index, optimizer in enumerate(optimizers):
            def keep(step: int, values: dict[str, float], alerts: list[AdaptationWarning], index: int = index) -> None:
                self._latest[index] = values

            options = dict(self.watch_options)
            options["sinks"] = [*options["sinks"], keep]
            self.watchers.append(watch(optimizer, every=self.every or max(1, int(default_every)), **options))

    def metrics(self) -> dict[str, float]:
        """The latest sample of every watcher and the alert counts so far, under the names above."""
        out: dict[str, float] = {}
        for index, (watcher, values) in enumerate(zip(self.watchers, self._latest)):
            suffix = f"/opt{index}" if index else ""
            for name, value in values.items():
                out[f"{PREFIX}{name}{suffix}"] = value
            for code, count in watcher.alert_counts.items():
                out[f"{PREFIX}alerts/{code}{suffix}"] = float(count)
        return out

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()
        self.watchers = []
