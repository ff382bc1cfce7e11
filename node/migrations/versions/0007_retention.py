"""retention: reasons of deadline changes, disposition lists, destruction certificates

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-02 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "retention_changes",
        sa.Column("id", _ID, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _time("previous_deadline"),
        _time("new_deadline"),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_changes")),
    )
    with op.batch_alter_table("retention_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_retention_changes_archive_id"), ["archive_id"], unique=False
        )
    op.create_table(
        "disposition_proposals",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(length=80), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disposition_proposals")),
    )
    op.create_table(
        "disposition_items",
        sa.Column("id", _ID, nullable=False),
        sa.Column("proposal_id", sa.String(length=26), nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=80), nullable=True),
        _time("decided_at", nullable=True),
        _time("expires_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["disposition_proposals.id"],
            name=op.f("fk_disposition_items_proposal_id_disposition_proposals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disposition_items")),
        sa.UniqueConstraint(
            "proposal_id", "archive_id", name=op.f("uq_disposition_items_proposal_id")
        ),
    )
    with op.batch_alter_table("disposition_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_disposition_items_archive_id"), ["archive_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_disposition_items_decision"), ["decision"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_disposition_items_proposal_id"), ["proposal_id"], unique=False
        )

    op.create_table(
        "destruction_certificates",
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("archive_id", name=op.f("pk_destruction_certificates")),
    )


def downgrade() -> None:
    op.drop_table("destruction_certificates")
    op.drop_table("disposition_items")
    op.drop_table("disposition_proposals")
    op.drop_table("retention_changes")
