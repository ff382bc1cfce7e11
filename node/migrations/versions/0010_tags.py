"""smart tags: bound tags with their last-seen location, and refused scans

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("tag_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        _time("bound_at"),
        _time("revoked_at", nullable=True),
        sa.Column("scan_count", sa.Integer(), nullable=False),
        _time("last_seen_at", nullable=True),
        sa.Column("last_location", sa.String(length=64), nullable=True),
        sa.Column("last_reader", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tag_hash", name=op.f("pk_tags")),
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tags_archive_id"), ["archive_id"], unique=False)
    op.create_table(
        "tag_scan_refusals",
        sa.Column("id", _ID, nullable=False),
        sa.Column("tag_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("reader", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        _time("refused_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_scan_refusals")),
    )
    with op.batch_alter_table("tag_scan_refusals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tag_scan_refusals_tag_hash"), ["tag_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tag_scan_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tag_scan_refusals_tag_hash"))
    op.drop_table("tag_scan_refusals")
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tags_archive_id"))
    op.drop_table("tags")
