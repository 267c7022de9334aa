"""`hygie mailbox …`: issue mailboxes for patients, professionals and structures."""

from __future__ import annotations

import click


@click.group("mailbox")
def group() -> None:
    """Create mailboxes and manage their members and legal representatives."""
