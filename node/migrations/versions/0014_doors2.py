"""encounter stays: admission and discharge instants by encounter pseudonym (attested dates)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import anchoring.storage

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, anchoring.storage.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "encounter_stays",
        sa.Column("encounter", sa.String(length=80), nullable=False),
        _time("admitted_at", nullable=True),
        _time("discharged_at", nullable=True),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("encounter", name=op.f("pk_encounter_stays")),
    )


def downgrade() -> None:
    op.drop_table("encounter_stays")
