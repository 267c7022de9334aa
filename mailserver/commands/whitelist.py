"""`hygie whitelist …`: the operator whitelist in the national ListeBlancheMSSante format."""

from __future__ import annotations

import click


@click.group("whitelist")
def group() -> None:
    """The operator whitelist: the other operators' domains and certificate DNs."""
