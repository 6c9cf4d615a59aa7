"""Render report sections into one self-contained HTML page (jinja2, autoescaped; figures are data URIs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from radiogenomics.report.sections import Figure, Paragraph, Section, Table

TEMPLATE = "report.html"


def _block(block: Paragraph | Table | Figure) -> dict[str, Any]:
    if isinstance(block, Paragraph):
        return {"kind": "paragraph", "item": block}
    if isinstance(block, Table):
        highlight = list(block.highlight) + [False] * (len(block.rows) - len(block.highlight))
        return {"kind": "table", "item": block, "highlight": highlight}
    return {"kind": "figure", "item": block}


def render(sections: Sequence[Section], *, title: str, inputs: str, notes: Sequence[str] = ()) -> str:
    """The HTML text of the report (no external resource: styles inline, images as base64 PNG)."""
    import jinja2

    from radiogenomics import __version__

    source = resources.files("radiogenomics.report").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(source)
    view = [{"key": s.key, "title": s.title, "missing": s.missing, "blocks": [_block(b) for b in s.blocks]}
            for s in sections]
    return template.render(title=title, sections=view, inputs=inputs, notes=list(notes), version=__version__,
                           created_at=datetime.now(UTC).isoformat(timespec="seconds"))
