"""Alembic environment for the messages database."""

from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from storage.migrate import run_migrations
from storage.models import MessageBase

run_migrations(cast(EnvironmentContext, context), MessageBase.metadata)
