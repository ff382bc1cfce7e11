"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
running them twice changes nothing; a log written before a migration that moves its rows still
serves the same proofs after it (and after going back)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

import node.models  # registers the node tables
from anchoring import merkle, storage
from anchoring.storage import LogEntry, LogHead, LogNode, LogUpperNode, LogWriter, metadata
from node import migrations
from node.db import Database

NOW = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)


def test_migrations_match_the_models_and_are_idempotent(database_url: str) -> None:
    migrations.upgrade(database_url)
    migrations.upgrade(database_url)  # a second run finds nothing to do
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert differences == []
    assert {
        "log_entries",
        "log_nodes",
        "log_upper_nodes",
        "archives",
        "transfers",
        "alembic_version",
    } <= tables


def _old_layout_log(url: str, count: int) -> tuple[list[bytes], set[tuple[int, bytes]]]:
    """Write a log of ``count`` leaves the way revision 0003 stored it (every subtree in
    ``log_nodes`` keyed ``level << 48 | index``); returns its leaf hashes and node rows."""
    leaves: list[bytes] = []
    frontier: list[bytes] = []
    nodes: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    for i in range(count):
        event = b'{"old":%d}' % i
        leaves.append(merkle.leaf_hash(event))
        frontier, completed = merkle.append_leaf(frontier, i, leaves[-1])
        nodes += [{"id": level << 48 | index, "hash": h} for level, index, h in completed]
        entries.append(
            {"idx": i, "archive_id": "A" * 26, "event_type": "ACCESS", "time": NOW, "event": event}
        )
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(LogEntry.__table__.insert(), entries)
            connection.execute(text("INSERT INTO log_nodes (id, hash) VALUES (:id, :hash)"), nodes)
            connection.execute(
                LogHead.__table__.insert(),
                {
                    "id": storage.HEAD_ID,
                    "size": count,
                    "root": merkle.hash_from_subtrees(frontier),
                    "frontier": b"".join(frontier),
                    "updated_at": NOW,
                },
            )
    finally:
        engine.dispose()
    return leaves, {(row["id"], row["hash"]) for row in nodes}  # type: ignore[misc]


def _node_rows(url: str) -> set[tuple[int, bytes]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                (key, bytes(h)) for key, h in connection.execute(text("SELECT * FROM log_nodes"))
            }
    finally:
        engine.dispose()


def _assert_proofs_match(db: Database, leaves: list[bytes]) -> None:
    n = len(leaves)
    with db.session() as session:
        for size in sorted({1, 255, 256, 257, 512, 1000, 1024, 1025, n}):
            root = merkle.root_from_leaf_hashes(leaves[:size])
            assert storage.tree_head_at(session, size).root == root
            for index in sorted({0, 1, 255, 256, 600, size // 2, size - 1} - set(range(size, n))):
                proof = storage.inclusion_proof(session, index, size)
                assert proof == merkle.inclusion_proof(index, size, leaves), (index, size)
            for size1 in sorted({1, 3, 256, 300, 1024, size} - set(range(size + 1, n + 1))):
                proof = storage.consistency_proof(session, size1, size)
                assert proof == merkle.consistency_proof(size1, size, leaves), (size1, size)


def test_migration_0004_rekeys_an_existing_log_and_back(database_url: str) -> None:
    migrations.upgrade(database_url, "0003")
    leaves, old_rows = _old_layout_log(database_url, 1300)
    migrations.upgrade(database_url)
    db = Database.connect(database_url)
    try:
        _assert_proofs_match(db, leaves)
        with db.session() as session:
            low = dict(session.execute(select(LogNode.id, LogNode.hash)).tuples().all())
            upper = dict(session.execute(select(LogUpperNode.id, LogUpperNode.hash)).tuples().all())
        old = dict(old_rows)
        assert upper == {key: h for key, h in old.items() if key >> 48 >= storage.UPPER_LEVEL}
        assert low == {
            merkle.completion_position(key >> 48, key & (2**48 - 1)): h
            for key, h in old.items()
            if key >> 48 < storage.UPPER_LEVEL
        }
        # The migrated log goes on growing, and serves the new leaves' proofs.
        with db.transaction() as session:
            writer = LogWriter.open(session)
            for i in range(1300, 1500):
                event = b'{"new":%d}' % i
                writer.append(event, archive_id="A" * 26, event_type="ACCESS", time=NOW)
                leaves.append(merkle.leaf_hash(event))
            writer.flush()
        _assert_proofs_match(db, leaves)
    finally:
        db.dispose()
    command.downgrade(migrations.alembic_config(database_url), "0003")
    frontier: list[bytes] = []
    for size, leaf in enumerate(leaves):
        frontier, completed = merkle.append_leaf(frontier, size, leaf)
        old_rows |= {(level << 48 | index, h) for level, index, h in completed}
    assert _node_rows(database_url) == old_rows
    migrations.upgrade(database_url)
    db = Database.connect(database_url)
    try:
        _assert_proofs_match(db, leaves)
    finally:
        db.dispose()


def _search_terms_layout(url: str) -> tuple[str | None, set[tuple[str, str]], set[str]]:
    """SQLite's CREATE statement of ``search_terms`` (None on PostgreSQL), its rows and indexes."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            sql = None
            if connection.dialect.name == "sqlite":
                sql = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'search_terms'")
                ).scalar_one()
            rows = set(
                connection.execute(text("SELECT term, archive_id FROM search_terms")).tuples()
            )
            indexes = {index["name"] for index in inspect(connection).get_indexes("search_terms")}
    finally:
        engine.dispose()
    return sql, rows, indexes


def test_migration_0016_clusters_search_terms_by_key_on_sqlite_and_back(database_url: str) -> None:
    """0016 rebuilds SQLite's ``search_terms`` as a WITHOUT ROWID table (two B-trees per term,
    not three) keeping every term and the ``(archive_id, term)`` index; downgrade restores the
    rowid table with the same rows; PostgreSQL is left as it was."""
    migrations.upgrade(database_url, "0015")
    sqlite = database_url.startswith("sqlite")
    terms = {("出院", "0" * 25 + str(i % 3)) for i in range(3)} | {("chest", "1" * 26)}
    if sqlite:  # foreign keys are off on this plain connection: the archives need not exist
        engine = create_engine(database_url)
        try:
            with engine.begin() as connection:
                connection.execute(
                    text("INSERT INTO search_terms (term, archive_id) VALUES (:t, :a)"),
                    [{"t": term, "a": archive} for term, archive in terms],
                )
        finally:
            engine.dispose()
    before, rows, indexes = _search_terms_layout(database_url)
    assert before is None or "WITHOUT ROWID" not in before.upper()
    migrations.upgrade(database_url)
    after, migrated, migrated_indexes = _search_terms_layout(database_url)
    assert migrated == rows == (terms if sqlite else set())
    assert migrated_indexes == indexes == {"ix_search_terms_archive_id_term"}
    if sqlite:
        assert after is not None
        assert after.upper().rstrip().endswith("WITHOUT ROWID")
    command.downgrade(migrations.alembic_config(database_url), "0015")
    back, restored, restored_indexes = _search_terms_layout(database_url)
    assert (restored, restored_indexes) == (rows, indexes)
    assert back is None or "WITHOUT ROWID" not in back.upper()
    migrations.upgrade(database_url)


def _postings(url: str) -> tuple[set[tuple[str, ...]], str]:
    """The rows of ``search_terms`` (with their department once it exists) and the definition
    of its primary key (SQLite's CREATE statement, or PostgreSQL's index)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("search_terms")}
            listed = "term, archive_id" + (", department" if "department" in columns else "")
            rows = {
                tuple(row)
                for row in connection.execute(text(f"SELECT {listed} FROM search_terms")).tuples()
            }
            if connection.dialect.name == "sqlite":
                key = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'search_terms'")
                ).scalar_one()
            else:
                key = connection.execute(
                    text(
                        "SELECT indexdef FROM pg_indexes "
                        "WHERE indexname = 'pk_search_terms' AND schemaname = current_schema()"
                    )
                ).scalar_one()
    finally:
        engine.dispose()
    return rows, key


def _archive_row(archive_id: str, department: str) -> dict[str, object]:
    """An ``archives`` row of the columns every revision since 0015 has (the rest defaulted)."""
    return {
        "id": archive_id,
        "record_class": "INPATIENT",
        "sensitivity": "NORMAL",
        "department": department,
        "title": "t",
        "patient_pseudonym": "p",
        "source_system": "HIS",
        "metadata_json": {},
        "search_text": "t",
        "state": "CREATED",
        "custodian": "0x" + "0" * 40,
        "trigger_date": NOW,
        "last_event_hash": bytes(32),
        "created_by": "t",
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_migration_0017_gives_each_term_its_archives_department_and_back(
    database_url: str,
) -> None:
    """0017 copies each archive's department onto its search terms (PostgreSQL: in the primary
    key's index, ``INCLUDE``, the rebuilt table vacuumed and analysed); a term without an archive row (only possible with foreign keys
    off) is kept with an empty department; downgrade drops the column and keeps every term."""
    migrations.upgrade(database_url, "0016")
    sqlite = database_url.startswith("sqlite")
    archives = {"0" * 25 + "1": "cardiology", "0" * 25 + "2": "oncology"}
    terms = {("出院", a) for a in archives} | {("chest", "0" * 25 + "1")}
    orphan = ("小结", "9" * 26)
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                node.models.Archive.__table__.insert(),
                [
                    _archive_row(archive_id, department)
                    for archive_id, department in archives.items()
                ],
            )
            rows = terms | ({orphan} if sqlite else set())  # PostgreSQL enforces the key
            connection.execute(
                text("INSERT INTO search_terms (term, archive_id) VALUES (:t, :a)"),
                [{"t": term, "a": archive} for term, archive in rows],
            )
    finally:
        engine.dispose()
    before, key_before = _postings(database_url)
    assert before == rows
    assert "INCLUDE" not in key_before.upper()
    migrations.upgrade(database_url)
    after, key_after = _postings(database_url)
    expected = {(term, archive, archives[archive]) for term, archive in terms}
    assert after == expected | ({(*orphan, "")} if sqlite else set())
    if sqlite:
        assert key_after.upper().rstrip().endswith("WITHOUT ROWID")
        assert "DEPARTMENT VARCHAR(64) NOT NULL" in key_after.upper()
    else:
        assert key_after.endswith("(term, archive_id) INCLUDE (department)")
        engine = create_engine(database_url)
        try:  # rebuilt, then vacuumed and analysed: index-only walks need not read the table
            with engine.connect() as connection:
                vacuumed, analysed = connection.execute(
                    text(
                        "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables "
                        "WHERE relname = 'search_terms' AND schemaname = current_schema()"
                    )
                ).one()
        finally:
            engine.dispose()
        assert vacuumed is not None
        assert analysed is not None
    command.downgrade(migrations.alembic_config(database_url), "0016")
    back, key_back = _postings(database_url)
    assert back == rows
    assert "INCLUDE" not in key_back.upper()
    assert "DEPARTMENT" not in key_back.upper()
    migrations.upgrade(database_url)


def _foreign_keys(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                str(key["referred_table"])
                for key in inspect(connection).get_foreign_keys("search_terms")
            ]
    finally:
        engine.dispose()


def test_migration_0018_drops_the_search_terms_foreign_key_and_back(database_url: str) -> None:
    """0018 removes the foreign key of ``search_terms`` (SQLite: the table rebuilt, still
    WITHOUT ROWID with the department) keeping every term; afterwards a term without its archive
    row can be written, with foreign keys enforced as the node enforces them; downgrade restores
    the key and keeps every term, that one included."""
    migrations.upgrade(database_url, "0017")
    sqlite = database_url.startswith("sqlite")
    archive_id = "0" * 25 + "1"
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                node.models.Archive.__table__.insert(), [_archive_row(archive_id, "cardiology")]
            )
            connection.execute(
                text("INSERT INTO search_terms VALUES (:t, :a, 'cardiology')"),
                [{"t": term, "a": archive_id} for term in ("出院", "小结", "chest")],
            )
    finally:
        engine.dispose()
    before, key_before = _postings(database_url)
    assert _foreign_keys(database_url) == ["archives"]
    migrations.upgrade(database_url)
    after, key_after = _postings(database_url)
    assert after == before
    assert len(after) == 3
    if sqlite:
        assert key_after.upper().rstrip().endswith("WITHOUT ROWID")
        assert "DEPARTMENT VARCHAR(64) NOT NULL" in key_after.upper()
        assert "FOREIGN KEY" not in key_after.upper()
    else:
        assert key_after == key_before  # the primary key with INCLUDE (department), untouched
    assert _foreign_keys(database_url) == []
    _, _, indexes = _search_terms_layout(database_url)
    assert indexes == {"ix_search_terms_archive_id_term"}

    orphan = ("肺", "9" * 26, "general")
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            if sqlite:  # as the node's own connections do
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.execute(
                text("INSERT INTO search_terms VALUES (:t, :a, :d)"),
                {"t": orphan[0], "a": orphan[1], "d": orphan[2]},
            )
    finally:
        engine.dispose()
    command.downgrade(migrations.alembic_config(database_url), "0017")
    back, key_back = _postings(database_url)
    assert back == after | {orphan}
    assert _foreign_keys(database_url) == ["archives"]
    if sqlite:
        assert key_back.upper().rstrip().endswith("WITHOUT ROWID")
        assert "FOREIGN KEY" in key_back.upper()
    migrations.upgrade(database_url)


def _pairs(url: str, query: str) -> list[tuple[object, object]]:
    """The rows of a two-column ``query``."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [(a, b) for a, b in connection.execute(text(query))]
    finally:
        engine.dispose()


def _column_length(url: str, table: str, column: str) -> int | None:
    """The declared length of ``table.column`` as the database reports it."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            columns = inspect(connection).get_columns(table)
    finally:
        engine.dispose()
    [length] = [c["type"].length for c in columns if c["name"] == column]
    return int(length) if length is not None else None


def _transfer_states(url: str) -> list[tuple[object, object]]:
    return _pairs(url, "SELECT id, state FROM transfers")


def test_migration_0019_widens_transfer_states_and_back(database_url: str) -> None:
    """0019 widens ``transfers.state`` so ``accepted_on_chain`` (17 characters) can be written on
    PostgreSQL (refused at 0018), keeping every transfer; downgrade narrows it again and keeps
    the rows (no transfer is then in ``accepted_on_chain``)."""
    migrations.upgrade(database_url, "0018")
    row = {
        "archive_id": "0" * 25 + "1",
        "direction": "in",
        "peer": "0x" + "ab" * 20,
        "offer_key": "tx:0",
        "state": "accepting",
        "attempts": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(node.models.Transfer.__table__.insert(), [row])
        if not database_url.startswith("sqlite"):  # SQLite does not enforce VARCHAR(n)
            with pytest.raises(DBAPIError, match="too long"), engine.begin() as connection:
                connection.execute(text("UPDATE transfers SET state = 'accepted_on_chain'"))
    finally:
        engine.dispose()
    [(transfer_id, _)] = _transfer_states(database_url)
    migrations.upgrade(database_url)
    assert _transfer_states(database_url) == [(transfer_id, "accepting")]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE transfers SET state = 'accepted_on_chain'"))
        assert _transfer_states(database_url) == [(transfer_id, "accepted_on_chain")]
        with engine.begin() as connection:
            connection.execute(text("UPDATE transfers SET state = 'accepted'"))
    finally:
        engine.dispose()
    command.downgrade(migrations.alembic_config(database_url), "0018")
    assert _transfer_states(database_url) == [(transfer_id, "accepted")]
    assert _column_length(database_url, "transfers", "state") == 16
    migrations.upgrade(database_url)


def test_migration_0021_marks_the_blobs_of_transferred_archives_deleted(database_url: str) -> None:
    """0021 records the ciphertext of archives transferred away as deleted (the former custodian
    deleted it without saying so, and backup and restore then named it missing): every version
    of a ``TRANSFERRED`` archive without a date gets the archive's last change; a held archive's
    versions and a date already set are kept. Downgrade changes nothing."""
    migrations.upgrade(database_url, "0020")
    moved, held, marked = ("0" * 25 + str(n) for n in (1, 2, 3))
    transferred_at = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    deleted_before = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    archives = [
        {**_archive_row(moved, "cardiology"), "state": "TRANSFERRED", "updated_at": transferred_at},
        {**_archive_row(held, "cardiology"), "state": "ARCHIVED"},
        {**_archive_row(marked, "cardiology"), "state": "TRANSFERRED"},
    ]

    def version(archive_id: str, number: int, deleted: datetime | None) -> dict[str, object]:
        return {
            "archive_id": archive_id,
            "version": number,
            "cid": f"cid-{archive_id}-{number}",
            "ciphertext_sha256": "0" * 64,
            "stored_size": 1,
            "size": 1,
            "media_type": "text/plain",
            "commitment": "0" * 64,
            "created_at": NOW,
            "blob_deleted_at": deleted,
        }

    versions = [
        version(moved, 1, None),
        version(moved, 2, None),
        version(held, 1, None),
        version(marked, 1, deleted_before),
    ]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(node.models.Archive.__table__.insert(), archives)
            connection.execute(node.models.ArchiveVersion.__table__.insert(), versions)
    finally:
        engine.dispose()
    migrations.upgrade(database_url)
    expected = [
        (f"cid-{moved}-1", transferred_at),
        (f"cid-{moved}-2", transferred_at),
        (f"cid-{held}-1", None),
        (f"cid-{marked}-1", deleted_before),
    ]
    assert _deleted(database_url) == expected
    command.downgrade(migrations.alembic_config(database_url), "0020")
    assert _deleted(database_url) == expected
    migrations.upgrade(database_url)


def _deleted(url: str) -> list[tuple[object, object]]:
    """``(cid, blob_deleted_at)`` of every version, the dates as aware UTC datetimes."""
    rows = _pairs(url, "SELECT cid, blob_deleted_at FROM archive_versions ORDER BY cid")
    return [(cid, _utc(value)) for cid, value in rows]


def _utc(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _sources(url: str) -> list[tuple[object, object]]:
    return _pairs(url, "SELECT id, source_system FROM archives")


def test_migration_0020_widens_archive_source_systems_and_back(database_url: str) -> None:
    """0020 widens ``archives.source_system`` to the 64 characters a source code may have
    (PostgreSQL refused 33 at 0019), keeping every archive; downgrade narrows it again and keeps
    the rows (none then has a longer code)."""
    migrations.upgrade(database_url, "0019")
    archive_id = "0" * 25 + "1"
    long_source = "s" * 64
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                node.models.Archive.__table__.insert(), [_archive_row(archive_id, "cardiology")]
            )
        if not database_url.startswith("sqlite"):  # SQLite does not enforce VARCHAR(n)
            with pytest.raises(DBAPIError, match="too long"), engine.begin() as connection:
                connection.execute(text("UPDATE archives SET source_system = :s"), {"s": "s" * 33})
    finally:
        engine.dispose()
    migrations.upgrade(database_url)
    assert _sources(database_url) == [(archive_id, "HIS")]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE archives SET source_system = :s"), {"s": long_source})
        assert _sources(database_url) == [(archive_id, long_source)]
        with engine.begin() as connection:
            connection.execute(text("UPDATE archives SET source_system = 'LIS'"))
    finally:
        engine.dispose()
    command.downgrade(migrations.alembic_config(database_url), "0019")
    assert _sources(database_url) == [(archive_id, "LIS")]
    assert _column_length(database_url, "archives", "source_system") == 32
    migrations.upgrade(database_url)
