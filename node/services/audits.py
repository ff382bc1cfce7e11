"""Fixity audits: every stored blob re-read through the blob store and its ciphertext SHA-256
compared with the hash its CREATE or AMEND event recorded (the log, anchored on chain, is the
reference; the catalogue row is compared too).

Reading is bounded by ``fixity_max_bytes_per_second`` (0: unthrottled) and done outside any
transaction, by ``fixity_read_workers`` threads (``hashlib`` and file reads release the GIL), one
batch ahead: while a batch's unit of work is committed, the next batch's blobs are being read.
Unthrottled audits of a plain local store hand the files to ``fixity_read_processes`` worker
processes instead (``node.blobhash``; the threads only wait for them), so the reading does not
compete for the GIL with the thread that logs the events.
Each batch of checked versions is one unit of work: one FIXITY_CHECK event per
checked version (``ok`` false, with the observed hash, for a mismatch; the all-zero hash for a
blob that is missing or unreadable), the ``fixity_status`` summary rows, and, for the scheduled
audit, the persistent cursor, so a restarted node continues after the last committed batch.
Failures become alerts once the batch is committed (``fixity_mismatch``, ``blob_missing``,
``catalogue_mismatch``, ``log_inconsistent``).

Versions audited: those of archives this node holds in CREATED, ARCHIVED or DISPOSITION_REVIEW
whose blob was not deleted (the lifecycle allows FIXITY_CHECK in those states only; an archive in
transit is audited once its transfer ends).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, lazyload, load_only

from anchoring.errors import AnchoringError
from anchoring.events import FixityCheckData, FixityCheckEvent, RecordClass
from anchoring.lifecycle import ArchiveState
from node.alerts import AlertNotice, AlertSink, Severity
from node.blobhash import MISSING, FileDigest, FileHasher
from node.blobstore import BlobNotFoundError, BlobStore
from node.blobstore.local import LocalBlobStore
from node.config import NodeSettings
from node.db import Clock, Database, UnitOfWork, UnitRunner, utc_now
from node.errors import InputError, NodeError
from node.eventsplice import SplicedEvent
from node.ledger import Ledger, Settled, normalise_id
from node.models import Archive, ArchiveVersion, AuditCursor, CatalogueState, FixityStatus
from node.principal import Action, Principal

log = logging.getLogger(__name__)

_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
MISSING_SHA256 = "0" * 64
"""The hash a failing FIXITY_CHECK reports when no bytes could be read."""
MAX_AUDIT_ARCHIVES = 1000
READ_GROUP = 16
"""At most this many blobs (together at most ``read_size`` bytes) are read by one reader task."""
PROCESS_GROUP = 64
PROCESS_GROUP_BYTES = 64 << 20
"""The limits of a task for the hashing processes (instead of ``READ_GROUP`` and ``read_size``):
each task costs the node's process about 0.2 ms of CPU, so blobs go several to a task."""
FIXITY_CURSOR = "fixity"
# What the audit reads of an archive row (not its metadata or search text: a batch loads 100).
_ARCHIVE_COLUMNS = load_only(
    Archive.id,
    Archive.custodian,
    Archive.state,
    Archive.last_event_hash,
    Archive.event_count,
    Archive.on_hold,
    Archive.hold_by_regulator,
    Archive.updated_at,
)
_SPLICED = ("log_index", "archive_id", "prev", "data.version", "data.ciphertext_sha256", "data.ok")
AUDITABLE_STATES = (
    CatalogueState.CREATED.value,
    CatalogueState.ARCHIVED.value,
    CatalogueState.DISPOSITION_REVIEW.value,
)


class FixityProblem(StrEnum):
    """Why a fixity check failed (the ``problem`` of ``fixity_status`` and of the alert)."""

    HASH_MISMATCH = "hash_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    BLOB_MISSING = "blob_missing"
    BLOB_UNREADABLE = "blob_unreadable"


class ScopeKind(StrEnum):
    """What an on-demand audit covers."""

    ALL = "all"
    ARCHIVES = "archives"
    CLASS = "class"


@dataclass(frozen=True)
class AuditScope:
    """All held archives, some archive ids, or one record class."""

    kind: ScopeKind = ScopeKind.ALL
    archive_ids: tuple[str, ...] = ()
    record_class: RecordClass | None = None

    def __post_init__(self) -> None:
        if self.kind is ScopeKind.ARCHIVES and not 1 <= len(self.archive_ids) <= (
            MAX_AUDIT_ARCHIVES
        ):
            raise InputError(
                f"an archive scope names 1 to {MAX_AUDIT_ARCHIVES} archives", code="invalid_scope"
            )
        bad = [a for a in self.archive_ids if not _ULID.fullmatch(normalise_id(a))]
        if bad:
            raise InputError(f"not an archive id: {bad[0][:40]!r}", code="invalid_scope")
        if self.kind is not ScopeKind.ARCHIVES and self.archive_ids:
            raise InputError("archive_ids belong to the scope 'archives'", code="invalid_scope")
        if (self.kind is ScopeKind.CLASS) != (self.record_class is not None):
            raise InputError(
                "record_class is required by, and only by, the scope 'class'", code="invalid_scope"
            )


@dataclass(frozen=True, slots=True)
class FixityFailure:
    """One version that failed its check."""

    archive_id: str
    version: int
    problem: str


@dataclass
class FixityReport:
    """What an audit (or one scheduled tick) did."""

    checked: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    failures: list[FixityFailure] = field(default_factory=list)
    cycle_complete: bool = False
    replicas_verified: int = 0  # replicas of the passed versions that answered their challenge
    replicas_failed: int = 0  # … that did not (REPLICA failed, alert ``replica_failed``)
    replicas_unavailable: int = 0  # … whose holder could not answer now (no event, no alert)

    def add(self, other: FixityReport) -> None:
        self.checked += other.checked
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.bytes_read += other.bytes_read
        self.failures.extend(other.failures)
        self.replicas_verified += other.replicas_verified
        self.replicas_failed += other.replicas_failed
        self.replicas_unavailable += other.replicas_unavailable


ReplicaCheck = Callable[[list[tuple[str, int]]], tuple[int, int, int]]
"""Challenges the replicas of ``(archive id, version)`` pairs at their peers; (verified, failed,
unavailable)."""


@dataclass(frozen=True, slots=True)
class _Target:
    version_id: int
    archive_id: str
    version: int
    cid: str
    row_sha256: str
    stored_size: int
    head: bytes  # the archive row's last event hash when the batch was listed


@dataclass(frozen=True, slots=True)
class _Read:
    """What reading one blob gave: its SHA-256 and size, or why there are none."""

    sha256: str
    size: int | None
    problem: FixityProblem | None  # BLOB_MISSING or BLOB_UNREADABLE, else None


@dataclass(frozen=True, slots=True)
class _Pending:
    """One version of a batch being read: what the log recorded for it, and where its read's
    result will be (small blobs are read several to a task: ``slot`` in its list)."""

    target: _Target
    expected: str
    future: Future[list[_Read]]
    slot: int

    def result(self) -> _Read:
        return self.future.result()[self.slot]


@dataclass
class _Prepared:
    """One batch whose blobs are being read: what the log recorded for each, the reads in
    flight, the alerts found before reading, and the cursor position its commit moves to."""

    reads: list[_Pending]
    notices: list[AlertNotice]
    skipped: int
    position: int | None


@dataclass(frozen=True, slots=True)
class _Observed:
    target: _Target
    expected: str  # the hash the log recorded for this version
    sha256: str
    size: int | None
    problem: FixityProblem | None


class Throttle:
    """Keeps reading at or below ``rate`` bytes per second on average (0: no limit)."""

    def __init__(self, rate: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.sleep = sleep
        self.started = time.monotonic()
        self.consumed = 0
        self._lock = threading.Lock()

    def consume(self, amount: int) -> None:
        """Count ``amount`` bytes read (by any reader thread) and sleep while ahead of the rate."""
        if self.rate <= 0:
            return
        with self._lock:
            self.consumed += amount
            ahead = self.consumed / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.sleep(ahead)


class FixityAuditService:
    """Scheduled and on-demand fixity audits of the blobs this node holds."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        blobs: BlobStore,
        alerts: AlertSink,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.ledger = ledger
        self.blobs = blobs
        self.alerts = alerts
        self.clock = clock
        self.read_size = 1 << 20
        self.on_failures: Callable[[list[FixityFailure]], None] | None = None
        """Called with each batch's failures after they are logged (the runtime repairs them
        from replicas, ``node.services.replicas``)."""
        self.check_replicas: ReplicaCheck | None = None
        """Called with each batch's passed versions after they are logged: the runtime
        challenges their replicas through the peer API (``ReplicaService.challenge_versions``),
        so an audit covers the copies at peer hospitals too."""
        self._hasher = (
            FileHasher(settings.fixity_read_processes)
            if settings.fixity_read_processes and isinstance(blobs, LocalBlobStore)
            else None
        )

    def close(self) -> None:
        """Stop the hashing processes, if any were started (the runtime's ``close``)."""
        if self._hasher is not None:
            self._hasher.close()

    # -- on demand -----------------------------------------------------------------------------

    def audit(self, principal: Principal | None, scope: AuditScope) -> FixityReport:
        """Check every auditable version in ``scope`` now (``principal`` None: the node's own
        command line). The cursor of the scheduled audit is not moved."""
        if principal is not None:
            principal.require(Action.RUN_AUDITS)
        actor = principal.actor if principal is not None else self.ledger.hospital
        begun = time.monotonic()

        def batches() -> Iterator[tuple[list[_Target], int | None]]:
            after = 0
            while batch := self._targets(scope, after, self.settings.fixity_batch_size):
                yield batch, None
                after = batch[-1].version_id

        report = self._run(batches(), actor, None)
        report.cycle_complete = True
        report.seconds = time.monotonic() - begun
        return report

    # -- scheduled -----------------------------------------------------------------------------

    def tick(self) -> FixityReport | None:
        """One scheduled step: check up to ``fixity_versions_per_tick`` versions after the cursor.
        At the end of the list the cycle is complete; the next one starts ``fixity_interval``
        seconds after the previous one started. None when nothing was due."""
        begun = time.monotonic()
        now = self.clock()
        with self.db.session() as session:
            cursor = session.get(AuditCursor, FIXITY_CURSOR)
            position = cursor.position if cursor is not None else 0
            started = cursor.cycle_started_at if cursor is not None else None
        interval = timedelta(seconds=self.settings.fixity_interval)
        if position == 0 and started is not None and now - started < interval:
            return None  # the last cycle is complete and the next is not due
        cycle_started = started if position and started is not None else now
        complete = False

        def batches() -> Iterator[tuple[list[_Target], int | None]]:
            nonlocal complete
            after, budget = position, self.settings.fixity_versions_per_tick
            while budget > 0:
                size = min(budget, self.settings.fixity_batch_size)
                batch = self._targets(AuditScope(), after, size)
                if not batch:
                    complete = True
                    return
                after = batch[-1].version_id
                yield batch, after  # its unit of work moves the cursor to ``after``
                budget -= len(batch)

        report = self._run(batches(), self.ledger.hospital, cycle_started)
        if complete:
            self._save_cursor(0, cycle_started, completed=True)
            report.cycle_complete = True
        report.seconds = time.monotonic() - begun
        return report

    def cursor(self) -> AuditCursor | None:
        """The scheduled audit's cursor row (None before its first tick)."""
        with self.db.session() as session:
            return session.get(AuditCursor, FIXITY_CURSOR)

    # -- internals -----------------------------------------------------------------------------

    def _run(
        self,
        batches: Iterator[tuple[list[_Target], int | None]],
        actor: str,
        cycle_started: datetime | None,
    ) -> FixityReport:
        """Audit ``batches`` (each with the cursor position its commit saves, or None), one
        ahead: a batch's blobs are read by the pool while the previous batch is committed."""
        report = FixityReport()
        throttle = Throttle(self.settings.fixity_max_bytes_per_second)
        workers = self.settings.fixity_read_workers
        with ThreadPoolExecutor(workers, thread_name_prefix="fixity-read") as pool:
            try:
                waiting: _Prepared | None = None
                for batch, position in batches:
                    prepared = self._prepare(batch, position, pool, throttle)
                    if waiting is not None:
                        report.add(self._commit(waiting, actor, cycle_started))
                    waiting = prepared
                if waiting is not None:
                    report.add(self._commit(waiting, actor, cycle_started))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # no read outlives the audit
                raise
        return report

    def _targets(self, scope: AuditScope, after: int, limit: int) -> list[_Target]:
        query = (
            select(
                ArchiveVersion.id,
                ArchiveVersion.archive_id,
                ArchiveVersion.version,
                ArchiveVersion.cid,
                ArchiveVersion.ciphertext_sha256,
                ArchiveVersion.stored_size,
                Archive.last_event_hash,
            )
            .join(Archive, Archive.id == ArchiveVersion.archive_id)
            .where(
                ArchiveVersion.id > after,
                ArchiveVersion.blob_deleted_at.is_(None),
                Archive.custodian == self.ledger.hospital,
                Archive.state.in_(AUDITABLE_STATES),
            )
            .order_by(ArchiveVersion.id)
            .limit(limit)
        )
        if scope.kind is ScopeKind.ARCHIVES:
            query = query.where(
                ArchiveVersion.archive_id.in_({normalise_id(a) for a in scope.archive_ids})
            )
        elif scope.kind is ScopeKind.CLASS and scope.record_class is not None:
            query = query.where(Archive.record_class == scope.record_class.value)
        with self.db.session() as session:
            return [_Target(*row) for row in session.execute(query).all()]

    def _expected(self, targets: Sequence[_Target]) -> tuple[dict[str, ArchiveState], list[str]]:
        """Lifecycle states of the targets' archives (the ledger's cache at the head each row had
        when listed; the others replayed, together); ids whose log and catalogue disagree."""
        states: dict[str, ArchiveState] = {}
        missing: set[str] = set()
        for target in targets:
            if target.archive_id in states or target.archive_id in missing:
                continue
            state = self.ledger.cached(target.archive_id, target.head)
            if state is None:
                missing.add(target.archive_id)
            else:
                states[target.archive_id] = state
        broken: list[str] = []
        if not missing:
            return states, broken
        with self.db.session() as session:
            rows = (
                session.execute(
                    select(Archive)
                    .where(Archive.id.in_(missing))
                    .order_by(Archive.id)
                    .options(lazyload(Archive.versions), _ARCHIVE_COLUMNS)
                )
                .scalars()
                .all()
            )
            try:
                states.update(self.ledger.states(session, rows))
            except (NodeError, AnchoringError):  # one at a time, to tell which
                for archive in rows:
                    archive_id = archive.id
                    try:
                        states[archive_id] = self.ledger.state(session, archive)
                    except (NodeError, AnchoringError) as exc:
                        log.error("fixity audit: archive %s: %s", archive_id, exc)
                        broken.append(archive_id)
        return states, broken

    def _read_all(self, cids: Sequence[str], throttle: Throttle) -> list[_Read]:
        """Read and hash a few blobs, in order (one reader task)."""
        return [self._read(cid, throttle) for cid in cids]

    def _hash_all(self, cids: Sequence[str]) -> Future[list[_Read]]:
        """``_read_all`` done by a hashing process (unthrottled audits of a local store), queued
        at once: the whole batch is in the processes' queue, not only one task per thread.

        A batch failed by a broken pool (a worker killed, even an idle one, before the pool
        noticed: its queued tasks fail with it) is submitted once more, to the pool that
        replaces it; hashing reads only, so doing it twice is harmless. A second failure is the
        audit's."""
        hasher = self._hasher
        if hasher is None or not isinstance(self.blobs, LocalBlobStore):
            raise RuntimeError("no hashing processes for this blob store")
        objects, batch = self.blobs.objects_dir, list(cids)
        reads: Future[list[_Read]] = Future()

        def submit(retries: int) -> None:
            def done(hashed: Future[list[FileDigest]]) -> None:
                try:
                    digests = hashed.result()
                except BrokenProcessPool as exc:
                    if retries <= 0:
                        reads.set_exception(exc)
                        return
                    log.warning("fixity audit: a hashing process died; batch submitted again")
                    try:
                        submit(retries - 1)
                    except BaseException as again:  # the node is closing the pool
                        reads.set_exception(again)
                    return
                except BaseException as exc:  # the pool was shut down
                    reads.set_exception(exc)
                    return
                reads.set_result(
                    [_digest_read(cid, digest) for cid, digest in zip(batch, digests, strict=True)]
                )

            hasher.submit(objects, batch, self.read_size).add_done_callback(done)

        submit(1)
        return reads

    def _read(self, cid: str, throttle: Throttle) -> _Read:
        """Read one blob through the store and hash it (in a reader thread)."""
        hasher, size = hashlib.sha256(), 0
        try:
            for chunk in self.blobs.open_stream(cid):
                hasher.update(chunk)
                size += len(chunk)
                throttle.consume(len(chunk))
        except BlobNotFoundError:
            return _Read(MISSING_SHA256, None, FixityProblem.BLOB_MISSING)
        except (OSError, NodeError) as exc:  # unreadable file, IPFS error
            log.error("fixity audit: blob %s unreadable: %s", cid, type(exc).__name__)
            return _Read(MISSING_SHA256, None, FixityProblem.BLOB_UNREADABLE)
        return _Read(hasher.hexdigest(), size, None)

    def _prepare(
        self,
        batch: Sequence[_Target],
        position: int | None,
        pool: ThreadPoolExecutor,
        throttle: Throttle,
    ) -> _Prepared:
        """Look up what the log recorded for each version of ``batch`` and start reading the
        blobs of those it recorded (the others are skipped). Small blobs are read several to a
        task (up to ``read_size`` bytes or ``READ_GROUP`` blobs), in batch order."""
        states, broken = self._expected(batch)
        prepared = _Prepared(
            reads=[],
            notices=[
                AlertNotice(
                    "log_inconsistent", archive_id, Severity.CRITICAL, {"code": "log_inconsistent"}
                )
                for archive_id in broken
            ],
            skipped=0,
            position=position,
        )
        group: list[tuple[_Target, str]] = []
        group_bytes = 0
        hashing = self._hasher is not None and throttle.rate <= 0
        group_limit = PROCESS_GROUP_BYTES if hashing else self.read_size
        group_count = PROCESS_GROUP if hashing else READ_GROUP
        for target in batch:
            state = states.get(target.archive_id)
            recorded = (
                next((v for v in state.versions if v.version == target.version), None)
                if state is not None
                else None
            )
            if recorded is None:
                prepared.skipped += 1
                continue
            if recorded.ciphertext_sha256 != target.row_sha256:
                prepared.notices.append(
                    AlertNotice(
                        "catalogue_mismatch",
                        target.archive_id,
                        Severity.CRITICAL,
                        {"version": target.version, "field": "ciphertext_sha256"},
                    )
                )
            if group and (
                group_bytes + target.stored_size > group_limit or len(group) >= group_count
            ):
                self._submit(group, pool, throttle, prepared, hashing=hashing)
                group, group_bytes = [], 0
            group.append((target, recorded.ciphertext_sha256))
            group_bytes += target.stored_size
        if group:
            self._submit(group, pool, throttle, prepared, hashing=hashing)
        return prepared

    def _submit(
        self,
        group: list[tuple[_Target, str]],
        pool: ThreadPoolExecutor,
        throttle: Throttle,
        prepared: _Prepared,
        *,
        hashing: bool,
    ) -> None:
        """Start reading ``group``: by the hashing processes when ``hashing`` (unthrottled, local
        store), else by a reader thread."""
        cids = [target.cid for target, _ in group]
        future = self._hash_all(cids) if hashing else pool.submit(self._read_all, cids, throttle)
        prepared.reads.extend(
            _Pending(target, expected, future, slot)
            for slot, (target, expected) in enumerate(group)
        )

    def _commit(
        self, prepared: _Prepared, actor: str, cycle_started: datetime | None
    ) -> FixityReport:
        """Log the batch's FIXITY_CHECK events as its reads complete, in order: each unit of work
        takes at least a quarter of the batch (or what is left) and every further version read
        by then, so the last commit after the last read is short; the scheduled audit's cursor
        moves with each. Then the alerts found before reading are raised."""
        report = FixityReport(skipped=prepared.skipped)
        reads = prepared.reads
        least = max(1, self.settings.fixity_batch_size // 4)
        start = 0
        while True:
            end = min(start + least, len(reads))
            chunk = [
                _observed(read.target, read.expected, read.result()) for read in reads[start:end]
            ]
            while end < len(reads) and reads[end].future.done():
                read = reads[end]
                chunk.append(_observed(read.target, read.expected, read.result()))
                end += 1
            position = prepared.position
            if position is not None and end < len(reads):
                position = reads[end - 1].target.version_id
            cursor = (
                (position, cycle_started)
                if position is not None and cycle_started is not None
                else None
            )
            report.add(self._log(chunk, actor, cursor))
            start = end
            if end == len(reads):
                break
        for notice in prepared.notices:
            self.alerts.raise_alert(notice)
        return report

    def _log(
        self, observed: list[_Observed], actor: str, cursor: tuple[int, datetime] | None
    ) -> FixityReport:
        """One unit of work: a FIXITY_CHECK event per version of ``observed`` (and the cursor),
        then an alert per failure."""
        report = FixityReport()
        notices: list[AlertNotice] = []
        for seen in observed:
            report.bytes_read += seen.size or 0

        def unit(uow: UnitOfWork) -> list[_Observed]:
            logged: list[_Observed] = []
            by_archive: dict[str, list[_Observed]] = {}
            for seen in observed:
                by_archive.setdefault(seen.target.archive_id, []).append(seen)
            # The rows are locked and read as plain columns (no ORM objects), and settled by
            # one statement for the unit (``Ledger.settle_many``).
            rows = {
                row.id: row
                for row in uow.session.execute(
                    select(
                        Archive.id,
                        Archive.custodian,
                        Archive.state,
                        Archive.last_event_hash,
                        Archive.event_count,
                    )
                    .where(Archive.id.in_(sorted(by_archive)))
                    .order_by(Archive.id)
                    .with_for_update()
                )
            }
            settled: list[Settled] = []
            # FIXITY_CHECK events of one unit differ only in the spliced fields (bulk, as
            # ACCESS events are logged: node.eventsplice).
            spliced: tuple[FixityCheckEvent, SplicedEvent] | None = None
            for archive_id, items in by_archive.items():
                row = rows.get(archive_id)
                if (
                    row is None
                    or row.custodian != self.ledger.hospital
                    or row.state not in AUDITABLE_STATES
                ):
                    continue  # changed while the blobs were read
                state = self.ledger.cached(archive_id, row.last_event_hash)
                if state is None:
                    try:
                        state = self.ledger.state(
                            uow.session,
                            uow.session.get_one(
                                Archive,
                                archive_id,
                                options=[lazyload(Archive.versions), _ARCHIVE_COLUMNS],
                            ),
                        )
                    except (NodeError, AnchoringError):
                        continue
                leaf, count = None, 0
                for seen in items:
                    ok = seen.problem is None
                    if spliced is None:  # the unit's first event: validated, then the template
                        event = FixityCheckEvent(
                            hospital=self.ledger.hospital,
                            log_index=uow.log.size,
                            archive_id=archive_id,
                            actor=actor,
                            time=uow.now,
                            prev=state.head,
                            data=FixityCheckData(
                                version=seen.target.version,
                                ciphertext_sha256=seen.sha256,
                                ok=ok,
                            ),
                        )
                        spliced = (event, SplicedEvent(event, _SPLICED))
                        raw = None
                    else:  # values this node computed: copied in, not validated again
                        template = spliced[0]
                        event = template.model_copy(
                            update={
                                "log_index": uow.log.size,
                                "archive_id": archive_id,
                                "prev": state.head,
                                "data": template.data.model_copy(
                                    update={
                                        "version": seen.target.version,
                                        "ciphertext_sha256": seen.sha256,
                                        "ok": ok,
                                    }
                                ),
                            }
                        )
                        raw = spliced[1].render(
                            uow.log.size, archive_id, state.head, seen.target.version,
                            seen.sha256, ok,
                        )  # fmt: skip
                    try:
                        leaf, state = self.ledger.log_event(uow, archive_id, state, event, raw)
                    except (NodeError, AnchoringError) as exc:
                        log.error("fixity audit: archive %s refused: %s", archive_id, exc)
                        break
                    count += 1
                    logged.append(seen)
                if leaf is not None:
                    settled.append(Settled(archive_id, leaf, state, row.event_count + count))
            self.ledger.settle_many(uow, settled)
            if logged:
                _statuses(uow.session, logged, uow.now)
            if cursor is not None:
                _cursor_row(uow.session, uow.now, cursor[0], cursor[1], completed=False)
            return logged

        logged = self.units.run(unit) if observed or cursor is not None else []
        for seen in logged:
            report.checked += 1
            if seen.problem is None:
                report.passed += 1
                continue
            report.failed += 1
            report.failures.append(
                FixityFailure(seen.target.archive_id, seen.target.version, seen.problem.value)
            )
            kind = (
                "blob_missing" if seen.problem is FixityProblem.BLOB_MISSING else "fixity_mismatch"
            )
            notices.append(
                AlertNotice(
                    kind,
                    seen.target.archive_id,
                    Severity.CRITICAL,
                    {"version": seen.target.version, "problem": seen.problem.value},
                )
            )
        report.skipped += len(observed) - len(logged)
        for notice in notices:
            self.alerts.raise_alert(notice)
        if report.failures and self.on_failures is not None:
            self.on_failures(report.failures)
        passed = [
            (seen.target.archive_id, seen.target.version) for seen in logged if seen.problem is None
        ]
        if passed and self.check_replicas is not None:
            (
                report.replicas_verified,
                report.replicas_failed,
                report.replicas_unavailable,
            ) = self.check_replicas(passed)
        return report

    def _save_cursor(self, position: int, started: datetime, *, completed: bool) -> None:
        self.units.run(
            lambda uow: _cursor_row(uow.session, uow.now, position, started, completed=completed)
        )


def _digest_read(cid: str, digest: FileDigest) -> _Read:
    """What a hashing process reported for one blob, as ``_read`` reports it."""
    if isinstance(digest, tuple):
        return _Read(digest[0], digest[1], None)
    if digest == MISSING:
        return _Read(MISSING_SHA256, None, FixityProblem.BLOB_MISSING)
    log.error("fixity audit: blob %s unreadable: %s", cid, digest.partition(":")[2])
    return _Read(MISSING_SHA256, None, FixityProblem.BLOB_UNREADABLE)


def _observed(target: _Target, expected: str, read: _Read) -> _Observed:
    """A read judged against the hash the log recorded."""
    problem = read.problem
    if problem is None and read.sha256 != expected:
        problem = (
            FixityProblem.SIZE_MISMATCH
            if read.size != target.stored_size
            else FixityProblem.HASH_MISMATCH
        )
    return _Observed(target, expected, read.sha256, read.size, problem)


def _statuses(session: Session, logged: Sequence[_Observed], now: datetime) -> None:
    """Bring the ``fixity_status`` rows of the checked versions up to date: inserted, or
    replaced where they exist (``ON CONFLICT … DO UPDATE``): one statement for the unit on
    PostgreSQL (``unnest`` of arrays), one executemany on SQLite; no ORM objects."""
    connection = session.connection()
    dialect = connection.dialect
    rows = [
        (
            seen.target.version_id,
            seen.target.archive_id,
            seen.problem is None,
            seen.sha256 if seen.size is not None else None,
            seen.problem.value if seen.problem is not None else None,
        )
        for seen in logged
    ]
    if dialect.name == "postgresql":
        version_ids, archive_ids, oks, observed, problems = (
            list(c) for c in zip(*rows, strict=True)
        )
        connection.exec_driver_sql(
            _UPSERT_STATUSES_UNNEST, (now, version_ids, archive_ids, oks, observed, problems)
        )
        return
    to_db = FixityStatus.__table__.c.checked_at.type.dialect_impl(dialect).bind_processor(dialect)
    checked_at = to_db(now) if to_db else now
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    connection.exec_driver_sql(
        _UPSERT_STATUSES.format(mark=mark),
        [(version_id, archive_id, checked_at, *rest) for version_id, archive_id, *rest in rows],
    )


_STATUS_UPDATE = (
    "ON CONFLICT (version_id) DO UPDATE SET archive_id = excluded.archive_id, "
    "checked_at = excluded.checked_at, ok = excluded.ok, "
    "observed_sha256 = excluded.observed_sha256, problem = excluded.problem"
)
_UPSERT_STATUSES_UNNEST = (
    "INSERT INTO fixity_status (version_id, archive_id, checked_at, ok, observed_sha256, problem) "
    "SELECT v.version_id, v.archive_id, %s, v.ok, v.observed_sha256, v.problem "
    "FROM unnest(%s::bigint[], %s::varchar[], %s::boolean[], %s::varchar[], %s::varchar[]) "
    "AS v(version_id, archive_id, ok, observed_sha256, problem) " + _STATUS_UPDATE
)
_UPSERT_STATUSES = (
    "INSERT INTO fixity_status (version_id, archive_id, checked_at, ok, observed_sha256, problem) "
    "VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark}) " + _STATUS_UPDATE
)


def _cursor_row(
    session: Session, now: datetime, position: int, started: datetime, *, completed: bool
) -> None:
    """Insert or update the scheduled audit's cursor row (one statement)."""
    values: dict[str, Any] = {
        "position": position,
        "cycle_started_at": started,
        "updated_at": now,
    }
    if completed:
        values["cycle_completed_at"] = now
    dialect = session.connection().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = upsert(AuditCursor).values(name=FIXITY_CURSOR, **values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[AuditCursor.name],
            set_={name: statement.excluded[name] for name in values},
        )
    )
