"""recovery: the key record sent with each replica (its digest per replica row); the storage tier
each content read was served from

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("record_digest", sa.String(length=64), nullable=True))
    with op.batch_alter_table("content_reads") as batch:
        batch.add_column(sa.Column("tier", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("content_reads") as batch:
        batch.drop_column("tier")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("record_digest")
