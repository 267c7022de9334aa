"""Alembic environment for the keystore database."""

from alembic import context

from storage.migrate import run_migrations
from storage.models import KeyStoreBase

run_migrations(context, KeyStoreBase.metadata)
