"""Retention and disposition: deadlines that only move later, and four-eyes disposition review.

- ``extend``: an archivist moves a deadline later, with a reason kept on this node
  (RETENTION_EXTEND, ``extendRetention`` on chain); an earlier or equal deadline is refused (409
  ``retention_shortened``).
- ``report_encounter`` (an ``EncounterSink``): a visit restarts the clock of the patient's
  outpatient and emergency records, a discharge that of the inpatient and nursing records. A
  deadline moves only forward; records not yet archived get the later trigger date.
- ``start_dispositions`` (a scheduler job, and on demand): every archive held here whose deadline
  has passed, ARCHIVED (so not in transfer) and not on hold, enters DISPOSITION_REVIEW
  (DISPOSITION_START). ``remind`` raises ``retention_due`` alerts at the configured horizons;
  ``overdue`` a ``disposition_overdue`` alert for each archive past its deadline by more than
  ``disposition_overdue_days`` without a disposition (still ARCHIVED or in DISPOSITION_REVIEW,
  not on hold: a hold is a lawful reason to keep it).
- ``propose`` / ``decide``: an archivist proposes a disposition list (销毁清册) of archives in
  review, with a reason; a records manager who is not the proposer approves (valid until
  ``disposition_approval_days`` later) or rejects (the deadline moves: RETENTION_EXTEND) each item.
  A hold at any point blocks approval. ``expire_approvals`` ends approvals not executed in time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, cast

from coincurve import PrivateKey
from Crypto.Hash import keccak as keccak_hash
from eth_account.signers.local import LocalAccount
from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.orm import Session, load_only
from sqlalchemy.orm.attributes import set_committed_value
from ulid import ULID

from anchoring.certificate import (
    CERTIFICATE_FORMAT,
    canonical_certificate,
    certificate_hash,
    typed_digest,
)
from anchoring.deployment import Deployment
from anchoring.events import (
    DestroyData,
    DestroyEvent,
    DestructionMethod,
    DispositionApproveData,
    DispositionApproveEvent,
    DispositionProposeData,
    DispositionProposeEvent,
    DispositionStartData,
    DispositionStartEvent,
    RetentionExtendData,
    RetentionExtendEvent,
    RevokeReason,
    ShareRevokeData,
    ShareRevokeEvent,
    format_time,
)
from anchoring.ids import archive_key
from anchoring.lifecycle import ArchiveState, ArchiveStatus
from anchoring.worker import enqueue_call, enqueue_calls
from node.alerts import AlertNotice, AlertSink, Severity
from node.blobstore import BlobStore
from node.blobstore.local import LocalBlobStore
from node.config import NodeSettings
from node.custodyguard import CustodyReader, chain_refusals
from node.db import Clock, Database, UnitOfWork, UnitRunner
from node.encounters import EncounterKind, EncounterReport, EncounterSink
from node.erasure import ERASED_COLUMNS, erase_archive_content
from node.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
)
from node.eventsplice import SplicedEvent
from node.keyring import KeyRing
from node.ledger import Ledger, Settled, normalise_id
from node.ledgerstate import VersionRow, plain_states, version_rows
from node.models import (
    Archive,
    ArchiveVersion,
    DestructionCertificate,
    DispositionDecision,
    DispositionItem,
    DispositionProposal,
    RetentionChange,
)
from node.principal import Action, Principal
from node.pseudonyms import Pseudonyms
from node.retention import RetentionPolicies, Trigger
from node.services.notices import DestructionNoticeService
from node.services.records import ArchiveView
from node.tombstones import Tombstone, TombstoneLedger

FaultHook = Callable[[str], None]

log = logging.getLogger(__name__)

MAX_PROPOSAL_ITEMS = 1000
DISPOSITION_BATCH = 500
"""Archives moved to review per unit of work by ``start_dispositions``."""
ENCOUNTER_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a reported encounter may lie (clock differences between systems)."""
MAX_DUE_WINDOW = timedelta(days=3660)
DESTRUCTION_CHUNK = 200
"""Archives destroyed per unit of work by ``destroy_approved``."""
BLOB_DELETE_THREADS = 8

_TRIGGER_OF: dict[EncounterKind, Trigger] = {
    EncounterKind.VISIT: Trigger.LAST_VISIT,
    EncounterKind.DISCHARGE: Trigger.LAST_DISCHARGE,
}
_REVIEWABLE = (ArchiveStatus.ARCHIVED.value, ArchiveStatus.DISPOSITION_REVIEW.value)
_OPEN = (DispositionDecision.PENDING.value, DispositionDecision.APPROVED.value)
_DESTROY_SPLICED = ("log_index", "archive_id", "prev", "data.certificate_hash")
_DESTROY_COLUMNS = (
    load_only(
        Archive.id,
        Archive.department,
        Archive.custodian,
        Archive.state,
        Archive.record_class,
        Archive.sensitivity,
        Archive.current_version,
        Archive.pending_recipient,
        Archive.retention_policy,
        Archive.retention_deadline,
        Archive.trigger_date,
        Archive.last_event_hash,
        Archive.event_count,
        Archive.on_hold,
        Archive.hold_by_regulator,
        Archive.updated_at,
    ),
)
"""What a destruction reads of an archive row (not its title, search text or metadata: those
are overwritten unread; its versions come as plain rows, ``node.ledgerstate.version_rows``)."""


@dataclass(frozen=True, slots=True)
class DueView:
    """An archive whose retention deadline has passed or falls within the asked window."""

    archive_id: str
    record_class: str
    department: str
    state: str
    retention_policy: str | None
    retention_deadline: datetime
    on_hold: bool


@dataclass(frozen=True, slots=True)
class ItemView:
    """One archive of a disposition list and its decision."""

    archive_id: str
    decision: str
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: DispositionItem) -> ItemView:
        return cls(row.archive_id, row.decision, row.decided_by, row.decided_at, row.expires_at)


@dataclass(frozen=True, slots=True)
class ProposalView:
    """A disposition list (the reason stays on this node and is not returned)."""

    id: str
    proposed_by: str
    created_at: datetime
    items: tuple[ItemView, ...]


@dataclass(frozen=True, slots=True)
class DestructionView:
    """One archive destroyed: its certificate's hash and what was destroyed."""

    archive_id: str
    certificate_hash: str
    key_copies_destroyed: int
    blobs_deleted: int


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What executing a disposition list did: archives destroyed, items skipped (with code)."""

    destroyed: tuple[DestructionView, ...]
    refused: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Shredded:
    """What one destruction unit did: archives destroyed, their ciphertext to delete once the
    unit has committed, items refused (with code)."""

    views: tuple[DestructionView, ...]
    blobs: dict[str, list[str]]
    refused: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CertificateView:
    """An archive's destruction certificate: the canonical document, its hash and signature."""

    archive_id: str
    document: bytes
    certificate_hash: str
    signature: str
    signer: str


@dataclass(frozen=True, slots=True)
class EncounterOutcome:
    """What one encounter report changed."""

    extended: int  # archived records whose deadline moved
    retriggered: int  # records not yet archived whose trigger date moved


RetentionCause = Literal["request", "encounter", "disposition", "reclassify"]
"""Why a deadline moved (``retention_changes.cause``): an archivist's request, a new encounter,
a disposition decision, a reclassification."""


def extend_retention(
    uow: UnitOfWork,
    ledger: Ledger,
    archive: Archive,
    state: ArchiveState,
    deadline: datetime,
    actor: str,
    cause: RetentionCause,
    reason: str | None,
) -> ArchiveState:
    """Move an archived record's deadline to ``deadline`` in the caller's unit: RETENTION_EXTEND
    (checked by the lifecycle), the catalogue row, the local reason (``retention_changes``, with
    ``cause``) and ``extendRetention`` queued for the chain. Every retention extension goes
    through here (a request, an encounter, a disposition decision, a reclassification)."""
    previous = state.retention_deadline
    if previous is None:
        raise ConflictError(
            f"archive {archive.id} is not archived: it has no retention deadline yet",
            code="not_archived",
        )
    data = RetentionExtendData(previous_deadline=previous, new_deadline=deadline)
    new_state = ledger.record(uow, archive, state, RetentionExtendEvent, actor, data)
    archive.retention_deadline = deadline
    uow.session.add(
        RetentionChange(
            archive_id=archive.id,
            cause=cause,
            actor=actor,
            reason=reason,
            previous_deadline=previous,
            new_deadline=deadline,
            created_at=uow.now,
        )
    )
    enqueue_call(
        uow.session,
        "extendRetention",
        [archive_key(archive.id), int(deadline.timestamp())],
        archive_id=archive.id,
    )
    return new_state


class RetentionService:
    """Deadlines, encounter triggers and disposition review on one hospital node."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        pseudonyms: Pseudonyms,
        alerts: AlertSink,
        clock: Clock,
        keyring: KeyRing,
        blobs: BlobStore,
        signer: LocalAccount,
        deployment: Deployment,
        tombstones: TombstoneLedger,
        encounters: EncounterSink | None = None,
        fault_hook: FaultHook | None = None,
        custody: CustodyReader | None = None,
    ) -> None:
        self.settings = settings
        self.custody = custody
        """The chain's custody record of an archive (``node.custodyguard``), read before any key
        is destroyed; None only in tests that run without a chain."""
        self.fault_hook = fault_hook
        """TEST SEAM: called with a point name at each step of a destruction (see
        ``archivechain.node``'s fault point, refused outside dev mode)."""
        self.db = db
        self.units = units
        self.ledger = ledger
        self.pseudonyms = pseudonyms
        self.alerts = alerts
        self.clock = clock
        self.encounters = encounters
        self.keyring = keyring
        self.blobs = blobs
        self.signer = signer
        self.deployment = deployment
        self.tombstones = tombstones
        self.policies = RetentionPolicies(settings.retention_years)
        self._signing_key: PrivateKey | None = None

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    @property
    def hospital(self) -> str:
        """This node's member address (the actor of what the node does on its own)."""
        return self.ledger.hospital

    # -- deadlines -----------------------------------------------------------------------------

    def extend(
        self, principal: Principal, archive_id: str, new_deadline: date, reason: str
    ) -> ArchiveView:
        """Move the archive's deadline to midnight UTC of ``new_deadline`` (strictly later)."""
        principal.require(Action.EXTEND_RETENTION)
        text = reason.strip()
        if not text:
            raise InputError("a reason is required", code="reason_required")
        deadline = datetime.combine(new_deadline, time(), UTC)

        def unit(uow: UnitOfWork) -> ArchiveView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            current = state.retention_deadline
            if current is not None and deadline <= current:
                raise ConflictError(
                    f"retention of archive {archive.id} runs until {current.date().isoformat()}; "
                    "it can be extended, never shortened",
                    code="retention_shortened",
                )
            self._extend(uow, archive, state, deadline, principal.actor, "request", text)
            return ArchiveView.of(archive)

        return self.units.run(unit)

    def _extend(
        self,
        uow: UnitOfWork,
        archive: Archive,
        state: ArchiveState,
        deadline: datetime,
        actor: str,
        cause: RetentionCause,
        reason: str | None,
    ) -> ArchiveState:
        """RETENTION_EXTEND (checked by the lifecycle), the catalogue row, the local reason and
        ``extendRetention`` on chain, all in the caller's unit (``extend_retention``)."""
        return extend_retention(uow, self.ledger, archive, state, deadline, actor, cause, reason)

    # -- encounters ----------------------------------------------------------------------------

    def accept_encounter(self, principal: Principal, report: EncounterReport) -> None:
        """Check a reported encounter and hand it to every listener (this service among them,
        as wired by the composition root; to this service alone when none is given)."""
        principal.require(Action.REPORT_ENCOUNTER)
        if not report.patient_id.strip():
            raise InputError("a patient id is required", code="invalid_patient")
        if report.at.tzinfo is None:
            raise InputError("the encounter time needs a time zone", code="invalid_time")
        if report.at > self.clock() + ENCOUNTER_CLOCK_SKEW:
            raise InputError(
                "an encounter cannot lie in the future (a retention trigger moves only to "
                "dates that have happened)",
                code="trigger_in_future",
            )
        (self.encounters or self).report_encounter(report)

    def report_encounter(self, report: EncounterReport) -> None:
        """``EncounterSink``: move the deadlines this encounter restarts (idempotent)."""
        self.apply_encounter(report)

    def apply_encounter(self, report: EncounterReport) -> EncounterOutcome:
        """Move the deadlines (or, before ARCHIVE, the trigger dates) of the patient's records
        whose class runs from this kind of encounter; what changed."""
        trigger = _TRIGGER_OF.get(report.kind)
        if trigger is None:  # an admission starts a stay; the clock runs from its discharge
            return EncounterOutcome(0, 0)
        policies = {p.record_class.value: p for p in self.policies.triggered_by(trigger)}
        patient = self.pseudonyms.patient(report.patient_id)
        day = report.at.astimezone(UTC).date()
        trigger_at = datetime.combine(day, time(), UTC)

        def unit(uow: UnitOfWork) -> EncounterOutcome:
            rows = uow.session.execute(
                select(Archive)
                .where(
                    Archive.patient_pseudonym == patient,
                    Archive.record_class.in_(sorted(policies)),
                    Archive.custodian == self.hospital,
                )
                .order_by(Archive.id)
                .with_for_update()
            ).scalars()
            extended = retriggered = 0
            for archive in rows:
                if archive.state == ArchiveStatus.CREATED.value:
                    if archive.trigger_date < trigger_at:
                        archive.trigger_date = trigger_at
                        retriggered += 1
                    continue
                if archive.state not in _REVIEWABLE:
                    continue  # in transfer, destroyed, or not held: nothing to move here
                deadline = policies[archive.record_class].deadline(day)
                if archive.retention_deadline is None or deadline <= archive.retention_deadline:
                    continue  # triggers move forward, never back
                state = self.ledger.state(uow.session, archive)
                self._extend(uow, archive, state, deadline, self.hospital, "encounter", None)
                archive.trigger_date = trigger_at
                extended += 1
            return EncounterOutcome(extended, retriggered)

        return self.units.run(unit)

    # -- due archives and review ---------------------------------------------------------------

    def due(self, principal: Principal, within: timedelta, limit: int = 1000) -> list[DueView]:
        """Archives held here, ARCHIVED or in review, whose deadline falls before now + ``within``,
        earliest first."""
        principal.require(Action.READ_RETENTION)
        if not timedelta(0) <= within <= MAX_DUE_WINDOW:
            raise InputError("within must be between P0D and P3660D", code="invalid_window")
        horizon = self.clock() + within
        with self.db.session() as session:
            rows = session.execute(
                select(Archive)
                .where(
                    Archive.custodian == self.hospital,
                    Archive.state.in_(_REVIEWABLE),
                    Archive.retention_deadline <= horizon,
                )
                .order_by(Archive.retention_deadline, Archive.id)
                .limit(limit)
            ).scalars()
            return [
                DueView(
                    archive_id=a.id,
                    record_class=a.record_class,
                    department=a.department,
                    state=a.state,
                    retention_policy=a.retention_policy,
                    retention_deadline=_deadline(a),
                    on_hold=a.on_hold,
                )
                for a in rows
                if principal.can_see(a.department)
            ]

    def start_dispositions(self, principal: Principal | None = None) -> int:
        """Move every due archive (ARCHIVED, not on hold, deadline passed) to DISPOSITION_REVIEW.
        ``principal`` None: the scheduler (the node is the actor). Returns how many moved."""
        if principal is not None:
            principal.require(Action.RUN_DISPOSITION)
        actor = principal.actor if principal is not None else self.hospital
        total = 0
        while True:

            def unit(uow: UnitOfWork) -> int:
                rows = uow.session.execute(
                    select(Archive)
                    .where(
                        Archive.custodian == self.hospital,
                        Archive.state == ArchiveStatus.ARCHIVED.value,
                        Archive.on_hold.is_(False),
                        Archive.retention_deadline <= uow.now,
                    )
                    .order_by(Archive.retention_deadline, Archive.id)
                    .limit(DISPOSITION_BATCH)
                    .with_for_update()
                ).scalars()
                moved = 0
                for archive in rows:
                    state = self.ledger.state(uow.session, archive)
                    self.ledger.record(
                        uow, archive, state, DispositionStartEvent, actor, DispositionStartData()
                    )
                    moved += 1
                return moved

            moved = self.units.run(unit)
            total += moved
            if moved < DISPOSITION_BATCH:
                return total

    def remind(self) -> int:
        """Raise a ``retention_due`` alert for each ARCHIVED archive whose deadline falls within
        one of ``retention_reminder_days`` (the nearest horizon reached). Returns how many."""
        horizons = sorted(self.settings.retention_reminder_days)
        if not horizons:
            return 0
        now = self.clock()
        with self.db.session() as session:
            rows = session.execute(
                select(Archive.id, Archive.retention_deadline, Archive.on_hold).where(
                    Archive.custodian == self.hospital,
                    Archive.state == ArchiveStatus.ARCHIVED.value,
                    Archive.retention_deadline > now,
                    Archive.retention_deadline <= now + timedelta(days=horizons[-1]),
                )
            ).all()
        for archive_id, deadline, on_hold in rows:
            left = deadline - now
            horizon = next(h for h in horizons if left <= timedelta(days=h))
            self.alerts.raise_alert(
                AlertNotice(
                    kind="retention_due",
                    subject=archive_id,
                    severity=Severity.INFO,
                    detail={"horizon_days": horizon, "days_left": left.days, "on_hold": on_hold},
                )
            )
        return len(rows)

    def overdue(self) -> int:
        """Raise a ``disposition_overdue`` alert (warning) for each archive held here, not on
        hold, still ARCHIVED or in DISPOSITION_REVIEW more than ``disposition_overdue_days``
        after its retention deadline: nobody decided its disposition in time. Returns how many."""
        now = self.clock()
        grace = timedelta(days=self.settings.disposition_overdue_days)
        with self.db.session() as session:
            rows = session.execute(
                select(Archive.id, Archive.retention_deadline, Archive.state)
                .where(
                    Archive.custodian == self.hospital,
                    Archive.state.in_(
                        (ArchiveStatus.ARCHIVED.value, ArchiveStatus.DISPOSITION_REVIEW.value)
                    ),
                    Archive.on_hold.is_(False),
                    Archive.retention_deadline < now - grace,
                )
                .order_by(Archive.id)
            ).all()
        for archive_id, deadline, state in rows:
            self.alerts.raise_alert(
                AlertNotice(
                    kind="disposition_overdue",
                    subject=archive_id,
                    severity=Severity.WARNING,
                    detail={"state": state, "days_overdue": (now - deadline).days},
                )
            )
        return len(rows)

    def run_schedule(self) -> None:
        """The daily job: reminders, due archives into review, stale approvals expired,
        overdue dispositions alerted."""
        self.remind()
        self.start_dispositions()
        self.expire_approvals()
        self.overdue()
        self.purge_destroyed_blobs()

    # -- four eyes -----------------------------------------------------------------------------

    def propose(
        self, principal: Principal, archive_ids: Sequence[str], reason: str
    ) -> ProposalView:
        """An archivist's disposition list of archives in review (none on hold, none already on
        an open list)."""
        principal.require(Action.PROPOSE_DISPOSITION)
        text = reason.strip()
        if not text:
            raise InputError("a reason is required", code="reason_required")
        ids = sorted({normalise_id(i) for i in archive_ids})
        if not 1 <= len(ids) <= MAX_PROPOSAL_ITEMS:
            raise InputError(
                f"a disposition list holds 1 to {MAX_PROPOSAL_ITEMS} archives", code="invalid_batch"
            )

        def unit(uow: UnitOfWork) -> ProposalView:
            proposal = DispositionProposal(
                id=str(ULID()), reason=text, proposed_by=principal.actor, created_at=uow.now
            )
            uow.session.add(proposal)
            items = []
            proposed = DispositionProposeData(proposal=proposal.id, reason_hash=_reason_hash(text))
            for archive_id in ids:
                archive = self.ledger.held(uow.session, principal, archive_id)
                state = self.ledger.state(uow.session, archive)
                self._require_reviewable(state, archive.id)
                if self._open_item(uow, archive.id) is not None:
                    raise ConflictError(
                        f"archive {archive.id} is already on an open disposition list",
                        code="already_proposed",
                    )
                self.ledger.record(
                    uow, archive, state, DispositionProposeEvent, principal.actor, proposed
                )
                item = DispositionItem(
                    proposal_id=proposal.id,
                    archive_id=archive.id,
                    decision=DispositionDecision.PENDING.value,
                )
                uow.session.add(item)
                items.append(item)
            uow.session.flush()
            return ProposalView(
                proposal.id,
                proposal.proposed_by,
                proposal.created_at,
                tuple(ItemView.of(i) for i in items),
            )

        return self.units.run(unit)

    def decide(
        self,
        principal: Principal,
        proposal_id: str,
        archive_id: str,
        *,
        approve: bool,
        reason: str,
        new_deadline: date | None = None,
    ) -> ItemView:
        """A records manager who did not propose the list approves or rejects one item. A
        rejection keeps the archive until ``new_deadline`` (RETENTION_EXTEND)."""
        principal.require(Action.DECIDE_DISPOSITION)
        text = reason.strip()
        if not text:
            raise InputError("a reason is required", code="reason_required")
        if not approve and new_deadline is None:
            raise InputError(
                "a rejection sets the date until which the archive is kept (new_deadline)",
                code="new_deadline_required",
            )

        def unit(uow: UnitOfWork) -> ItemView:
            proposal = uow.session.get(DispositionProposal, normalise_id(proposal_id))
            if proposal is None:
                raise NotFoundError(
                    f"disposition list {proposal_id} not found", code="proposal_not_found"
                )
            if proposal.proposed_by == principal.actor:
                raise PermissionDeniedError(
                    "four eyes: the proposer of a disposition list cannot decide on it",
                    code="four_eyes",
                )
            item = self._item(uow, proposal.id, archive_id)
            if item.decision != DispositionDecision.PENDING.value:
                raise ConflictError(
                    f"archive {item.archive_id} was already decided ({item.decision})",
                    code="already_decided",
                )
            archive = self.ledger.held(uow.session, principal, item.archive_id)
            state = self.ledger.state(uow.session, archive)
            if approve:
                self._require_reviewable(state, archive.id)
                item.decision = DispositionDecision.APPROVED.value
                item.expires_at = uow.now + timedelta(days=self.settings.disposition_approval_days)
                approved = DispositionApproveData(
                    proposal=proposal.id, expires_at=item.expires_at, reason_hash=_reason_hash(text)
                )
                self.ledger.record(
                    uow, archive, state, DispositionApproveEvent, principal.actor, approved
                )
            else:
                assert new_deadline is not None
                deadline = datetime.combine(new_deadline, time(), UTC)
                current = state.retention_deadline
                if current is not None and deadline <= current:
                    raise ConflictError(
                        "a rejection keeps the archive: new_deadline must be after "
                        f"{current.date().isoformat()}",
                        code="retention_shortened",
                    )
                self._extend(uow, archive, state, deadline, principal.actor, "disposition", text)
                item.decision = DispositionDecision.REJECTED.value
            item.decided_by = principal.actor
            item.decided_at = uow.now
            item.reason = text
            return ItemView.of(item)

        return self.units.run(unit)

    def proposal(self, principal: Principal, proposal_id: str) -> ProposalView:
        """A disposition list and the decisions on its items."""
        principal.require(Action.READ_RETENTION)
        with self.db.session() as session:
            proposal = session.get(DispositionProposal, normalise_id(proposal_id))
            if proposal is None:
                raise NotFoundError(
                    f"disposition list {proposal_id} not found", code="proposal_not_found"
                )
            items = session.execute(
                select(DispositionItem)
                .where(DispositionItem.proposal_id == proposal.id)
                .order_by(DispositionItem.archive_id)
            ).scalars()
            return ProposalView(
                proposal.id,
                proposal.proposed_by,
                proposal.created_at,
                tuple(ItemView.of(i) for i in items),
            )

    def open_proposals(self, principal: Principal, limit: int = 50) -> list[ProposalView]:
        """Disposition lists with an item still pending, newest first (the review page)."""
        principal.require(Action.READ_RETENTION)
        with self.db.session() as session:
            ids = (
                session.execute(
                    select(DispositionItem.proposal_id)
                    .where(DispositionItem.decision == DispositionDecision.PENDING.value)
                    .distinct()
                )
                .scalars()
                .all()
            )
        views = [self.proposal(principal, i) for i in ids]
        return sorted(views, key=lambda v: (v.created_at, v.id), reverse=True)[:limit]

    def awaiting_destruction(
        self, principal: Principal, limit: int = 200
    ) -> list[tuple[str, ItemView]]:
        """Approved items not yet executed whose approval has not expired, oldest decision
        first, each with its list's id: the console's destruction queue. Read-only; ``destroy``
        still checks everything (role, approval, holds, state)."""
        principal.require(Action.READ_RETENTION)
        now = self.clock()
        with self.db.session() as session:
            rows = session.execute(
                select(DispositionItem)
                .where(
                    DispositionItem.decision == DispositionDecision.APPROVED.value,
                    or_(DispositionItem.expires_at.is_(None), DispositionItem.expires_at > now),
                )
                .order_by(DispositionItem.decided_at, DispositionItem.archive_id)
                .limit(limit)
            ).scalars()
            return [(row.proposal_id, ItemView.of(row)) for row in rows]

    def expire_approvals(self) -> int:
        """Approvals not executed before their ``expires_at`` end (``expired``)."""

        def unit(uow: UnitOfWork) -> int:
            rows = list(
                uow.session.execute(
                    select(DispositionItem)
                    .where(
                        DispositionItem.decision == DispositionDecision.APPROVED.value,
                        DispositionItem.expires_at <= uow.now,
                    )
                    .with_for_update()
                ).scalars()
            )
            for item in rows:
                item.decision = DispositionDecision.EXPIRED.value
            return len(rows)

        return self.units.run(unit)

    # -- destruction ---------------------------------------------------------------------------

    def destroy(self, principal: Principal, proposal_id: str, archive_id: str) -> DestructionView:
        """Execute one approved item: destroy every copy of the archive's key, erase the
        descriptive metadata that may hold PHI, sign the certificate, log DESTROY (its hash) and
        queue ``destroy(id, certificateHash)`` — all in one unit of work, so an archive is either
        destroyed with its certificate or untouched. The ciphertext is deleted from the blob
        store once that is committed (``purge_destroyed_blobs`` finishes it after a crash)."""
        principal.require(Action.EXECUTE_DISPOSITION)
        wanted = normalise_id(archive_id)
        on_chain = self._refused_on_chain([wanted])

        def unit(uow: UnitOfWork) -> tuple[_Shredded, str]:
            proposal = self._proposal(uow, proposal_id)
            shredded = self._shred(
                uow, principal, proposal, [wanted], strict=True, on_chain=on_chain
            )
            return shredded, format_time(uow.now)

        shredded, destroyed_at = self.units.run(unit)
        (view,) = shredded.views
        self.tombstones.append([Tombstone(view.archive_id, view.certificate_hash, destroyed_at)])
        deleted = self._delete_blobs(shredded.blobs)
        return replace(view, blobs_deleted=deleted.get(view.archive_id, 0))

    def destroy_approved(
        self, principal: Principal, proposal_id: str, chunk: int = DESTRUCTION_CHUNK
    ) -> BatchOutcome:
        """Execute every approved item of a disposition list, ``chunk`` archives per unit of work
        (each unit all or nothing, so each archive is either destroyed with its certificate or
        untouched). Items that cannot be executed now (not approved, expired, on hold, …) are
        skipped and reported with their code."""
        principal.require(Action.EXECUTE_DISPOSITION)
        if chunk < 1:
            raise InputError("chunk must be at least 1", code="invalid_chunk")
        with self.db.session() as session:
            pid = normalise_id(proposal_id)
            if session.get(DispositionProposal, pid) is None:
                raise NotFoundError(
                    f"disposition list {proposal_id} not found", code="proposal_not_found"
                )
            ids = list(
                session.execute(
                    select(DispositionItem.archive_id)
                    .where(DispositionItem.proposal_id == pid)
                    .order_by(DispositionItem.archive_id)
                ).scalars()
            )
        refused: list[tuple[str, str]] = []
        # The ciphertext of a committed chunk is deleted on one background thread while the next
        # chunk is shredded (unlink and directory fsync wait on the disk, the shredding on the
        # CPU): the order per archive is unchanged — commit, tombstone, then deletion — and a
        # crash in between leaves blobs that ``purge_destroyed_blobs`` deletes at start.
        deletions: list[tuple[_Shredded, Future[dict[str, int]]]] = []
        with ThreadPoolExecutor(1, thread_name_prefix="destroy-blobs") as deleter:
            try:
                for start in range(0, len(ids), chunk):
                    part = ids[start : start + chunk]
                    on_chain = self._refused_on_chain(part)

                    def unit(
                        uow: UnitOfWork,
                        part: list[str] = part,
                        on_chain: dict[str, ConflictError] = on_chain,
                    ) -> tuple[_Shredded, str]:
                        proposal = self._proposal(uow, pid)
                        shredded = self._shred(
                            uow, principal, proposal, part, strict=False, on_chain=on_chain
                        )
                        return shredded, format_time(uow.now)

                    shredded, destroyed_at = self.units.run(unit)
                    refused += shredded.refused
                    self._fault("destruction-committed")  # before the tombstones
                    self.tombstones.append(
                        Tombstone(v.archive_id, v.certificate_hash, destroyed_at)
                        for v in shredded.views
                    )
                    self._fault("destruction-tombstoned")  # before the ciphertext is deleted
                    deletions.append((shredded, deleter.submit(self._delete_blobs, shredded.blobs)))
            finally:  # a failed chunk still waits for the deletions of the committed ones
                wait([future for _, future in deletions])
        destroyed: list[DestructionView] = []
        for shredded, future in deletions:
            deleted = future.result()
            destroyed += [
                replace(v, blobs_deleted=deleted.get(v.archive_id, 0)) for v in shredded.views
            ]
        return BatchOutcome(tuple(destroyed), tuple(refused))

    def _refused_on_chain(self, archive_ids: Sequence[str]) -> dict[str, ConflictError]:
        """The archives of ``archive_ids`` that the chain says may not be destroyed now (on
        hold, not ARCHIVED, not ours: ``node.custodyguard``), with why. Archives that are not
        approved or not held here are left to the unit's own checks. ``UnavailableError`` when
        the chain cannot be read: nothing is destroyed then."""
        if self.custody is None:
            return {}
        return chain_refusals(self.db, self.custody, self.hospital, archive_ids, "the destruction")

    def _checked(
        self,
        uow: UnitOfWork,
        principal: Principal,
        proposal: DispositionProposal,
        archive_ids: Sequence[str],
        refuse: Callable[[str, ConflictError], None],
        on_chain: Mapping[str, ConflictError],
    ) -> tuple[list[tuple[DispositionItem, Archive, ArchiveState]], dict[str, list[VersionRow]]]:
        """The items of ``archive_ids`` on ``proposal`` that may be destroyed now, with their
        locked archive rows and lifecycle states, and the content versions of those archives —
        every guard as set-based queries: approved (by a records manager who is not the
        proposer), approval not expired, held here, not destroyed, in disposition review (so not
        in transfer), not on hold. Others go to ``refuse`` with their code."""
        items = {
            item.archive_id: item
            for item in uow.session.execute(
                select(DispositionItem)
                .where(
                    DispositionItem.proposal_id == proposal.id,
                    DispositionItem.archive_id.in_(archive_ids),
                )
                .order_by(DispositionItem.archive_id)
                .with_for_update()
            ).scalars()
        }
        approved: list[DispositionItem] = []
        for archive_id in archive_ids:
            item = items.get(archive_id)
            if item is None:
                raise NotFoundError(
                    f"archive {archive_id} is not on disposition list {proposal.id}",
                    code="item_not_found",
                )
            if item.decision != DispositionDecision.APPROVED.value:
                refuse(
                    archive_id,
                    ConflictError(
                        f"archive {archive_id} is not approved for destruction ({item.decision})",
                        code="not_approved",
                    ),
                )
            elif item.decided_by is None or item.decided_by == proposal.proposed_by:
                refuse(  # decide() refuses this already; a row edited by hand stops here
                    archive_id,
                    ConflictError(
                        f"archive {archive_id}: the approval is not by a second person",
                        code="four_eyes",
                    ),
                )
            elif item.expires_at is not None and item.expires_at <= uow.now:
                refuse(
                    archive_id,
                    ConflictError(
                        f"the approval to destroy archive {archive_id} expired at "
                        f"{format_time(item.expires_at)}; propose it again",
                        code="approval_expired",
                    ),
                )
            else:
                approved.append(item)
        if not approved:
            return [], {}
        archives = {
            archive.id: archive
            for archive in uow.session.execute(
                select(Archive)
                .where(Archive.id.in_([item.archive_id for item in approved]))
                .order_by(Archive.id)
                .options(*_DESTROY_COLUMNS)
                .with_for_update()
            ).scalars()
        }
        live: list[tuple[DispositionItem, Archive]] = []
        for item in approved:
            archive = archives.get(item.archive_id)
            if archive is None:
                raise NotFoundError(
                    f"archive {item.archive_id} not found", code="archive_not_found"
                )
            principal.require_visible(archive.id, archive.department)
            if not self.ledger.holds(archive):
                raise ConflictError(
                    f"this hospital is not the custodian of archive {archive.id} "
                    f"(custodian {archive.custodian})",
                    code="not_custodian",
                )
            if archive.state == ArchiveStatus.DESTROYED.value:  # a tombstone replayed
                refuse(
                    archive.id,
                    ConflictError(f"archive {archive.id} is destroyed", code="destroyed"),
                )
                continue
            live.append((item, archive))
        # Plain disposition histories from the catalogue and the log's entry types (no replay);
        # any other history replayed by the ledger (node.ledgerstate).
        versions = version_rows(uow.session, [archive.id for _, archive in live])
        states = plain_states(uow.session, self.hospital, proposal, live, versions)
        others = [archive for _, archive in live if archive.id not in states]
        if others:
            states.update(self.ledger.states(uow.session, others))
        checked: list[tuple[DispositionItem, Archive, ArchiveState]] = []
        for item, archive in live:
            state = states[archive.id]
            try:
                self._require_reviewable(state, archive.id)
            except ConflictError as exc:
                refuse(archive.id, exc)
                continue
            if archive.id in on_chain:  # last: what the chain says, read before the unit
                refuse(archive.id, on_chain[archive.id])
                continue
            checked.append((item, archive, state))
        return checked, versions

    def _shred(
        self,
        uow: UnitOfWork,
        principal: Principal,
        proposal: DispositionProposal,
        archive_ids: Sequence[str],
        *,
        strict: bool,
        on_chain: Mapping[str, ConflictError] | None = None,
    ) -> _Shredded:
        """Destroy the items of ``archive_ids`` that pass every guard, inside the caller's unit,
        set-based: one query per step for the whole set (keys, versions, replicas, grantees, the
        keyword index, certificates, notices, outbox), one certificate and DESTROY event per
        archive. ``strict``: a refused item raises its error (one archive); otherwise it is
        reported and skipped. ``on_chain``: refusals from the chain's custody records
        (``_refused_on_chain``), applied after every local check."""
        refused: list[tuple[str, str]] = []

        def refuse(archive_id: str, error: ConflictError) -> None:
            if strict:
                raise error
            refused.append((archive_id, error.code))

        checked, versions_of = self._checked(
            uow, principal, proposal, archive_ids, refuse, on_chain or {}
        )
        if not checked:
            return _Shredded((), {}, tuple(refused))
        ids = [archive.id for _, archive, _ in checked]
        prepared: list[tuple[DispositionItem, Archive, ArchiveState]] = []
        for item, archive, state in checked:
            for grant in state.grants:  # grants end first, each with its SHARE_REVOKE
                expired = grant.expires_at <= uow.now
                reason = RevokeReason.EXPIRED if expired else RevokeReason.REVOKED
                revoke = ShareRevokeData(grantee=grant.grantee, reason=reason)
                state = self.ledger.record(
                    uow, archive, state, ShareRevokeEvent, principal.actor, revoke
                )
            prepared.append((item, archive, state))
        # Cryptographic erasure: every live copy of every key of the set, then the check that
        # none survived (so this node's own lookup answers ``no_key`` for each).
        holders = self.keyring.live_holders(uow.session, ids)
        destroyed = self.keyring.destroy_all(uow.session, ids, uow.now)
        survivors = self.keyring.live_holders(uow.session, ids)
        if survivors or destroyed != sum(len(h) for h in holders.values()):  # pragma: no cover
            raise ConflictError(
                f"archive {next(iter(survivors), ids[0])}: a key copy survived destruction",
                code="key_survived",
            )
        replicas = self.replica_holders(uow.session, ids) if self.replica_holders else None
        actor = principal.actor
        destroyed_at = format_time(uow.now)
        proposal_field = {
            "id": proposal.id,
            "proposed_by": proposal.proposed_by,
            "proposed_at": format_time(proposal.created_at),
        }
        template: tuple[DestroyEvent, SplicedEvent] | None = None
        views: list[DestructionView] = []
        blobs: dict[str, list[str]] = {}
        certificates: list[dict[str, Any]] = []
        notices: list[tuple[str, str, str]] = []
        calls: list[tuple[list[Any], str | None]] = []
        settled: list[Settled] = []
        for item, archive, state in prepared:
            versions = versions_of[archive.id]
            cids = [v.cid for v in versions if v.blob_deleted_at is None]
            method: dict[str, Any] = {
                "kind": DestructionMethod.CRYPTO_ERASURE.value,
                "key_copies_destroyed": len(holders.get(archive.id, ())),
                "key_holders": holders.get(archive.id, []),
                "blob_store": self.blobs.kind,
                "blobs_to_delete": cids,
                "metadata_erased": ["title", "search_text", "search_terms", "metadata", "filename"],
            }
            if replicas is not None:
                method["replicas_to_delete"] = replicas.get(archive.id, [])
            document = {
                "format": CERTIFICATE_FORMAT,
                "archive_id": archive.id,
                "custodian": self.hospital,
                "chain_id": self.deployment.chain_id,
                "notary": self.deployment.notary.address,
                "record_class": archive.record_class,
                "retention_policy": archive.retention_policy,
                "trigger_date": archive.trigger_date.date().isoformat(),
                "retention_deadline": format_time(state.retention_deadline)
                if state.retention_deadline
                else None,
                "versions": [
                    {
                        "version": v.version,
                        "commitment": v.commitment,
                        "ciphertext_sha256": v.ciphertext_sha256,
                    }
                    for v in versions
                ],
                "proposal": proposal_field,
                "approval": {
                    "approved_by": item.decided_by,
                    "approved_at": format_time(item.decided_at) if item.decided_at else None,
                    "expires_at": format_time(item.expires_at) if item.expires_at else None,
                },
                "executed_by": actor,
                "method": method,
                "checks": {"key_copies_remaining": 0, "own_key_lookup": "no_key"},
                "destroyed_at": destroyed_at,
            }
            if template is None:  # the unit's first: RFC 8785 by the general path, compared
                raw = canonical_certificate(document)
                if raw != _certificate_bytes(document):  # pragma: no cover  (defence)
                    raise ConflictError("certificate encoding differs", code="encoding_mismatch")
            else:
                raw = _certificate_bytes(document)
            digest = certificate_hash(raw)
            hex_digest = digest.hex()
            # DESTROY events of one unit differ only in the spliced fields (node.eventsplice):
            # the first is built and validated, the others copied with values this node made.
            if template is None:
                event = DestroyEvent(
                    hospital=self.hospital,
                    log_index=uow.log.size,
                    archive_id=archive.id,
                    actor=actor,
                    time=uow.now,
                    prev=state.head,
                    data=DestroyData(
                        certificate_hash=hex_digest, method=DestructionMethod.CRYPTO_ERASURE
                    ),
                )
                template = (event, SplicedEvent(event, _DESTROY_SPLICED))
                event_raw = None
            else:
                first = template[0]
                event = first.model_copy(
                    update={
                        "log_index": uow.log.size,
                        "archive_id": archive.id,
                        "prev": state.head,
                        "data": first.data.model_copy(update={"certificate_hash": hex_digest}),
                    }
                )
                event_raw = template[1].render(uow.log.size, archive.id, state.head, hex_digest)
            leaf, after = self.ledger.log_event(uow, archive.id, state, event, event_raw)
            settled.append(Settled(archive.id, leaf, after, archive.event_count + 1))
            # Written set-based below; the session's objects say so too, without an UPDATE each.
            for name, erased in ERASED_COLUMNS:
                set_committed_value(archive, name, erased)
            set_committed_value(item, "decision", DispositionDecision.EXECUTED.value)
            certificates.append(
                {
                    "archive_id": archive.id,
                    "document": raw,
                    "sha256": hex_digest,
                    "signature": self._sign(archive.id, digest),
                    "created_at": uow.now,
                }
            )
            notices.append((archive.id, hex_digest, leaf.hex()))
            calls.append(([archive_key(archive.id), digest], archive.id))
            views.append(
                DestructionView(archive.id, hex_digest, len(holders.get(archive.id, ())), 0)
            )
            blobs[archive.id] = cids
            self._fault("destruction-shredded")  # inside the unit, not committed
        # The catalogue rows (head, state, count) and their erased PHI columns, the versions'
        # file names and the items' decisions, set-based (no ORM update per row).
        self.ledger.settle_many(uow, settled)
        erase_archive_content(uow.session, ids)
        uow.session.execute(
            update(DispositionItem)
            .where(DispositionItem.proposal_id == proposal.id, DispositionItem.archive_id.in_(ids))
            .values(decision=DispositionDecision.EXECUTED.value)
            .execution_options(synchronize_session=False)
        )
        # Core inserts (no per-row ORM bookkeeping): rows this unit built, all columns given.
        uow.session.execute(insert(cast(Table, DestructionCertificate.__table__)), certificates)
        # Every grantee, past or present, is told through the peer API (retried queue).
        DestructionNoticeService.queue_many(uow.session, notices, uow.now)
        enqueue_calls(uow.session, "destroy", calls)
        return _Shredded(tuple(views), blobs, tuple(refused))

    def _sign(self, archive_id: str, digest: bytes) -> str:
        """The node key's EIP-712 signature of a certificate (65 bytes r ‖ s ‖ v, v 27/28: what
        ``LocalAccount.unsafe_sign_hash`` gives, from libsecp256k1 directly)."""
        message = typed_digest(
            chain_id=self.deployment.chain_id,
            notary=self.deployment.notary.address,
            archive_id=archive_id,
            digest=digest,
            custodian=self.hospital,
            hasher=_keccak,
        )
        if self._signing_key is None:
            self._signing_key = PrivateKey(bytes(self.signer.key))
        return sign_digest(self._signing_key, message)

    replica_holders: Callable[[Session, Sequence[str]], dict[str, list[dict[str, Any]]]] | None = (
        None
    )
    """Encrypted replicas of archives at peers, by archive (``node.services.replicas``), set by
    the runtime: the certificate lists them as ``replicas_to_delete``; the replica job deletes
    them after."""

    def certificate(self, principal: Principal, archive_id: str) -> CertificateView:
        """The destruction certificate of a destroyed archive in the caller's scope."""
        principal.require(Action.READ_PROOF)
        with self.db.session() as session:
            archive = self.ledger.visible(session, principal, archive_id)
            row = session.get(DestructionCertificate, archive.id)
            if row is None:
                raise NotFoundError(
                    f"archive {archive.id} has no destruction certificate (not destroyed here)",
                    code="certificate_not_found",
                )
            return CertificateView(
                archive.id, row.document, row.sha256, row.signature, self.hospital
            )

    def purge_destroyed_blobs(self) -> int:
        """Delete the ciphertext of destroyed archives still in the blob store (after a crash
        between the destruction's commit and the deletion). Returns how many were deleted."""
        with self.db.session() as session:
            rows = session.execute(
                select(ArchiveVersion.archive_id, ArchiveVersion.cid)
                .join(Archive, Archive.id == ArchiveVersion.archive_id)
                .where(
                    Archive.state == ArchiveStatus.DESTROYED.value,
                    ArchiveVersion.blob_deleted_at.is_(None),
                )
            ).all()
        by_archive: dict[str, list[str]] = {}
        for archive_id, cid in rows:
            by_archive.setdefault(archive_id, []).append(cid)
        return sum(self._delete_blobs(by_archive).values())

    def _delete_blobs(self, cids_by_archive: dict[str, list[str]]) -> dict[str, int]:
        """Delete the ciphertext (absent blobs are fine) from the store, several at a time, check
        that the store no longer holds it, and record that. How many are gone, by archive."""
        pairs = [(a, cid) for a, cids in cids_by_archive.items() for cid in cids]
        if not pairs:
            return {}

        def delete(cid: str) -> bool:
            try:
                self.blobs.delete(cid)
                return not self.blobs.exists(cid)
            except Exception as exc:  # the key is already gone; the job retries the blob
                log.warning("blob of a destroyed archive not deleted yet: %s", type(exc).__name__)
                return False

        cids = [cid for _, cid in pairs]
        if isinstance(self.blobs, LocalBlobStore):  # unlinks, then one fsync per directory
            try:
                self.blobs.delete_many(cids)
            except OSError as exc:  # the job retries whatever is still there
                log.warning("blobs of destroyed archives not deleted yet: %s", type(exc).__name__)
            outcomes = [not self.blobs.exists(cid) for cid in cids]
        else:  # a remote store: several requests at a time
            with ThreadPoolExecutor(min(BLOB_DELETE_THREADS, len(pairs))) as pool:
                outcomes = list(pool.map(delete, cids))
        gone = [pair for pair, ok in zip(pairs, outcomes, strict=True) if ok]
        if not gone:
            return {}

        def unit(uow: UnitOfWork) -> None:  # one statement (no ORM objects per version)
            uow.session.execute(
                update(ArchiveVersion)
                .where(
                    ArchiveVersion.archive_id.in_(sorted({a for a, _ in gone})),
                    ArchiveVersion.cid.in_(sorted({cid for _, cid in gone})),
                    ArchiveVersion.blob_deleted_at.is_(None),
                )
                .values(blob_deleted_at=uow.now)
                .execution_options(synchronize_session=False)
            )

        self.units.run(unit)
        counts: dict[str, int] = {}
        for archive_id, _ in gone:
            counts[archive_id] = counts.get(archive_id, 0) + 1
        return counts

    # -- internals -----------------------------------------------------------------------------

    def _proposal(self, uow: UnitOfWork, proposal_id: str) -> DispositionProposal:
        proposal = uow.session.get(DispositionProposal, normalise_id(proposal_id))
        if proposal is None:
            raise NotFoundError(
                f"disposition list {proposal_id} not found", code="proposal_not_found"
            )
        return proposal

    def _item(self, uow: UnitOfWork, proposal_id: str, archive_id: str) -> DispositionItem:
        item = uow.session.execute(
            select(DispositionItem)
            .where(
                DispositionItem.proposal_id == proposal_id,
                DispositionItem.archive_id == normalise_id(archive_id),
            )
            .with_for_update()
        ).scalar_one_or_none()
        if item is None:
            raise NotFoundError(
                f"archive {archive_id} is not on disposition list {proposal_id}",
                code="item_not_found",
            )
        return item

    def _open_item(self, uow: UnitOfWork, archive_id: str) -> DispositionItem | None:
        return uow.session.execute(
            select(DispositionItem)
            .where(DispositionItem.archive_id == archive_id, DispositionItem.decision.in_(_OPEN))
            .limit(1)
        ).scalar_one_or_none()

    @staticmethod
    def _require_reviewable(state: ArchiveState, archive_id: str) -> None:
        if state.on_hold:
            raise ConflictError(
                f"archive {archive_id} is on hold: disposition is blocked", code="on_hold"
            )
        if state.status is not ArchiveStatus.DISPOSITION_REVIEW:
            raise ConflictError(
                f"archive {archive_id} is {state.status.value}, not in disposition review",
                code="not_in_review",
            )


def sign_digest(key: PrivateKey, digest: bytes) -> str:
    """The 65-byte Ethereum signature ``r ‖ s ‖ v`` (v 27/28, low s) of a 32-byte digest, hex:
    byte for byte what ``LocalAccount.unsafe_sign_hash`` returns (RFC 6979 nonces on both
    sides; ``tests/node/test_certificate_signing.py`` compares them), ten times cheaper."""
    signed = key.sign_recoverable(digest, hasher=None)
    return "0x" + (signed[:64] + bytes([signed[64] + 27])).hex()


def _keccak(data: bytes) -> bytes:
    """Keccak-256 (pycryptodome, native), without eth-hash's dispatch."""
    return keccak_hash.new(digest_bits=256, data=data).digest()


def _certificate_bytes(document: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a certificate document built by ``_shred``: its keys are fixed ASCII
    names and its integers small (chain id, versions, counts), the case where JCS is exactly
    sorted compact ``json.dumps`` (``anchoring.events.jcs``), without re-walking the document to
    establish that (the unit's first certificate is compared with the general path)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _reason_hash(text: str) -> str:
    """Reasons stay on this node (they may hold PHI); events carry only their SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _deadline(archive: Archive) -> datetime:
    assert archive.retention_deadline is not None
    return archive.retention_deadline


__all__ = [
    "BatchOutcome",
    "CertificateView",
    "DestructionView",
    "DueView",
    "EncounterOutcome",
    "ItemView",
    "ProposalView",
    "RetentionService",
]
