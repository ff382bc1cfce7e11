"""`archivechain contracts` commands (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def contracts() -> None:
    """contracts commands."""
