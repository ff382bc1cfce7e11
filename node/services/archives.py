"""Archive lifecycle services: create, amend, archive, read, search, events, proofs, holds.

Content is encrypted and stored *before* the unit of work that records it; if the unit fails (an
illegal transition, a database error) the blob is deleted again, so a refused request leaves no
orphan blob, row or event. Reads of content are logged (ACCESS) *before* any byte is returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from itertools import pairwise
from math import inf
from time import monotonic
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    and_,
    false,
    func,
    insert,
    intersect,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased, lazyload
from ulid import ULID

from anchoring import lifecycle, merkle, storage
from anchoring.errors import AnchoringError
from anchoring.events import (
    AccessData,
    AccessEvent,
    AccessScope,
    AmendData,
    AmendEvent,
    ArchiveData,
    ArchiveEvent,
    CreateData,
    CreateEvent,
    Event,
    EventType,
    HoldPlaceData,
    HoldPlaceEvent,
    HoldReleaseData,
    HoldReleaseEvent,
    Purpose,
    RecordClass,
    Sensitivity,
    canonical_bytes,
    event_to_json,
    jcs,
    parse_event,
)
from anchoring.ids import archive_key
from anchoring.lifecycle import ArchiveState, ArchiveStatus
from anchoring.worker import enqueue_call
from node import crypto
from node.alerts import LoggingAlertSink
from node.blobstore import BlobRef, BlobStore, DeferredSyncStore
from node.config import NodeSettings
from node.db import Database, UnitOfWork, UnitRunner, utc_now
from node.errors import (
    BatchRefusedError,
    ConflictError,
    GoneError,
    InputError,
    NodeError,
    NotFoundError,
)
from node.eventsplice import SplicedEvent
from node.keyring import KeyRing
from node.ledger import Ledger, normalise_id
from node.models import (
    Archive,
    ArchiveVersion,
    BreakGlassWindow,
    IngestedMessage,
    SearchTerm,
    WrappedKey,
)
from node.policy import PolicyAction, Relation
from node.principal import Action, Principal
from node.pseudonyms import Pseudonyms
from node.readback import CiphertextReader
from node.retention import RetentionPolicies
from node.searchcursor import SearchCursor, decode_cursor, encode_cursor
from node.searchtext import TextTap, reads_content
from node.services.permissions import AccessGate, Verdict
from node.services.quality import QcCheck, QcReport
from node.services.records import ArchiveView, EventView, Page, VersionView
from node.textindex import archive_texts, index_terms, more_terms, ordered_terms, query_terms

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PAGE = 200
SEARCH_TOTAL_CAP = 1_000  # a search counts its matches up to here (Page.total_exact)
_DENSITY_WINDOW = 1_000
"""A text query's terms are compared over their newest postings (``_term_plan``): the rarest term
is the one whose ``_DENSITY_WINDOW``-th newest posting is oldest (or that has fewer postings)."""
_MERGE_RATIO = 16
"""On SQLite, the postings of a text query's terms are merged (``_merged``) unless another term
holds more than this many times the rarest term's postings over the same newest archive ids: a
probe of one posting by its key costs about 16 times a posting read in a merge (1.5 µs against
0.09 µs at 10^6 archives)."""
_STORE_THREADS = 16
_READ_LOG_CACHE_SIZE = 100_000


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class NewArchive:
    """Metadata of a new archive (validated by the API schema, re-checked here)."""

    record_class: RecordClass
    sensitivity: Sensitivity
    department: str
    title: str
    patient_id: str
    source_system: str
    media_type: str
    filename: str | None = None
    trigger_date: date | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    """Text extracted from the content, for keyword search only (cut into terms, never stored);
    ``None``: read from the content as it is stored (``node.searchtext``: plain text, a PDF's
    text layer, OCR when enabled)."""


@dataclass(frozen=True)
class NewContent:
    """One archive of ``create_many``: its metadata, its content, and what else its unit of work
    records: ``message``, the values of its ``ingested_messages`` row (given the archive's id
    and the unit's time), and ``within``, called with the recorded archive's ORM row.

    A batch without ``within`` is written by Core multi-row inserts (``_record_creates``); one
    item with ``within`` makes the whole batch take the ORM path (``_record_create``)."""

    new: NewArchive
    content: Iterable[bytes]
    within: Callable[[UnitOfWork, Archive], None] | None = None
    message: Callable[[str, datetime], dict[str, Any]] | None = None


@dataclass(frozen=True)
class SearchFilters:
    """Catalogue search; every field optional, combined with AND."""

    record_class: RecordClass | None = None
    department: str | None = None
    state: str | None = None
    patient_id: str | None = None  # matched through its keyed pseudonym, never stored
    encounter: str | None = None  # the source's visit number: records ingested for it
    keyword: str | None = None
    text: str | None = None  # words and Chinese text, matched through the search terms
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 50
    offset: int = 0
    cursor: str | None = None  # a page's ``next_cursor``: resume right after that page
    purpose: Purpose | None = None  # of the metadata reads logged for the listed archives


_PostingScope = Callable[[type[SearchTerm]], ColumnElement[bool]] | None
"""A condition on the postings a text query walks (``ArchiveService._posting_scope``)."""


def _holding(
    query: Select[tuple[str]],
    posting: type[SearchTerm],
    terms: list[str],
    scope: _PostingScope = None,
) -> Select[tuple[str]]:
    """``query`` over ``posting`` narrowed to archives that also hold every one of ``terms``:
    per candidate, one probe of the primary key (term, archive id) each. ``scope`` narrows the
    probed postings as the walked ones (the same archive's: redundant for the answer, but
    PostgreSQL may answer the probes by a merge join that walks every posting of the term, and
    then skips the out-of-scope ones without comparing them)."""
    for term in terms:
        probe = aliased(SearchTerm)
        probed = select(probe.archive_id).where(
            probe.term == term, probe.archive_id == posting.archive_id
        )
        if scope is not None:
            probed = probed.where(scope(probe))
        query = query.where(probed.exists())
    return query


def _row_checked(fenced: Subquery, conditions: list[ColumnElement[bool]]) -> Select[tuple[str]]:
    """The archive ids of a fenced subquery of postings whose archive row passes
    ``conditions``: one probe of the row by its primary key per id, as the ids come (``OFFSET
    0``: PostgreSQL keeps it a probe, not a join with every archive)."""
    row = (
        select(Archive.id)
        .where(Archive.id == fenced.c.archive_id, *conditions)
        .offset(0)
        .correlate(fenced)
    )
    return select(fenced.c.archive_id).where(row.exists())


@dataclass(frozen=True)
class CatalogueQuery:
    """A catalogue query not yet run: the ids of its archives (unordered), and their order
    (newest first; the page and the capped count both walk it). An empty ``order``: the query
    yields its ids in page order already, from a fenced merge that no outer ``ORDER BY`` may
    stop from streaming (``_merged``); ``_matching`` checks that order."""

    query: Select[tuple[str]]
    order: tuple[ColumnElement[Any], ...]
    after: tuple[ColumnElement[bool], ...] = ()  # a cursor's: the page starts past it
    page_after: Select[tuple[str]] | None = None
    """The page past the cursor, where ``query.where(*after)`` would not start there (a fenced
    subquery: the cursor goes inside it)."""

    @property
    def resumed(self) -> bool:
        """Whether the page starts past a cursor (``after`` or ``page_after``)."""
        return bool(self.after) or self.page_after is not None


@dataclass(frozen=True)
class ReportedAccess:
    """A read that happened in a hospital system (PACS viewer, HIS screen), reported in a batch.

    ``staff_id`` is the system's own user id; only its keyed pseudonym reaches the log."""

    archive_id: str
    purpose: Purpose
    scope: AccessScope = AccessScope.CONTENT
    staff_id: str | None = None


MAX_ACCESS_BATCH = 10_000


@dataclass(frozen=True)
class ContentStream:
    """Decrypted content of one version, streamed; the ACCESS event is already committed."""

    archive_id: str
    version: int
    media_type: str
    size: int
    filename: str | None
    chunks: Iterator[bytes]
    record_class: str = ""


@dataclass(frozen=True)
class _Stored:
    ref: BlobRef
    size: int
    commitment: str

    def version_row(
        self, archive_id: str, version: int, media_type: str, filename: str | None, now: datetime
    ) -> ArchiveVersion:
        """The catalogue row of this stored version."""
        return ArchiveVersion(
            archive_id=archive_id,
            version=version,
            cid=self.ref.cid,
            ciphertext_sha256=self.ref.sha256,
            stored_size=self.ref.size,
            size=self.size,
            media_type=media_type,
            commitment=self.commitment,
            filename=filename,
            created_at=now,
        )


# --------------------------------------------------------------------------------------------


class ArchiveService:
    """The archive lifecycle on one hospital node."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        keyring: KeyRing,
        blobs: BlobStore,
        pseudonyms: Pseudonyms,
        quality: Callable[[str], QcReport] | None = None,
        reader: CiphertextReader | None = None,
        gate: AccessGate | None = None,
    ) -> None:
        self.settings = settings
        self.quality = quality
        self.gate = gate or AccessGate(
            settings=settings,
            db=db,
            units=units,
            ledger=ledger,
            alerts=LoggingAlertSink(),
            clock=utc_now,
        )
        self.db = db
        self.units = units
        self.ledger = ledger
        self.keyring = keyring
        self.blobs = blobs
        self.reader = reader or CiphertextReader(blobs)
        self.pseudonyms = pseudonyms
        self.policies = RetentionPolicies(settings.retention_years)
        self._reads: OrderedDict[tuple[str, str, Purpose], float] = OrderedDict()
        self._reads_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._merge_in_order = True  # cleared if SQLite's merge ever streams out of order
        self.fault_hook: Callable[[str], None] | None = None
        """TEST SEAM: called with ``ingest-stored`` once a request's ciphertext is stored and
        before its unit of work runs (``archivechain.node``'s fault point, dev mode only)."""

    @property
    def hospital(self) -> str:
        """This node's member address (the owner of its log)."""
        return self.ledger.hospital

    # -- commands ------------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        new: NewArchive,
        content: Iterable[bytes],
        *,
        within: Callable[[UnitOfWork, Archive], None] | None = None,
    ) -> ArchiveView:
        """Encrypt and store the content, then record the archive and its CREATE event.

        ``within`` runs inside the same unit of work once the archive is recorded (the ingestion
        service records the source message there, so archive and message commit together); if it
        raises, nothing of the archive is kept."""
        return self.create_many(principal, [NewContent(new, content, within)])[0]

    def create_many(self, principal: Principal, items: Sequence[NewContent]) -> list[ArchiveView]:
        """Create several archives in one unit of work: all of them or none (a refused item, a
        failed ``within`` or a database error leaves no blob, row or event of any of them)."""
        principal.require(Action.CREATE)
        if not items:
            return []
        for item in items:
            if principal.department_scoped and item.new.department != principal.department:
                raise InputError(
                    f"a clinician of {principal.department} may only create archives of that "
                    "department",
                    code="department_mismatch",
                )
            self._check_media_type(item.new.media_type)
        keys = [(str(ULID()), crypto.new_key_material()) for _ in items]
        prepared: list[tuple[str, crypto.KeyMaterial, _Stored]] = []
        # Content whose text was not given is read for the index as it is stored.
        taps = [
            TextTap(item.content, item.new.media_type, self.settings)
            if item.new.text is None and reads_content(item.new.media_type, self.settings)
            else None
            for item in items
        ]
        contents = [
            item.content if tap is None else tap for item, tap in zip(items, taps, strict=True)
        ]

        def item_terms(item: NewContent, text: str) -> set[str]:
            return index_terms(*archive_texts(item.new.title, item.new.metadata), text)

        def cut() -> tuple[list[str], list[Any]]:
            # Search terms are cut here, not on the database writer's thread, which every
            # write shares (those of tapped content once it is stored).
            patients = [self.pseudonyms.patient(item.new.patient_id) for item in items]
            terms = [
                None if tap is not None else item_terms(item, item.new.text or "")
                for item, tap in zip(items, taps, strict=True)
            ]
            return patients, terms

        def cut_tapped(terms: list[Any]) -> None:
            for index, tap in enumerate(taps):
                if tap is not None:
                    terms[index] = item_terms(items[index], tap.text())

        if len(items) == 1:
            patients, terms = cut()
            archive_id, material = keys[0]
            stored_one = self._store(archive_id, 1, material, contents[0])
            try:
                cut_tapped(terms)
            except BaseException:
                self._discard([stored_one])  # no blob without its row
                raise
            prepared.append((archive_id, material, stored_one))
        else:
            # Stored from several threads at once (a pool kept by the service); a store that can
            # (the local one) skips each blob's fsyncs and makes the whole batch durable with one
            # sync below, before the unit records any of them in one transaction. Meanwhile this
            # thread cuts the search terms (CPU beside the stores' I/O).
            deferred = isinstance(self.blobs, DeferredSyncStore)
            pool = self._store_pool()

            def store_run(start: int, stop: int) -> tuple[list[_Stored], BaseException | None]:
                # One task per run of neighbouring items, not per blob: a task costs 17-22 us
                # of CPU to submit and collect with 16 threads (about 5 % of a bulk import's
                # GIL-held time in a py-spy profile), a run of 63 items about 0.5 us per item.
                done: list[_Stored] = []
                try:
                    for (archive_id, material), content in zip(
                        keys[start:stop], contents[start:stop], strict=True
                    ):
                        done.append(
                            self._store(archive_id, 1, material, content, durable=not deferred)
                        )
                except BaseException as exc:
                    return done, exc
                return done, None

            step = -(-len(items) // _STORE_THREADS)  # ceiling: at most one run per thread
            futures = [
                pool.submit(store_run, start, min(start + step, len(items)))
                for start in range(0, len(items), step)
            ]
            failure: BaseException | None = None
            try:
                patients, terms = cut()
            except BaseException as exc:
                failure = exc
            stored_in_order: list[_Stored] = []
            for future in futures:
                done, error = future.result()
                stored_in_order.extend(done)
                failure = failure or error
            # Every run has returned: on failure, what any of them stored is discarded.
            if failure is None and deferred:
                try:
                    cast(DeferredSyncStore, self.blobs).make_durable(
                        stored.ref for stored in stored_in_order
                    )
                except BaseException as exc:
                    failure = exc
            if failure is None:
                try:
                    cut_tapped(terms)
                except BaseException as exc:
                    failure = exc
            if failure is not None:
                self._discard(stored_in_order)
                raise failure
            prepared.extend(
                (archive_id, material, stored)
                for (archive_id, material), stored in zip(keys, stored_in_order, strict=True)
            )

        orm = any(item.within is not None for item in items)

        def unit(uow: UnitOfWork) -> list[ArchiveView]:
            if orm:
                recorded = [
                    self._record_create(uow, principal, item, archive_id, material, stored, patient)
                    for item, (archive_id, material, stored), patient in zip(
                        items, prepared, patients, strict=True
                    )
                ]
                # One flush for the whole batch: the ORM inserts each table's rows together.
                uow.session.flush()
                views = [ArchiveView.of(archive, [version]) for archive, version in recorded]
            else:
                views = self._record_creates(uow, principal, items, prepared, patients)
            insert_terms(
                uow.session.connection(),
                [
                    (term, archive_id, item.new.department)
                    for item, (archive_id, _, _), archive_terms in zip(
                        items, prepared, terms, strict=True
                    )
                    for term in archive_terms
                ],
            )
            return views

        return self._run_discarding(unit, *(stored for _, _, stored in prepared))

    def _store_pool(self) -> ThreadPoolExecutor:
        """The threads that encrypt and store a batch's blobs, started once (thread start-up
        per batch showed in a profile); shut down when the service is collected."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=_STORE_THREADS, thread_name_prefix="blob-store"
                )
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def _record_create(
        self,
        uow: UnitOfWork,
        principal: Principal,
        item: NewContent,
        archive_id: str,
        material: crypto.KeyMaterial,
        stored: _Stored,
        patient: str,
    ) -> tuple[Archive, ArchiveVersion]:
        """Add the archive's rows and CREATE event to the unit (flushed by the caller)."""
        new = item.new
        trigger = datetime.combine(new.trigger_date or datetime.now(UTC).date(), time(), UTC)
        archive = Archive(
            id=archive_id,
            record_class=new.record_class.value,
            sensitivity=new.sensitivity.value,
            department=new.department,
            title=new.title,
            patient_pseudonym=patient,
            source_system=new.source_system,
            metadata_json=new.metadata,
            search_text=search_text(new.title, new.metadata),
            state=lifecycle.ArchiveStatus.CREATED.value,
            custodian=self.hospital,
            trigger_date=trigger,
            current_version=1,
            last_event_hash=b"",
            event_count=0,
            chain_status="none",
            created_by=principal.actor,
            created_at=uow.now,
            updated_at=uow.now,
        )
        version = stored.version_row(archive_id, 1, new.media_type, new.filename, uow.now)
        uow.session.add_all([archive, version])
        self.keyring.store_own(uow.session, archive_id, material, uow.now)
        data = _create_data(new, patient, stored)
        self.ledger.record(uow, archive, None, CreateEvent, principal.actor, data)
        if item.message is not None:
            uow.session.add(IngestedMessage(**item.message(archive_id, uow.now)))
        if item.within is not None:
            item.within(uow, archive)
        return archive, version

    def _record_creates(
        self,
        uow: UnitOfWork,
        principal: Principal,
        items: Sequence[NewContent],
        prepared: Sequence[tuple[str, crypto.KeyMaterial, _Stored]],
        patients: Sequence[str],
    ) -> list[ArchiveView]:
        """The rows and CREATE events of a batch, written by Core multi-row inserts (one
        ``executemany`` per table) instead of ORM objects: the same rows, the same events, the
        same checks as ``_record_create`` (tests/ingestion/test_bulk_create.py compares them).

        Each CREATE event is built for the log's next index and checked by the lifecycle
        (``Ledger.log_event``). Its canonical bytes come from ``node.eventsplice``: the first
        event of each distinct (class, sensitivity, department, source, media type) is built and
        validated by its pydantic model and encoded by ``canonical_bytes``; the others copy it
        with only values this node made spliced in (log index, archive id, patient pseudonym,
        commitment, ciphertext hash, size)."""
        now = uow.now
        actor = principal.actor
        templates: dict[tuple[str, ...], tuple[CreateEvent, SplicedEvent]] = {}
        archives: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        views: list[ArchiveView] = []
        today = datetime.now(UTC).date()
        for item, (archive_id, _, stored), patient in zip(items, prepared, patients, strict=True):
            new = item.new
            index = uow.log.size
            shape = (
                new.record_class.value,
                new.sensitivity.value,
                new.department,
                new.source_system,
                new.media_type,
            )
            known = templates.get(shape)
            raw: bytes | None
            if known is None:
                event = CreateEvent(
                    hospital=self.hospital,
                    log_index=index,
                    archive_id=archive_id,
                    actor=actor,
                    time=now,
                    prev=None,
                    data=_create_data(new, patient, stored),
                )
                templates[shape] = (event, SplicedEvent(event, _CREATE_SPLICED))
                raw = None  # canonical_bytes, by the general encoder
            else:
                first, splice = known
                event = first.model_copy(
                    update={
                        "log_index": index,
                        "archive_id": archive_id,
                        "data": first.data.model_copy(
                            update={
                                "patient": patient,
                                "commitment": stored.commitment,
                                "ciphertext_sha256": stored.ref.sha256,
                                "size": stored.size,
                            }
                        ),
                    }
                )
                raw = splice.render(
                    index, archive_id, patient, stored.commitment, stored.ref.sha256, stored.size
                )
            leaf, state = self.ledger.log_event(uow, archive_id, None, event, raw)
            self.ledger.remember_state(archive_id, leaf, state)
            trigger = datetime.combine(new.trigger_date or today, time(), UTC)
            row: dict[str, Any] = {
                "id": archive_id,
                "record_class": new.record_class.value,
                "sensitivity": new.sensitivity.value,
                "department": new.department,
                "title": new.title,
                "patient_pseudonym": patient,
                "source_system": new.source_system,
                "metadata_json": new.metadata,
                "search_text": search_text(new.title, new.metadata),
                "state": state.status.value,
                "custodian": self.hospital,
                "trigger_date": trigger,
                "retention_policy": None,
                "retention_deadline": None,
                "on_hold": state.on_hold,
                "hold_by_regulator": state.on_hold and state.hold_by_regulator,
                "current_version": 1,
                "last_event_hash": leaf,
                "event_count": 1,
                "chain_status": "none",
                "pending_recipient": None,
                "created_by": actor,
                "created_at": now,
                "updated_at": now,
                "archived_at": None,
            }
            version: dict[str, Any] = {
                "archive_id": archive_id,
                "version": 1,
                "cid": stored.ref.cid,
                "ciphertext_sha256": stored.ref.sha256,
                "stored_size": stored.ref.size,
                "size": stored.size,
                "media_type": new.media_type,
                "commitment": stored.commitment,
                "filename": new.filename,
                "created_at": now,
                "blob_deleted_at": None,
            }
            archives.append(row)
            versions.append(version)
            if item.message is not None:
                messages.append(item.message(archive_id, now))
            views.append(_created_view(row, version))
        keys = self.keyring.own_rows(
            [(archive_id, material) for archive_id, material, _ in prepared], now
        )
        connection = uow.session.connection()
        connection.execute(insert(Archive), archives)
        connection.execute(insert(ArchiveVersion), versions)
        connection.execute(insert(WrappedKey), keys)
        if messages:
            connection.execute(insert(IngestedMessage), messages)
        return views

    def amend(
        self,
        principal: Principal,
        archive_id: str,
        media_type: str,
        filename: str | None,
        content: Iterable[bytes],
    ) -> ArchiveView:
        """Store a new version (only while CREATED) and log AMEND.

        The version's text (``node.searchtext``) adds its terms to the archive's search terms
        under the one rule of ``node.textindex``: an archive holds at most
        ``MAX_TERMS_PER_ARCHIVE`` terms in all, those of its title and metadata first, then each
        version's in version order, a version's new words in order of first appearance — so an
        amendment adds only as many new terms as remain under the cap, and a custody transfer's
        recipient, cutting the same texts together, gets the same set."""
        principal.require(Action.AMEND)
        self._check_media_type(media_type)
        with self.db.session() as session:
            archive = self.ledger.visible(session, principal, archive_id)
            # Refused before the upload is encrypted and stored, by the lifecycle's own rule.
            lifecycle.check_allowed(self.ledger.state(session, archive), EventType.AMEND)
            next_version = archive.current_version + 1
        with self.db.session() as session:
            material = self.keyring.own(session, archive_id)
        tap = (
            TextTap(content, media_type, self.settings)
            if reads_content(media_type, self.settings)
            else None
        )
        stored = self._store(archive_id, next_version, material, content if tap is None else tap)
        # The new version's words join the archive's terms (its earlier versions stay), as many
        # as keep the archive within MAX_TERMS_PER_ARCHIVE: its new words in order of first
        # appearance (``node.textindex.more_terms``), chosen once the archive's terms are read.
        try:
            candidates = ordered_terms(tap.text()) if tap is not None else []
        except BaseException:
            self._discard([stored])
            raise

        def unit(uow: UnitOfWork) -> ArchiveView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            version_no = archive.current_version + 1
            if version_no != next_version:
                raise ConflictError(
                    f"archive {archive_id} changed while uploading; retry the amendment",
                    code="concurrent_update",
                )
            version = stored.version_row(archive_id, version_no, media_type, filename, uow.now)
            data = AmendData(
                version=version_no,
                commitment=stored.commitment,
                ciphertext_sha256=stored.ref.sha256,
                size=stored.size,
                media_type=media_type,
            )
            self.ledger.record(uow, archive, state, AmendEvent, principal.actor, data)
            archive.current_version = version_no
            archive.versions.append(version)  # adds it to the session and to the returned view
            held = set(
                uow.session.execute(
                    select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
                ).scalars()
            )
            insert_terms(
                uow.session.connection(),
                [(term, archive_id, archive.department) for term in more_terms(candidates, held)],
            )
            uow.session.flush()
            return ArchiveView.of(archive, [*archive.versions])

        return self._run_discarding(unit, stored)

    def archive(
        self, principal: Principal, archive_id: str, trigger_date: date | None = None
    ) -> ArchiveView:
        """Make the archive immutable, set its retention deadline and register it on chain.
        Quality control (四性检测) runs first unless ``qc_policy`` is ``off``; under ``refuse`` a
        failure is a 409 ``qc_failed`` listing the failed checks."""
        return self.archive_many(principal, [archive_id], trigger_date)[0]

    def archive_many(
        self, principal: Principal, archive_ids: Sequence[str], trigger_date: date | None = None
    ) -> list[ArchiveView]:
        """Archive several records in one unit of work, all or none (an encounter's records when
        it closes): each ``register`` is queued in the same transaction, and the anchoring worker
        sends queued registrations together (``registerBatch``). Quality control runs on every
        member first, as for a single archive: under ``refuse`` a failing member is listed as
        ``qc_failed`` with the other refusals and nothing is archived."""
        principal.require(Action.ARCHIVE)
        if not archive_ids:
            return []
        if len(set(archive_ids)) != len(archive_ids):
            raise InputError("an archive id is listed twice", code="duplicate_archive_id")
        qc_refused = self._quality_refusals(principal, archive_ids)
        if len(archive_ids) == 1 and qc_refused:
            raise ConflictError(
                "archiving refused by quality control (四性检测): "
                + ", ".join(str(check) for check in qc_refused[archive_ids[0]]),
                code="qc_failed",
            )

        def unit(uow: UnitOfWork) -> list[ArchiveView]:
            views: list[ArchiveView] = []
            failures: list[tuple[str, str]] = []
            for archive_id in archive_ids:
                if archive_id in qc_refused:
                    failures.append((archive_id, "qc_failed"))
                    continue
                try:
                    views.append(self._archive_in(uow, principal, archive_id, trigger_date))
                except (NodeError, AnchoringError) as exc:
                    if len(archive_ids) == 1:
                        raise
                    failures.append((archive_id, exc.code))
            if failures:
                # Every member is tried so the caller learns all refusals at once; raising
                # rolls the whole unit back.
                raise BatchRefusedError(failures)
            return views

        return self.units.run(unit)

    def _quality_refusals(
        self, principal: Principal, archive_ids: Sequence[str]
    ) -> dict[str, list[QcCheck]]:
        """Run quality control on each member that could be archived (others are left to the
        unit, which reports them with their own code); under ``qc_policy = "refuse"`` the failed
        checks of each failing member. Each check is stored and alerted by the QC service."""
        if self.quality is None or self.settings.qc_policy == "off":
            return {}
        refused: dict[str, list[QcCheck]] = {}
        for archive_id in archive_ids:
            try:
                with self.db.session() as session:
                    found = self.ledger.held(session, principal, archive_id)
                    lifecycle.check_allowed(self.ledger.state(session, found), EventType.ARCHIVE)
            except (NodeError, AnchoringError):
                continue
            report = self.quality(found.id)
            if report.failed and self.settings.qc_policy == "refuse":
                refused[archive_id] = list(report.failed)
        return refused

    def _archive_in(
        self, uow: UnitOfWork, principal: Principal, archive_id: str, trigger_date: date | None
    ) -> ArchiveView:
        archive = self.ledger.held(uow.session, principal, archive_id)
        state = self.ledger.state(uow.session, archive)
        record_class = RecordClass(archive.record_class)
        retention = self.policies.of(record_class)
        trigger = trigger_date or archive.trigger_date.date()
        deadline = retention.deadline(trigger)
        policy = retention.name
        commitment = state.current_version.commitment
        data = ArchiveData(
            record_class=record_class,
            retention_policy=policy,
            trigger_date=trigger,
            retention_deadline=deadline,
            commitment=commitment,
        )
        self.ledger.record(uow, archive, state, ArchiveEvent, principal.actor, data)
        archive.trigger_date = datetime.combine(trigger, time(), UTC)
        archive.retention_policy = policy
        archive.retention_deadline = deadline
        archive.archived_at = uow.now
        archive.chain_status = "pending"
        # A record already on the custodian's hold is registered on hold, in the same
        # transaction, so the chain agrees with the log from the first block on.
        hold_reason = state.hold_reason_hash if state.on_hold else None
        enqueue_call(
            uow.session,
            "register",
            [
                archive_key(archive_id),
                record_class.chain_code,
                int(archive.trigger_date.timestamp()),  # 00:00 UTC: the contract checks the floor
                int(deadline.timestamp()),
                bytes.fromhex(commitment),
                bytes.fromhex(hold_reason) if hold_reason else bytes(32),
            ],
            archive_id=archive_id,
        )
        return ArchiveView.of(archive)

    def place_hold(self, principal: Principal, archive_id: str, reason: str) -> ArchiveView:
        """Place the custodian's legal hold (locally and, once archived, on chain)."""
        return self._custodian_hold(principal, archive_id, reason, place=True)

    def release_hold(self, principal: Principal, archive_id: str, reason: str) -> ArchiveView:
        """Release the custodian's own hold (a regulator's hold is released only by a regulator)."""
        return self._custodian_hold(principal, archive_id, reason, place=False)

    def _custodian_hold(
        self, principal: Principal, archive_id: str, reason: str, *, place: bool
    ) -> ArchiveView:
        principal.require(Action.HOLD)
        reason_hash = _reason_hash(reason)

        def unit(uow: UnitOfWork) -> ArchiveView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            if place:
                data: Any = HoldPlaceData(reason_hash=reason_hash, by_regulator=False)
                event_cls: type[Event] = HoldPlaceEvent
            else:
                if state.on_hold and state.hold_by_regulator:
                    raise ConflictError(
                        f"archive {archive_id} is under a regulator's hold: only a regulator "
                        "can release it",
                        code="regulator_hold",
                    )
                data, event_cls = HoldReleaseData(reason_hash=reason_hash), HoldReleaseEvent
            self.ledger.record(uow, archive, state, event_cls, principal.actor, data)
            if state.status is not lifecycle.ArchiveStatus.CREATED:  # on chain from ARCHIVE on
                enqueue_call(
                    uow.session,
                    "placeHold" if place else "releaseHold",
                    [archive_key(archive_id), bytes.fromhex(reason_hash)],
                    archive_id=archive_id,
                )
            return ArchiveView.of(archive)

        return self.units.run(unit)

    def record_accesses(self, principal: Principal, reports: list[ReportedAccess]) -> int:
        """Log a batch of reported reads as ACCESS events: one unit of work, all or nothing.

        This is the bulk-ingest path: the events of the whole batch share one transaction (and
        one fsync with the other units of the same group commit)."""
        principal.require(Action.RECORD_ACCESS)
        if not 1 <= len(reports) <= MAX_ACCESS_BATCH:
            raise InputError(
                f"a batch holds 1 to {MAX_ACCESS_BATCH} access reports", code="invalid_batch"
            )
        readers = {r.staff_id for r in reports if r.staff_id}
        staff = {sid: self.pseudonyms.staff(sid) for sid in readers}  # one HMAC each
        actors = [staff[r.staff_id] if r.staff_id else principal.actor for r in reports]
        wanted = {normalise_id(r.archive_id) for r in reports}

        def unit(uow: UnitOfWork) -> int:
            rows = {
                row.id: row
                for row in uow.session.execute(
                    select(Archive)
                    .where(Archive.id.in_(wanted))
                    .options(lazyload(Archive.versions))  # not needed here
                    .with_for_update()
                ).scalars()
            }
            states: dict[str, tuple[bytes, ArchiveState, int]] = {}  # leaf, state, events
            # One validated event per distinct (purpose, scope); each report copies it with its
            # own index, archive, actor and prev (all produced by this node, already valid), and
            # its canonical bytes are the template's with those four values spliced in.
            templates: dict[tuple[Purpose, AccessScope], tuple[AccessEvent, _AccessBytes]] = {}
            for position, (report, actor) in enumerate(zip(reports, actors, strict=True)):
                archive_id = normalise_id(report.archive_id)
                known = states.get(archive_id)
                if known is None:
                    archive = rows.get(archive_id)
                    if archive is None or not principal.can_see(archive.department):
                        raise NotFoundError(
                            f"reports[{position}]: archive {report.archive_id} not found",
                            code="archive_not_found",
                        )
                    state = self.ledger.state(uow.session, archive)
                else:
                    state = known[1]
                key = (report.purpose, report.scope)
                known_template = templates.get(key)
                if known_template is None:
                    first = AccessEvent(
                        hospital=self.hospital,
                        log_index=uow.log.size,
                        archive_id=archive_id,
                        actor=actor,
                        time=uow.now,
                        prev=state.head,
                        data=AccessData(
                            purpose=report.purpose, scope=report.scope, break_glass=False
                        ),
                    )
                    known_template = templates[key] = (first, _AccessBytes(first))
                template, encoder = known_template
                event = template.model_copy(
                    update={
                        "log_index": uow.log.size,
                        "archive_id": archive_id,
                        "actor": actor,
                        "prev": state.head,
                    }
                )
                raw = encoder.render(uow.log.size, archive_id, actor, state.head)
                leaf, state = self.ledger.log_event(uow, archive_id, state, event, raw)
                states[archive_id] = (leaf, state, known[2] + 1 if known else 1)
            # Each archive row is updated once per batch, not once per event.
            for archive_id, (leaf, state, count) in states.items():
                self.ledger.settle(uow, rows[archive_id], leaf, state, count)
            return len(reports)

        return self.units.run(unit)

    # -- reads ---------------------------------------------------------------------------------

    def get(
        self, principal: Principal, archive_id: str, purpose: Purpose | None = None
    ) -> ArchiveView:
        """Metadata and state of one archive in the caller's scope. Titles and metadata may
        hold PHI, so the read is logged (ACCESS, scope metadata) before it is answered."""
        principal.require(Action.READ_METADATA)
        purpose = purpose or principal.default_purpose
        with self.db.session() as session:
            archive = self.ledger.find(session, archive_id)
            archive_id = archive.id
            verdict = self.gate.check(
                principal,
                archive_id=archive.id,
                sensitivity=archive.sensitivity,
                department=archive.department,
                purpose=purpose,
                action=PolicyAction.READ_METADATA,
            )
        self._log_metadata_reads(principal, [archive_id], purpose, verdict)
        with self.db.session() as session:  # the entry as it is now, its read included
            return ArchiveView.of(self.ledger.find(session, archive_id))

    def open_content(
        self,
        principal: Principal,
        archive_id: str,
        purpose: Purpose,
        version: int | None = None,
    ) -> ContentStream:
        """Judge the read (``AccessGate``: policy, else a break-glass window), log it (ACCESS,
        scope content, the purpose; break-glass with its reason hash) and return the decrypted
        stream."""
        principal.require(Action.READ_CONTENT)
        with self.db.session() as session:
            found = self.ledger.find(session, archive_id)
            verdict = self.gate.check(
                principal,
                archive_id=found.id,
                sensitivity=found.sensitivity,
                department=found.department,
                purpose=purpose,
                action=PolicyAction.READ_CONTENT,
            )

        def unit(uow: UnitOfWork) -> tuple[VersionView, crypto.KeyMaterial, str]:
            archive = self.ledger.held(uow.session, None, archive_id)
            if archive.state == ArchiveStatus.DESTROYED.value:
                raise GoneError(
                    f"archive {archive.id} was destroyed: its content no longer exists "
                    "(its events, proofs and destruction certificate remain)",
                    code="destroyed",
                )
            state = self.ledger.state(uow.session, archive)
            wanted = version or archive.current_version
            row = next((v for v in archive.versions if v.version == wanted), None)
            if row is None:
                raise NotFoundError(
                    f"archive {archive_id} has no version {wanted}", code="version_not_found"
                )
            material = self.keyring.own(uow.session, archive.id)
            data = AccessData(
                purpose=purpose,
                scope=AccessScope.CONTENT,
                break_glass=verdict.break_glass,
                reason_hash=verdict.reason_hash,
            )
            self.ledger.record(uow, archive, state, AccessEvent, principal.actor, data)
            self.gate.count_read(uow, verdict)
            return VersionView.of(row), material, archive.record_class

        row, material, record_class = self.units.run(unit)
        chunks = self.reader.plaintext(archive_id, row.version, row.cid, material.data_key)
        return ContentStream(
            archive_id, row.version, row.media_type, row.size, row.filename, chunks, record_class
        )

    def search(self, principal: Principal, filters: SearchFilters) -> Page[ArchiveView]:
        """Catalogue search within the caller's scope, newest first.

        Every row passes the access policy for ``read_metadata`` (``_readable``): an entry the
        caller may not read is neither listed nor counted. A text search lists newest archive id
        first, any other newest ``created_at`` first; both count their matches up to
        ``SEARCH_TOTAL_CAP`` (``Page.total_exact`` false beyond), so that a query of frequent
        words or a broad filter stays bounded at 10^6 archives (docs/benchmarks.md)."""
        principal.require(Action.READ_METADATA)
        if not 1 <= filters.limit <= MAX_PAGE:
            raise InputError(f"limit must be between 1 and {MAX_PAGE}", code="invalid_page")
        if filters.offset < 0:
            raise InputError("offset must not be negative", code="invalid_page")
        if filters.cursor is not None and filters.offset:
            raise InputError("give either a cursor or an offset, not both", code="invalid_page")
        with self.db.session() as session:  # one connection: a round trip costs on a busy host
            built = self._catalogue_query(principal, filters, session)
            try:
                total, exact, ids, more = self._matching(built, filters, session)
            except _OutOfOrder:  # never seen: SQLite's merge did not stream in order
                log.warning("search: merged postings out of order; probing from now on")
                self._merge_in_order = False
                built = self._catalogue_query(principal, filters, session, merge=False)
                total, exact, ids, more = self._matching(built, filters, session)
            following = self._cursor_after(session, ids[-1], filters) if more else None
        self._log_metadata_reads(principal, ids, filters.purpose)
        with self.db.session() as session:  # the entries as they are now, their reads included
            items = self._page_rows(session, ids)
        return Page(items, int(total), filters.limit, filters.offset, exact, following)

    def _cursor_after(self, session: Session, last_id: str, filters: SearchFilters) -> str:
        """The cursor of the page ending at ``last_id`` (node/searchcursor.py)."""
        bound = self._filters_key(filters)
        if filters.text is not None:
            return encode_cursor(SearchCursor(last_id, bound))
        created_at = session.execute(
            select(Archive.created_at).where(Archive.id == last_id)
        ).scalar_one()
        return encode_cursor(SearchCursor(last_id, bound, created_at))

    def _filters_key(self, filters: SearchFilters) -> str:
        """What a page cursor binds of ``filters``: all but the page and the purpose, as a keyed
        hash (``Pseudonyms.search_filters``)."""
        canonical = json.dumps(
            [
                filters.record_class.value if filters.record_class is not None else None,
                filters.department,
                filters.state,
                filters.patient_id,
                filters.encounter,
                filters.keyword,
                filters.text,
                filters.created_from.isoformat() if filters.created_from is not None else None,
                filters.created_to.isoformat() if filters.created_to is not None else None,
            ],
            ensure_ascii=False,
        )
        return self.pseudonyms.search_filters(canonical)

    @staticmethod
    def _page_rows(session: Session, ids: list[str]) -> tuple[ArchiveView, ...]:
        """The catalogue entries of ``ids``, in that order (one statement, versions loaded)."""
        rows = {
            row.id: row
            for row in session.execute(select(Archive).where(Archive.id.in_(ids))).scalars()
        }
        return tuple(ArchiveView.of(rows[i]) for i in ids if i in rows)

    def _readable(
        self, principal: Principal, purpose: Purpose | None, department: str | None = None
    ) -> ColumnElement[bool]:
        """The access policy for ``read_metadata`` as a condition on each catalogue row.

        ``AccessPolicy.decide`` is pure in (role, sensitivity, department relation, purpose,
        action): for one caller and purpose it is evaluated for every sensitivity and relation,
        and the allowed pairs become the condition; archives of an open break-glass window of
        the caller for that purpose are readable too (as ``AccessGate.check`` decides, beyond
        a department-bound role's own department).

        With a ``department`` filter the relation is known before the query runs: where the
        policy then allows nothing (a department-bound role asking for another department),
        the condition is the windows alone, so that the query starts from the caller's few
        windows instead of checking every archive of that department (0.16 s on PostgreSQL at
        10^6 archives)."""
        purpose = purpose or principal.default_purpose
        policy = self.gate.policy
        allowed: list[ColumnElement[bool]] = []

        def decide(sensitivity: Sensitivity, rel: Relation) -> bool:
            return policy.decide(
                principal.role, sensitivity, rel, purpose, PolicyAction.READ_METADATA
            ).allowed

        if principal.department is None:
            relations = [Relation.NONE]
        elif department is None:
            relations = [Relation.OWN, Relation.OTHER]
        else:
            relations = [Relation.OWN if department == principal.department else Relation.OTHER]
        if principal.department_scoped and Relation.OWN not in relations:
            relations = []  # the role's own scope excludes the filtered department
        for sensitivity in Sensitivity:
            same_level = Archive.sensitivity == sensitivity.value
            granted = [rel for rel in relations if decide(sensitivity, rel)]
            if granted and granted == relations:
                allowed.append(same_level)
            elif granted == [Relation.OWN]:
                allowed.append(and_(same_level, Archive.department == principal.department))
            elif granted == [Relation.OTHER]:
                allowed.append(and_(same_level, Archive.department != principal.department))
        windows = self._windows(principal, purpose)
        if not allowed:  # only the windows: the query starts from them
            return Archive.id.in_(windows)
        by_policy = or_(false(), *allowed)
        if principal.department_scoped and department is None:
            # the role's own scope, then the policy narrows it
            by_policy = and_(Archive.department == principal.department, by_policy)
        # ``id || ''``: the windows' few archives are matched row by row, so that SQLite does
        # not answer the OR by a union over the primary key and sort every archive it lists
        # (1.7 s for a clinician's newest-first page at 10^6 archives).
        return or_(by_policy, (Archive.id + "").in_(windows))

    def _windows(self, principal: Principal, purpose: Purpose) -> Select[tuple[str]]:
        """The archives of the caller's open break-glass windows for ``purpose``."""
        return select(BreakGlassWindow.archive_id).where(
            BreakGlassWindow.actor == principal.actor,
            BreakGlassWindow.purpose == purpose.value,
            BreakGlassWindow.expires_at > self.gate.clock(),
        )

    def _posting_scope(self, principal: Principal, filters: SearchFilters) -> _PostingScope:
        """What a text query may skip while walking postings, before reading any archive row:
        with a department filter, every other department's postings; for a department-scoped
        role without one, every other department's except its open break-glass windows'
        archives (``_readable`` lists nothing else). The archive row is still checked against
        every condition: this only narrows the walk (``SearchTerm.department``)."""
        if filters.department:
            department = filters.department
            return lambda posting: posting.department == department
        if principal.department_scoped:
            own = principal.department
            windows = self._windows(principal, filters.purpose or principal.default_purpose)
            return lambda posting: or_(posting.department == own, posting.archive_id.in_(windows))
        return None

    def _catalogue_query(
        self,
        principal: Principal,
        filters: SearchFilters,
        session: Session,
        *,
        merge: bool = True,
    ) -> CatalogueQuery:
        """The catalogue query of ``filters`` within the caller's scope (not yet run).

        Without text, the archives are walked newest first through ``(created_at, id)`` (or
        ``(department, created_at, id)`` for a department filter), each checked against the
        policy and the filters. A text query is driven by its rarest term: that term's postings
        are walked newest archive id first (the primary key's B-tree, backwards, index only),
        and per candidate every other term is probed by (term, archive id) and the archive's
        row is checked by its primary key — a correlated EXISTS that PostgreSQL may not turn
        into a join (``OFFSET 0``: a merge or hash join with every archive would read all of
        them for a rare term). A page costs about ``limit`` probes when matches are dense, not
        a scan of every posting of a frequent term nor of every archive."""
        conditions: list[ColumnElement[bool]] = [
            self._readable(principal, filters.purpose, filters.department or None)
        ]
        if filters.department:
            conditions.append(Archive.department == filters.department)
        if filters.record_class:
            conditions.append(Archive.record_class == filters.record_class.value)
        if filters.state:
            conditions.append(Archive.state == filters.state)
        if filters.patient_id:
            pseudonym = self.pseudonyms.patient(filters.patient_id)
            conditions.append(Archive.patient_pseudonym == pseudonym)
        if filters.encounter:
            visit = self.pseudonyms.encounter(filters.encounter)
            conditions.append(
                Archive.id.in_(
                    select(IngestedMessage.archive_id).where(IngestedMessage.encounter == visit)
                )
            )
        if filters.created_from:
            conditions.append(Archive.created_at >= filters.created_from)
        if filters.created_to:
            conditions.append(Archive.created_at < filters.created_to)
        if filters.keyword:
            needle = f"%{_escape_like(filters.keyword.lower())}%"
            conditions.append(
                or_(
                    Archive.search_text.like(needle, escape="\\"),
                    Archive.id == filters.keyword.upper(),
                )
            )
        cursor = (
            decode_cursor(
                filters.cursor,
                text_search=filters.text is not None,
                filters=self._filters_key(filters),
            )
            if filters.cursor is not None
            else None
        )
        past: tuple[ColumnElement[bool], ...] = ()
        if filters.text is None:
            if cursor is not None:  # row values: one range of the (created_at, id) indexes
                past = (
                    tuple_(Archive.created_at, Archive.id)
                    < tuple_(
                        literal(cursor.created_at, Archive.created_at.type),
                        literal(cursor.archive_id, Archive.id.type),
                    ),
                )
            return CatalogueQuery(
                select(Archive.id).where(*conditions),
                (Archive.created_at.desc(), Archive.id.desc()),
                past,
            )
        terms = query_terms(filters.text)
        if not terms:
            raise InputError("text holds no searchable word", code="invalid_search_text")
        plan = _term_plan(session, terms)
        driver, *others = plan.terms
        scope = self._posting_scope(principal, filters)
        if others and session.get_bind().dialect.name == "postgresql":
            return self._intersected(driver, others, conditions, cursor, scope)
        if plan.merge and merge and self._merge_in_order:
            return self._merged(plan.terms, conditions, cursor, scope)
        posting = aliased(SearchTerm, name="driver")
        walk = select(posting.archive_id).where(posting.term == driver)
        if scope is not None:
            walk = walk.where(scope(posting))
        query = _holding(walk, posting, others)
        row = (
            select(Archive.id)
            .where(Archive.id == posting.archive_id, *conditions)
            .offset(0)  # stays a per-candidate probe on PostgreSQL (see above)
            .correlate(posting)
        )
        query = query.where(row.exists())
        if cursor is not None:
            past = (posting.archive_id < cursor.archive_id,)
        return CatalogueQuery(query, (posting.archive_id.desc(),), past)

    @staticmethod
    def _intersected(
        driver: str,
        others: list[str],
        conditions: list[ColumnElement[bool]],
        cursor: SearchCursor | None,
        scope: _PostingScope,
    ) -> CatalogueQuery:
        """A text query of several terms on PostgreSQL: the terms' postings intersected first,
        newest archive id first, in a subquery that PostgreSQL must not flatten (``OFFSET 0``),
        and the archive's row checked only for what is in every list.

        Written as one query, PostgreSQL checked the row of every posting of the rarest term
        before merging it with the others' (two frequent words rarely together: 0.16 s at 10^6);
        written as a join, it misjudged words that always go together (血常 常规: all of
        50,000 postings hashed, checked and sorted, 0.29 s). Fenced, the merge of the sorted
        postings streams and stops after the page or the cap (docs/benchmarks.md)."""

        def matched(before: str | None = None) -> Select[tuple[str]]:
            posting = aliased(SearchTerm, name="driver")
            inner = select(posting.archive_id.label("archive_id")).where(posting.term == driver)
            if scope is not None:
                inner = inner.where(scope(posting))
            if before is not None:
                inner = inner.where(posting.archive_id < before)
            inner = _holding(inner, posting, others, scope)
            fenced = inner.order_by(posting.archive_id.desc()).offset(0).subquery("matched")
            return _row_checked(fenced, conditions)

        query = matched()
        resumed = matched(cursor.archive_id) if cursor is not None else None
        return CatalogueQuery(query, (query.selected_columns[0].desc(),), page_after=resumed)

    @staticmethod
    def _merged(
        terms: list[str],
        conditions: list[ColumnElement[bool]],
        cursor: SearchCursor | None,
        scope: _PostingScope,
    ) -> CatalogueQuery:
        """A text query of several terms on SQLite whose postings are of like sizes: the
        terms' postings merged (``INTERSECT`` with ``ORDER BY``: SQLite walks the primary key
        of each term newest first and merges them), in a fenced subquery that SQLite runs as a
        co-routine, and the archive's row checked for each archive in every list, as it comes.

        Probing the other terms per posting of the rarest costs a B-tree descent per posting:
        two frequent words rarely together (心肌 梗死, 0 matches at 10^6) took 0.13 s, a
        clinician's 出院 小结 0.11 s. The outer query has no ``ORDER BY``, which SQLite would
        answer by sorting every match before the first page: the co-routine yields the ids
        newest first, and ``_matching`` checks that they come in that order."""

        def matched(before: str | None = None) -> Select[tuple[str]]:
            arms = []
            for term in terms:
                arm = select(SearchTerm.archive_id).where(SearchTerm.term == term)
                if scope is not None:
                    arm = arm.where(scope(SearchTerm))
                if before is not None:
                    arm = arm.where(SearchTerm.archive_id < before)
                arms.append(arm)
            merged = intersect(*arms)
            fenced = (
                merged.order_by(merged.selected_columns[0].desc()).offset(0).subquery("matched")
            )
            return _row_checked(fenced, conditions)

        resumed = matched(cursor.archive_id) if cursor is not None else None
        return CatalogueQuery(matched(), (), page_after=resumed)

    @staticmethod
    def _matching(
        built: CatalogueQuery, filters: SearchFilters, session: Session
    ) -> tuple[int, bool, list[str], bool]:
        """The total, whether it is exact, the page of ids of a catalogue query and whether
        more follow (nothing logged: ``search`` logs the reads; ``scripts/bench_search.py``
        times this part alone).

        Without a cursor the page and the capped count walk the same ordered matches from the
        start, so one statement fetches up to the cap (plus one) ids and both are cut from it:
        matches that are sparse (two words rarely together) are walked once, not twice. After
        a cursor the page starts mid-way and the count covers every match, and a page beyond
        the cap would fetch every id before it: two statements."""
        cap = max(SEARCH_TOTAL_CAP, filters.offset + filters.limit)
        if ArchiveService._one_walk(built, filters):
            walked = list(session.execute(ArchiveService._walk(built, cap)).scalars())
            _check_page_order(built, walked)
            total = len(walked)
            ids = walked[filters.offset : filters.offset + filters.limit + 1]
        else:
            page, counted = ArchiveService._page_and_count(built, filters)
            ids = list(session.execute(page).scalars())
            _check_page_order(built, ids)
            total = session.execute(counted).scalar_one()
        more = len(ids) > filters.limit
        del ids[filters.limit :]
        if total > cap:
            return cap, False, ids, more
        return int(total), True, ids, more

    @staticmethod
    def _one_walk(built: CatalogueQuery, filters: SearchFilters) -> bool:
        """Whether the page and its count come from one walk (``_matching``)."""
        return not built.resumed and filters.offset + filters.limit <= SEARCH_TOTAL_CAP

    @staticmethod
    def _walk(built: CatalogueQuery, cap: int) -> Select[tuple[str]]:
        """The first ``cap + 1`` matching ids in page order (a first page and its count)."""
        return built.query.order_by(*built.order).limit(cap + 1)

    @staticmethod
    def _page_and_count(
        built: CatalogueQuery, filters: SearchFilters
    ) -> tuple[Select[tuple[str]], Select[tuple[int]]]:
        """The page statement and the count statement of a catalogue query (after a cursor or
        beyond the cap). A capped count walks the same order as the page, stopping after the
        cap (so the planner takes the same bounded path, not a scan of every archive)."""
        if built.page_after is not None:  # a cursor's page (never with an offset)
            page = built.page_after
            if built.order:
                page = page.order_by(page.selected_columns[0].desc())
        elif built.order:
            page = built.query.where(*built.after).order_by(*built.order)
        elif filters.offset:  # rows an offset skips escape the order check: sorted instead
            page = built.query.order_by(built.query.selected_columns[0].desc())
        else:
            page = built.query.where(*built.after)
        page = page.limit(filters.limit + 1).offset(filters.offset)  # one more: is there a next
        cap = max(SEARCH_TOTAL_CAP, filters.offset + filters.limit)
        counted = built.query.order_by(*built.order).limit(cap + 1)
        return page, select(func.count()).select_from(counted.subquery())

    def _statements(
        self, principal: Principal, filters: SearchFilters, session: Session
    ) -> list[Select[Any]]:
        """The statements a search runs (``scripts/bench_search.py --explain`` prints their
        plans)."""
        built = self._catalogue_query(principal, filters, session)
        if self._one_walk(built, filters):
            return [self._walk(built, SEARCH_TOTAL_CAP)]
        return list(self._page_and_count(built, filters))

    def events(self, principal: Principal, archive_id: str) -> list[EventView]:
        """Every event of the archive in this node's log, with its anchoring status."""
        principal.require(Action.READ_EVENTS)
        with self.db.session() as session:
            self.ledger.visible(session, principal, archive_id)
            anchored = storage.anchored_size(session)
            views = []
            for entry in storage.entries_for_archive(session, archive_id):
                event = parse_event(entry.event)
                views.append(
                    EventView(
                        log_index=entry.index,
                        leaf_hash=merkle.leaf_hash(entry.event).hex(),
                        event_type=entry.event_type,
                        time=event.time,  # the event's own time (``node.ledger.event_time``)
                        event=event_to_json(event),
                        anchored=entry.index < anchored,
                    )
                )
            return views

    def _log_metadata_reads(
        self,
        principal: Principal,
        archive_ids: list[str],
        purpose: Purpose | None,
        verdict: Verdict | None = None,
    ) -> None:
        """Log that ``principal`` read the catalogue entries of ``archive_ids``: one ACCESS
        (scope metadata) per archive, all in one unit of work, committed before the answer.

        A read repeated by the same caller for the same purpose within
        ``metadata_read_log_window`` is logged once. Archives whose events this node cannot log
        are skipped: those it does not hold (transferred, incoming) and those in transit (the
        custodian's chain is frozen while a transfer is pending). A read allowed only by a
        break-glass window (``verdict``) is always logged, as break-glass."""
        purpose = purpose or principal.default_purpose
        window = self.settings.metadata_read_log_window
        now = monotonic()
        glass = verdict is not None and verdict.break_glass
        with self._reads_lock:
            due = sorted(
                {
                    archive_id
                    for archive_id in archive_ids
                    if glass
                    or now - self._reads.get((principal.actor, archive_id, purpose), -inf) >= window
                }
            )
        if not due:
            return

        def unit(uow: UnitOfWork) -> None:
            rows = uow.session.execute(
                select(Archive).where(Archive.id.in_(due)).order_by(Archive.id).with_for_update()
            ).scalars()
            for archive in rows:
                if not self.ledger.holds(archive):
                    continue
                state = self.ledger.state(uow.session, archive)
                if state.status is ArchiveStatus.TRANSFER_PENDING:
                    continue
                data = AccessData(
                    purpose=purpose,
                    scope=AccessScope.METADATA,
                    break_glass=glass,
                    reason_hash=verdict.reason_hash if verdict is not None and glass else None,
                )
                self.ledger.record(uow, archive, state, AccessEvent, principal.actor, data)
                if verdict is not None:
                    self.gate.count_read(uow, verdict)

        self.units.run(unit)
        if glass:
            return
        with self._reads_lock:
            for archive_id in due:
                self._reads[(principal.actor, archive_id, purpose)] = now
                self._reads.move_to_end((principal.actor, archive_id, purpose))
            while len(self._reads) > _READ_LOG_CACHE_SIZE:
                self._reads.popitem(last=False)

    # -- internals -----------------------------------------------------------------------------

    def _check_media_type(self, media_type: str) -> None:
        if media_type not in self.settings.allowed_media_types:
            raise InputError(
                f"media type {media_type!r} is not accepted by this node",
                code="unsupported_media_type",
            )

    def _store(
        self,
        archive_id: str,
        version: int,
        material: crypto.KeyMaterial,
        content: Iterable[bytes],
        *,
        durable: bool = True,
    ) -> _Stored:
        """Encrypt and store one version; refuses empty and oversize content (nothing kept).
        ``durable=False`` (a ``DeferredSyncStore`` only): the caller syncs the batch."""
        limit = self.settings.max_upload_bytes
        commitment = crypto.Commitment(material.salt)
        counted = {"size": 0}

        def plaintext() -> Iterator[bytes]:
            for chunk in content:
                if not chunk:
                    continue
                counted["size"] += len(chunk)
                if counted["size"] > limit:
                    raise InputError(
                        f"content exceeds the limit of {limit} bytes", code="payload_too_large"
                    )
                commitment.update(chunk)
                yield chunk
            if counted["size"] == 0:
                raise InputError("content is empty", code="empty_content")

        ciphertext = crypto.encrypt_stream(
            material.data_key,
            plaintext(),
            crypto.archive_aad(archive_id, version),
            chunk_size=self.settings.chunk_size,
        )
        if durable:
            ref = self.blobs.put_stream(ciphertext)
        else:
            ref = cast(DeferredSyncStore, self.blobs).put_stream(ciphertext, durable=False)
        return _Stored(ref=ref, size=counted["size"], commitment=commitment.hexdigest())

    def _run_discarding(self, unit: Callable[[UnitOfWork], T], *stored: _Stored) -> T:
        """Run ``unit``; if it fails, delete the blobs stored for it."""
        if self.fault_hook is not None:
            self.fault_hook("ingest-stored")
        try:
            return self.units.run(unit)
        except BaseException:
            self._discard(stored)
            raise

    def _discard(self, stored: Iterable[_Stored]) -> None:
        """Delete blobs stored for a request that failed (best effort, each reported)."""
        for item in stored:
            try:
                self.blobs.delete(item.ref.cid)
            except Exception:  # the original error matters more; the blob is reported
                log.exception("could not delete blob %s after a failed request", item.ref.cid)


_INSERT_TERMS_QMARK = "INSERT INTO search_terms (term, archive_id, department) VALUES (?, ?, ?)"
_INSERT_TERMS = "INSERT INTO search_terms (term, archive_id, department) VALUES (%s, %s, %s)"


@dataclass(frozen=True)
class _TermPlan:
    """How a text query walks its terms' postings: ``terms`` rarest first (the driver of the
    probing plan first), and whether SQLite should merge them instead (``_merged``)."""

    terms: list[str]
    merge: bool


def _term_plan(session: Session, terms: list[str]) -> _TermPlan:
    """Compare the terms over the newest archive ids, where a first page is found (two short
    statements, index only, at most ``_DENSITY_WINDOW`` postings per term and then
    ``_MERGE_RATIO`` times as many per other term).

    The rarest term is the one with the fewest postings, or, when every term has
    ``_DENSITY_WINDOW`` or more, the one whose ``_DENSITY_WINDOW``-th newest posting is oldest.
    Over that posting's range (its ``n`` newest postings, from archive id ``x`` up), each
    other term's postings are counted up to ``_MERGE_RATIO × n + 1``: the terms are merged when
    none holds more (a merge reads every posting in the range; probing reads ``n`` postings and
    probes each). Counting every posting of two frequent words instead took 10–18 ms at 10^6
    archives; this takes about 2 ms."""
    if len(terms) == 1:
        return _TermPlan(terms, merge=False)
    window: list[Any] = []
    for term in terms:
        newest = (
            select(SearchTerm.archive_id)
            .where(SearchTerm.term == term)
            .order_by(SearchTerm.archive_id.desc())
            .limit(_DENSITY_WINDOW)
            .subquery()
        )
        window += [
            select(func.count()).select_from(newest).scalar_subquery(),
            select(func.min(newest.c.archive_id)).scalar_subquery(),
        ]
    row = session.execute(select(*window)).one()
    seen = {term: (row[2 * i], row[2 * i + 1]) for i, term in enumerate(terms)}
    # fewest postings first; among full windows, the oldest window's end first
    ordered = sorted(terms, key=lambda t: (seen[t][0], seen[t][1] or ""))
    rarest, *others = ordered
    held, oldest = seen[rarest]
    if held == 0 or _MERGE_RATIO <= 0:
        return _TermPlan(ordered, merge=False)
    bound = _MERGE_RATIO * held
    probes = [
        select(func.count())
        .select_from(
            select(SearchTerm.archive_id)
            .where(SearchTerm.term == other, SearchTerm.archive_id >= oldest)
            .limit(bound + 1)
            .subquery()
        )
        .scalar_subquery()
        for other in others
    ]
    within = session.execute(select(*probes)).one()
    return _TermPlan(ordered, merge=all(n <= bound for n in within))


class _OutOfOrder(Exception):
    """A query that yields its ids in page order (``CatalogueQuery.order`` empty) did not."""


def _check_page_order(built: CatalogueQuery, ids: list[str]) -> None:
    """Raise ``_OutOfOrder`` unless ``ids`` come newest first, where the query itself orders
    them (an in-order merge without an outer ``ORDER BY``, ``ArchiveService._merged``)."""
    if not built.order and any(a <= b for a, b in pairwise(ids)):
        raise _OutOfOrder


def insert_terms(connection: Connection, rows: list[tuple[str, str, str]]) -> None:
    """Insert (term, archive id, department) rows of ``search_terms`` in the caller's
    transaction, sorted by the primary key (neighbouring B-tree pages): binary ``COPY`` on
    PostgreSQL (psycopg 3), a plain DB-API ``executemany`` elsewhere. A 4 KB document has about
    40 terms, so SQLAlchemy's per-row parameter processing cost more than the rows themselves (a
    profile of bulk import).
    Driver errors are raised as SQLAlchemy's (``IntegrityError`` …)."""
    if not rows:
        return
    rows.sort()
    dialect = connection.dialect
    if dialect.driver != "psycopg":
        statement = _INSERT_TERMS_QMARK if dialect.paramstyle == "qmark" else _INSERT_TERMS
        connection.exec_driver_sql(statement, rows)
        return
    import psycopg

    driver = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    statement = "COPY search_terms (term, archive_id, department) FROM STDIN (FORMAT BINARY)"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(("varchar", "varchar", "varchar"))
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


_CREATE_SPLICED = (
    "log_index",
    "archive_id",
    "data.patient",
    "data.commitment",
    "data.ciphertext_sha256",
    "data.size",
)
"""The fields of a CREATE event that differ between the archives of one template (all made by
this node: ids, pseudonyms, hashes, sizes); every other value is validated once per template."""


def _created_view(row: dict[str, Any], version: dict[str, Any]) -> ArchiveView:
    """The view of an archive written by ``_record_creates`` (what ``ArchiveView.of`` gives for
    the same rows)."""
    return ArchiveView(
        id=row["id"],
        record_class=row["record_class"],
        sensitivity=row["sensitivity"],
        department=row["department"],
        title=row["title"],
        patient_pseudonym=row["patient_pseudonym"],
        source_system=row["source_system"],
        metadata=dict(row["metadata_json"]),
        state=row["state"],
        custodian=row["custodian"],
        trigger_date=row["trigger_date"],
        retention_policy=None,
        retention_deadline=None,
        on_hold=row["on_hold"],
        hold_by_regulator=row["hold_by_regulator"],
        current_version=1,
        event_count=1,
        chain_status=row["chain_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=None,
        versions=(
            VersionView(
                version=1,
                size=version["size"],
                media_type=version["media_type"],
                filename=version["filename"],
                cid=version["cid"],
                ciphertext_sha256=version["ciphertext_sha256"],
                commitment=version["commitment"],
                created_at=version["created_at"],
            ),
        ),
    )


# --------------------------------------------------------------------------------------------
# canonical bytes of batched ACCESS events


class _AccessBytes:
    """Canonical bytes of ACCESS events that differ from a validated ``template`` only in log
    index, archive id, actor and prev: the template's RFC 8785 text with those four values spliced
    in, encoded as the canonical encoder encodes them (JSON strings, a decimal integer). Key
    order does not depend on values, so the text around them is fixed; this is several times
    cheaper than serialising each event. The first rendering is checked against
    ``canonical_bytes`` of the template, so a change in the event schema cannot slip through."""

    FIELDS = ("actor", "archive_id", "log_index", "prev")

    def __init__(self, template: AccessEvent) -> None:
        document = event_to_json(template)
        sentinels = {name: f"\x01{name}\x01" for name in self.FIELDS}
        document.update(sentinels)
        text = jcs(document).decode("utf-8")
        located = sorted((text.index(json.dumps(mark)), name) for name, mark in sentinels.items())
        self._order = tuple(self.FIELDS.index(name) for _, name in located)
        self._parts: list[str] = []
        start = 0
        for position, name in located:
            self._parts.append(text[start:position])
            start = position + len(json.dumps(sentinels[name]))
        self._tail = text[start:]
        expected = canonical_bytes(template)
        rendered = self.render(
            template.log_index, template.archive_id, template.actor, template.prev
        )
        if rendered != expected:
            raise NodeError(
                "spliced ACCESS event bytes differ from canonical_bytes", code="encoding_mismatch"
            )

    def render(self, log_index: int, archive_id: str, actor: str, prev: str | None) -> bytes:
        """The canonical bytes of the template with these four values."""
        values = (
            _json_string(actor),
            _json_string(archive_id),
            str(log_index),
            "null" if prev is None else _json_string(prev),
        )
        pieces: list[str] = []
        for part, slot in zip(self._parts, self._order, strict=True):
            pieces.append(part)
            pieces.append(values[slot])
        pieces.append(self._tail)
        return "".join(pieces).encode("utf-8")


_json_string = json.encoder.encode_basestring
"""A Python string as a JSON string, exactly as ``json.dumps(..., ensure_ascii=False)`` writes it."""


# --------------------------------------------------------------------------------------------
# helpers


def _create_data(new: NewArchive, patient: str, stored: _Stored) -> CreateData:
    """The CREATE event's data of a first version (one builder for both create paths)."""
    return CreateData(
        record_class=new.record_class,
        sensitivity=new.sensitivity,
        department=new.department,
        patient=patient,
        source_system=new.source_system,
        version=1,
        commitment=stored.commitment,
        ciphertext_sha256=stored.ref.sha256,
        size=stored.size,
        media_type=new.media_type,
    )


def _reason_hash(reason: str) -> str:
    """Reasons stay local; events carry only their hash (reasons may contain PHI)."""
    text = reason.strip()
    if not text:
        raise InputError("a reason is required", code="reason_required")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def search_text(title: str, metadata: dict[str, Any]) -> str:
    parts = [title]
    parts.extend(f"{key} {value}" for key, value in sorted(metadata.items()))
    return " ".join(parts).lower()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
