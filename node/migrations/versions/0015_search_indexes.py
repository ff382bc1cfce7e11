"""catalogue search at 10^6 archives: indexes in the order the searches walk

- ``archives (created_at, id)``, ``(department, created_at, id)`` and ``(state, created_at,
  id)``: a search without text lists newest first (``created_at DESC, id DESC``) and stops
  after a page or the count's cap, without sorting (they replace the single-column indexes on
  ``created_at``, ``department`` and ``state``, their prefixes: SQLite looked a state up by its
  index and sorted all 10^6 archives);
- ``search_terms (archive_id, term)``: a text search probes each further term of a candidate
  archive by (term, archive id) on either key, never reads every term of the archive (it
  replaces the index on ``archive_id`` alone, its prefix, used when an archive's terms are
  erased).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 16:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archives", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_archives_created_at_id"), ["created_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_archives_department_created_at_id"),
            ["department", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_archives_state_created_at_id"),
            ["state", "created_at", "id"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_archives_created_at"))
        batch_op.drop_index(batch_op.f("ix_archives_department"))
        batch_op.drop_index(batch_op.f("ix_archives_state"))
    with op.batch_alter_table("search_terms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_search_terms_archive_id_term"), ["archive_id", "term"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_search_terms_archive_id"))


def downgrade() -> None:
    with op.batch_alter_table("search_terms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_search_terms_archive_id"), ["archive_id"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_search_terms_archive_id_term"))
    with op.batch_alter_table("archives", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_archives_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_archives_department"), ["department"], unique=False)
        batch_op.create_index(batch_op.f("ix_archives_created_at"), ["created_at"], unique=False)
        batch_op.drop_index(batch_op.f("ix_archives_state_created_at_id"))
        batch_op.drop_index(batch_op.f("ix_archives_department_created_at_id"))
        batch_op.drop_index(batch_op.f("ix_archives_created_at_id"))
