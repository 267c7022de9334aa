"""retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:30:24.747753
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "functional_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("request", sa.String(length=2048), nullable=False),
        sa.Column("result", sa.String(length=512), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_functional_logs")),
    )
    with op.batch_alter_table("functional_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_functional_logs_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_functional_logs_at"), ["at"], unique=False)

    op.create_table(
        "retention_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.String(length=4096), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    with op.batch_alter_table("retention_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retention_runs_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "lifecycle_notices",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "mailbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_lifecycle_notices_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_notices")),
    )
    with op.batch_alter_table("lifecycle_notices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lifecycle_notices_mailbox_id"), ["mailbox_id"], unique=False
        )
        batch_op.create_index(
            "ix_lifecycle_notices_pending", ["sent_at", "created_at"], unique=False
        )

    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closure_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("deletion_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reopened_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("inactivity_warned_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("legal_hold_by", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("legal_hold_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_mailboxes_deletion_due_at"), ["deletion_due_at"], unique=False
        )
        batch_op.create_index(
            "ix_mailboxes_legal_hold",
            ["id"],
            unique=False,
            sqlite_where=sa.text("legal_hold"),
            postgresql_where=sa.text("legal_hold"),
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index("ix_mailboxes_legal_hold")
        batch_op.drop_index(batch_op.f("ix_mailboxes_deletion_due_at"))
        batch_op.drop_column("legal_hold_at")
        batch_op.drop_column("legal_hold_by")
        batch_op.drop_column("legal_hold")
        batch_op.drop_column("inactivity_warned_at")
        batch_op.drop_column("reopened_at")
        batch_op.drop_column("deletion_due_at")
        batch_op.drop_column("closure_kind")

    with op.batch_alter_table("lifecycle_notices", schema=None) as batch_op:
        batch_op.drop_index("ix_lifecycle_notices_pending")
        batch_op.drop_index(batch_op.f("ix_lifecycle_notices_mailbox_id"))

    op.drop_table("lifecycle_notices")
    with op.batch_alter_table("retention_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retention_runs_started_at"))

    op.drop_table("retention_runs")
    with op.batch_alter_table("functional_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_functional_logs_at"))
        batch_op.drop_index(batch_op.f("ix_functional_logs_action"))

    op.drop_table("functional_logs")
