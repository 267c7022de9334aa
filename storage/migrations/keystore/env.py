"""Alembic environment for the keystore database."""

from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from storage.migrate import run_migrations
from storage.models import KeyStoreBase

run_migrations(cast(EnvironmentContext, context), KeyStoreBase.metadata)
