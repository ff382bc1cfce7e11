"""insurers: consents, attestations, the member address of insurer API keys

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member", sa.String(length=42), nullable=True))
    op.create_table(
        "consents",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("patient_pseudonym", sa.String(length=80), nullable=False),
        sa.Column("insurer", sa.String(length=42), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("record_classes", sa.String(length=256), nullable=False),
        sa.Column("facts", sa.String(length=256), nullable=False),
        _time("period_start"),
        _time("period_end"),
        _time("expires_at"),
        _time("granted_at"),
        sa.Column("granted_by", sa.String(length=80), nullable=False),
        _time("revoked_at", nullable=True),
        sa.Column("grant_hash", sa.String(length=64), nullable=False),
        sa.Column("last_event_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_insurer"), ["insurer"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consents_patient_pseudonym"), ["patient_pseudonym"], unique=False
        )
    op.create_table(
        "attestations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("consent_id", sa.String(length=26), nullable=False),
        sa.Column("insurer", sa.String(length=42), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        _time("issued_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestations")),
    )
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestations_consent_id"), ["consent_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_attestations_insurer"), ["insurer"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestations_insurer"))
        batch_op.drop_index(batch_op.f("ix_attestations_consent_id"))
    op.drop_table("attestations")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_patient_pseudonym"))
        batch_op.drop_index(batch_op.f("ix_consents_insurer"))
    op.drop_table("consents")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("member")
