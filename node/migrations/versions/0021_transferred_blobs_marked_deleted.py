"""versions of archives transferred away are marked as having no blob here

A former custodian deletes an archive's ciphertext once the recipient's acceptance is seen on
chain, but until now it left ``archive_versions.blob_deleted_at`` empty. Every check that lists
the blobs a node keeps (``archivechain backup --with-blobs``, ``restore``'s verification) then
named those blobs as missing, and a restore refused a backup of any node that had transferred
a record away. The node now records the deletion with the keys' destruction; this migration
records it for the archives transferred before, dated when the archive row last changed (the
transfer).

Upgrade sets ``blob_deleted_at`` on the versions of ``TRANSFERRED`` archives that have none.
Downgrade changes nothing: the blobs are gone either way, and the older code reads the column as
it is.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 23:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE archive_versions SET blob_deleted_at = ("
            "SELECT archives.updated_at FROM archives "
            "WHERE archives.id = archive_versions.archive_id) "
            "WHERE blob_deleted_at IS NULL AND archive_id IN ("
            "SELECT id FROM archives WHERE state = 'TRANSFERRED')"
        )
    )


def downgrade() -> None:
    """Nothing to undo (see the module docstring)."""
