"""search terms clustered by their key on SQLite (``WITHOUT ROWID``)

On SQLite a table with a composite primary key is a rowid table plus an index for the key, so
every search term was written to three B-trees (the rows, ``(term, archive_id)`` and
``(archive_id, term)``); bulk import writes about 43 terms per 4 KB document. A ``WITHOUT
ROWID`` table stores the rows in the primary key's B-tree itself: two B-trees per term, and a
search reads the term's postings straight from the table. SQLite cannot change this in place,
so the table is rebuilt (terms copied in key order). PostgreSQL has no such option and is not
touched.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 17:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_CREATE = """
CREATE TABLE search_terms_new (
    term VARCHAR(64) NOT NULL,
    archive_id VARCHAR(26) NOT NULL,
    CONSTRAINT pk_search_terms PRIMARY KEY (term, archive_id),
    CONSTRAINT fk_search_terms_archive_id_archives FOREIGN KEY(archive_id) REFERENCES archives (id)
){suffix}
"""


def _rebuild(without_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(_CREATE.format(suffix=" WITHOUT ROWID" if without_rowid else ""))
    op.execute(
        "INSERT INTO search_terms_new (term, archive_id) "
        "SELECT term, archive_id FROM search_terms ORDER BY term, archive_id"
    )
    op.execute("DROP TABLE search_terms")
    op.execute("ALTER TABLE search_terms_new RENAME TO search_terms")
    op.execute("CREATE INDEX ix_search_terms_archive_id_term ON search_terms (archive_id, term)")


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)
