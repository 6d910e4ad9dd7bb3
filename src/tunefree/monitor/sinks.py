"""Where a watcher's samples go: the ``logging`` module, a CSV file, TensorBoard, or any callable.

A sink is any callable ``sink(step, values, alerts)``: ``values`` maps names (``tau``, ``tau_cap``,
``tau/group1``, ``loss``, ...) to floats, ``alerts`` lists the :class:`~tunefree.AdaptationWarning` raised at
this step (usually none). A sink with a ``close()`` method is closed by ``Watcher.close()``.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import IO, Any, Optional, Sequence

from tunefree.monitor.alerts import AdaptationWarning

__all__ = ["ALERTS_COLUMN", "CSVSink", "LoggingSink", "TensorBoardSink"]

#: the CSV column listing the alert codes raised at a step (``code`` or ``code@group``, ``;``-separated)
ALERTS_COLUMN = "alerts"


def alert_label(alert: AdaptationWarning) -> str:
    """``code`` for a whole-optimizer or single-group alert, ``code@k`` for param group ``k >= 1``."""
    return alert.code if not alert.group else f"{alert.code}@{alert.group}"


class LoggingSink:
    """INFO records of the ``tunefree`` logger, one per sample: ``step 100: tau=0.0123 loss=0.45 ...``.
    (Alerts are WARNING records of the same logger whatever the sinks.)"""

    def __init__(self, logger: Optional[logging.Logger] = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("tunefree")
        self.level = level

    def __call__(self, step: int, values: dict[str, float], alerts: Sequence[AdaptationWarning]) -> None:
        if self.logger.isEnabledFor(self.level):
            text = " ".join(f"{name}={value:.6g}" for name, value in values.items())
            self.logger.log(self.level, "step %d: %s", step, text)


class CSVSink:
    """One row per sample: ``step``, the values, and ``alerts``. The columns are those of the first
    sample (an optimizer's stats keep their keys); a value missing later is left empty. Each row is
    flushed, so a crashed run keeps everything written up to its last sample."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: Optional[IO[str]] = None
        self._writer: Any = None
        self._columns: list[str] = []

    def __call__(self, step: int, values: dict[str, float], alerts: Sequence[AdaptationWarning]) -> None:
        if self._file is None:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
            self._columns = ["step", *values, ALERTS_COLUMN]
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns, extrasaction="ignore")
            self._writer.writeheader()
        row: dict[str, Any] = {"step": step, **{k: repr(v) for k, v in values.items()}}
        row[ALERTS_COLUMN] = ";".join(alert_label(a) for a in alerts)
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardSink:
    """Scalars ``tunefree/<name>`` and the alerts as text ``tunefree/alerts``, through
    ``torch.utils.tensorboard.SummaryWriter`` (``pip install "tunefree[monitor]"``).

    Args:
        target: a log directory (a writer is created, and closed by ``close()``) or an existing
            ``SummaryWriter`` (flushed, left open).
        prefix: tag prefix (default ``"tunefree/"``).
    """

    def __init__(self, target: Any, prefix: str = "tunefree/") -> None:
        if isinstance(target, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:  # tensorboard is an optional dependency
                raise ImportError(
                    "watch(tensorboard=...) needs the tensorboard package: pip install 'tunefree[monitor]'"
                ) from error
            self.writer, self._owned = SummaryWriter(log_dir=os.fspath(target)), True
        else:
            self.writer, self._owned = target, False
        self.prefix = prefix

    def __call__(self, step: int, values: dict[str, float], alerts: Sequence[AdaptationWarning]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(self.prefix + name, value, step)
        for alert in alerts:
            self.writer.add_text(self.prefix + "alerts", f"**{alert_label(alert)}**: {alert.message}", step)

    def close(self) -> None:
        self.writer.flush()
        if self._owned:
            self.writer.close()
