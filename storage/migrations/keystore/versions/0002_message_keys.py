"""message data keys in the key store

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_keys",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("mailbox_id", sa.BigInteger(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_keys")),
    )
    with op.batch_alter_table("message_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_keys_mailbox_id"), ["mailbox_id"])
        batch_op.create_index(batch_op.f("ix_message_keys_created_at"), ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("message_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_keys_created_at"))
        batch_op.drop_index(batch_op.f("ix_message_keys_mailbox_id"))

    op.drop_table("message_keys")
