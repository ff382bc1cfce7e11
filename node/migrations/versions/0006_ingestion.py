"""ingestion: messages received from hospital systems (idempotency by source message id) and
the catalogue's keyword-search terms (node.textindex)

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingested_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_system", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=True),
        sa.Column("patient_pseudonym", sa.String(length=80), nullable=True),
        sa.Column("encounter", sa.String(length=80), nullable=True),
        sa.Column("class_rule", sa.String(length=96), nullable=True),
        sa.Column("sensitivity_rule", sa.String(length=96), nullable=True),
        sa.Column("received_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["archive_id"],
            ["archives.id"],
            name=op.f("fk_ingested_messages_archive_id_archives"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingested_messages")),
        sa.UniqueConstraint(
            "source_system", "message_id", name=op.f("uq_ingested_messages_source_system")
        ),
    )
    with op.batch_alter_table("ingested_messages", schema=None) as batch_op:
        for column in ("archive_id", "patient_pseudonym", "encounter"):
            batch_op.create_index(
                batch_op.f(f"ix_ingested_messages_{column}"), [column], unique=False
            )

    op.create_table(
        "search_terms",
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["archive_id"], ["archives.id"], name=op.f("fk_search_terms_archive_id_archives")
        ),
        sa.PrimaryKeyConstraint("term", "archive_id", name=op.f("pk_search_terms")),
    )
    with op.batch_alter_table("search_terms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_search_terms_archive_id"), ["archive_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("search_terms")
    op.drop_table("ingested_messages")
