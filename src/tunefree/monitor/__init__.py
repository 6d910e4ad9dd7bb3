"""Watching an optimizer's adaptation: :func:`watch`, its alerts and its sinks.

* :mod:`~tunefree.monitor.watcher` -- :func:`watch` / :class:`Watcher`: step hooks, sampling, summaries;
* :mod:`~tunefree.monitor.alerts` -- the alert codes, :class:`Thresholds`, :class:`AdaptationWarning`;
* :mod:`~tunefree.monitor.sinks` -- logging, CSV and TensorBoard sinks;
* :mod:`~tunefree.monitor.plot` -- the figure of a watcher's CSV (``tunefree plot-stats``).
"""

from tunefree.monitor.alerts import CODES, AdaptationWarning, Alert, Thresholds
from tunefree.monitor.sinks import CSVSink, LoggingSink, TensorBoardSink
from tunefree.monitor.watcher import Sink, Watcher, watch

__all__ = [
    "AdaptationWarning",
    "Alert",
    "CODES",
    "CSVSink",
    "LoggingSink",
    "Sink",
    "TensorBoardSink",
    "Thresholds",
    "Watcher",
    "watch",
]
