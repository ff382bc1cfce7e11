"""each search term carries its archive's department

A search bound to one department (a department filter, or a clinician's own department) walked
every posting of its terms and read the archive row of each to reject the other departments'
(four in five at 10^6 archives over five departments: 65–80 ms for 出院 小结 on PostgreSQL).
With the department beside each posting, the walk skips them before any row is read.

An archive's department is fixed when it is created, so the copy never goes stale. SQLite
rebuilds the ``WITHOUT ROWID`` table with the column (rows copied in key order with their
archive's department); so does PostgreSQL (rows copied in key order, then the primary key with
``INCLUDE (department)`` so that an index-only walk reads it, the foreign key and the
``(archive_id, term)`` index, then ``VACUUM (ANALYZE)``); the node starts after it. A term whose archive row is
missing (never written by the node: the foreign key forbids it) is kept with an empty
department, which matches no department-bound search, as no archive row would.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 17:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_CREATE = """
CREATE TABLE search_terms_new (
    term VARCHAR(64) NOT NULL,
    archive_id VARCHAR(26) NOT NULL,{department}
    CONSTRAINT pk_search_terms PRIMARY KEY (term, archive_id),
    CONSTRAINT fk_search_terms_archive_id_archives FOREIGN KEY(archive_id) REFERENCES archives (id)
) WITHOUT ROWID
"""


def _rebuild_sqlite(with_department: bool) -> None:
    op.execute(
        _CREATE.format(
            department="\n    department VARCHAR(64) NOT NULL," if with_department else ""
        )
    )
    if with_department:
        op.execute(
            "INSERT INTO search_terms_new (term, archive_id, department) "
            "SELECT t.term, t.archive_id, coalesce(a.department, '') FROM search_terms t "
            "LEFT JOIN archives a ON a.id = t.archive_id ORDER BY t.term, t.archive_id"
        )
    else:
        op.execute(
            "INSERT INTO search_terms_new (term, archive_id) "
            "SELECT term, archive_id FROM search_terms ORDER BY term, archive_id"
        )
    op.execute("DROP TABLE search_terms")
    op.execute("ALTER TABLE search_terms_new RENAME TO search_terms")
    op.execute("CREATE INDEX ix_search_terms_archive_id_term ON search_terms (archive_id, term)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_department=True)
        return
    # Rebuilt rather than updated in place: an UPDATE of every term would leave the table twice
    # its size with every old row version dead until a vacuum.
    op.execute(
        "CREATE TABLE search_terms_new (term VARCHAR(64) NOT NULL, "
        "archive_id VARCHAR(26) NOT NULL, department VARCHAR(64) NOT NULL)"
    )
    op.execute(
        "INSERT INTO search_terms_new (term, archive_id, department) "
        "SELECT t.term, t.archive_id, coalesce(a.department, '') FROM search_terms t "
        "LEFT JOIN archives a ON a.id = t.archive_id ORDER BY t.term, t.archive_id"
    )
    op.execute("DROP TABLE search_terms")
    op.execute("ALTER TABLE search_terms_new RENAME TO search_terms")
    op.execute(
        "ALTER TABLE search_terms ADD CONSTRAINT pk_search_terms "
        "PRIMARY KEY (term, archive_id) INCLUDE (department)"
    )
    op.execute(
        "ALTER TABLE search_terms ADD CONSTRAINT fk_search_terms_archive_id_archives "
        "FOREIGN KEY (archive_id) REFERENCES archives (id)"
    )
    op.execute("CREATE INDEX ix_search_terms_archive_id_term ON search_terms (archive_id, term)")
    # Statistics and the visibility map at once, outside the transaction (VACUUM cannot run in
    # one; what came before is committed, and a rerun of this step after a crash rebuilds the
    # table again from itself). Without statistics the planner walked every posting of a term by
    # a bitmap scan and a sort; until a vacuum marks the pages all-visible, every index-only
    # walk also reads the table (two words: 123 ms p50 at 10^6 archives instead of 25).
    with op.get_context().autocommit_block():
        op.execute("VACUUM (ANALYZE) search_terms")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_department=False)
        return
    op.execute("ALTER TABLE search_terms DROP CONSTRAINT pk_search_terms")
    op.execute(
        "ALTER TABLE search_terms ADD CONSTRAINT pk_search_terms PRIMARY KEY (term, archive_id)"
    )
    op.execute("ALTER TABLE search_terms DROP COLUMN department")
