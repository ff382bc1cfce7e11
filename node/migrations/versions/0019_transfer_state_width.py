"""transfers.state wide enough for every transfer state

``transfers.state`` was ``VARCHAR(16)``, but the incoming state ``accepted_on_chain`` has 17
characters. SQLite does not enforce the length; PostgreSQL refused the update
(StringDataRightTruncation), so on PostgreSQL the anchoring job failed at every run once a
recipient's ``acceptTransfer`` was confirmed and the transfer never completed. The column becomes
``VARCHAR(32)`` (the longest state has 17 characters; ``tests/node/test_column_widths.py`` checks
every enumerated column against its values).

Upgrade keeps every row (SQLite rebuilds the table in batch mode, PostgreSQL alters the column in
place). Downgrade narrows the column again; on PostgreSQL it fails, changing nothing, while a
transfer is in ``accepted_on_chain`` (a state that lasts one anchoring run): finish or wait for
that transfer first.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.alter_column(
            "state",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.alter_column(
            "state",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
