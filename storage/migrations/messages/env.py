"""Alembic environment for the messages database."""

from alembic import context

from storage.migrate import run_migrations
from storage.models import MessageBase

run_migrations(context, MessageBase.metadata)
