"""The Jinja2 environment of the pages (autoescaped HTML, templates in ``api/web/templates``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "templates"


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


ENV: Final = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["iso"] = _iso


def render(name: str, **context: Any) -> str:
    """The template ``name`` rendered with ``context``."""
    return ENV.get_template(name).render(**context)
