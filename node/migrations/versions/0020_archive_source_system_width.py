"""archives.source_system as wide as the source codes the node accepts

``archives.source_system`` was ``VARCHAR(32)``, but every way in accepts a source system code of
up to 64 characters (``POST /archives`` and ``/ingest/documents``: ``CODE_PATTERN``; ingestion's
``_code``; a FHIR ``meta.source``'s last segment, an HL7 MSH-3, a DICOM calling AE title) and the
event and ``ingested_messages.source_system`` take 64. SQLite does not enforce the length;
PostgreSQL refused the archive's row (StringDataRightTruncation), so on PostgreSQL a record from
a source with a 33 to 64 character code failed with an internal error (500) and was not
archived, and a transfer of such an archive could not be received. The column becomes
``VARCHAR(64)``.

Upgrade keeps every row (SQLite rebuilds the table in batch mode, PostgreSQL alters the column in
place). Downgrade narrows the column again; on PostgreSQL it fails, changing nothing, while an
archive has a source system code longer than 32 characters.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archives", schema=None) as batch_op:
        batch_op.alter_column(
            "source_system",
            existing_type=sa.String(length=32),
            type_=sa.String(length=64),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("archives", schema=None) as batch_op:
        batch_op.alter_column(
            "source_system",
            existing_type=sa.String(length=64),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
