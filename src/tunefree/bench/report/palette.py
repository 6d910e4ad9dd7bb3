"""One fixed look per optimizer, in every figure of every report.

:func:`style` is the only source of colours, markers and line styles in the report's figures: an
optimizer keeps its colour from one figure to the next and from one report to the next, whatever else
ran beside it. The table covers tunefree's methods, the baselines and the peers; a label with a
learning-rate schedule (``momo+cosine``) keeps its optimizer's colour and marker with a dotted line and a
hollow marker; any other name (an optimizer of your own, a label with extra options) gets one of the
extra colours, picked by a hash of the name, so it too is the same in every report.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Style", "style", "KNOWN", "ALERT_COLOR"]

#: watcher alerts in the stats figures: black dotted lines, apart from every optimizer's colour
ALERT_COLOR = "#000000"


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str
    hollow: bool = False  # draw the marker unfilled (a scheduled variant of the same optimizer)


# Baselines are dashed and dark; tunefree's methods solid and saturated; peers dash-dotted. Colours are
# chosen so that neighbours in the common comparisons (adam/adamw, agd/momo/rsgdm) differ in hue as
# well as in marker.
KNOWN: dict[str, Style] = {
    "sgd": Style("#222222", "s", "--"),
    "adam": Style("#7f7f7f", "D", "--"),
    "adamw": Style("#8c564b", "v", "--"),
    "momo": Style("#1f77b4", "o", "-"),
    "momo_adam": Style("#17becf", "^", "-"),
    "smes": Style("#9467bd", "P", "-"),
    "agd": Style("#2ca02c", "X", "-"),
    "rsgdm": Style("#bcbd22", "<", "-"),
    "gala": Style("#d62728", ">", "-"),
    "gala_adam": Style("#ff7f0e", "h", "-"),
    "prodigy": Style("#e377c2", "*", "-."),
    "dadapt_adam": Style("#393b79", "p", "-."),
    "schedulefree_adamw": Style("#637939", "d", "-."),
    "momo_opt": Style("#843c39", "8", "-."),
}

#: colours and markers for names not in KNOWN, distinct from the table's
_EXTRA_COLORS = ("#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b", "#e7ba52",
                 "#d6616b", "#ce6dbd", "#3182bd", "#e6550d", "#31a354", "#756bb1")
_EXTRA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style(label: str) -> Style:
    """The look of one report label: ``optimizer``, ``optimizer+schedule`` or either followed by its extra
    options (``"momo {...}"``). Deterministic: the same label gets the same style in every figure."""
    base, _, options = label.partition(" ")
    name, plus, _schedule = base.partition("+")
    if not options and name in KNOWN:
        known = KNOWN[name]
        return Style(known.color, known.marker, ":", hollow=True) if plus else known
    h = zlib.crc32(label.encode())
    return Style(_EXTRA_COLORS[h % len(_EXTRA_COLORS)], _EXTRA_MARKERS[(h // 7) % len(_EXTRA_MARKERS)],
                 ":" if plus else "-", hollow=bool(plus))
