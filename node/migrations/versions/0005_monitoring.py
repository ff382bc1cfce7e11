"""monitoring: alerts, audit cursors, fixity status, webhook deliveries, content reads, QC results

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=80), nullable=True),
        sa.Column("acknowledged_at", anchoring.storage.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("open_key", name=op.f("uq_alerts_open_key")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_last_seen"), ["last_seen"], unique=False)

    op.create_table(
        "audit_cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("cycle_started_at", anchoring.storage.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "cycle_completed_at", anchoring.storage.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("updated_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_audit_cursors")),
    )

    op.create_table(
        "fixity_status",
        sa.Column("version_id", _ID, autoincrement=False, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("checked_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("observed_sha256", sa.String(length=64), nullable=True),
        sa.Column("problem", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["archive_versions.id"],
            name=op.f("fk_fixity_status_version_id_archive_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_fixity_status")),
    )
    with op.batch_alter_table("fixity_status", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fixity_status_archive_id"), ["archive_id"], unique=False
        )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _ID, nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", anchoring.storage.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_state"), ["state"], unique=False)

    op.create_table(
        "content_reads",
        sa.Column("id", _ID, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("record_class", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("read_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_byte_seconds", sa.Float(), nullable=False),
        sa.Column("last_byte_seconds", sa.Float(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_reads")),
    )
    with op.batch_alter_table("content_reads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_content_reads_read_at"), ["read_at"], unique=False)

    op.create_table(
        "qc_results",
        sa.Column("version_id", _ID, autoincrement=False, nullable=False),
        sa.Column("archive_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("checked_at", anchoring.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("failed", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["archive_versions.id"],
            name=op.f("fk_qc_results_version_id_archive_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_qc_results")),
    )
    with op.batch_alter_table("qc_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_qc_results_archive_id"), ["archive_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("qc_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qc_results_archive_id"))
    op.drop_table("qc_results")
    with op.batch_alter_table("content_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_content_reads_read_at"))
    op.drop_table("content_reads")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_state"))
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("fixity_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fixity_status_archive_id"))
    op.drop_table("fixity_status")
    op.drop_table("audit_cursors")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_last_seen"))
        batch_op.drop_index(batch_op.f("ix_alerts_kind"))
    op.drop_table("alerts")
