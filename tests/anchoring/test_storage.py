"""The database-backed log: heads and proofs served from stored subtree hashes must equal the
in-memory reference for every index and size, on SQLite and PostgreSQL, and must verify; so must
those served partly from the in-memory upper levels, whatever their size, freshness or budget."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from anchoring import merkle, storage
from anchoring.errors import LogError
from anchoring.storage import LogEntry, LogNode, LogUpperNode, LogWriter
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


# ------------------------------------------------------------------------------------------
# Logs past 2^UPPER_LEVEL leaves: upper subtrees from memory, the rest from one query


def _grow(db: Database, leaves: list[bytes], count: int, tag: bytes = b"") -> None:
    """Append ``count`` events in one transaction and extend the reference ``leaves``."""
    start = len(leaves)
    with db.transaction() as session:
        writer = LogWriter.open(session)
        for i in range(start, start + count):
            event = tag + _event(i)
            writer.append(event, archive_id="A" * 26, event_type="ACCESS", time=NOW)
            leaves.append(merkle.leaf_hash(event))
        writer.flush()


def _check_proofs(
    session: storage.Session, leaves: list[bytes], size: int, indices: set[int]
) -> None:
    root = merkle.root_from_leaf_hashes(leaves[:size])
    assert storage.tree_head_at(session, size) == storage.TreeHead(size, root)
    for index in sorted(i for i in indices if 0 <= i < size):
        proof = storage.inclusion_proof(session, index, size)
        assert proof == merkle.inclusion_proof(index, size, leaves), (index, size)
        merkle.verify_inclusion(index, size, leaves[index], proof, root)
    for size1 in sorted(i for i in indices if 0 < i <= size):
        proof = storage.consistency_proof(session, size1, size)
        assert proof == merkle.consistency_proof(size1, size, leaves), (size1, size)
        root1 = merkle.root_from_leaf_hashes(leaves[:size1])
        merkle.verify_consistency(size1, size, root1, root, proof)


BOUNDARIES = {1, 2, 127, 128, 255, 256, 257, 511, 512, 513, 767, 768, 1023, 1024, 1025}


def test_proofs_across_upper_level_boundaries_match_reference(db: Database) -> None:
    rng = random.Random(6962)
    leaves: list[bytes] = []
    # Proofs are asked between appends, so the in-memory copy is loaded at one size and the
    # newest upper subtrees (beyond it) come from the database.
    for count in (200, 57, 300, 1, 467, 300):
        _grow(db, leaves, count)
        size = len(leaves)
        with db.session() as session:
            for tree in sorted({b for b in BOUNDARIES if b <= size} | {size}):
                picks = {tree - 1, tree - 2, tree // 2, *(rng.randrange(tree) for _ in range(4))}
                _check_proofs(session, leaves, tree, (BOUNDARIES | picks) - {0})
    upper = storage.upper_levels(db.reader)
    assert upper is not None
    assert upper.lowest == storage.UPPER_LEVEL
    assert upper.size >= len(leaves) - storage.REFRESH_LEAVES  # loaded, and kept up to date
    assert upper.held == sum(upper.size >> level for level in range(8, upper.size.bit_length()))


def test_random_proofs_match_reference(db: Database) -> None:
    leaves: list[bytes] = []
    for count in (700, 300, 129):
        _grow(db, leaves, count)
    n = len(leaves)
    with db.session() as session:

        @settings(max_examples=150, deadline=None, database=None)
        @given(st.integers(1, n), st.integers(0, n - 1), st.integers(1, n))
        def check(size: int, index: int, size1: int) -> None:
            _check_proofs(session, leaves, size, {index % size, 1 + (size1 - 1) % size})

        check()


def test_a_small_memory_budget_raises_the_lowest_level_held(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CACHE_HASHES", 6)  # read when a database's copy is created
    leaves: list[bytes] = []
    _grow(db, leaves, 1325)
    with db.session() as session:
        _check_proofs(session, leaves, 1325, BOUNDARIES | {1300, 1324, 1325})
    upper = storage.upper_levels(db.reader)
    assert upper is not None
    # 1325 leaves have 5 subtrees at level 8, 2 at level 9, 1 at level 10: 8 > 6, so level 8 is
    # left to the database.
    assert (upper.lowest, upper.held, upper.size) == (9, 3, 1325)
    assert upper.get(8, 0) is None
    assert upper.get(9, 1) == merkle.root_from_leaf_hashes(leaves[512:1024])


def test_uncommitted_subtrees_are_never_held_in_memory(db: Database) -> None:
    leaves: list[bytes] = []
    _grow(db, leaves, 300)

    with db.transaction() as session:  # loads the writer engine's copy (300 leaves)
        _check_proofs(session, leaves, 300, {0, 299})
    doomed = list(leaves)
    with db.write_session() as session:
        transaction = session.begin()
        writer = LogWriter.open(session)
        for i in range(300, 900):
            event = b"doomed" + _event(i)
            writer.append(event, archive_id="A" * 26, event_type="ACCESS", time=NOW)
            doomed.append(merkle.leaf_hash(event))
        writer.flush()
        # The transaction sees its own appends; the in-memory copy only the committed log.
        _check_proofs(session, doomed, 900, {0, 299, 300, 512, 700, 899})
        upper = storage.upper_levels(db.writer)
        assert upper is not None
        assert upper.size == 300
        transaction.rollback()
    _grow(db, leaves, 600, tag=b"kept")
    assert leaves[300:] != doomed[300:]
    for engine, sessions in ((db.writer, db.transaction), (db.reader, db.session)):
        with sessions() as session:
            _check_proofs(session, leaves, 900, {0, 299, 300, 512, 700, 899})
        upper = storage.upper_levels(engine)
        assert upper is not None
        assert upper.size == 900
        assert upper.get(8, 2) == merkle.root_from_leaf_hashes(leaves[512:768])


def test_a_tree_longer_than_the_log_is_refused_even_when_its_proof_nodes_exist(
    db: Database,
) -> None:
    _append(db, 0, 5)
    with db.session() as session:
        # Leaf 5 of a tree of 6 needs only [4, 5) and [0, 4), which exist: the size still counts.
        with pytest.raises(LogError, match="tree size 6 is outside the log"):
            storage.inclusion_proof(session, 5, 6)
        with pytest.raises(LogError, match="tree size 6 is outside the log"):
            storage.consistency_proof(session, 6, 6)
        with pytest.raises(LogError, match="tree size 6 is outside the log"):
            storage.consistency_proof(session, 5, 6)
        with pytest.raises(LogError, match="tree size -1 is outside the log"):
            storage.tree_head_at(session, -1)
        assert storage.consistency_proof(session, 5, 5) == []


def test_missing_upper_subtree_is_reported_not_papered_over(db: Database) -> None:
    leaves: list[bytes] = []
    _grow(db, leaves, 600)
    with db.transaction() as session:
        session.execute(
            LogUpperNode.__table__.delete().where(LogUpperNode.id == storage.node_id(8, 1))
        )
    with db.session() as session, pytest.raises(LogError, match="missing 1 stored subtree"):
        storage.inclusion_proof(session, 0, 600)
    upper = storage.upper_levels(db.reader)
    assert upper is not None
    assert upper.held == 0  # an incomplete level is not copied


def test_nodes_are_keyed_by_completion_position_below_the_upper_levels(db: Database) -> None:
    leaves: list[bytes] = []
    _grow(db, leaves, 1000)
    low: dict[int, bytes] = {}
    upper: dict[int, bytes] = {}
    frontier: list[bytes] = []
    for size, leaf in enumerate(leaves):
        frontier, completed = merkle.append_leaf(frontier, size, leaf)
        for level, index, digest in completed:
            if level < storage.UPPER_LEVEL:
                low[merkle.completion_position(level, index)] = digest
            else:
                upper[level << 48 | index] = digest
    with db.session() as session:
        assert dict(session.execute(select(LogNode.id, LogNode.hash)).tuples().all()) == low
        stored_upper = session.execute(select(LogUpperNode.id, LogUpperNode.hash)).tuples().all()
    assert dict(stored_upper) == upper
    assert sorted(upper) == [8 << 48 | 0, 8 << 48 | 1, 8 << 48 | 2, 9 << 48 | 0]
    assert max(low) < storage.UPPER_KEYS <= min(upper)
