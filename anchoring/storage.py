"""The hospital's append-only event log in the node database (RFC 6962 Merkle log).

Tables: ``log_entries`` (one row per event: canonical bytes and a few indexed columns), ``log_nodes``
(the hash of every completed perfect subtree, keyed by ``level << 48 | index``; leaves are level 0),
``log_head`` (one row: size, root and the right frontier) and, for anchoring, ``checkpoints``,
``chain_outbox`` and ``chain_outbox_attempts``.

Appending costs O(log n) hashing and on average two node rows per leaf; a tree head, an inclusion
proof or a consistency proof for any size is served from O(log n) stored node hashes fetched in one
query. The log is never rebuilt and never held in memory.

Nothing here commits: the caller owns the transaction (one service call is one transaction).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

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
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from anchoring import merkle
from anchoring.errors import LogError

NODE_INDEX_BITS = 48
"""A stored node's id is ``level << NODE_INDEX_BITS | index``: 2^48 leaves per log is plenty."""

HEAD_ID = 1


def node_id(level: int, index: int) -> int:
    """The primary key of the perfect subtree ``(level, index)`` in ``log_nodes``."""
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
    """The hash of one completed perfect subtree (level 0 = a leaf hash)."""

    __tablename__ = "log_nodes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
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
        self._nodes.extend((node_id(lvl, idx), h) for lvl, idx, h in completed)
        return Appended(index=index, leaf_hash=leaf)

    @property
    def pending(self) -> int:
        """Appends not yet flushed."""
        return len(self._entries)

    def mark(self) -> _Mark:
        """Remember the current position (see ``reset``)."""
        return _Mark(self.size, list(self.frontier), len(self._entries), len(self._nodes))

    def reset(self, mark: _Mark) -> None:
        """Forget every append made after ``mark`` (they were never written)."""
        self.size, self.frontier = mark.size, list(mark.frontier)
        del self._entries[mark.entries :]
        del self._nodes[mark.nodes :]

    def flush(self) -> None:
        """Write buffered entries, completed nodes and the new head (no commit)."""
        if not self._entries:
            return
        # The hot path of ingest: plain DB-API executemany (SQLAlchemy's per-row parameter
        # processing costs more than the insert itself). Times go through the column type's own
        # bind processor so they are stored exactly as SQLAlchemy would store them.
        connection = self.session.connection()
        dialect = connection.dialect
        positional = dialect.paramstyle == "qmark"
        to_db = LogEntry.__table__.c.time.type.dialect_impl(dialect).bind_processor(dialect)
        times: dict[datetime, Any] = {}
        rows = []
        for index, archive_id, event_type, time, event in self._entries:
            stored = times.get(time)
            if stored is None:
                stored = times[time] = to_db(time) if to_db else time
            rows.append((index, archive_id, event_type, stored, event))
        connection.exec_driver_sql(_INSERT_ENTRIES_QMARK if positional else _INSERT_ENTRIES, rows)
        connection.exec_driver_sql(
            _INSERT_NODES_QMARK if positional else _INSERT_NODES, self._nodes
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
        self._entries.clear()
        self._nodes.clear()


_INSERT_ENTRIES_QMARK = (
    "INSERT INTO log_entries (idx, archive_id, event_type, time, event) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_ENTRIES = (
    "INSERT INTO log_entries (idx, archive_id, event_type, time, event) VALUES (%s, %s, %s, %s, %s)"
)
_INSERT_NODES_QMARK = "INSERT INTO log_nodes (id, hash) VALUES (?, ?)"
_INSERT_NODES = "INSERT INTO log_nodes (id, hash) VALUES (%s, %s)"


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


def _fetch_nodes(
    session: Session, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    keys = {node_id(level, index): (level, index) for level, index in wanted}
    if not keys:
        return {}
    rows = session.execute(select(LogNode.id, LogNode.hash).where(LogNode.id.in_(keys))).all()
    found = {keys[row_id]: digest for row_id, digest in rows}
    missing = set(keys.values()) - set(found)
    if missing:
        raise LogError(
            f"log is missing {len(missing)} stored subtree hash(es), e.g. {min(missing)}"
        )
    return found


def _range_hashes(session: Session, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    decomposed = [merkle.perfect_subtrees(lo, hi) for lo, hi in ranges]
    nodes = _fetch_nodes(session, (key for subtrees in decomposed for key in subtrees))
    return [merkle.hash_from_subtrees([nodes[key] for key in subtrees]) for subtrees in decomposed]


def _check_size(session: Session, size: int) -> None:
    have = current_size(session)
    if size < 0 or size > have:
        raise LogError(f"tree size {size} is outside the log (current size {have})")


def tree_head_at(session: Session, size: int) -> TreeHead:
    """The root of the first ``size`` leaves, from stored subtree hashes (O(log n) reads)."""
    _check_size(session, size)
    if size == 0:
        return TreeHead(0, merkle.EMPTY_ROOT)
    return TreeHead(size, _range_hashes(session, [(0, size)])[0])


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of ``size`` leaves."""
    _check_size(session, size)
    if not 0 <= index < size:
        raise LogError(f"leaf index {index} is outside a tree of size {size}")
    return _range_hashes(session, merkle.inclusion_ranges(index, size))


def consistency_proof(session: Session, size1: int, size2: int) -> list[bytes]:
    """Proof that the tree of ``size1`` leaves is a prefix of the tree of ``size2`` leaves."""
    _check_size(session, size2)
    if not 0 < size1 <= size2:
        raise LogError(f"no consistency proof from size {size1} to size {size2}")
    return _range_hashes(session, merkle.consistency_ranges(size1, size2))


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
