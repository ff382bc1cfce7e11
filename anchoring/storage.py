"""The hospital's append-only event log in the node database (RFC 6962 Merkle log).

Tables: ``log_entries`` (one row per event: canonical bytes and a few indexed columns),
``log_nodes`` and ``log_upper_nodes`` (the hash of every completed perfect subtree, below and from
level ``UPPER_LEVEL``; leaves are level 0; see ``node_id`` for the keys), ``log_head`` (one row:
size, root and the right frontier) and, for anchoring, ``checkpoints``, ``chain_outbox`` and
``chain_outbox_attempts``.

Appending costs O(log n) hashing and on average two node rows per leaf (written with ``COPY`` on
PostgreSQL). A tree head, an inclusion proof or a consistency proof for any size is served from
O(log n) node hashes: those at level ``UPPER_LEVEL`` and above from a bounded in-memory copy of
the committed log's upper levels (``UpperLevels``), the rest in one query whose rows share a
handful of pages. The log is never rebuilt and never held in memory whole.

Nothing here commits: the caller owns the transaction (one service call is one transaction).
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    select,
)
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from anchoring import merkle
from anchoring.errors import LogError

NODE_INDEX_BITS = 48
"""Room for 2^48 leaves per log (plenty): upper keys are ``level << 48 | index``."""

UPPER_LEVEL = 8
"""Subtrees of 2^8 leaves and more (one per 128 leaves) live in ``log_upper_nodes``."""

UPPER_KEYS = UPPER_LEVEL << NODE_INDEX_BITS
"""The smallest upper key; every completion position of a log of 2^48 leaves is below 2^49."""

HEAD_ID = 1


def node_id(level: int, index: int) -> int:
    """The key of the perfect subtree ``(level, index)``.

    Below ``UPPER_LEVEL`` (table ``log_nodes``) it is the subtree's completion position
    (``merkle.completion_position``): appends write increasing keys, so the B-tree grows at its
    right edge and its heap (PostgreSQL) follows key order, and a proof's low siblings of one leaf
    are neighbours, sharing pages. From ``UPPER_LEVEL`` up (table ``log_upper_nodes``, small) it is
    ``level << 48 | index``: each level one key range, read by range scans into ``UpperLevels``.
    The two key ranges do not overlap.
    """
    if level < UPPER_LEVEL:
        return merkle.completion_position(level, index)
    return (level << NODE_INDEX_BITS) | index


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC datetime is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base shared by the log tables and the node's own models (one metadata)."""

    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class LogEntry(Base):
    """One event of the log, by its leaf index."""

    __tablename__ = "log_entries"

    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime]
    event: Mapped[bytes] = mapped_column(LargeBinary)


class LogNode(Base):
    """The hash of one completed perfect subtree below ``UPPER_LEVEL`` (level 0 = a leaf hash),
    keyed by its completion position (``node_id``)."""

    __tablename__ = "log_nodes"

    # INTEGER on SQLite makes the key the rowid: one B-tree, not a table plus a key index.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogUpperNode(Base):
    """The hash of one completed perfect subtree at ``UPPER_LEVEL`` or above, keyed
    ``level << 48 | index`` (``node_id``). About one row per 128 leaves: loaded into memory."""

    __tablename__ = "log_upper_nodes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogHead(Base):
    """The single row describing the current tree: size, root and right frontier."""

    __tablename__ = "log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class CheckpointState(enum.StrEnum):
    """Recorded progress of a checkpoint (crash-safe: each step is committed before the next)."""

    PLANNED = "planned"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"


class Checkpoint(Base):
    """A tree head this node decided to anchor, and what became of it on chain."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[CheckpointState] = mapped_column(
        Enum(CheckpointState, native_enum=False, length=16), index=True
    )
    outbox_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    chain_index: Mapped[int | None] = mapped_column(BigInteger, default=None)
    tx_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    block_number: Mapped[int | None] = mapped_column(BigInteger, default=None)
    block_time: Mapped[datetime | None] = mapped_column(default=None)
    planned_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class OutboxState(enum.StrEnum):
    """Progress of one chain transaction of this node's key."""

    PENDING = "pending"  # decided, not yet signed
    SUBMITTED = "submitted"  # signed with a nonce, raw bytes recorded, broadcast (maybe)
    CONFIRMED = "confirmed"  # mined successfully with enough confirmations
    FAILED = "failed"  # reverted or permanently refused; ``error`` says why


class OutboxItem(Base):
    """A chain transaction the node must send exactly once, in order."""

    __tablename__ = "chain_outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    state: Mapped[OutboxState] = mapped_column(
        Enum(OutboxState, native_enum=False, length=16), index=True
    )
    archive_id: Mapped[str | None] = mapped_column(String(26), index=True, default=None)
    nonce: Mapped[int | None] = mapped_column(BigInteger, default=None)
    tx_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    block_number: Mapped[int | None] = mapped_column(BigInteger, default=None)
    block_time: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutboxAttempt(Base):
    """One signed transaction of an outbox row: every one ever signed, never deleted.

    A row is re-signed when its nonce is re-planned; its earlier transactions are kept here so the
    worker can tell which one the chain mined (an earlier one may reappear and land) and can price
    a replacement above every transaction it ever signed with the same nonce. A registerBatch
    transaction has one attempt per row it covers.
    """

    __tablename__ = "chain_outbox_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    outbox_id: Mapped[int] = mapped_column(BigInteger, index=True)
    nonce: Mapped[int] = mapped_column(BigInteger, index=True)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)
    fees: Mapped[dict[str, Any]]
    signed_at: Mapped[datetime]


# --------------------------------------------------------------------------------------------
# Appending


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an event landed in the log."""

    index: int
    leaf_hash: bytes


@dataclass(slots=True)
class _Mark:
    size: int
    frontier: list[bytes]
    entries: int
    nodes: int
    upper: int


@dataclass
class LogWriter:
    """Appends events inside the caller's transaction; ``flush`` writes them and the new head.

    Open with ``LogWriter.open(session)``, which locks the head row (``SELECT … FOR UPDATE`` where
    the backend supports it) so concurrent writers serialise. ``mark``/``reset`` let a group-commit
    executor drop the appends of one failed unit of work without touching the others.
    """

    session: Session
    size: int
    frontier: list[bytes]
    _entries: list[tuple[int, str, str, datetime, bytes]] = field(default_factory=list)
    _nodes: list[tuple[int, bytes]] = field(default_factory=list)
    _upper: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def open(cls, session: Session) -> LogWriter:
        head = session.execute(
            select(LogHead).where(LogHead.id == HEAD_ID).with_for_update()
        ).scalar_one_or_none()
        if head is None:
            return cls(session=session, size=0, frontier=[])
        return cls(session=session, size=head.size, frontier=_split_hashes(head.frontier))

    def append(
        self,
        event: bytes,
        *,
        archive_id: str,
        event_type: str,
        time: datetime,
        leaf: bytes | None = None,
    ) -> Appended:
        """Append one canonical event; returns its index and leaf hash (written on ``flush``).

        ``leaf`` is the event's leaf hash when the caller already computed it."""
        leaf = leaf or merkle.leaf_hash(event)
        index = self.size
        self.frontier, completed = merkle.append_leaf(self.frontier, self.size, leaf)
        self.size += 1
        self._entries.append((index, archive_id, event_type, time, event))
        # The subtrees this leaf completes take the next completion positions, level by level.
        first = merkle.nodes_before_leaf(index)
        for level, subtree, digest in completed:
            if level < UPPER_LEVEL:
                self._nodes.append((first + level, digest))
            else:
                self._upper.append((node_id(level, subtree), digest))
        return Appended(index=index, leaf_hash=leaf)

    @property
    def pending(self) -> int:
        """Appends not yet flushed."""
        return len(self._entries)

    def mark(self) -> _Mark:
        """Remember the current position (see ``reset``)."""
        return _Mark(
            self.size, list(self.frontier), len(self._entries), len(self._nodes), len(self._upper)
        )

    def reset(self, mark: _Mark) -> None:
        """Forget every append made after ``mark`` (they were never written)."""
        self.size, self.frontier = mark.size, list(mark.frontier)
        del self._entries[mark.entries :]
        del self._nodes[mark.nodes :]
        del self._upper[mark.upper :]

    def flush(self) -> None:
        """Write buffered entries, completed nodes and the new head (no commit)."""
        if not self._entries:
            return
        # The hot path of ingest: plain DB-API executemany, or binary COPY on PostgreSQL for more
        # than a few rows (SQLAlchemy's per-row parameter processing costs more than the insert
        # itself). Both run inside the caller's transaction (and savepoint), so a unit that fails
        # later still leaves nothing. Times go through the column type's own bind processor so
        # they are stored exactly as SQLAlchemy would store them.
        connection = self.session.connection()
        dialect = connection.dialect
        to_db = LogEntry.__table__.c.time.type.dialect_impl(dialect).bind_processor(dialect)
        times: dict[datetime, Any] = {}
        rows = []
        for index, archive_id, event_type, time, event in self._entries:
            stored = times.get(time)
            if stored is None:
                stored = times[time] = to_db(time) if to_db else time
            rows.append((index, archive_id, event_type, stored, event))
        if dialect.driver == "psycopg" and len(rows) >= COPY_MIN_ROWS:
            _copy_log_rows(connection, rows, self._nodes)
        else:
            mark = _mark(dialect)
            connection.exec_driver_sql(_INSERT_ENTRIES.format(mark=mark), rows)
            connection.exec_driver_sql(
                _INSERT_NODES.format(table="log_nodes", mark=mark), self._nodes
            )
        if self._upper:  # one row per 128 leaves
            connection.exec_driver_sql(
                _INSERT_NODES.format(table="log_upper_nodes", mark=_mark(dialect)), self._upper
            )
        root = merkle.hash_from_subtrees(self.frontier) if self.frontier else merkle.EMPTY_ROOT
        values = {
            "size": self.size,
            "root": root,
            "frontier": b"".join(self.frontier),
            "updated_at": datetime.now(UTC),
        }
        head = self.session.get(LogHead, HEAD_ID)
        if head is None:
            self.session.add(LogHead(id=HEAD_ID, **values))
        else:
            for key, value in values.items():
                setattr(head, key, value)
        self.session.flush()
        self.session.info[WROTE_LOG_ROWS] = True
        self._entries.clear()
        self._nodes.clear()
        self._upper.clear()


_INSERT_ENTRIES = (
    "INSERT INTO log_entries (idx, archive_id, event_type, time, event) "
    "VALUES ({mark}, {mark}, {mark}, {mark}, {mark})"
)
_INSERT_NODES = "INSERT INTO {table} (id, hash) VALUES ({mark}, {mark})"

WROTE_LOG_ROWS = "archivechain.wrote_log_rows"
"""``Session.info`` flag set by ``LogWriter.flush``: that session may see uncommitted subtrees, so
``UpperLevels`` is never refreshed through it."""

COPY_MIN_ROWS = 16
"""From this many entries in one flush, PostgreSQL (through psycopg 3) gets ``COPY`` instead of
``executemany``."""

_COPY_ENTRIES = (
    "COPY log_entries (idx, archive_id, event_type, time, event) FROM STDIN (FORMAT BINARY)"
)
_COPY_ENTRY_TYPES = ("int8", "varchar", "varchar", "timestamptz", "bytea")
_COPY_NODES = "COPY log_nodes (id, hash) FROM STDIN (FORMAT BINARY)"
_COPY_NODE_TYPES = ("int8", "bytea")


def _copy_log_rows(
    connection: Connection,
    entries: Sequence[tuple[int, str, str, Any, bytes]],
    nodes: Sequence[tuple[int, bytes]],
) -> None:
    """Write entry and node rows with binary ``COPY … FROM STDIN`` (psycopg 3), in the current
    transaction: a few protocol messages instead of one INSERT per row. Driver errors are raised
    as SQLAlchemy's (e.g. ``IntegrityError``), as ``executemany`` would raise them."""
    import psycopg

    driver = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    statement = _COPY_ENTRIES
    try:
        with driver.cursor() as cursor:
            with cursor.copy(statement) as copy:
                copy.set_types(_COPY_ENTRY_TYPES)
                for entry in entries:
                    copy.write_row(entry)
            statement = _COPY_NODES
            with cursor.copy(statement) as copy:
                copy.set_types(_COPY_NODE_TYPES)
                for node in nodes:
                    copy.write_row(node)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def _split_hashes(blob: bytes) -> list[bytes]:
    if len(blob) % merkle.HASH_SIZE:
        raise LogError("stored frontier is corrupt (length not a multiple of 32)")
    return [blob[i : i + merkle.HASH_SIZE] for i in range(0, len(blob), merkle.HASH_SIZE)]


# --------------------------------------------------------------------------------------------
# Reading: heads and proofs from stored subtree hashes


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed-off view of the log: its size and RFC 6962 root."""

    size: int
    root: bytes


def current_size(session: Session) -> int:
    """The number of events in the log (0 when empty)."""
    size = session.execute(select(LogHead.size).where(LogHead.id == HEAD_ID)).scalar_one_or_none()
    return int(size or 0)


def current_head(session: Session) -> TreeHead:
    """The latest tree head, as recorded at the last append."""
    head = session.get(LogHead, HEAD_ID)
    if head is None:
        return TreeHead(0, merkle.EMPTY_ROOT)
    return TreeHead(head.size, head.root)


# --------------------------------------------------------------------------------------------
# The upper levels of the committed log, in memory

CACHE_HASHES = 1 << 18
"""At most this many upper-level hashes (8 MiB) are held per database: up to ~3.3 × 10^7 leaves that
is every level from ``UPPER_LEVEL``; beyond, the lowest level held rises with the log."""

REFRESH_LEAVES = 1 << UPPER_LEVEL
"""A proof for a tree this much larger than the copy's size first brings the copy up to date."""


class UpperLevels:
    """The hashes of a database's committed subtrees at level ``UPPER_LEVEL`` and above.

    There are about ``size / 128`` of them (2.4 MiB at 10^7 leaves), so a proof's upper nodes (16
    of its 24 at 10^7 leaves) cost no I/O. A completed subtree never changes: nothing here is ever
    invalidated. The copy is only read through sessions that have not written log rows (see
    ``LogWriter.flush``), which see committed rows only, so a rolled-back append never leaves a
    hash here; the newest subtrees, not held yet, are read from the database with the rest of a
    proof.

    Readers do not lock: ``refresh`` appends to a level's array before it raises ``size``, and a
    hash is returned only for a subtree that ends within ``size``.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = CACHE_HASHES if budget is None else budget
        self.size = 0
        """Committed leaves whose upper subtrees (from level ``lowest`` up) are all held."""
        self.lowest = UPPER_LEVEL
        self._levels: dict[int, bytearray] = {}
        self._lock = threading.Lock()

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of subtree ``(level, index)`` if held, else None."""
        hashes = self._levels.get(level)
        if hashes is None or (index + 1) << level > self.size:
            return None
        offset = index * merkle.HASH_SIZE
        return bytes(hashes[offset : offset + merkle.HASH_SIZE])

    @property
    def held(self) -> int:
        """How many hashes are held."""
        return sum(len(hashes) for hashes in list(self._levels.values())) // merkle.HASH_SIZE

    def refresh(self, session: Session) -> None:
        """Read the log size and every upper subtree completed since the last refresh, through
        ``session``, which must not have written log rows (so all it sees is committed)."""
        with self._lock:
            connection = session.connection()
            size = int(connection.exec_driver_sql(_HEAD_SIZE).scalar_one_or_none() or 0)
            if size <= self.size:  # nothing new (or an older snapshot than the last refresh)
                return
            lowest = self._lowest_level(size)
            wanted = {
                level: (self._count(level), size >> level)
                for level in range(lowest, size.bit_length())
            }
            bounds = [
                (node_id(level, have), node_id(level, want))
                for level, (have, want) in wanted.items()
                if want > have
            ]
            rows: Sequence[Any] = []
            if bounds:
                # One range scan per level (SQLite plans a full scan for an OR of more than a
                # few ranges).
                scan = _UPPER_RANGE.format(mark=_mark(connection.dialect))
                rows = connection.exec_driver_sql(
                    " UNION ALL ".join([scan] * len(bounds)) + " ORDER BY 1",
                    tuple(bound for pair in bounds for bound in pair),
                ).all()
            self._add(size, lowest, wanted, rows)

    def _count(self, level: int) -> int:
        hashes = self._levels.get(level)
        return 0 if hashes is None else len(hashes) // merkle.HASH_SIZE

    def _lowest_level(self, size: int) -> int:
        lowest = max(self.lowest, UPPER_LEVEL)
        while size >> (lowest - 1) > self.budget:  # levels >= lowest hold < size >> (lowest - 1)
            lowest += 1
        return lowest

    def _add(
        self, size: int, lowest: int, wanted: dict[int, tuple[int, int]], rows: Sequence[Any]
    ) -> None:
        by_level: dict[int, list[bytes]] = {}
        for row_id, digest in rows:
            by_level.setdefault(row_id >> NODE_INDEX_BITS, []).append(digest)
        for level, (have, want) in wanted.items():
            if len(by_level.get(level, ())) != want - have:
                return  # a stored subtree is missing: leave it to the query (which reports it)
        for level in [level for level in self._levels if level < lowest]:
            del self._levels[level]
        self.lowest = lowest
        for level, digests in by_level.items():
            self._levels.setdefault(level, bytearray()).extend(b"".join(digests))
        self.size = size


_upper_levels: weakref.WeakKeyDictionary[Engine, UpperLevels] = weakref.WeakKeyDictionary()
_upper_levels_lock = threading.Lock()


def upper_levels(engine: Engine) -> UpperLevels | None:
    """The in-memory upper levels of the log behind ``engine`` (None for an in-memory SQLite
    database, which is one database per connection)."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return None
    with _upper_levels_lock:
        cache = _upper_levels.get(engine)
        if cache is None:
            cache = _upper_levels[engine] = UpperLevels()
        return cache


# --------------------------------------------------------------------------------------------
# Proofs: upper subtrees from memory, the rest in one query


_HEAD_SIZE = "SELECT size FROM log_head WHERE id = 1"
_UPPER_RANGE = "SELECT id, hash FROM log_upper_nodes WHERE id >= {mark} AND id < {mark}"
_NODES_IN = "SELECT id, hash FROM {table} WHERE id IN ({marks})"
_NODES_ANY = "SELECT id, hash FROM {table} WHERE id = ANY(%s::bigint[])"


def _mark(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


def _select_nodes(session: Session, ids: list[int]) -> Sequence[Any]:
    """``(id, hash)`` of the stored subtrees among ``ids``, from both tables, in one statement."""
    by_table = [
        (table, keys)
        for table, keys in (
            ("log_nodes", [key for key in ids if key < UPPER_KEYS]),
            ("log_upper_nodes", [key for key in ids if key >= UPPER_KEYS]),
        )
        if keys
    ]
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # fixed statement texts: prepared after 5 runs
        sql = " UNION ALL ".join(_NODES_ANY.format(table=table) for table, _ in by_table)
        return connection.exec_driver_sql(sql, tuple(keys for _, keys in by_table)).all()
    mark = _mark(connection.dialect)
    sql = " UNION ALL ".join(
        _NODES_IN.format(table=table, marks=", ".join([mark] * len(keys)))
        for table, keys in by_table
    )
    return connection.exec_driver_sql(sql, tuple(key for _, keys in by_table for key in keys)).all()


def _fetch_nodes(
    session: Session, wanted: Iterable[tuple[int, int]], size: int
) -> dict[tuple[int, int], bytes]:
    """The hashes of ``wanted`` subtrees of the tree of ``size`` (>= 1) leaves: upper ones from
    ``UpperLevels``, the rest in one query, which also reads leaf ``size - 1``: it exists exactly
    when the log (as this session sees it) has ``size`` leaves, so no second query checks that."""
    bind = session.get_bind()
    upper = upper_levels(bind.engine if isinstance(bind, Connection) else bind)
    if (
        upper is not None
        and size - upper.size >= REFRESH_LEAVES
        and not session.info.get(WROTE_LOG_ROWS)  # else it may see uncommitted subtrees
    ):
        upper.refresh(session)
    found: dict[tuple[int, int], bytes] = {}
    keys: dict[int, tuple[int, int]] = {}
    for level, index in wanted:
        digest = upper.get(level, index) if upper is not None and level >= UPPER_LEVEL else None
        if digest is None:
            keys[node_id(level, index)] = (level, index)
        else:
            found[level, index] = digest
    last_leaf = node_id(0, size - 1)
    keys.setdefault(last_leaf, (0, size - 1))
    rows = _select_nodes(session, list(keys))
    for row_id, digest in rows:
        found[keys[row_id]] = bytes(digest)
    if len(rows) < len(keys):
        if (0, size - 1) not in found:
            _check_size(session, size)  # raises when the log is shorter than ``size``
        missing = set(keys.values()) - set(found)
        raise LogError(
            f"log is missing {len(missing)} stored subtree hash(es), e.g. {min(missing)}"
        )
    return found


def _range_hashes(session: Session, ranges: Sequence[tuple[int, int]], size: int) -> list[bytes]:
    decomposed = [merkle.perfect_subtrees(lo, hi) for lo, hi in ranges]
    nodes = _fetch_nodes(session, {key for subtrees in decomposed for key in subtrees}, size)
    return [merkle.hash_from_subtrees([nodes[key] for key in subtrees]) for subtrees in decomposed]


def _check_size(session: Session, size: int) -> None:
    have = current_size(session)
    if size < 0 or size > have:
        raise LogError(f"tree size {size} is outside the log (current size {have})")


def tree_head_at(session: Session, size: int) -> TreeHead:
    """The root of the first ``size`` leaves, from stored subtree hashes (O(log n) reads)."""
    if size <= 0:
        _check_size(session, size)
        return TreeHead(0, merkle.EMPTY_ROOT)
    return TreeHead(size, _range_hashes(session, [(0, size)], size)[0])


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of ``size`` leaves."""
    if size < 0:
        _check_size(session, size)
    if not 0 <= index < size:
        raise LogError(f"leaf index {index} is outside a tree of size {size}")
    return _range_hashes(session, merkle.inclusion_ranges(index, size), size)


def consistency_proof(session: Session, size1: int, size2: int) -> list[bytes]:
    """Proof that the tree of ``size1`` leaves is a prefix of the tree of ``size2`` leaves."""
    if not 0 < size1 <= size2:
        if size2 < 0:
            _check_size(session, size2)
        raise LogError(f"no consistency proof from size {size1} to size {size2}")
    return _range_hashes(session, merkle.consistency_ranges(size1, size2), size2)


def latest_confirmed_checkpoint(session: Session) -> Checkpoint | None:
    """The largest checkpoint confirmed on chain (None before the first)."""
    return session.execute(
        select(Checkpoint)
        .where(Checkpoint.state == CheckpointState.CONFIRMED)
        .order_by(Checkpoint.size.desc())
        .limit(1)
    ).scalar_one_or_none()


def anchored_size(session: Session) -> int:
    """How many leaves the latest confirmed checkpoint covers (0 before the first)."""
    latest = latest_confirmed_checkpoint(session)
    return latest.size if latest is not None else 0


def entry_at(session: Session, index: int) -> LogEntry:
    """The stored event at ``index``."""
    entry = session.get(LogEntry, index)
    if entry is None:
        raise LogError(f"no log entry at index {index}")
    return entry


def entries_for_archive(session: Session, archive_id: str) -> list[LogEntry]:
    """Every event of one archive in this log, in log order."""
    return list(
        session.execute(
            select(LogEntry).where(LogEntry.archive_id == archive_id).order_by(LogEntry.index)
        ).scalars()
    )
