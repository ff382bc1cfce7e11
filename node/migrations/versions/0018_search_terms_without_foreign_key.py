"""search terms without a foreign key to their archive

``search_terms`` is an index derived from each archive's content, written only in the unit of
work that writes the archive row (or by recovery, after it) and deleted when the archive's
content is erased. Its foreign key made the database look the archive up again for each of the
~40 terms of every archive: on PostgreSQL that check was a third of the server's work in a bulk
import (0.41 → 0.26 ms of server CPU per 4 KB document; 990 → 1,150 archives/s, docs/benchmarks.md,
*Tenth pass*). A term without an archive row lists nothing (every search reads the archive row
and checks it against the caller's policy), and ``verify_node_data`` reports any such term, a
term whose department is not its archive's, and a term left on a destroyed archive.

SQLite rebuilds the ``WITHOUT ROWID`` table without the key (rows copied in key order); PostgreSQL
drops the constraint. Downgrade restores the key and keeps every term: migrations run on a plain
SQLite connection (foreign keys not enforced, so the copy into the rebuilt table is not checked),
and PostgreSQL adds the key ``NOT VALID`` (checked for new rows only), so a term written without
its archive row meanwhile is kept, as it would be by 0017.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 20:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_FOREIGN_KEY = "fk_search_terms_archive_id_archives"
_CREATE = """
CREATE TABLE search_terms_new (
    term VARCHAR(64) NOT NULL,
    archive_id VARCHAR(26) NOT NULL,
    department VARCHAR(64) NOT NULL,
    CONSTRAINT pk_search_terms PRIMARY KEY (term, archive_id){foreign_key}
) WITHOUT ROWID
"""


def _rebuild_sqlite(with_foreign_key: bool) -> None:
    foreign_key = (
        f",\n    CONSTRAINT {_FOREIGN_KEY} FOREIGN KEY(archive_id) REFERENCES archives (id)"
        if with_foreign_key
        else ""
    )
    op.execute(_CREATE.format(foreign_key=foreign_key))
    op.execute(
        "INSERT INTO search_terms_new (term, archive_id, department) "
        "SELECT term, archive_id, department FROM search_terms ORDER BY term, archive_id"
    )
    op.execute("DROP TABLE search_terms")
    op.execute("ALTER TABLE search_terms_new RENAME TO search_terms")
    op.execute("CREATE INDEX ix_search_terms_archive_id_term ON search_terms (archive_id, term)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_foreign_key=False)
        return
    op.execute(f"ALTER TABLE search_terms DROP CONSTRAINT {_FOREIGN_KEY}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_foreign_key=True)
        return
    op.execute(
        f"ALTER TABLE search_terms ADD CONSTRAINT {_FOREIGN_KEY} "
        "FOREIGN KEY (archive_id) REFERENCES archives (id) NOT VALID"
    )
