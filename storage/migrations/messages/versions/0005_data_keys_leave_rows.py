"""data keys leave the message rows (for the key store)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 21:00:00.000000

Schema only: `messages.wrapped_key` becomes nullable. Moving the keys of messages stored
earlier into the key store crosses two databases, so it is not an Alembic step: `hygie db
upgrade` runs `MessageStore.move_data_keys` after both migrations.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("wrapped_key", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # Only possible while every message still has its key in its row.
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("wrapped_key", existing_type=sa.LargeBinary(), nullable=False)
