"""The group committer: many units per transaction, each still all-or-nothing, log appends in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

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
