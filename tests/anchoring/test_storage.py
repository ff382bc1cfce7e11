"""The database-backed log: heads and proofs served from stored subtree hashes must equal the
in-memory reference for every index and size, on SQLite and PostgreSQL, and must verify."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from anchoring import merkle, storage
from anchoring.errors import LogError
from anchoring.storage import LogEntry, LogNode, LogWriter
from node.db import Database

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _event(i: int) -> bytes:
    return b'{"n":%d}' % i


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.connect(database_url)
    storage.metadata.create_all(database.writer)
    yield database
    database.dispose()


def _append(db: Database, start: int, count: int) -> list[storage.Appended]:
    with db.transaction() as session:
        writer = LogWriter.open(session)
        assert writer.size == start
        out = [
            writer.append(_event(i), archive_id="A" * 26, event_type="ACCESS", time=NOW)
            for i in range(start, start + count)
        ]
        writer.flush()
    return out


def test_heads_and_proofs_match_reference_for_every_index_and_size(db: Database) -> None:
    leaves: list[bytes] = []
    # Several transactions of uneven size, so frontiers cross transaction boundaries.
    for count in (1, 2, 5, 9, 16, 7):
        appended = _append(db, len(leaves), count)
        leaves.extend(merkle.leaf_hash(_event(a.index)) for a in appended)
        assert [a.leaf_hash for a in appended] == leaves[-count:]
    n = len(leaves)
    with db.session() as session:
        head = storage.current_head(session)
        assert head == storage.TreeHead(n, merkle.root_from_leaf_hashes(leaves))
        for size in range(1, n + 1):
            root = merkle.root_from_leaf_hashes(leaves[:size])
            assert storage.tree_head_at(session, size).root == root
            for index in range(size):
                proof = storage.inclusion_proof(session, index, size)
                assert proof == merkle.inclusion_proof(index, size, leaves)
                merkle.verify_inclusion(index, size, leaves[index], proof, root)
            for size1 in range(1, size + 1):
                proof = storage.consistency_proof(session, size1, size)
                assert proof == merkle.consistency_proof(size1, size, leaves)
                merkle.verify_consistency(
                    size1, size, merkle.root_from_leaf_hashes(leaves[:size1]), root, proof
                )


def test_append_writes_about_two_nodes_per_leaf_and_entries_once(db: Database) -> None:
    _append(db, 0, 64)
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(LogEntry)).scalar_one() == 64
        # A complete tree of 64 leaves has 127 nodes: every perfect subtree is stored once.
        assert session.execute(select(func.count()).select_from(LogNode)).scalar_one() == 127
        assert storage.entry_at(session, 63).event == _event(63)
        assert [e.index for e in storage.entries_for_archive(session, "A" * 26)][:3] == [0, 1, 2]


def test_mark_and_reset_forget_appends_of_a_failed_unit(db: Database) -> None:
    _append(db, 0, 3)
    with db.transaction() as session:
        writer = LogWriter.open(session)
        writer.append(_event(3), archive_id="A" * 26, event_type="ACCESS", time=NOW)
        mark = writer.mark()
        writer.append(b"dropped", archive_id="A" * 26, event_type="ACCESS", time=NOW)
        writer.append(b"dropped too", archive_id="A" * 26, event_type="ACCESS", time=NOW)
        writer.reset(mark)
        again = writer.append(_event(4), archive_id="A" * 26, event_type="ACCESS", time=NOW)
        writer.flush()
    assert again.index == 4
    leaves = [merkle.leaf_hash(_event(i)) for i in range(5)]
    with db.session() as session:
        assert storage.current_head(session).root == merkle.root_from_leaf_hashes(leaves)


def test_rolled_back_transaction_leaves_log_untouched(db: Database) -> None:
    _append(db, 0, 4)
    with db.session() as session:
        before = storage.current_head(session)

    def crash_before_commit() -> None:
        with db.transaction() as session:
            writer = LogWriter.open(session)
            writer.append(b"never", archive_id="A" * 26, event_type="ACCESS", time=NOW)
            writer.flush()
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    with db.session() as session:
        assert storage.current_head(session) == before
        assert session.execute(select(func.count()).select_from(LogEntry)).scalar_one() == 4


def test_requests_outside_the_log_are_refused(db: Database) -> None:
    _append(db, 0, 5)
    with db.session() as session:
        with pytest.raises(LogError, match="outside the log"):
            storage.tree_head_at(session, 6)
        with pytest.raises(LogError, match="outside a tree of size 3"):
            storage.inclusion_proof(session, 3, 3)
        with pytest.raises(LogError, match="no consistency proof from size 0"):
            storage.consistency_proof(session, 0, 4)
        with pytest.raises(LogError, match="no consistency proof from size 5 to size 4"):
            storage.consistency_proof(session, 5, 4)
        with pytest.raises(LogError, match="no log entry"):
            storage.entry_at(session, 5)


def test_empty_log_head_is_the_empty_root(db: Database) -> None:
    with db.session() as session:
        assert storage.current_head(session) == storage.TreeHead(0, merkle.EMPTY_ROOT)
        assert storage.tree_head_at(session, 0).root == merkle.EMPTY_ROOT


def test_missing_stored_node_is_reported_not_papered_over(db: Database) -> None:
    _append(db, 0, 8)
    with db.transaction() as session:
        session.execute(LogNode.__table__.delete().where(LogNode.id == storage.node_id(1, 1)))
    with db.session() as session, pytest.raises(LogError, match="missing 1 stored subtree"):
        storage.inclusion_proof(session, 0, 8)
