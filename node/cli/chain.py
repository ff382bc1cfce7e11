"""`archivechain chain` commands (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def chain() -> None:
    """chain commands."""
