"""Database engines, sessions and the group-commit writer.

SQLite (WAL, ``synchronous=FULL`` so a commit is durable) by default; PostgreSQL in production.
All writes go through one ``GroupCommitter`` thread: it gathers the units of work submitted by
concurrent callers, runs each inside its own SAVEPOINT of one shared transaction (so each unit is
still all-or-nothing; its log appends are written inside it) and commits the batch once. Ingest is then bound by one fsync per *batch*, not
per event, and log appends are serialised without a global lock held across requests.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from anchoring.storage import LogWriter
from node.errors import UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


DEFAULT_SQLITE_CACHE_MIB = 64
"""SQLite's page cache per connection (its own default is 2 MiB). A node's tables outgrow 2 MiB
after a few thousand archives; past that, every B-tree descent of an insert or lookup reads its
pages again from the OS (``docs/benchmarks.md``, "SQLite page cache"). The cache fills only as
pages are read, so an idle connection costs nothing."""


def _sqlite_engine(url: str, *, immediate: bool, cache_mib: int) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN (needed for SAVEPOINT to work).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # negative: KiB, not pages
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass
class Database:
    """The node's engines: ``reader`` for queries, ``writer`` for the group committer."""

    url: str
    reader: Engine
    writer: Engine
    read_session: sessionmaker[Session]
    write_session: sessionmaker[Session]

    @classmethod
    def connect(cls, url: str, *, sqlite_cache_mib: int = DEFAULT_SQLITE_CACHE_MIB) -> Database:
        """Open engines for ``url`` (SQLite file or PostgreSQL); ``sqlite_cache_mib`` is each
        SQLite connection's page cache."""
        if sqlite_cache_mib < 1:
            raise ValueError("sqlite_cache_mib must be at least 1")
        if is_sqlite(url):
            reader = _sqlite_engine(url, immediate=False, cache_mib=sqlite_cache_mib)
            writer = _sqlite_engine(url, immediate=True, cache_mib=sqlite_cache_mib)
        else:
            reader = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
            writer = reader
        return cls(
            url=url,
            reader=reader,
            writer=writer,
            read_session=sessionmaker(reader, expire_on_commit=False),
            write_session=sessionmaker(writer, expire_on_commit=False),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reads; closing it ends (rolls back) its transaction. Objects loaded in
        it stay readable afterwards (detached, not expired)."""
        with self.read_session() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction outside the group committer (maintenance, CLI, tests)."""
        with self.write_session() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()


Clock = Callable[[], datetime]
"""Where a node's "now" comes from: wall-clock UTC in production, a settable clock in tests."""


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class UnitOfWork:
    """What a service call gets: the transaction's session, the log writer, and the batch clock."""

    session: Session
    log: LogWriter
    now: datetime
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit's changes are durable (e.g. wake the anchoring worker)."""
        self._after_commit.append(callback)


@dataclass
class _Job:
    fn: Callable[[UnitOfWork], Any]
    future: Future[Any]


_STOP = object()


class UnitRunner(Protocol):
    """Runs a unit of work in its own transaction scope and returns its result (or raises its
    error, with nothing of it committed). Services receive this, not the committer."""

    def run(self, fn: Callable[[UnitOfWork], T], timeout: float | None = 120.0) -> T: ...


class GroupCommitter:
    """Runs units of work on one writer thread, many per database transaction."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        name: str = "group-commit",
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._clock = clock
        self._max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.batches = 0
        self.units = 0

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued work, then stop the writer thread."""
        with self._lock:
            if not self._started:
                return
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def submit(self, fn: Callable[[UnitOfWork], T]) -> Future[T]:
        """Queue a unit of work; its future resolves after its batch commits (or with its error)."""
        if not self._started:
            raise UnavailableError("the database writer is not running")
        future: Future[T] = Future()
        self._queue.put(_Job(fn, future))
        return future

    def run(self, fn: Callable[[UnitOfWork], T], timeout: float | None = 120.0) -> T:
        """Submit and wait: the caller sees the unit's result or exception."""
        return self.submit(fn).result(timeout)

    # -- writer thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Job] = [first]
            stop_after = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stop_after:
                return

    def _run_batch(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            outcomes = self._execute(batch)
        except _UnitFailed as failed:  # a lone unit raised: its transaction is rolled back
            outcomes = [(failed.job, None, failed.error, [])]
        except Exception as exc:  # the shared commit failed: retry each unit on its own
            if len(batch) == 1:
                outcomes = [(batch[0], None, exc, [])]
            else:
                log.warning(
                    "group commit of %d units failed (%s); retrying singly", len(batch), exc
                )
                outcomes = []
                for job in batch:
                    try:
                        outcomes.extend(self._execute([job]))
                    except _UnitFailed as failed:
                        outcomes.append((job, None, failed.error, []))
                    except Exception as single_exc:
                        outcomes.append((job, None, single_exc, []))
        for job, result, error, callbacks in outcomes:
            if error is not None:
                job.future.set_exception(error)
                continue
            job.future.set_result(result)
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a callback must never break the writer
                    log.exception("after-commit callback failed")

    def _execute(self, batch: list[_Job]) -> list[_Outcome]:
        """Run ``batch`` in one transaction; several units each get a SAVEPOINT."""
        savepoints = len(batch) > 1
        outcomes: list[_Outcome] = []
        with self._db.write_session() as session, session.begin():
            log_writer = LogWriter.open(session)
            now = self._clock()
            for job in batch:
                uow = UnitOfWork(session=session, log=log_writer, now=now)
                if not savepoints:
                    try:
                        result = job.fn(uow)
                        log_writer.flush()
                        session.flush()
                    except Exception as exc:
                        raise _UnitFailed(job, exc) from exc
                    outcomes.append((job, result, None, uow._after_commit))
                    continue
                mark = log_writer.mark()
                nested = session.begin_nested()
                try:
                    result = job.fn(uow)
                    log_writer.flush()
                    session.flush()
                    nested.commit()
                except Exception as exc:
                    nested.rollback()
                    log_writer.reset(mark)
                    outcomes.append((job, None, exc, []))
                else:
                    outcomes.append((job, result, None, uow._after_commit))
        self.batches += 1
        self.units += len(outcomes)
        return outcomes


_Outcome = tuple[_Job, Any, BaseException | None, list[Callable[[], None]]]


class _UnitFailed(Exception):
    """A lone unit of work raised; carries the job and its error out of the transaction."""

    def __init__(self, job: _Job, error: BaseException) -> None:
        super().__init__(str(error))
        self.job = job
        self.error = error
