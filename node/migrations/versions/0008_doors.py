"""doors: member sign-in nonces and tokens, access-policy denials, break-glass windows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "signin_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        _time("issued_at"),
        _time("expires_at"),
        _time("used_at", nullable=True),
        sa.Column("used_by", sa.String(length=42), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_signin_nonces")),
    )
    with op.batch_alter_table("signin_nonces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signin_nonces_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "member_tokens",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=42), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("audience", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        _time("issued_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        sa.Column("revoked_by", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_member_tokens_token_hash")),
    )
    with op.batch_alter_table("member_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_tokens_member"), ["member"], unique=False)
    op.create_table(
        "access_denials",
        sa.Column("id", _ID, nullable=False),
        _time("time"),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("sensitivity", sa.String(length=32), nullable=False),
        sa.Column("relation", sa.String(length=8), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_denials")),
    )
    with op.batch_alter_table("access_denials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_denials_actor"), ["actor"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_access_denials_archive_id"), ["archive_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_access_denials_time"), ["time"], unique=False)
    op.create_table(
        "break_glass_windows",
        sa.Column("id", _ID, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reason_hash", sa.String(length=64), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        _time("opened_at"),
        _time("expires_at"),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_windows")),
    )
    with op.batch_alter_table("break_glass_windows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_break_glass_windows_actor"), ["actor"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_break_glass_windows_archive_id"), ["archive_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_break_glass_windows_opened_at"), ["opened_at"], unique=False
        )


def downgrade() -> None:
    for table, indexes in (
        ("break_glass_windows", ("opened_at", "archive_id", "actor")),
        ("access_denials", ("time", "archive_id", "actor")),
        ("member_tokens", ("member",)),
        ("signin_nonces", ("expires_at",)),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in indexes:
                batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
        op.drop_table(table)
