"""The report's building blocks: a section is a title and a list of paragraphs, tables and figures.

A section whose inputs were not given is still rendered, with ``missing`` saying what to pass to fill it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "text"  # "text", "note" (a remark on the data's source or limits) or "subhead" (a sub-heading)


@dataclass(frozen=True)
class Table:
    """Rows of display strings; ``highlight[i]`` marks row i (e.g. a record with flags)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    highlight: Sequence[bool] = ()


@dataclass(frozen=True)
class Figure:
    """An embedded PNG (data URI) with its alternative text and caption."""

    src: str
    alt: str
    caption: str = ""


Block = Paragraph | Table | Figure


@dataclass
class Section:
    """One report section (``key`` is its HTML id)."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    missing: str | None = None

    def add(self, block: Block) -> Section:
        self.blocks.append(block)
        return self


def unavailable(key: str, title: str, reason: str) -> Section:
    """A section whose inputs were not given: the reason and how to fill it."""
    return Section(key, title, missing=reason)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant figures, missing as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\u2013"
        return f"{value:.{digits}g}"
    text = str(value)
    return text if text and text.lower() != "nan" else "\u2013"
