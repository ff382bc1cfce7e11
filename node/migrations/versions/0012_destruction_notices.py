"""destruction notices to grantees (queued with the destruction, retried until delivered)

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "destruction_notices",
        sa.Column("id", _ID, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("grantee", sa.String(length=42), nullable=False),
        sa.Column("certificate_hash", sa.String(length=64), nullable=False),
        sa.Column("destroy_event", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        _time("created_at"),
        _time("delivered_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destruction_notices")),
        sa.UniqueConstraint(
            "archive_id", "grantee", name=op.f("uq_destruction_notices_archive_id")
        ),
    )
    with op.batch_alter_table("destruction_notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_destruction_notices_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("destruction_notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destruction_notices_state"))
    op.drop_table("destruction_notices")
