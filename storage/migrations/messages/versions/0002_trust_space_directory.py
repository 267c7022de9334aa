"""trust space directory

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:03:40.283637
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
        "admin_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_admin_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_admin_tokens_token_sha256")),
    )
    op.create_table(
        "audit_trail",
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
        sa.Column("details", sa.String(length=4096), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_trail")),
        sa.UniqueConstraint("record_hash", name=op.f("uq_audit_trail_record_hash")),
    )
    with op.batch_alter_table("audit_trail", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_trail_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_trail_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_trail_target"), ["target"], unique=False)

    op.create_table(
        "directory_import_rows",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("import_id", "address", name=op.f("pk_directory_import_rows")),
    )
    op.create_table(
        "organisations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("structure_id_type", sa.String(length=8), nullable=False),
        sa.Column("structure_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("trade_name", sa.String(length=512), nullable=True),
        sa.Column("address_lines", sa.String(length=1024), nullable=True),
        sa.Column("postal_code", sa.String(length=16), nullable=True),
        sa.Column("locality", sa.String(length=256), nullable=True),
        sa.Column("department", sa.String(length=8), nullable=True),
        sa.Column("country", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
    )
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.create_index(
            "uq_organisations_structure", ["structure_id_type", "structure_id"], unique=True
        )

    op.create_table(
        "professionals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("national_id", sa.String(length=32), nullable=False),
        sa.Column("id_type", sa.String(length=2), nullable=False),
        sa.Column("civility", sa.String(length=16), nullable=True),
        sa.Column("family_name", sa.String(length=256), nullable=False),
        sa.Column("given_name", sa.String(length=256), nullable=False),
        sa.Column("category_code", sa.String(length=16), nullable=True),
        sa.Column("category_label", sa.String(length=256), nullable=True),
        sa.Column("profession_code", sa.String(length=16), nullable=True),
        sa.Column("profession_label", sa.String(length=256), nullable=True),
        sa.Column("specialty_code", sa.String(length=32), nullable=True),
        sa.Column("specialty_label", sa.String(length=256), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_professionals")),
        sa.UniqueConstraint("national_id", name=op.f("uq_professionals_national_id")),
    )
    op.create_table(
        "trusted_domains",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("certificate_dn", sa.String(length=1024), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("responsible_contact", sa.String(length=320), nullable=False),
        sa.Column("support_contact", sa.String(length=320), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_domains")),
    )
    with op.batch_alter_table("trusted_domains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trusted_domains_domain"), ["domain"], unique=False)
        batch_op.create_index(
            "uq_trusted_domains_domain_dn", ["domain", "certificate_dn"], unique=True
        )

    op.create_table(
        "directory_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("is_local", sa.Boolean(), nullable=False),
        sa.Column(
            "mailbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "professional_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "organisation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("service", sa.String(length=256), nullable=True),
        sa.Column("display_name", sa.String(length=512), nullable=False),
        sa.Column("red_list", sa.Boolean(), nullable=False),
        sa.Column("dematerialisation", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_directory_entries_mailbox_id_mailboxes"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_directory_entries_organisation_id_organisations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["professional_id"],
            ["professionals.id"],
            name=op.f("fk_directory_entries_professional_id_professionals"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_entries")),
        sa.UniqueConstraint("address", name=op.f("uq_directory_entries_address")),
        sa.UniqueConstraint("mailbox_id", name=op.f("uq_directory_entries_mailbox_id")),
    )
    with op.batch_alter_table("directory_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_entries_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_directory_entries_professional_id"), ["professional_id"], unique=False
        )

    op.create_table(
        "mailbox_members",
        sa.Column(
            "mailbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_mailbox_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_members_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_members_member_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "member_mailbox_id", name=op.f("pk_mailbox_members")),
    )
    with op.batch_alter_table("mailbox_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailbox_members_member_mailbox_id"), ["member_mailbox_id"], unique=False
        )

    op.create_table(
        "patient_conversations",
        sa.Column(
            "patient_mailbox_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("professional_address", sa.String(length=320), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_patient_conversations_patient_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "patient_mailbox_id", "professional_address", name=op.f("pk_patient_conversations")
        ),
    )
    op.create_table(
        "patients",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "mailbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("ins", sa.String(length=15), nullable=False),
        sa.Column("ins_oid", sa.String(length=32), nullable=False),
        sa.Column("birth_family_name", sa.String(length=256), nullable=False),
        sa.Column("given_names", sa.String(length=256), nullable=False),
        sa.Column("birth_date", sa.String(length=10), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("birth_place_code", sa.String(length=5), nullable=True),
        sa.Column("notification_address", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_patients_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("ins", name=op.f("uq_patients_ins")),
        sa.UniqueConstraint("mailbox_id", name=op.f("uq_patients_mailbox_id")),
    )
    op.create_table(
        "legal_representatives",
        sa.Column(
            "patient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "representative_mailbox_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_legal_representatives_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["representative_mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_legal_representatives_representative_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "patient_id", "representative_mailbox_id", name=op.f("pk_legal_representatives")
        ),
    )
    with op.batch_alter_table("legal_representatives", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_legal_representatives_representative_mailbox_id"),
            ["representative_mailbox_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("legal_representatives", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_representatives_representative_mailbox_id"))

    op.drop_table("legal_representatives")
    op.drop_table("patients")
    op.drop_table("patient_conversations")
    with op.batch_alter_table("mailbox_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_members_member_mailbox_id"))

    op.drop_table("mailbox_members")
    with op.batch_alter_table("directory_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_entries_professional_id"))
        batch_op.drop_index(batch_op.f("ix_directory_entries_organisation_id"))

    op.drop_table("directory_entries")
    with op.batch_alter_table("trusted_domains", schema=None) as batch_op:
        batch_op.drop_index("uq_trusted_domains_domain_dn")
        batch_op.drop_index(batch_op.f("ix_trusted_domains_domain"))

    op.drop_table("trusted_domains")
    op.drop_table("professionals")
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.drop_index("uq_organisations_structure")

    op.drop_table("organisations")
    op.drop_table("directory_import_rows")
    with op.batch_alter_table("audit_trail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_trail_target"))
        batch_op.drop_index(batch_op.f("ix_audit_trail_at"))
        batch_op.drop_index(batch_op.f("ix_audit_trail_action"))

    op.drop_table("audit_trail")
    op.drop_table("admin_tokens")
