"""key store

Revision ID: 0001
Revises:
Create Date: 2026-11-23 14:52:08.425827
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailbox_keys",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_mailbox_keys")),
    )
    with op.batch_alter_table("mailbox_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailbox_keys_kek_id"), ["kek_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mailbox_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_keys_kek_id"))

    op.drop_table("mailbox_keys")
