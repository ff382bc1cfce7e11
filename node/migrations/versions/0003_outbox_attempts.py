"""outbox attempts: every transaction ever signed for a chain outbox row (nonce re-planning)

Existing rows that were signed get their current transaction as first attempt, with the fees read
from its recorded raw bytes, so a re-plan outbids them too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage
from anchoring.worker import fees_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_outbox_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("fees", sa.JSON(), nullable=False),
        sa.Column("signed_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_outbox_attempts")),
    )
    with op.batch_alter_table("chain_outbox_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chain_outbox_attempts_nonce"), ["nonce"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_chain_outbox_attempts_outbox_id"), ["outbox_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_chain_outbox_attempts_tx_hash"), ["tx_hash"], unique=False
        )

    outbox = sa.table(
        "chain_outbox",
        sa.column("id", sa.BigInteger()),
        sa.column("nonce", sa.BigInteger()),
        sa.column("tx_hash", sa.String()),
        sa.column("raw_tx", sa.LargeBinary()),
        sa.column("updated_at", anchoring.storage.UTCDateTime(timezone=True)),
    )
    attempts = sa.table(
        "chain_outbox_attempts",
        sa.column("outbox_id", sa.BigInteger()),
        sa.column("nonce", sa.BigInteger()),
        sa.column("tx_hash", sa.String()),
        sa.column("fees", sa.JSON()),
        sa.column("signed_at", anchoring.storage.UTCDateTime(timezone=True)),
    )
    signed = (
        op.get_bind()
        .execute(
            sa.select(
                outbox.c.id, outbox.c.nonce, outbox.c.tx_hash, outbox.c.raw_tx, outbox.c.updated_at
            )
            .where(outbox.c.tx_hash.is_not(None), outbox.c.nonce.is_not(None))
            .order_by(outbox.c.id)
        )
        .all()
    )
    if signed:
        op.bulk_insert(
            attempts,
            [
                {
                    "outbox_id": row_id,
                    "nonce": nonce,
                    "tx_hash": tx_hash,
                    "fees": fees_of(raw) if raw else {},
                    "signed_at": updated_at,
                }
                for row_id, nonce, tx_hash, raw, updated_at in signed
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("chain_outbox_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chain_outbox_attempts_tx_hash"))
        batch_op.drop_index(batch_op.f("ix_chain_outbox_attempts_outbox_id"))
        batch_op.drop_index(batch_op.f("ix_chain_outbox_attempts_nonce"))
    op.drop_table("chain_outbox_attempts")
