"""The report's document model and its two renderers.

A report is a list of blocks (:class:`Heading`, :class:`Paragraph`, :class:`KeyValues`, :class:`Bullets`,
:class:`Table`, :class:`Figure`, :class:`Code`, :class:`Details`); :func:`to_markdown` and :func:`to_html`
render the same list, so ``report.md`` and ``report.html`` cannot say different things. A paragraph is a
sequence of plain strings and inline :class:`Mono` / :class:`Link` / :class:`Strong` parts. Markdown links
figures by their file, HTML embeds them (base64), so the page is self-contained and works offline.

A :class:`Details` block is what a reader may want but need not see: HTML shows it as an expandable
``<details>`` element in place, Markdown moves it to an appendix at the end and leaves a pointer. A table
cell may be a :class:`Cell` with a sort key and a mark ("best" / "worst", drawn as ▲ / ▼). HTML tables are
sortable by clicking a column header (a few lines of inline script, no external resource); the script
records in the page whether it ran (``#report-script``: ``data-ok``, or ``data-error`` with the message)
and, when the page is opened with the fragment ``#selftest-T-C``, sorts column ``C`` of sortable table
``T`` (both from 0) and records the result and how many images decoded, so a headless browser can check
the page (``tests/bench/test_report_browser.py``).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Sequence, Union

__all__ = ["Mono", "Link", "Strong", "Heading", "Paragraph", "KeyValues", "Bullets", "Cell", "Table", "Figure",
           "Code", "Details", "Block", "MARKS", "slug", "markdown_table", "to_markdown", "to_html"]

#: how a cell's mark is drawn in both renderers
MARKS = {"best": "▲", "worst": "▼"}


@dataclass(frozen=True)
class Mono:
    """Inline code (a file or column name)."""

    text: str


@dataclass(frozen=True)
class Link:
    """Inline link to a file next to the report."""

    target: str
    label: str


@dataclass(frozen=True)
class Strong:
    """Inline emphasis (an optimizer's name in a verdict)."""

    text: str


Inline = Union[str, Mono, Link, Strong]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Inline, ...]
    bold: bool = False
    #: the report's answer (the verdict): set apart in HTML, a plain paragraph in Markdown
    lead: bool = False

    @classmethod
    def of(cls, *parts: Inline, bold: bool = False, lead: bool = False) -> Paragraph:
        return cls(tuple(parts), bold, lead)


@dataclass(frozen=True)
class KeyValues:
    """A list of ``key: value`` lines (the key in bold)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """A table cell with a numeric sort key (``None``: sorted by its text) and an optional mark."""

    text: str
    sort: float | None = None
    mark: str = ""  # "", "best" or "worst"

    def __post_init__(self) -> None:
        if self.mark and self.mark not in MARKS:
            raise ValueError(f"Cell.mark: {self.mark!r} is not a mark; use '' or one of {sorted(MARKS)}")


CellLike = Union[str, Cell]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[CellLike, ...], ...]
    #: one line under the table (what a column's "n/a" means, which marks are used), said once
    note: str = ""

    @classmethod
    def of(cls, header: Sequence[str], rows: Sequence[Sequence[CellLike]], note: str = "") -> Table:
        return cls(tuple(header), tuple(tuple(r) for r in rows), note)


@dataclass(frozen=True)
class Figure:
    """A PNG written next to the report: ``path`` relative to the report, ``data`` its bytes."""

    alt: str
    path: str
    data: bytes


@dataclass(frozen=True)
class Code:
    """Preformatted text (a traceback)."""

    text: str


@dataclass(frozen=True)
class Details:
    """Blocks behind a summary line: expandable in HTML, an appendix section in Markdown."""

    summary: str
    blocks: tuple[Block, ...]


Block = Union[Heading, Paragraph, KeyValues, Bullets, Table, Figure, Code, Details]


def slug(text: str) -> str:
    """A heading's anchor: lower case, runs of other characters as one ``-`` (GitHub-like)."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def _cell(cell: CellLike) -> Cell:
    return cell if isinstance(cell, Cell) else Cell(cell)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _md_inline(part: Inline) -> str:
    if isinstance(part, Mono):
        return f"`{part.text}`"
    if isinstance(part, Link):
        return f"[`{part.label}`]({part.target})"
    if isinstance(part, Strong):
        return f"**{part.text}**"
    return part


def _md_cell(cell: CellLike) -> str:
    c = _cell(cell)
    text = c.text.replace("|", "\\|")
    if c.mark == "best":
        return f"**{text}** {MARKS['best']}"
    return f"{text} {MARKS[c.mark]}" if c.mark else text


def markdown_table(table: Table) -> str:
    """The table as Markdown (a header row, a ``---`` row, one row per line; the note in italics below)."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)


def _md_block(block: Block, appendix: list[Details]) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        text = "".join(_md_inline(p) for p in block.parts)
        return f"**{text}**" if block.bold else text
    if isinstance(block, KeyValues):
        return "\n".join(f"- **{k}**: {v}" for k, v in block.items)
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return markdown_table(block)
    if isinstance(block, Figure):
        return f"![{block.alt}]({block.path})"
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    if isinstance(block, Details):
        appendix.append(block)
        return f"*More: [{block.summary}](#{slug(block.summary)}) in the appendix.*"
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, separated by blank lines; :class:`Details` blocks go to an appendix at the
    end, in order (a Details block inside one goes there too)."""
    appendix: list[Details] = []
    out = [_md_block(b, appendix) for b in blocks]
    if appendix:
        out.append("## Appendix")
        done = 0
        while done < len(appendix):  # rendering an appendix entry may append nested ones
            details = appendix[done]
            done += 1
            out.append(f"### {details.summary}")
            out += [_md_block(b, appendix) for b in details.blocks]
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1240px;margin:auto;padding:0.4em 1em;line-height:1.4}"
    "h1{font-size:1.5em;margin:0.3em 0}h2{margin-top:1.4em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;font-size:13px;margin:0.4em 0}"
    "td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "table.sortable th{cursor:pointer}table.sortable th:after{content:' \\2195';color:#aaa}"
    "table.sortable th[data-dir=asc]:after{content:' \\2191';color:#333}"
    "table.sortable th[data-dir=desc]:after{content:' \\2193';color:#333}"
    "td.best{background:#e3f4e1;font-weight:bold}td.worst{background:#fbe4e4}"
    ".note{font-size:12px;color:#555;margin:0 0 0.8em}"
    "details{margin:0.5em 0 1em;padding:0.2em 0.6em;border:1px solid #ddd;border-radius:4px}"
    "summary{cursor:pointer;color:#235;font-weight:600}img{max-width:100%}"
    "p.lead{font-size:15px;background:#f6f8fa;border-left:4px solid #1f77b4;padding:0.5em 0.8em}"
)

# Sortable tables and a self-check; plain DOM calls only, so the page needs nothing from the network.
_SCRIPT = r"""
(function () {
  var status = document.getElementById('report-script');
  window.addEventListener('error', function (e) { status.setAttribute('data-error', String(e.message)); });
  function key(td) {
    var v = td.getAttribute('data-sort');
    if (v === null) { v = td.textContent.trim().replace(/^x/, ''); }
    if (v === 'inf') { return Infinity; }
    if (v === '-inf') { return -Infinity; }
    var f = parseFloat(v);
    return isNaN(f) ? null : f;
  }
  function sortBy(table, col) {
    var head = table.tHead.rows[0].cells, body = table.tBodies[0];
    var dir = head[col].getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
    for (var i = 0; i < head.length; i++) { head[i].removeAttribute('data-dir'); }
    head[col].setAttribute('data-dir', dir);
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { return key(r.cells[col]) !== null; });
    var sign = dir === 'asc' ? 1 : -1;
    rows.sort(function (a, b) {
      if (!numeric) { return sign * a.cells[col].textContent.localeCompare(b.cells[col].textContent); }
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) { return (x === null) - (y === null); }  // n/a last either way
      return x === y ? 0 : sign * (x < y ? -1 : 1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener('click', function () { sortBy(table, col); });
    });
  });
  function selftest() {
    var m = /^#selftest-(\d+)-(\d+)$/.exec(location.hash);
    if (!m) { return; }
    try {
      var table = tables[+m[1]];
      table.tHead.rows[0].cells[+m[2]].dispatchEvent(new MouseEvent('click', {bubbles: true}));
      var images = document.images, decoded = 0;
      for (var i = 0; i < images.length; i++) { if (images[i].naturalWidth > 0) { decoded++; } }
      status.setAttribute('data-images', decoded + '/' + images.length);
      status.setAttribute('data-selftest', 'sorted ' + m[1] + ' ' + m[2]);
    } catch (e) { status.setAttribute('data-error', String(e)); }
  }
  if (document.readyState === 'complete') { selftest(); } else { window.addEventListener('load', selftest); }
  status.setAttribute('data-ok', '1');
})();
"""


def _html_inline(part: Inline) -> str:
    if isinstance(part, Mono):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, Link):
        return f"<a href='{html.escape(part.target)}'>{html.escape(part.label)}</a>"
    if isinstance(part, Strong):
        return f"<b>{html.escape(part.text)}</b>"
    return html.escape(part)


def _html_cell(cell: CellLike) -> str:
    c = _cell(cell)
    attrs = f" class='{c.mark}'" if c.mark else ""
    if c.sort is not None:
        attrs += f" data-sort='{c.sort!r}'"
    text = html.escape(c.text) + (f" {MARKS[c.mark]}" if c.mark else "")
    return f"<td{attrs}>{text}</td>"


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level} id='{slug(block.text)}'>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        text = "".join(_html_inline(p) for p in block.parts)
        text = f"<b>{text}</b>" if block.bold else text
        return f"<p class='lead'>{text}</p>" if block.lead else f"<p>{text}</p>"
    if isinstance(block, KeyValues):
        return "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in block.items) + "</ul>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows)
        note = f"<p class='note'>{esc(block.note)}</p>" if block.note else ""
        return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{note}"
    if isinstance(block, Figure):
        return (f'<p><img alt="{esc(block.alt)}" '
                f'src="data:image/png;base64,{base64.b64encode(block.data).decode()}"></p>')
    if isinstance(block, Code):
        return f"<pre>{esc(block.text)}</pre>"
    if isinstance(block, Details):
        inner = "".join(_html_block(b) for b in block.blocks)
        return f"<details id='{slug(block.summary)}'><summary>{esc(block.summary)}</summary>{inner}</details>"
    raise TypeError(f"not a report block: {block!r}")


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (figures embedded, script inline)."""
    body = "".join(_html_block(b) for b in blocks)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{_STYLE}</style></head>"
            f"<body>{body}<div id='report-script' hidden></div><script>{_SCRIPT}</script></body></html>")
