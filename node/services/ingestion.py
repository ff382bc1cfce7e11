"""Ingestion: records pushed by hospital systems (FHIR, HL7 v2, DICOM, documents) become archives.

One call turns one incoming document (bytes, media type, patient id, encounter, source system,
what the source said about it) into an archive through ``ArchiveService.create``: classified and
graded by ``node.classification`` (the deciding rules are kept with the archive), and recorded
together with its source message in the same unit of work. A message the node has already taken
(same source system and message id: HL7 MSH-10, a FHIR resource id, a DICOM SOP Instance UID) is
not archived again; the caller gets the first archive back, marked as a duplicate. Two copies of a
message racing each other are settled by the unique key: the loser's unit fails, its blob is
deleted, and it answers with the winner's archive.

Messages that carry no record (an ADT admission) are remembered the same way
(``remember_message``), so a resent ADT is reported to the encounter listeners once.

Nothing here logs a patient id, an encounter number, a title or content: log lines name source
systems, message kinds and archive ids only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from anchoring import lifecycle
from anchoring.errors import AnchoringError
from anchoring.events import (
    EventType,
    ReclassifyData,
    ReclassifyEvent,
    RecordClass,
    Sensitivity,
)
from anchoring.lifecycle import ArchiveState, ArchiveStatus
from node.classification import (
    DEFAULT_RULES,
    Classification,
    ClassificationRules,
    SourceHints,
    classify,
)
from node.db import Database, UnitOfWork, UnitRunner
from node.encounters import EncounterKind, EncounterReport, EncounterSink
from node.errors import BatchRefusedError, ConflictError, InputError, NodeError
from node.filenames import display_name
from node.ledger import Ledger
from node.models import Archive, IngestedMessage
from node.principal import Action, Principal, Role
from node.pseudonyms import Pseudonyms
from node.retention import floor_years
from node.searchtext import searchable_text
from node.services.archives import (
    ArchiveService,
    NewArchive,
    NewContent,
    search_text,
)
from node.services.records import ArchiveView
from node.services.retention import extend_retention

log = logging.getLogger(__name__)

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_MESSAGE_ID = 200
MAX_PATIENT_ID = 128
MAX_TITLE = 256
MAX_BATCH = 1000
CORRECTION_RULE = "correction"
"""The rule id an archivist's correction (RECLASSIFY) leaves in ``class_rule``/``sensitivity_rule``."""

DEPARTMENT_CODES: dict[str, str] = {
    "门诊": "outpatient",
    "住院部": "inpatient",
    "急诊科": "emergency",
    "急诊": "emergency",
    "检验科": "laboratory",
    "检验": "laboratory",
    "病理科": "pathology",
    "影像科": "radiology",
    "放射科": "radiology",
    "超声科": "ultrasound",
    "护理部": "nursing",
    "护理": "nursing",
    "行政": "administration",
    "医务科": "administration",
    "精神科": "psychiatry",
    "心理科": "psychiatry",
    "遗传科": "genetics",
    "生殖医学科": "reproductive",
    "心内科": "cardiology",
    "肿瘤科": "oncology",
}
"""Chinese department names senders use → the ASCII department codes archives carry."""

CLASS_DEPARTMENTS: dict[str, str] = {
    "OUTPATIENT": "outpatient",
    "EMERGENCY": "emergency",
    "INPATIENT": "inpatient",
    "LAB": "laboratory",
    "IMAGING": "radiology",
    "NURSING": "nursing",
    "ADMINISTRATIVE": "administration",
}
"""The department of a record whose source named none usable: the one its class belongs to."""


@dataclass(frozen=True)
class IncomingDocument:
    """One record as a hospital system sent it."""

    content: bytes
    media_type: str
    patient_id: str
    source_system: str
    title: str
    message_id: str | None = None  # the source's id of this message (idempotency key)
    encounter_id: str | None = None  # the source's visit / stay number
    department: str | None = None
    hints: SourceHints = field(default_factory=SourceHints)
    filename: str | None = None
    trigger_date: date | None = None
    kind: str = "document"  # fhir-documentreference, hl7-oru, dicom, … (no PHI)
    metadata: dict[str, Any] = field(default_factory=dict)  # codes only, no PHI
    text: str = ""  # text extracted from the record, for keyword search only


@dataclass(frozen=True)
class Ingested:
    """What became of one incoming document."""

    archive: ArchiveView
    duplicate: bool  # already taken earlier: nothing new was stored
    classification: Classification | None  # None for a duplicate (decided the first time)


@dataclass(frozen=True)
class _Plan:
    item: NewContent
    key: tuple[str, str] | None
    decided: Classification
    source: str
    kind: str


@dataclass(frozen=True)
class EncounterBatch:
    """What closing an encounter archived, what failed (with the refusal's code), and the
    encounter's records that were not waiting in CREATED (already archived, transferred …)."""

    archived: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    not_created: tuple[str, ...]


class EncounterBatchArchiver:
    """An encounter listener: when an encounter closes (a discharge, or a finished visit), the
    records ingested for it that wait in CREATED are archived in one batch, retention counted
    from that day."""

    CLOSING = frozenset({EncounterKind.DISCHARGE, EncounterKind.VISIT})

    def __init__(self, ingestion: IngestionService, principal: Principal) -> None:
        self.ingestion = ingestion
        self.principal = principal
        self.last: EncounterBatch | None = None

    def report_encounter(self, report: EncounterReport) -> None:
        if report.kind not in self.CLOSING or not report.encounter_id:
            return
        self.last = self.ingestion.archive_encounter(
            self.principal, report.encounter_id, report.at.date()
        )


def system_principal(pseudonyms: Pseudonyms, name: str) -> Principal:
    """The caller a listener without API keys acts as (an MLLP or DICOM listener): an archivist
    whose events carry the keyed pseudonym of ``system:<name>``."""
    return Principal(
        key_id=0,
        name=f"system:{name}",
        role=Role.ARCHIVIST,
        actor=pseudonyms.staff(f"system:{name}"),
    )


class IngestionService:
    """Turns incoming documents into archives, once each."""

    def __init__(
        self,
        *,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        archives: ArchiveService,
        pseudonyms: Pseudonyms,
        encounters: EncounterSink,
        rules: ClassificationRules = DEFAULT_RULES,
    ) -> None:
        self.encounters = encounters
        self.rules = rules
        log.info("classification rules %s", rules.digest)
        self.db = db
        self.units = units
        self.ledger = ledger
        self.archives = archives
        self.pseudonyms = pseudonyms

    def ingest(self, principal: Principal, doc: IncomingDocument) -> Ingested:
        """Archive ``doc`` (state CREATED) unless its message was taken before."""
        return self.ingest_batch(principal, [doc])[0]

    def ingest_batch(
        self, principal: Principal, docs: Sequence[IncomingDocument]
    ) -> list[Ingested]:
        """Archive every document of ``docs`` in one unit of work: all or none. Documents whose
        message was taken before (or that repeat an earlier document of the batch) are answered
        with the archive they already are, and store nothing."""
        principal.require(Action.CREATE)
        if not 1 <= len(docs) <= MAX_BATCH:
            raise InputError(f"a batch holds 1 to {MAX_BATCH} documents", code="invalid_batch")
        for _attempt in range(2):
            taken = self._taken(docs)
            plans = [
                self._planned(principal, doc, taken, index, len(docs))
                for index, doc in enumerate(docs)
            ]
            fresh: dict[tuple[str, str], int] = {}
            items: list[NewContent] = []
            slots: list[int | tuple[str, str] | Ingested] = []
            for plan in plans:
                if isinstance(plan, Ingested):
                    slots.append(plan)
                    continue
                if plan.key is not None and plan.key in fresh:
                    slots.append(plan.key)  # the same message twice in one batch
                    continue
                if plan.key is not None:
                    fresh[plan.key] = len(items)
                slots.append(len(items))
                items.append(plan.item)
            try:
                views = self.archives.create_many(principal, items)
            except IntegrityError:
                # Another copy of one of these messages won a race: plan again, finding it.
                continue
            results: list[Ingested] = []
            for slot, plan in zip(slots, plans, strict=True):
                if isinstance(slot, Ingested):
                    results.append(slot)
                elif isinstance(slot, tuple):
                    results.append(
                        Ingested(views[fresh[slot]], duplicate=True, classification=None)
                    )
                else:
                    assert not isinstance(plan, Ingested)
                    results.append(
                        Ingested(views[slot], duplicate=False, classification=plan.decided)
                    )
                    log.info(
                        "ingested %s from %s as archive %s", plan.kind, plan.source, views[slot].id
                    )
            return results
        raise ConflictError(
            "the same messages are being ingested concurrently; retry", code="concurrent_ingest"
        )

    def _taken(self, docs: Sequence[IncomingDocument]) -> set[tuple[str, str]]:
        """Which of the documents' (source, message id) keys are already taken (one query per
        source system; malformed keys are left for ``_plan`` to refuse)."""
        wanted: dict[str, set[str]] = {}
        for doc in docs:
            if doc.message_id is None:
                continue
            try:
                source, message_id = (
                    _code(doc.source_system, "source_system"),
                    _message_id(doc.message_id),
                )
            except InputError:
                continue  # refused by _plan, with its reason
            wanted.setdefault(source, set()).add(message_id)
        taken: set[tuple[str, str]] = set()
        with self.db.session() as session:
            for source, ids in wanted.items():
                found = session.execute(
                    select(IngestedMessage.message_id).where(
                        IngestedMessage.source_system == source,
                        IngestedMessage.message_id.in_(sorted(ids)),
                    )
                ).scalars()
                taken.update((source, message_id) for message_id in found)
        return taken

    def _planned(
        self,
        principal: Principal,
        doc: IncomingDocument,
        taken: set[tuple[str, str]],
        index: int,
        count: int,
    ) -> _Plan | Ingested:
        """``_plan``; in a batch of several, a refusal names the document's position in
        ``details.index`` (a batch route reports which item refused the whole batch)."""
        try:
            return self._plan(principal, doc, taken)
        except NodeError as exc:
            if count > 1:
                exc.details = {**(exc.details or {}), "index": index}
            raise

    def _plan(
        self, principal: Principal, doc: IncomingDocument, taken: set[tuple[str, str]]
    ) -> _Plan | Ingested:
        """Validate and classify one document, or find the archive its message already is."""
        source = _code(doc.source_system, "source_system")
        message_id = _message_id(doc.message_id) if doc.message_id is not None else None
        patient_id = _text(doc.patient_id, "patient_id", MAX_PATIENT_ID)
        title = _title(doc.title)
        # Checked before a duplicate is answered, like every field above: a document's refusal
        # must not depend on whether its message was taken (a batch names the refused document,
        # and a client may report it without sending it alone).
        encounter = self._encounter(doc.encounter_id)
        if message_id is not None and (source, message_id) in taken:
            earlier = self._earlier(principal, source, message_id)
            if earlier is not None:
                return earlier
        hints = doc.hints
        if hints.department is None and doc.department is not None:
            hints = replace(hints, department=doc.department)
        decided = classify(hints, self.rules)
        department = _department(doc.department, decided)
        if principal.department_scoped and principal.department is not None:
            department = principal.department  # a clinician files into their own department
        metadata = {
            **_message_metadata(doc.metadata),
            "class_rule": decided.class_rule,
            "sensitivity_rule": decided.sensitivity_rule,
            "ingested_via": doc.kind,
        }
        new = NewArchive(
            record_class=decided.record_class,
            sensitivity=decided.sensitivity,
            department=department,
            title=title,
            patient_id=patient_id,
            source_system=source,
            media_type=doc.media_type,
            filename=display_name(doc.filename),
            trigger_date=doc.trigger_date,
            metadata=metadata,
            text=searchable_text(
                doc.content, doc.media_type, self.archives.settings, extracted=doc.text
            ),
        )
        patient = self.pseudonyms.patient(patient_id)
        kind = doc.kind[:32]

        def message_row(archive_id: str, now: datetime) -> dict[str, Any]:
            """The ``ingested_messages`` row of the archive (written with the batch's others)."""
            return {
                "source_system": source,
                "message_id": message_id or f"archive:{archive_id}",
                "kind": kind,
                "archive_id": archive_id,
                "patient_pseudonym": patient,
                "encounter": encounter,
                "class_rule": decided.class_rule[:96],
                "sensitivity_rule": decided.sensitivity_rule[:96],
                "received_at": now,
            }

        key = (source, message_id) if message_id is not None else None
        item = NewContent(new, [doc.content], message=message_row)
        return _Plan(item=item, key=key, decided=decided, source=source, kind=kind)

    def remember_message(
        self,
        principal: Principal,
        *,
        source_system: str,
        message_id: str,
        kind: str,
        patient_id: str | None = None,
        encounter_id: str | None = None,
    ) -> bool:
        """Record a message that carries no record (e.g. ADT). False when it was seen before."""
        principal.require(Action.CREATE)
        source = _code(source_system, "source_system")
        message = _message_id(message_id)
        patient = self.pseudonyms.patient(patient_id) if patient_id else None
        encounter = self._encounter(encounter_id)

        def unit(uow: UnitOfWork) -> bool:
            seen = uow.session.execute(
                select(IngestedMessage.id).where(
                    IngestedMessage.source_system == source,
                    IngestedMessage.message_id == message,
                )
            ).first()
            if seen is not None:
                return False
            uow.session.add(
                IngestedMessage(
                    source_system=source,
                    message_id=message,
                    kind=kind[:32],
                    patient_pseudonym=patient,
                    encounter=encounter,
                    received_at=uow.now,
                )
            )
            uow.session.flush()
            return True

        try:
            return self.units.run(unit)
        except IntegrityError:  # a concurrent copy of the same message was recorded first
            return False

    def receive_encounter(
        self,
        principal: Principal,
        report: EncounterReport,
        *,
        source_system: str,
        message_id: str | None,
        kind: str,
    ) -> bool:
        """An encounter (ADT, FHIR Encounter) from a hospital system, reported to the encounter
        listeners and then remembered by message id. False for a resend of a message already
        reported (nothing reported again). If a listener fails, nothing is remembered, so the
        sender's retry reports it again (listeners are idempotent for the same report)."""
        principal.require(Action.CREATE)
        source = _code(source_system, "source_system")
        message = _message_id(message_id) if message_id is not None else None
        if message is not None:
            with self.db.session() as session:
                seen = session.execute(
                    select(IngestedMessage.id).where(
                        IngestedMessage.source_system == source,
                        IngestedMessage.message_id == message,
                    )
                ).first()
            if seen is not None:
                return False
        self.encounters.report_encounter(report)
        if message is not None:
            self.remember_message(
                principal,
                source_system=source,
                message_id=message,
                kind=kind,
                patient_id=report.patient_id,
                encounter_id=report.encounter_id,
            )
        log.info("encounter %s (%s) from %s reported", report.kind.value, kind, source)
        return True

    def archive_encounter(
        self, principal: Principal, encounter_id: str, trigger_date: date
    ) -> EncounterBatch:
        """Archive every CREATED record of a closed encounter that passes quality control in one
        unit (retention from ``trigger_date``, the discharge or visit); the records refused (by
        quality control under ``qc_policy = "refuse"``, or by a state changed meanwhile) are
        listed with their codes, never skipped silently."""
        principal.require(Action.ARCHIVE)
        candidates = self.encounter_archives(encounter_id, state="CREATED")
        others = [
            archive_id
            for archive_id in self.encounter_archives(encounter_id)
            if archive_id not in candidates
        ]
        if not candidates:
            return EncounterBatch(archived=(), failed=(), not_created=tuple(others))
        archived, failed = self._archive_passing(principal, candidates, trigger_date)
        log.info(
            "encounter batch: %d archived, %d failed, %d not in CREATED",
            len(archived),
            len(failed),
            len(others),
        )
        return EncounterBatch(archived=archived, failed=failed, not_created=tuple(others))

    def reclassify(
        self,
        principal: Principal,
        archive_id: str,
        *,
        record_class: RecordClass | None,
        sensitivity: Sensitivity | None,
        reason: str,
    ) -> ArchiveView:
        """An archivist's correction of the class and/or sensitivity the rules gave a record:
        a RECLASSIFY event, the catalogue row, its ``class_rule``/``sensitivity_rule``
        (``correction``) and its ingestion row, in one unit of work. The reason stays local; the
        event carries its hash. Nothing changes (409 ``no_change``) when both equal the current
        ones.

        An ARCHIVED record may be corrected too: its sensitivity freely (it decides reads, not
        retention), its class only toward a retention at least as long (legal floor and
        configured years both ≥ the old class's; else 409 ``retention_would_shorten``). When the
        new class keeps the record longer (from the archive's trigger date), a RETENTION_EXTEND
        to that deadline follows in the same unit, with ``extendRetention`` queued for the
        chain. The on-chain class code stays the one ARCHIVE registered (the registry has no
        class update): the correction is proven by the RECLASSIFY event in the anchored log."""
        principal.require(Action.RECLASSIFY)
        if record_class is None and sensitivity is None:
            raise InputError("give record_class or sensitivity", code="invalid_reclassify")
        reason_hash = _reason_hash(reason)

        def unit(uow: UnitOfWork) -> ArchiveView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            lifecycle.check_allowed(state, EventType.RECLASSIFY)
            new_class = record_class or state.record_class
            new_grade = sensitivity or state.sensitivity
            if new_class is state.record_class and new_grade is state.sensitivity:
                raise ConflictError(
                    f"archive {archive.id} already has that class and sensitivity",
                    code="no_change",
                )
            data = ReclassifyData(
                previous_class=state.record_class,
                previous_sensitivity=state.sensitivity,
                record_class=new_class,
                sensitivity=new_grade,
                reason_hash=reason_hash,
            )
            deadline = self._corrected_deadline(archive, state, new_class)
            after = self.ledger.record(uow, archive, state, ReclassifyEvent, principal.actor, data)
            if deadline is not None:  # the same extension as RetentionService's
                extend_retention(
                    uow,
                    self.ledger,
                    archive,
                    after,
                    deadline,
                    principal.actor,
                    "reclassify",
                    reason,
                )
            metadata = dict(archive.metadata_json or {})
            if new_class is not state.record_class:
                metadata["class_rule"] = CORRECTION_RULE
            if new_grade is not state.sensitivity:
                metadata["sensitivity_rule"] = CORRECTION_RULE
            archive.record_class = new_class.value
            archive.sensitivity = new_grade.value
            archive.metadata_json = metadata
            archive.search_text = search_text(archive.title, metadata)
            message = uow.session.execute(
                select(IngestedMessage).where(IngestedMessage.archive_id == archive.id)
            ).scalar_one_or_none()
            if message is not None:
                message.class_rule = str(metadata.get("class_rule", message.class_rule))[:96]
                message.sensitivity_rule = str(
                    metadata.get("sensitivity_rule", message.sensitivity_rule)
                )[:96]
            uow.session.flush()
            return ArchiveView.of(archive)

        view = self.units.run(unit)
        log.info("archive %s reclassified by an archivist", view.id)
        return view

    def _corrected_deadline(
        self, archive: Archive, state: ArchiveState, new_class: RecordClass
    ) -> datetime | None:
        """The later deadline an ARCHIVED record's new class gives it (None: none needed);
        refuses a class that would keep it for less."""
        if state.status is not ArchiveStatus.ARCHIVED or new_class is state.record_class:
            return None
        policies = self.archives.policies
        old, new = policies.of(state.record_class), policies.of(new_class)
        if floor_years(new_class.value) < floor_years(state.record_class.value) or (
            new.years < old.years
        ):
            raise ConflictError(
                f"archive {archive.id} is archived as {state.record_class.value} "
                f"({old.years} years, legal floor {old.floor}); {new_class.value} "
                f"({new.years} years, floor {new.floor}) would keep it for less: an archived "
                "record's class may change only toward a retention at least as long",
                code="retention_would_shorten",
            )
        if state.trigger_date is None or state.retention_deadline is None:  # pragma: no cover
            return None
        deadline = new.deadline(state.trigger_date)
        return deadline if deadline > state.retention_deadline else None

    def _archive_passing(
        self, principal: Principal, candidates: list[str], trigger_date: date
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """Archive the candidates that pass quality control and the lifecycle in one batch: a
        refused batch names its failing members (``qc_failed``, ``illegal_transition`` …), which
        are listed and left out, and the rest is tried again as one batch. Only if a batch
        fails without naming members (one left, a database error) is each tried alone."""
        remaining = list(candidates)
        failed: list[tuple[str, str]] = []
        for _attempt in range(3):
            if not remaining:
                return (), tuple(failed)
            try:
                views = self.archives.archive_many(principal, remaining, trigger_date)
                return tuple(view.id for view in views), tuple(failed)
            except BatchRefusedError as exc:
                refused = dict(exc.failures)
                failed.extend(exc.failures)
                remaining = [archive_id for archive_id in remaining if archive_id not in refused]
            except (NodeError, AnchoringError):
                break
        done: list[str] = []
        for archive_id in remaining:
            try:
                done.append(self.archives.archive(principal, archive_id, trigger_date).id)
            except (NodeError, AnchoringError) as exc:
                failed.append((archive_id, exc.code))
        return tuple(done), tuple(failed)

    def encounter_archives(self, encounter_id: str, *, state: str | None = None) -> list[str]:
        """Ids of the archives ingested for an encounter (optionally only those in ``state``)."""
        pseudonym = self._encounter(encounter_id)
        query = (
            select(Archive.id)
            .join(IngestedMessage, IngestedMessage.archive_id == Archive.id)
            .where(IngestedMessage.encounter == pseudonym)
            .order_by(Archive.created_at, Archive.id)
        )
        if state is not None:
            query = query.where(Archive.state == state)
        with self.db.session() as session:
            return list(session.execute(query).scalars())

    # -- internals -----------------------------------------------------------------------------

    def _encounter(self, encounter_id: str | None) -> str | None:
        if encounter_id is None or not encounter_id.strip():
            return None
        return self.pseudonyms.encounter(_text(encounter_id, "encounter", MAX_MESSAGE_ID))

    def _earlier(self, principal: Principal, source: str, message_id: str) -> Ingested | None:
        with self.db.session() as session:
            row = session.execute(
                select(IngestedMessage).where(
                    IngestedMessage.source_system == source,
                    IngestedMessage.message_id == message_id,
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            if row.archive_id is None:
                raise InputError(
                    f"message {message_id!r} of {source} was taken as a message without a record",
                    code="message_id_reused",
                )
            archive = self.ledger.visible(session, principal, row.archive_id)
            return Ingested(ArchiveView.of(archive), duplicate=True, classification=None)


def _reason_hash(reason: str) -> str:
    """SHA-256 of the justification (it stays local: it may name the patient)."""
    text = reason.strip()
    if not text or len(text) > 2000:
        raise InputError("a reason of 1-2000 characters is required", code="reason_required")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _code(value: str, name: str) -> str:
    text = value.strip()
    if not _CODE.fullmatch(text):
        raise InputError(
            f"{name} must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit",
            code=f"invalid_{name}",
        )
    return text


def _text(value: str, name: str, limit: int) -> str:
    text = value.strip()
    if not text or len(text) > limit or _CONTROL.search(text):
        raise InputError(f"{name} must be 1-{limit} printable characters", code=f"invalid_{name}")
    return text


def _message_id(value: str) -> str:
    return _text(value, "message_id", MAX_MESSAGE_ID)


def _title(value: str) -> str:
    """A displayable title: control characters become spaces, cut to the column's size."""
    text = " ".join(_CONTROL.sub(" ", value).split())[:MAX_TITLE]
    return text or "untitled"


def _message_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata read from a message: texts with their control characters as spaces (PostgreSQL
    cannot store NUL, and the API refuses control characters in metadata: ``MetaText``); empty
    values, and texts left blank by that, are dropped."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = _CONTROL.sub(" ", value)
            if not value.strip():
                continue
        if value is not None:
            kept[key] = value
    return kept


def _department(value: str | None, decided: Classification) -> str:
    """The ASCII department code of a record: the sender's, its Chinese name's code, or its
    class's department."""
    if value:
        text = value.strip()
        if text in DEPARTMENT_CODES:
            return DEPARTMENT_CODES[text]
        lowered = text.lower().replace(" ", "-")
        if _CODE.fullmatch(lowered):
            return lowered
    return CLASS_DEPARTMENTS[decided.record_class.value]
