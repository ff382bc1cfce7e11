"""The ledger: the archives this node holds and their events, through one public interface.

Every service that changes an archive's lifecycle goes through it: it finds the archive (in the
caller's scope, held by this node, locked for the unit of work), knows its lifecycle state (cached by
head hash, else replayed from the log and the events received with a transfer), and records the
next event — checked against ``anchoring.lifecycle`` before it is appended to the log, with the
catalogue row brought to the new state in the same unit. Nothing else writes archive events.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from anchoring import lifecycle, merkle, storage
from anchoring.events import Event, canonical_bytes, parse_event
from anchoring.lifecycle import ArchiveState
from node.db import UnitOfWork
from node.errors import ConflictError, NotFoundError
from node.models import NOT_HELD, Archive, CatalogueState, ForeignEntry
from node.principal import Principal

STATE_CACHE_SIZE = 10_000


def normalise_id(archive_id: str) -> str:
    """An archive id as stored: ULIDs are upper case."""
    return archive_id.strip().upper()


class Settled(NamedTuple):
    """One archive row for ``Ledger.settle_many``: its new head (leaf hash of its last event),
    lifecycle state and event count (the new total)."""

    archive_id: str
    leaf: bytes
    state: ArchiveState
    event_count: int


_SETTLE_UNNEST = (
    "UPDATE archives AS a SET last_event_hash = v.last_event_hash, event_count = v.event_count, "
    "state = v.state, on_hold = v.on_hold, hold_by_regulator = v.hold_by_regulator, "
    "updated_at = %s "
    "FROM unnest(%s::varchar[], %s::bytea[], %s::integer[], %s::varchar[], %s::boolean[], "
    "%s::boolean[]) AS v(id, last_event_hash, event_count, state, on_hold, hold_by_regulator) "
    "WHERE a.id = v.id"
)
_SETTLE_EACH = (
    "UPDATE archives SET last_event_hash = {mark}, event_count = {mark}, state = {mark}, "
    "on_hold = {mark}, hold_by_regulator = {mark}, updated_at = {mark} WHERE id = {mark}"
)


log = logging.getLogger(__name__)

DEFAULT_CLOCK_SKEW_TOLERANCE: Final = timedelta(minutes=5)
"""How far this node's clock may be behind an event's predecessor for the event to take the
predecessor's time (``event_time``); ``clock_skew_tolerance_seconds`` in the settings."""


def event_time(now: datetime, not_before: datetime | None, tolerance: timedelta) -> datetime:
    """The time of an event logged at ``now`` after one dated ``not_before``: ``now``, or
    ``not_before`` when this node's clock is behind it by at most ``tolerance`` (another hospital's
    clock ahead of ours, as after a transfer, or ours stepped back). An event is never dated before
    its predecessor, which verification refuses (``time_order``). Further behind, ``now``: the
    lifecycle then refuses the event, since a clock that far off must be fixed, not papered over."""
    if not_before is None or now >= not_before or not_before - now > tolerance:
        return now
    log.warning(
        "this node's clock is %.3f s behind the previous event's time; the event takes that time "
        "(check NTP)",
        (not_before - now).total_seconds(),
    )
    return not_before


class Ledger:
    """Archives held by ``hospital`` and the events of their lifecycle."""

    def __init__(
        self, hospital: str, *, clock_skew_tolerance: timedelta = DEFAULT_CLOCK_SKEW_TOLERANCE
    ) -> None:
        self.hospital = hospital
        self.clock_skew_tolerance = clock_skew_tolerance
        self._states: OrderedDict[str, tuple[bytes, ArchiveState]] = OrderedDict()
        self._lock = threading.Lock()

    # -- finding archives ----------------------------------------------------------------------

    def find(self, session: Session, archive_id: str) -> Archive:
        """The archive's catalogue row, whoever asks (404 when unknown): for callers that judge
        access themselves (``node.services.permissions.AccessGate``)."""
        archive = session.get(Archive, normalise_id(archive_id))
        if archive is None:
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        return archive

    def visible(self, session: Session, principal: Principal, archive_id: str) -> Archive:
        """The archive's catalogue row if it exists and is in the caller's scope (404 otherwise,
        as if it did not exist), whether or not this node still holds it."""
        archive = session.get(Archive, normalise_id(archive_id))
        if archive is None:
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        principal.require_visible(archive_id, archive.department)
        return archive

    def held(self, session: Session, principal: Principal | None, archive_id: str) -> Archive:
        """The archive's row, locked for this unit of work, in the caller's scope (``None``: the
        node itself acts) and held by this node (409 ``not_custodian`` otherwise)."""
        archive = session.execute(
            select(Archive).where(Archive.id == normalise_id(archive_id)).with_for_update()
        ).scalar_one_or_none()
        if archive is None:
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        if principal is not None:
            principal.require_visible(archive_id, archive.department)
        if not self.holds(archive):
            raise ConflictError(
                f"this hospital is not the custodian of archive {archive.id} "
                f"(custodian {archive.custodian})",
                code="not_custodian",
            )
        return archive

    def holds(self, archive: Archive) -> bool:
        """Whether this node is the archive's custodian (not transferred away, not arriving).

        A DESTROYED archive is still the custodian's: its events (the evidence) stay here and the
        lifecycle still takes a few events after DESTROY (a metadata read, a tag scan, a dropped
        replica), so ``held`` finds it. What acts on a *live* archive — a regulator's hold, the
        chain watcher mirroring one — asks ``holds_live``."""
        return archive.custodian == self.hospital and archive.state not in NOT_HELD

    def holds_live(self, archive: Archive) -> bool:
        """``holds``, and the archive is not DESTROYED: an archive this node still keeps (content,
        key) and on which a hold can be placed."""
        return self.holds(archive) and archive.state != CatalogueState.DESTROYED

    # -- lifecycle state -----------------------------------------------------------------------

    def state(self, session: Session, archive: Archive) -> ArchiveState:
        """The archive's lifecycle state: cached by head hash, else replayed from the events
        received from former custodians followed by this node's own."""
        with self._lock:
            cached = self._states.get(archive.id)
        if cached is not None and cached[0] == archive.last_event_hash:
            return cached[1]
        foreign = session.execute(
            select(ForeignEntry.event)
            .where(ForeignEntry.archive_id == archive.id)
            .order_by(ForeignEntry.position)
        ).scalars()
        own = (entry.event for entry in storage.entries_for_archive(session, archive.id))
        state = lifecycle.replay(parse_event(raw) for raw in (*foreign, *own))
        if bytes.fromhex(state.head) != archive.last_event_hash:
            raise ConflictError(
                f"archive {archive.id}: the log and the catalogue disagree on the last event",
                code="log_inconsistent",
            )
        self._remember(archive.id, archive.last_event_hash, state)
        return state

    def states(self, session: Session, archives: Sequence[Archive]) -> dict[str, ArchiveState]:
        """``state`` of many archives: those not cached (or cached at another head) replayed from
        two queries for the whole set instead of two per archive (bulk paths: destruction)."""
        found: dict[str, ArchiveState] = {}
        missing: list[Archive] = []
        with self._lock:
            for archive in archives:
                cached = self._states.get(archive.id)
                if cached is not None and cached[0] == archive.last_event_hash:
                    found[archive.id] = cached[1]
                else:
                    missing.append(archive)
        if not missing:
            return found
        ids = [archive.id for archive in missing]
        raws: dict[str, list[bytes]] = {archive_id: [] for archive_id in ids}
        for archive_id, raw in session.execute(
            select(ForeignEntry.archive_id, ForeignEntry.event)
            .where(ForeignEntry.archive_id.in_(ids))
            .order_by(ForeignEntry.archive_id, ForeignEntry.position)
        ).tuples():
            raws[archive_id].append(raw)
        for archive_id, raw in session.execute(
            select(storage.LogEntry.archive_id, storage.LogEntry.event)
            .where(storage.LogEntry.archive_id.in_(ids))
            .order_by(storage.LogEntry.archive_id, storage.LogEntry.index)
        ).tuples():
            raws[archive_id].append(raw)
        for archive in missing:
            state = lifecycle.replay(parse_event(raw) for raw in raws[archive.id])
            if bytes.fromhex(state.head) != archive.last_event_hash:
                raise ConflictError(
                    f"archive {archive.id}: the log and the catalogue disagree on the last event",
                    code="log_inconsistent",
                )
            self._remember(archive.id, archive.last_event_hash, state)
            found[archive.id] = state
        return found

    # -- recording events ----------------------------------------------------------------------

    def record(
        self,
        uow: UnitOfWork,
        archive: Archive,
        state: ArchiveState | None,
        event_cls: type[Event],
        actor: str,
        data: Any,
    ) -> ArchiveState:
        """Build the archive's next event (this log's next index, now or the previous event's
        time (``event_time``), ``prev`` = the head), check it against the lifecycle, append it
        and bring the catalogue row to the new state."""
        last = state.last_time if state is not None else None
        event = event_cls(
            hospital=self.hospital,
            log_index=uow.log.size,
            archive_id=archive.id,
            actor=actor,
            time=event_time(uow.now, last, self.clock_skew_tolerance),
            prev=state.head if state is not None else None,
            data=data,
        )
        return self.append(uow, archive, state, event)

    def append(
        self, uow: UnitOfWork, archive: Archive, state: ArchiveState | None, event: Event
    ) -> ArchiveState:
        """Check ``event`` (built for the log's next index) against the lifecycle, append it and
        update the row and the state cache."""
        leaf, new_state = self.log_event(uow, archive.id, state, event)
        self.settle(uow, archive, leaf, new_state, 1)
        return new_state

    def log_event(
        self,
        uow: UnitOfWork,
        archive_id: str,
        state: ArchiveState | None,
        event: Event,
        raw: bytes | None = None,
    ) -> tuple[bytes, ArchiveState]:
        """Check ``event`` against the lifecycle and append it to the log; its leaf hash and the
        archive's new state. The row is not touched (``settle`` does it, once per batch).
        ``raw`` is the event's canonical bytes when the caller already has them."""
        raw = canonical_bytes(event) if raw is None else raw
        leaf = merkle.leaf_hash(raw)
        new_state = lifecycle.apply(state, event, leaf_hash=leaf)  # refuses illegal transitions
        uow.log.append(raw, archive_id=archive_id, event_type=event.type, time=uow.now, leaf=leaf)
        return leaf, new_state

    def settle(
        self, uow: UnitOfWork, archive: Archive, leaf: bytes, state: ArchiveState, events: int
    ) -> None:
        """Bring the archive row and the state cache to ``state`` after ``events`` new events,
        the last of which has leaf hash ``leaf``."""
        archive.last_event_hash = leaf
        archive.event_count += events
        archive.state = state.status.value
        archive.on_hold = state.on_hold  # the catalogue mirrors the lifecycle state
        archive.hold_by_regulator = state.on_hold and state.hold_by_regulator
        archive.updated_at = uow.now
        self._remember(archive.id, leaf, state)

    def settle_many(self, uow: UnitOfWork, settled: Sequence[Settled]) -> None:
        """``settle`` for many archive rows at once, without loading them as ORM objects (bulk
        paths: fixity audits): one ``UPDATE … FROM unnest(…)`` on PostgreSQL, one executemany
        elsewhere. The rows must be locked by the caller's unit of work (``FOR UPDATE``); copies
        of them already in the session are brought up to date, not expired."""
        if not settled:
            return
        session = uow.session
        connection = session.connection()
        dialect = connection.dialect
        if dialect.name == "postgresql":
            connection.exec_driver_sql(
                _SETTLE_UNNEST,
                (
                    uow.now,
                    [s.archive_id for s in settled],
                    [s.leaf for s in settled],
                    [s.event_count for s in settled],
                    [s.state.status.value for s in settled],
                    [s.state.on_hold for s in settled],
                    [s.state.on_hold and s.state.hold_by_regulator for s in settled],
                ),
            )
        else:
            column = Archive.__table__.c.updated_at
            to_db = column.type.dialect_impl(dialect).bind_processor(dialect)
            now = to_db(uow.now) if to_db else uow.now
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            connection.exec_driver_sql(
                _SETTLE_EACH.format(mark=mark),
                [
                    (
                        s.leaf,
                        s.event_count,
                        s.state.status.value,
                        s.state.on_hold,
                        s.state.on_hold and s.state.hold_by_regulator,
                        now,
                        s.archive_id,
                    )
                    for s in settled
                ],
            )
        by_id = {s.archive_id: s for s in settled}
        for key in list(session.identity_map.keys()):  # keep the session's copies true to the rows
            s = by_id.get(key[1][0]) if key[0] is Archive else None
            loaded = session.identity_map.get(key) if s is not None else None
            if s is not None and isinstance(loaded, Archive):
                for name, value in (
                    ("last_event_hash", s.leaf),
                    ("event_count", s.event_count),
                    ("state", s.state.status.value),
                    ("on_hold", s.state.on_hold),
                    ("hold_by_regulator", s.state.on_hold and s.state.hold_by_regulator),
                    ("updated_at", uow.now),
                ):
                    set_committed_value(loaded, name, value)
        for s in settled:
            self._remember(s.archive_id, s.leaf, s.state)

    def cached(self, archive_id: str, head: bytes) -> ArchiveState | None:
        """The cached lifecycle state of the archive whose last event has leaf hash ``head``
        (None when not cached at that head: ``state`` or ``states`` replays it)."""
        with self._lock:
            cached = self._states.get(archive_id)
        return cached[1] if cached is not None and cached[0] == head else None

    def append_side_event(self, uow: UnitOfWork, event: Event) -> None:
        """Append an event that moves no archive's main chain (a grantee's read under a share
        grant, in the grantee's log): no catalogue row here to settle."""
        uow.log.append(
            canonical_bytes(event),
            archive_id=event.archive_id,
            event_type=event.type,
            time=uow.now,
        )

    def remember_state(self, archive_id: str, head: bytes, state: ArchiveState) -> None:
        """Cache the state of an archive whose row the caller writes itself (bulk creation by
        Core inserts: ``ArchiveService._record_creates``), as ``settle`` does for an ORM row."""
        self._remember(archive_id, head, state)

    def _remember(self, archive_id: str, head: bytes, state: ArchiveState) -> None:
        with self._lock:
            self._states[archive_id] = (head, state)
            self._states.move_to_end(archive_id)
            while len(self._states) > STATE_CACHE_SIZE:
                self._states.popitem(last=False)
