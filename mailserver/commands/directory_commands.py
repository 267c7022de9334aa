"""`hygie directory …`: the national directory extraction and directory search."""

from __future__ import annotations

import click


@click.group("directory")
def group() -> None:
    """The national directory: import the extraction, search entries."""
