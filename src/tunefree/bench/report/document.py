"""The report's document model and its two renderers.

A report is a list of blocks (:class:`Heading`, :class:`Paragraph`, :class:`KeyValues`, :class:`Bullets`,
:class:`Table`, :class:`Figure`, :class:`Code`); :func:`to_markdown` and :func:`to_html` render the same
list, so ``report.md`` and ``report.html`` cannot say different things. A paragraph is a sequence of
plain strings and inline :class:`Mono` / :class:`Link` parts. Markdown links figures by their file,
HTML embeds them (base64), so the page is self-contained.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Sequence, Union

__all__ = ["Mono", "Link", "Heading", "Paragraph", "KeyValues", "Bullets", "Table", "Figure", "Code",
           "Block", "to_markdown", "to_html"]


@dataclass(frozen=True)
class Mono:
    """Inline code (a file or column name)."""

    text: str


@dataclass(frozen=True)
class Link:
    """Inline link to a file next to the report."""

    target: str
    label: str


Inline = Union[str, Mono, Link]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Inline, ...]
    bold: bool = False

    @classmethod
    def of(cls, *parts: Inline, bold: bool = False) -> Paragraph:
        return cls(tuple(parts), bold)


@dataclass(frozen=True)
class KeyValues:
    """A list of ``key: value`` lines (the key in bold)."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
        return cls(tuple(header), tuple(tuple(r) for r in rows))


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


Block = Union[Heading, Paragraph, KeyValues, Bullets, Table, Figure, Code]


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _md_inline(part: Inline) -> str:
    if isinstance(part, Mono):
        return f"`{part.text}`"
    if isinstance(part, Link):
        return f"[`{part.label}`]({part.target})"
    return part


def _md_block(block: Block) -> str:
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
        lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        return f"![{block.alt}]({block.path})"
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, separated by blank lines."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
          "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
          "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def _html_inline(part: Inline) -> str:
    if isinstance(part, Mono):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, Link):
        return f"<a href='{html.escape(part.target)}'>{html.escape(part.label)}</a>"
    return html.escape(part)


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        text = "".join(_html_inline(p) for p in block.parts)
        return f"<p><b>{text}</b></p>" if block.bold else f"<p>{text}</p>"
    if isinstance(block, KeyValues):
        return "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in block.items) + "</ul>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Figure):
        return (f'<p><img alt="{esc(block.alt)}" '
                f'src="data:image/png;base64,{base64.b64encode(block.data).decode()}"></p>')
    if isinstance(block, Code):
        return f"<pre>{esc(block.text)}</pre>"
    raise TypeError(f"not a report block: {block!r}")


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (figures embedded)."""
    body = "".join(_html_block(b) for b in blocks)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")
