"""The group committer: many units per transaction, each still all-or-nothing, log appends in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from anchoring import merkle, storage
from anchoring.storage import LogEntry
from node.db import Database, GroupCommitter, UnitOfWork
from node.errors import UnavailableError


@pytest.fixture
def committer(database_url: str) -> Iterator[tuple[Database, GroupCommitter]]:
    db = Database.connect(database_url)
    storage.metadata.create_all(db.writer)
    gc = GroupCommitter(db, max_batch=64)
    gc.start()
    yield db, gc
    gc.stop()
    db.dispose()


def _append_unit(payload: bytes, *, fail: bool = False):  # type: ignore[no-untyped-def]
    def unit(uow: UnitOfWork) -> int:
        appended = uow.log.append(payload, archive_id="B" * 26, event_type="ACCESS", time=uow.now)
        if fail:
            raise ValueError("refused by the unit")
        return appended.index

    return unit


def test_concurrent_units_are_grouped_and_failed_units_leave_nothing(
    committer: tuple[Database, GroupCommitter],
) -> None:
    db, gc = committer
    results: dict[bytes, int | Exception] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        futures = []
        for i in range(40):
            payload = b"t%d-%d" % (t, i)
            futures.append((payload, gc.submit(_append_unit(payload, fail=(i % 13 == 5)))))
        for payload, future in futures:
            try:
                value: int | Exception = future.result(60)
            except ValueError as exc:
                value = exc
            with lock:
                results[payload] = value

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ok = {p: i for p, i in results.items() if isinstance(i, int)}
    failed = [p for p, i in results.items() if isinstance(i, Exception)]
    assert len(failed) == 6 * 3  # i in {5, 18, 31} per thread
    assert sorted(ok.values()) == list(range(len(ok)))  # dense indices, no gaps from failures
    assert gc.batches < gc.units  # grouping actually happened
    with db.session() as session:
        rows = session.execute(select(LogEntry.index, LogEntry.event)).all()
        assert {event: index for index, event in rows} == ok
        leaves = [merkle.leaf_hash(event) for _, event in sorted(rows)]
        assert storage.current_head(session).root == merkle.root_from_leaf_hashes(leaves)


def test_lone_failing_unit_reports_its_error_and_rolls_back(
    committer: tuple[Database, GroupCommitter],
) -> None:
    db, gc = committer
    with pytest.raises(ValueError, match="refused by the unit"):
        gc.run(_append_unit(b"x", fail=True))
    assert gc.run(_append_unit(b"y")) == 0
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(LogEntry)).scalar_one() == 1


def test_after_commit_callbacks_run_only_for_committed_units(
    committer: tuple[Database, GroupCommitter],
) -> None:
    _, gc = committer
    seen: list[str] = []

    def unit(name: str, fail: bool):  # type: ignore[no-untyped-def]
        def run(uow: UnitOfWork) -> None:
            uow.after_commit(lambda: seen.append(name))
            if fail:
                raise ValueError(name)

        return run

    gc.run(unit("good", False))
    with pytest.raises(ValueError):
        gc.run(unit("bad", True))
    assert seen == ["good"]


def test_submit_before_start_is_refused(database_url: str) -> None:
    db = Database.connect(database_url)
    try:
        with pytest.raises(UnavailableError):
            GroupCommitter(db).submit(lambda uow: None)
    finally:
        db.dispose()


def test_bulk_units_in_one_group_commit_keep_all_or_nothing(
    committer: tuple[Database, GroupCommitter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Units big enough for COPY on PostgreSQL (executemany on SQLite) share one transaction; a
    unit that fails after its appends, and one whose rows the database itself refuses mid-write,
    leave nothing, and the others commit."""
    db, gc = committer
    copies: list[int] = []
    real_copy = storage._copy_log_rows

    def counting_copy(connection: Any, entries: Any, nodes: Any) -> None:
        copies.append(len(entries))
        real_copy(connection, entries, nodes)

    monkeypatch.setattr(storage, "_copy_log_rows", counting_copy)
    count = 3 * storage.COPY_MIN_ROWS

    def bulk(tag: bytes, outcome: str):  # type: ignore[no-untyped-def]
        def unit(uow: UnitOfWork) -> list[int]:
            if outcome == "refused by the database":
                # A row where this unit's 6th event will go: its INSERT or COPY fails.
                uow.session.execute(
                    insert(LogEntry).values(
                        index=uow.log.size + 5,
                        archive_id="B" * 26,
                        event_type="ACCESS",
                        time=uow.now,
                        event=b"squatter",
                    )
                )
            indices = [
                uow.log.append(
                    tag + b"%d" % i, archive_id="B" * 26, event_type="ACCESS", time=uow.now
                ).index
                for i in range(count)
            ]
            if outcome == "raises":
                raise ValueError("refused by the unit")
            return indices

        return unit

    gate = threading.Event()
    blocker = gc.submit(lambda uow: gate.wait(30))
    deadline = time.monotonic() + 30
    while not blocker.running() and time.monotonic() < deadline:  # the writer holds it
        time.sleep(0.01)
    batches = gc.batches
    outcomes = ["ok", "raises", "ok", "refused by the database", "ok"]
    futures = [gc.submit(bulk(b"u%d-" % n, outcome)) for n, outcome in enumerate(outcomes)]
    gate.set()
    committed: dict[bytes, list[int]] = {}
    for n, (outcome, future) in enumerate(zip(outcomes, futures, strict=True)):
        if outcome == "ok":
            committed[b"u%d-" % n] = future.result(60)
        else:
            with pytest.raises((ValueError, IntegrityError)):
                future.result(60)
    assert blocker.result(60) is True
    assert gc.batches == batches + 2  # the blocker's batch, then all five units in one
    indices = sorted(i for values in committed.values() for i in values)
    assert indices == list(range(3 * count))  # dense: the failed units left no gap
    with db.session() as session:
        rows = dict(session.execute(select(LogEntry.index, LogEntry.event)).tuples().all())
        assert sorted(rows) == indices
        assert all(event.startswith(tuple(committed)) for event in rows.values())
        leaves = [merkle.leaf_hash(rows[i]) for i in indices]
        assert storage.current_head(session).root == merkle.root_from_leaf_hashes(leaves)
        assert storage.inclusion_proof(session, 7, len(leaves)) == merkle.inclusion_proof(
            7, len(leaves), leaves
        )
    if db.writer.dialect.name == "postgresql":
        # Every unit that reached its flush wrote with COPY, the refused one included (the unit
        # that raised before its flush wrote nothing).
        assert copies == [count] * 4
    else:
        assert copies == []


@pytest.mark.parametrize("mib", [64, 3])
def test_sqlite_connections_get_the_configured_page_cache(tmp_path: Any, mib: int) -> None:
    """Every SQLite connection (reader and writer) runs with ``sqlite_cache_mib`` of page cache,
    not SQLite's 2 MiB default (the node's tables outgrow that after a few thousand archives)."""
    db = Database.connect(f"sqlite:///{tmp_path / 'node.db'}", sqlite_cache_mib=mib)
    try:
        for engine in (db.reader, db.writer):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -mib * 1024
    finally:
        db.dispose()


def test_a_page_cache_below_one_mib_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="sqlite_cache_mib"):
        Database.connect(f"sqlite:///{tmp_path / 'node.db'}", sqlite_cache_mib=0)
