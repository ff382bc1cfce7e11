"""recovery: encrypted replicas at peers, shipped log entries, storage tiers

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", _ID, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("peer", sa.String(length=42), nullable=False),
        sa.Column("ciphertext_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _time("placed_at"),
        _time("verified_at", nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
        sa.UniqueConstraint("archive_id", "version", "peer", name=op.f("uq_replicas_archive_id")),
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_replicas_archive_id"), ["archive_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_replicas_peer"), ["peer"], unique=False)
        batch_op.create_index(batch_op.f("ix_replicas_state"), ["state"], unique=False)
    op.create_table(
        "held_replicas",
        sa.Column("id", _ID, nullable=False),
        sa.Column("custodian", sa.String(length=42), nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cid", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _time("stored_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_replicas")),
        sa.UniqueConstraint(
            "custodian", "archive_id", "version", name=op.f("uq_held_replicas_custodian")
        ),
    )
    with op.batch_alter_table("held_replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_held_replicas_custodian"), ["custodian"], unique=False)
    op.create_table(
        "shipped_entries",
        sa.Column("custodian", sa.String(length=42), nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        _time("received_at"),
        sa.PrimaryKeyConstraint("custodian", "idx", name=op.f("pk_shipped_entries")),
    )
    op.create_table(
        "log_shipments",
        sa.Column("peer", sa.String(length=42), nullable=False),
        sa.Column("shipped", sa.BigInteger(), nullable=False),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("peer", name=op.f("pk_log_shipments")),
    )
    op.create_table(
        "archive_tiers",
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("tier", sa.String(length=8), nullable=False),
        _time("moved_at", nullable=True),
        _time("last_access_at", nullable=True),
        sa.PrimaryKeyConstraint("archive_id", name=op.f("pk_archive_tiers")),
    )


def downgrade() -> None:
    op.drop_table("archive_tiers")
    op.drop_table("log_shipments")
    op.drop_table("shipped_entries")
    op.drop_table("held_replicas")
    op.drop_table("replicas")
