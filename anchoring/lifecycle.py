"""The archive state machine: ``apply(state, event)`` is the single source of truth for which
lifecycle events are legal, used by the node's services before logging and by the verifier when
replaying a proof bundle. Pure: no clock, no I/O; the "now" of every rule is the event's own time.

States: CREATED → ARCHIVED ⇄ TRANSFER_PENDING; ARCHIVED → DISPOSITION_REVIEW → DESTROYED, plus a
legal-hold flag (and who placed it), the custodian, the pending recipient and active share grants.

The per-archive hash chain is checked here too. The *main chain* holds every event logged by the
custodian (and the recipient's TRANSFER_ACCEPT/REJECT): each ``prev`` is the leaf hash of the
previous main-chain event, wherever it was logged. A grantee hospital's ACCESS events form a side
chain per grant: the first one's ``prev`` is the SHARE_GRANT's leaf hash, each next one's the
grantee's previous access under that grant. Side chains never move the main chain, so the
custodian and grantees can log concurrently without forking it.

Rules, per event (the hospital is the log that holds the event):
- CREATE: only for an unknown archive; version 1; the logging hospital becomes custodian.
- AMEND: CREATED only; versions increase by one.
- ARCHIVE: CREATED only; the record class must be CREATE's (no event changes it); the
  commitment must be the current version's; deadline ≥ trigger date.
- ACCESS by the custodian: any state but TRANSFER_PENDING (the archive is in transit); after
  DESTROYED only metadata or proof scope. One that names a ``grant`` is a *disclosure*: the
  custodian handed key material, ciphertext or evidence to the grantee under that grant; the grant
  is live (not revoked, not expired at the event's time), the actor is the grantee's address, same
  purpose, no break-glass. ACCESS by a grantee (in its own log): its grant is active, ``grant``
  names it, same purpose, no break-glass.
- SHARE_GRANT: CREATED or ARCHIVED, to another hospital, expiring after the event; one live grant
  per grantee (an expired one may be replaced). SHARE_REVOKE: the grantee holds a grant.
- TRANSFER_OFFER: ARCHIVED, not on hold, to another hospital. TRANSFER_ACCEPT: TRANSFER_PENDING,
  logged by the pending recipient, from the custodian, not on hold, not after the offer expired;
  the recipient becomes custodian and all share grants end. TRANSFER_REJECT: TRANSFER_PENDING,
  logged by the custodian or the recipient, ``by`` = recipient. TRANSFER_CANCEL: TRANSFER_PENDING,
  ``to`` = recipient. While TRANSFER_PENDING the custodian logs nothing else but holds,
  retention extensions and share revocations (rare, and custody holds and extensions are
  serialised by the chain), so the recipient's TRANSFER_ACCEPT chains to the offer (or to the
  custodian's head, which it asks for) without forking the main chain.
- HOLD_PLACE: not DESTROYED, not already on hold, except that a regulator takes over the
  custodian's own hold (as ``ArchiveNotary.placeHold``); a regulator hold names a member address
  as actor. HOLD_RELEASE: on hold; a regulator hold is released by a member-address actor (the
  contract checks the regulator role, the log cannot).
- RETENTION_EXTEND: ARCHIVED, TRANSFER_PENDING or DISPOSITION_REVIEW (which returns to
  ARCHIVED); previous deadline must be the current one and the new one later.
- DISPOSITION_START: ARCHIVED, not on hold, at or after the retention deadline.
- DESTROY: DISPOSITION_REVIEW, not on hold; ends all share grants.
- FIXITY_CHECK, TIER_MOVE, TAG_BIND: not DESTROYED, not TRANSFER_PENDING. A successful fixity
  check must report the version's recorded ciphertext hash; a tier move starts from the current
  tier; a tag is bound once to an archive (that a log binds it to one archive only cannot be
  seen from one archive's events). TAG_SCAN: a bound tag; allowed after DESTROYED (folders outlive
  content).
- BREAK_GLASS: before DESTROYED, a staff pseudonym as actor, a window ending after it opens. An
  ACCESS with ``break_glass`` true needs such a window: a BREAK_GLASS of the same hospital and
  actor, same ``purpose`` and ``reason_hash``, with ``time`` < its ``expires_at`` (refused with
  ``BreakGlassWindowError``, code ``break_glass_unopened``).
- Every event but ACCESS-by-grantee is logged by the custodian (except accept/reject above);
  nothing is dated before the event it follows on its chain.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from anchoring.chainview import CustodyState
from anchoring.errors import (
    BreakGlassWindowError,
    EventTimeOrderError,
    PrevHashMismatchError,
    TransitionRefusedError,
)
from anchoring.events import (
    AccessEvent,
    AccessScope,
    AmendEvent,
    ArchiveEvent,
    BreakGlassEvent,
    CreateEvent,
    DeriveEvent,
    DestroyEvent,
    DestructionNoticeEvent,
    DispositionApproveEvent,
    DispositionProposeEvent,
    DispositionStartEvent,
    Event,
    EventType,
    FixityCheckEvent,
    HoldPlaceEvent,
    HoldReleaseEvent,
    Purpose,
    ReclassifyEvent,
    RecordClass,
    RepairEvent,
    ReplicaAction,
    ReplicaEvent,
    RetentionExtendEvent,
    RevokeReason,
    Sensitivity,
    ShareGrantEvent,
    ShareRevokeEvent,
    StorageTier,
    TagBindEvent,
    TagScanEvent,
    TierMoveEvent,
    TransferAcceptEvent,
    TransferCancelEvent,
    TransferOfferEvent,
    TransferRejectEvent,
    event_leaf_hash,
)
from anchoring.ids import ZERO_ADDRESS


class ArchiveStatus(StrEnum):
    """Lifecycle states of an archive."""

    CREATED = "CREATED"
    ARCHIVED = "ARCHIVED"
    TRANSFER_PENDING = "TRANSFER_PENDING"
    DISPOSITION_REVIEW = "DISPOSITION_REVIEW"
    DESTROYED = "DESTROYED"


NO_ARCHIVE = "NONE"
"""The state name reported for events applied before the archive exists."""


@dataclass(frozen=True, slots=True)
class ContentVersion:
    """One stored version of the content, as its CREATE or AMEND event recorded it."""

    version: int
    commitment: str
    ciphertext_sha256: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class ShareGrant:
    """A live share grant and the head of its grantee's side chain of ACCESS events."""

    grantee: str
    purpose: Purpose
    expires_at: datetime
    grant_hash: str  # leaf hash (hex) of the SHARE_GRANT event; ACCESS.data.grant names it
    head: str  # leaf hash of the grantee's last access under this grant (initially grant_hash)
    last_time: datetime


@dataclass(frozen=True, slots=True)
class BreakGlassWindow:
    """A break-glass window opened by a BREAK_GLASS event: who (hospital, actor), for which
    purpose and reason, until when (exclusive)."""

    hospital: str
    actor: str
    purpose: Purpose
    reason_hash: str
    opened_at: datetime
    expires_at: datetime

    def covers(self, event: AccessEvent) -> bool:
        """Whether this window allows ``event`` (an ACCESS with ``break_glass`` true)."""
        return (
            event.hospital == self.hospital
            and event.actor == self.actor
            and event.data.purpose is self.purpose
            and event.data.reason_hash == self.reason_hash
            and self.opened_at <= event.time < self.expires_at
        )


@dataclass(frozen=True, slots=True)
class ArchiveState:
    """Everything the lifecycle rules need to know about one archive after some events."""

    archive_id: str
    status: ArchiveStatus
    custodian: str
    creator: str
    record_class: RecordClass
    sensitivity: Sensitivity
    department: str
    versions: tuple[ContentVersion, ...]
    head: str  # leaf hash (hex) of the last main-chain event: the next main-chain ``prev``
    last_time: datetime  # time of the last main-chain event
    event_count: int = 1
    commitment: str | None = None  # archived commitment (set by ARCHIVE)
    retention_policy: str | None = None
    trigger_date: date | None = None
    retention_deadline: datetime | None = None
    on_hold: bool = False
    hold_by_regulator: bool = False
    hold_placed_by: str | None = None
    hold_reason_hash: str | None = None  # the hold in force: ARCHIVE registers it on chain too
    pending_recipient: str | None = None
    offer_hash: str | None = None
    offer_expires_at: datetime | None = None
    grants: tuple[ShareGrant, ...] = ()
    tier: StorageTier = StorageTier.HOT
    tags: frozenset[str] = frozenset()
    certificate_hash: str | None = None
    disposition_proposal: str | None = None  # the list of the last DISPOSITION_PROPOSE
    disposition_proposed_by: str | None = None  # its actor (the proposer)
    disposition_approved_until: datetime | None = None  # the approval of that list, if any
    replicas: frozenset[tuple[str, int]] = frozenset()
    """(peer address, version) of every encrypted replica placed and not dropped."""
    destroyed_event: str | None = None  # leaf hash of DESTROY: a grantee's notice names it
    break_glass: tuple[BreakGlassWindow, ...] = ()
    """Break-glass windows opened (expired ones are dropped when the next one opens)."""

    @property
    def current_version(self) -> ContentVersion:
        """The latest content version."""
        return self.versions[-1]

    def grant_for(self, grantee: str) -> ShareGrant | None:
        """The grant held by ``grantee`` (possibly expired but not yet revoked), if any."""
        return next((grant for grant in self.grants if grant.grantee == grantee), None)

    def active_grant(self, grantee: str, at: datetime) -> ShareGrant | None:
        """The grant ``grantee`` may use at instant ``at``, if any."""
        grant = self.grant_for(grantee)
        return grant if grant is not None and at < grant.expires_at else None


_STATE_FIELDS = tuple(f.name for f in fields(ArchiveState))
_state_values = operator.attrgetter(*_STATE_FIELDS)
_HEAD, _LAST_TIME, _EVENT_COUNT = (
    _STATE_FIELDS.index(name) for name in ("head", "last_time", "event_count")
)


def _advanced(state: ArchiveState, head: str, last_time: datetime, count: int) -> ArchiveState:
    """``replace(state, head=head, last_time=last_time, event_count=count)``, about twice as
    fast: it runs once for every event a node logs or a verifier replays, and
    ``dataclasses.replace`` re-inspects the class's fields on every call."""
    values = list(_state_values(state))
    values[_HEAD], values[_LAST_TIME], values[_EVENT_COUNT] = head, last_time, count
    return ArchiveState(*values)


@dataclass(frozen=True, slots=True)
class ExpectedCustody:
    """What ``ArchiveNotary.archive(id)`` should say for an archive in a given state."""

    state: CustodyState
    custodian: str
    on_hold: bool
    hold_by_regulator: bool
    pending_recipient: str
    commitment: str | None
    record_class: int | None
    retention_deadline: int | None  # unix seconds


def expected_custody(state: ArchiveState) -> ExpectedCustody:
    """Project a lifecycle state onto the on-chain custody record.

    The chain knows an archive from ARCHIVE on; DISPOSITION_REVIEW is ARCHIVED there. A hold
    placed while CREATED is local only.
    """
    if state.status is ArchiveStatus.CREATED:
        return ExpectedCustody(
            CustodyState.NONE, ZERO_ADDRESS, False, False, ZERO_ADDRESS, None, None, None
        )
    chain_state = {
        ArchiveStatus.ARCHIVED: CustodyState.ARCHIVED,
        ArchiveStatus.DISPOSITION_REVIEW: CustodyState.ARCHIVED,
        ArchiveStatus.TRANSFER_PENDING: CustodyState.TRANSFER_PENDING,
        ArchiveStatus.DESTROYED: CustodyState.DESTROYED,
    }[state.status]
    deadline = state.retention_deadline
    return ExpectedCustody(
        state=chain_state,
        custodian=state.custodian,
        on_hold=state.on_hold,
        hold_by_regulator=state.on_hold and state.hold_by_regulator,
        pending_recipient=state.pending_recipient or ZERO_ADDRESS,
        commitment=state.commitment,
        record_class=state.record_class.chain_code,
        retention_deadline=int(deadline.timestamp()) if deadline else None,
    )


# ------------------------------------------------------------------------------------------
# apply


class _Refuse:
    """Builds refusals that name the current state and the event type."""

    def __init__(self, state: ArchiveState | None, event: Event) -> None:
        self.state_name = state.status.value if state else NO_ARCHIVE
        self.event_type = event.type

    def __call__(self, reason: str) -> TransitionRefusedError:
        return TransitionRefusedError(self.state_name, self.event_type, reason)

    def prev(self, reason: str) -> PrevHashMismatchError:
        return PrevHashMismatchError(self.state_name, self.event_type, reason)

    def time(self, reason: str) -> EventTimeOrderError:
        return EventTimeOrderError(self.state_name, self.event_type, reason)

    def window(self, reason: str) -> BreakGlassWindowError:
        return BreakGlassWindowError(self.state_name, self.event_type, reason)


def apply(
    state: ArchiveState | None, event: Event, *, leaf_hash: bytes | None = None
) -> ArchiveState:
    """The archive's state after ``event``, or ``TransitionRefusedError`` (a ``LifecycleError``)
    naming the current state, the event type and the broken rule.

    ``leaf_hash`` is the event's leaf hash when the caller already has it (saves re-encoding).
    """
    refuse = _Refuse(state, event)
    digest = (leaf_hash or event_leaf_hash(event)).hex()
    if state is None:
        if not isinstance(event, CreateEvent):
            raise refuse("the archive does not exist yet: its first event must be CREATE")
        return _create(event, digest, refuse)
    if isinstance(event, CreateEvent):
        raise refuse("the archive already exists")
    if event.archive_id != state.archive_id:
        raise refuse(f"event is for archive {event.archive_id}, not {state.archive_id}")
    if isinstance(event, AccessEvent) and event.hospital != state.custodian:
        return _grantee_access(state, event, digest, refuse)
    if isinstance(event, DestructionNoticeEvent):
        refusal = _state_refusal(state, RULES[EventType.DESTRUCTION_NOTICE])
        if refusal is not None:
            raise refuse(refusal)
        return _destruction_notice(state, event, digest, refuse)

    if event.prev != state.head:
        raise refuse.prev(f"prev {event.prev} is not the archive's last event {state.head}")
    if event.time < state.last_time:
        raise refuse.time(f"dated {event.time.isoformat()}, before the previous event")
    _check_logging_hospital(state, event, refuse)
    new = _transition(state, event, digest, refuse)
    return _advanced(new, digest, event.time, state.event_count + 1)


def replay(events: Iterable[Event]) -> ArchiveState:
    """Apply events in order from nothing; the final state."""
    state: ArchiveState | None = None
    for event in events:
        state = apply(state, event)
    if state is None:
        raise TransitionRefusedError(NO_ARCHIVE, "(none)", "no events")
    return state


def _create(event: CreateEvent, digest: str, refuse: _Refuse) -> ArchiveState:
    data = event.data
    if data.version != 1:
        raise refuse(f"the first version must be 1, not {data.version}")
    return ArchiveState(
        archive_id=event.archive_id,
        status=ArchiveStatus.CREATED,
        custodian=event.hospital,
        creator=event.hospital,
        record_class=data.record_class,
        sensitivity=data.sensitivity,
        department=data.department,
        versions=(
            ContentVersion(
                data.version, data.commitment, data.ciphertext_sha256, data.size, data.media_type
            ),
        ),
        head=digest,
        last_time=event.time,
    )


def _check_logging_hospital(state: ArchiveState, event: Event, refuse: _Refuse) -> None:
    if state.status is not ArchiveStatus.TRANSFER_PENDING and isinstance(
        event, TransferAcceptEvent | TransferRejectEvent
    ):
        return  # refused by the state rule, which says more
    if isinstance(event, TransferAcceptEvent):
        if event.hospital != state.pending_recipient:
            raise refuse(f"logged by {event.hospital}, which is not the pending recipient")
        return
    if isinstance(event, TransferRejectEvent):
        if event.hospital not in (state.custodian, state.pending_recipient):
            raise refuse(f"logged by {event.hospital}, neither custodian nor recipient")
        return
    if event.hospital != state.custodian:
        raise refuse(f"logged by {event.hospital}, which is not the custodian {state.custodian}")


def _grantee_access(
    state: ArchiveState, event: AccessEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    grant = state.active_grant(event.hospital, event.time)
    if grant is None:
        raise refuse(f"{event.hospital} is neither the custodian nor holds an active share grant")
    data = event.data
    if data.grant != grant.grant_hash:
        raise refuse("grantee access must name its SHARE_GRANT (data.grant)")
    if data.purpose is not grant.purpose:
        raise refuse(f"purpose {data.purpose.value} differs from the grant's {grant.purpose.value}")
    if data.break_glass:
        raise refuse("break-glass access is only possible at the custodian")
    if event.prev != grant.head:
        raise refuse.prev(f"prev {event.prev} is not the grant's last event {grant.head}")
    if event.time < grant.last_time:
        raise refuse.time(f"dated {event.time.isoformat()}, before the grantee's previous event")
    updated = replace(grant, head=digest, last_time=event.time)
    grants = tuple(updated if g is grant else g for g in state.grants)
    return replace(state, grants=grants, event_count=state.event_count + 1)


# ------------------------------------------------------------------------------------------
# The transition rules, as data

_LIVE = frozenset(
    {
        ArchiveStatus.CREATED,
        ArchiveStatus.ARCHIVED,
        ArchiveStatus.TRANSFER_PENDING,
        ArchiveStatus.DISPOSITION_REVIEW,
    }
)
_SETTLED = frozenset(
    {ArchiveStatus.CREATED, ArchiveStatus.ARCHIVED, ArchiveStatus.DISPOSITION_REVIEW}
)
_ANY = frozenset(ArchiveStatus)

Effect = Callable[[ArchiveState, Any, str, "_Refuse"], ArchiveState]
"""``effect(state, event, leaf hash hex, refuse)``: the guards beyond state and hold, then the
new state (before ``head``, ``last_time`` and ``event_count`` advance)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """When one event type is legal on an archive's main chain, and what it does.

    ``allowed``: the states it may be applied in (``when`` says it in words, for refusals and
    the documentation); ``blocked_by_hold``: the action a legal hold blocks, if any; ``effect``:
    its further guards and the resulting state. ``legal_when`` and ``does`` are the row of the
    specification's table (docs/proof-format.md §8), checked against it by a test."""

    event_type: EventType
    allowed: frozenset[ArchiveStatus]
    when: str
    effect: Effect
    legal_when: str
    does: str
    blocked_by_hold: str | None = None
    in_transit: str | None = None
    """The refusal in TRANSFER_PENDING, when it says more than ``only allowed …``."""

    def permits(self, status: ArchiveStatus) -> bool:
        """Whether the state allows this event at all (guards aside)."""
        return status in self.allowed


def _amend(state: ArchiveState, event: AmendEvent, digest: str, refuse: _Refuse) -> ArchiveState:
    expected = state.current_version.version + 1
    if event.data.version != expected:
        raise refuse(f"version must be {expected}, not {event.data.version}")
    d = event.data
    version = ContentVersion(d.version, d.commitment, d.ciphertext_sha256, d.size, d.media_type)
    return replace(state, versions=(*state.versions, version))


def _archive(
    state: ArchiveState, event: ArchiveEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    a = event.data
    if a.record_class is not state.record_class:
        raise refuse(
            f"record class {a.record_class.value} differs from the archive's class "
            f"{state.record_class.value} (set by CREATE or RECLASSIFY)"
        )
    if a.commitment != state.current_version.commitment:
        raise refuse("the archived commitment is not the current version's commitment")
    trigger_start = datetime(
        a.trigger_date.year, a.trigger_date.month, a.trigger_date.day, tzinfo=UTC
    )
    if a.retention_deadline < trigger_start:
        raise refuse("the retention deadline is before its trigger date")
    return replace(
        state,
        status=ArchiveStatus.ARCHIVED,
        record_class=a.record_class,
        commitment=a.commitment,
        retention_policy=a.retention_policy,
        trigger_date=a.trigger_date,
        retention_deadline=a.retention_deadline,
    )


def _access(state: ArchiveState, event: AccessEvent, digest: str, refuse: _Refuse) -> ArchiveState:
    # In the custodian's log (a grantee's reads are its side chain, handled before the rules).
    if state.status is ArchiveStatus.DESTROYED and event.data.scope is AccessScope.CONTENT:
        raise refuse("the content was destroyed; only metadata or proof can be read")
    if event.data.grant is not None:
        _check_disclosure(state, event, refuse)
    elif event.data.break_glass and not any(w.covers(event) for w in state.break_glass):
        raise refuse.window(
            f"break-glass access by {event.actor} at {event.time.isoformat()} is not inside a "
            "break-glass window this actor opened on this archive (a BREAK_GLASS of the same "
            "hospital, actor, purpose and reason_hash whose expires_at is later)"
        )
    return state


def _share_grant(
    state: ArchiveState, event: ShareGrantEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    g = event.data
    if g.grantee == state.custodian:
        raise refuse("the custodian cannot grant access to itself")
    if g.expires_at <= event.time:
        raise refuse("the grant would already be expired")
    if state.active_grant(g.grantee, event.time) is not None:
        raise refuse(f"{g.grantee} already holds an active grant (revoke it first)")
    grant = ShareGrant(g.grantee, g.purpose, g.expires_at, digest, digest, event.time)
    kept = tuple(existing for existing in state.grants if existing.grantee != g.grantee)
    return replace(state, grants=(*kept, grant))


def _share_revoke(
    state: ArchiveState, event: ShareRevokeEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    held = state.grant_for(event.data.grantee)
    if held is None:
        raise refuse(f"{event.data.grantee} holds no grant")
    if event.data.reason is RevokeReason.EXPIRED and event.time < held.expires_at:
        raise refuse("reason 'expired' before the grant's expiry")
    return replace(state, grants=tuple(g for g in state.grants if g is not held))


def _transfer_offer(
    state: ArchiveState, event: TransferOfferEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.to == state.custodian:
        raise refuse("cannot transfer to the current custodian")
    expires = event.data.expires_at
    if expires is not None and expires <= event.time:
        raise refuse("the offer would already be expired")
    return replace(
        state,
        status=ArchiveStatus.TRANSFER_PENDING,
        pending_recipient=event.data.to,
        offer_hash=digest,
        offer_expires_at=expires,
    )


def _transfer_accept(
    state: ArchiveState, event: TransferAcceptEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.from_ != state.custodian:
        raise refuse(f"from {event.data.from_} is not the custodian {state.custodian}")
    if event.data.offer_hash is not None and event.data.offer_hash != state.offer_hash:
        raise refuse("offer_hash does not name the pending offer")
    # The offer's expiry is the custodian's policy, enforced by its TRANSFER_CANCEL (which the
    # contract serialises against acceptTransfer): an acceptance confirmed on chain before any
    # cancel stands, even when the recipient logs it after the expiry.
    return replace(_end_transfer(state), custodian=event.hospital, grants=())


def _transfer_reject(
    state: ArchiveState, event: TransferRejectEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.by != state.pending_recipient:
        raise refuse(f"rejected by {event.data.by}, not the pending recipient")
    return _end_transfer(state)


def _transfer_cancel(
    state: ArchiveState, event: TransferCancelEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.to != state.pending_recipient:
        raise refuse(f"cancels an offer to {event.data.to}, not the pending recipient")
    return _end_transfer(state)


def _hold_place(
    state: ArchiveState, event: HoldPlaceEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    by_regulator = event.data.by_regulator
    if state.on_hold and (state.hold_by_regulator or not by_regulator):
        raise refuse("the archive is already on hold")  # only a regulator takes over
    if by_regulator and not event.actor.startswith("0x"):
        raise refuse("a regulator hold names the regulator's member address as actor")
    return replace(
        state,
        on_hold=True,
        hold_by_regulator=by_regulator,
        hold_placed_by=event.actor,
        hold_reason_hash=event.data.reason_hash,
    )


def _hold_release(
    state: ArchiveState, event: HoldReleaseEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if not state.on_hold:
        raise refuse("the archive is not on hold")
    if state.hold_by_regulator and not event.actor.startswith("0x"):
        raise refuse("a regulator hold is released by a regulator (member address as actor)")
    return replace(
        state, on_hold=False, hold_by_regulator=False, hold_placed_by=None, hold_reason_hash=None
    )


def _retention_extend(
    state: ArchiveState, event: RetentionExtendEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    r = event.data
    if r.previous_deadline != state.retention_deadline:
        raise refuse("previous_deadline is not the current retention deadline")
    if r.new_deadline <= r.previous_deadline:
        raise refuse("retention can be extended, never shortened")
    # Extending during disposition review ends the review (and any proposal): the archive is kept.
    after = (
        ArchiveStatus.ARCHIVED if state.status is ArchiveStatus.DISPOSITION_REVIEW else state.status
    )
    return replace(
        state,
        status=after,
        retention_deadline=r.new_deadline,
        disposition_proposal=None,
        disposition_proposed_by=None,
        disposition_approved_until=None,
    )


def _disposition_start(
    state: ArchiveState, event: DispositionStartEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if state.retention_deadline is None:  # pragma: no cover  (ARCHIVE always sets it)
        raise refuse("no retention deadline recorded")
    if event.time < state.retention_deadline:
        raise refuse(
            f"retention runs until {state.retention_deadline.isoformat()}, "
            f"the event is dated {event.time.isoformat()}"
        )
    return replace(state, status=ArchiveStatus.DISPOSITION_REVIEW)


def _disposition_propose(
    state: ArchiveState, event: DispositionProposeEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    # A new list replaces an earlier one (whose approval lapsed or was never given).
    return replace(
        state,
        disposition_proposal=event.data.proposal,
        disposition_proposed_by=event.actor,
        disposition_approved_until=None,
    )


def _disposition_approve(
    state: ArchiveState, event: DispositionApproveEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    a = event.data
    if state.disposition_proposal is None:
        raise refuse("the archive is on no disposition list")
    if a.proposal != state.disposition_proposal:
        raise refuse(f"the archive is on list {state.disposition_proposal}, not {a.proposal}")
    if state.disposition_approved_until is not None:
        raise refuse("the archive's disposition is already approved")
    if event.actor == state.disposition_proposed_by:
        raise refuse("four eyes: the proposer cannot approve its own list")
    if a.expires_at <= event.time:
        raise refuse("an approval must expire after it is given")
    return replace(state, disposition_approved_until=a.expires_at)


def _destroy(
    state: ArchiveState, event: DestroyEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    approved_until = state.disposition_approved_until
    if approved_until is None:
        raise refuse("no approved disposition: DISPOSITION_PROPOSE and DISPOSITION_APPROVE first")
    if event.time >= approved_until:
        raise refuse(f"the approval expired at {approved_until.isoformat()}")
    return replace(
        state,
        status=ArchiveStatus.DESTROYED,
        grants=(),
        certificate_hash=event.data.certificate_hash,
        destroyed_event=digest,
    )


def _destruction_notice(
    state: ArchiveState, event: DestructionNoticeEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    """A grantee's record, in its own log, of the custodian's destruction notice: a side event
    after DESTROY (like a grantee's read), so it never moves the main chain."""
    if event.hospital == state.custodian:
        raise refuse("a destruction notice is logged by a grantee, not the custodian")
    if event.prev != state.destroyed_event:
        raise refuse.prev(f"prev {event.prev} is not the archive's DESTROY {state.destroyed_event}")
    if event.data.certificate_hash != state.certificate_hash:
        raise refuse("certificate_hash differs from the DESTROY's")
    return replace(state, event_count=state.event_count + 1)


def _fixity_check(
    state: ArchiveState, event: FixityCheckEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    f = event.data
    recorded = next((v for v in state.versions if v.version == f.version), None)
    if recorded is None:
        raise refuse(f"there is no version {f.version}")
    if f.ok and f.ciphertext_sha256 != recorded.ciphertext_sha256:
        raise refuse("a passing fixity check must report the recorded ciphertext hash")
    return state


def _tier_move(
    state: ArchiveState, event: TierMoveEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    t = event.data
    if t.from_tier is not state.tier:
        raise refuse(f"the payload is in tier {state.tier.value}, not {t.from_tier.value}")
    if t.to_tier is t.from_tier:
        raise refuse("a tier move must change the tier")
    return replace(state, tier=t.to_tier)


def _tag_bind(
    state: ArchiveState, event: TagBindEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.tag_hash in state.tags:
        raise refuse("the tag is already bound")
    return replace(state, tags=state.tags | {event.data.tag_hash})


def _tag_scan(
    state: ArchiveState, event: TagScanEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.data.tag_hash not in state.tags:
        raise refuse("the scanned tag is not bound to this archive")
    return state


def _reclassify(
    state: ArchiveState, event: ReclassifyEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    r = event.data
    if r.previous_class is not state.record_class:
        raise refuse(
            f"previous_class {r.previous_class.value} is not the archive's class "
            f"{state.record_class.value}"
        )
    if r.previous_sensitivity is not state.sensitivity:
        raise refuse(
            f"previous_sensitivity {r.previous_sensitivity.value} is not the archive's "
            f"sensitivity {state.sensitivity.value}"
        )
    if r.record_class is state.record_class and r.sensitivity is state.sensitivity:
        raise refuse("a reclassification must change the class or the sensitivity")
    return replace(state, record_class=r.record_class, sensitivity=r.sensitivity)


def _break_glass(
    state: ArchiveState, event: BreakGlassEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    if event.actor.startswith("0x"):
        raise refuse("break-glass is opened by a member of staff (a pseudonym as actor)")
    if event.data.expires_at <= event.time:
        raise refuse("a break-glass window must end after it opens")
    d = event.data
    window = BreakGlassWindow(
        event.hospital, event.actor, d.purpose, d.reason_hash, event.time, d.expires_at
    )
    live = tuple(w for w in state.break_glass if w.expires_at > event.time)
    return replace(state, break_glass=(*live, window))


def _derive(state: ArchiveState, event: DeriveEvent, digest: str, refuse: _Refuse) -> ArchiveState:
    if state.event_count != 1:
        raise refuse("DERIVE must directly follow the derivative's CREATE")
    if event.data.commitment != state.current_version.commitment:
        raise refuse("commitment is not the derivative's version 1 commitment")
    if event.data.source_archive == state.archive_id:
        raise refuse("an archive cannot be derived from itself")
    return state


def _not_on_archive(
    state: ArchiveState, event: Event, digest: str, refuse: _Refuse
) -> ArchiveState:
    raise refuse(
        "a consent subject's event is never part of an archive's chain"
    )  # pragma: no cover


_CONSENT_SUBJECT = "never on an archive (an event of a consent subject, docs/proof-format.md §8.1)"


def _replica(
    state: ArchiveState, event: ReplicaEvent, digest: str, refuse: _Refuse
) -> ArchiveState:
    r = event.data
    if state.status is ArchiveStatus.DESTROYED and r.action is not ReplicaAction.DROPPED:
        raise refuse("after DESTROYED a replica can only be dropped")
    if r.peer == state.custodian and r.action is not ReplicaAction.DROPPED:
        # (``dropped`` may name the custodian: a replica it held for the previous custodian
        # before a transfer made it the custodian, released by it.)
        raise refuse("a replica is held by another hospital than the custodian")
    recorded = next((v for v in state.versions if v.version == r.version), None)
    if recorded is None:
        raise refuse(f"there is no version {r.version}")
    key = (r.peer, r.version)
    if r.action is ReplicaAction.PLACED:
        if key in state.replicas:
            raise refuse(f"{r.peer} already holds a replica of version {r.version}")
        if r.ciphertext_sha256 != recorded.ciphertext_sha256:
            raise refuse("a placed replica must have the version's recorded ciphertext hash")
        return replace(state, replicas=state.replicas | {key})
    if key not in state.replicas:
        raise refuse(f"{r.peer} holds no replica of version {r.version}")
    if r.action is ReplicaAction.VERIFIED and r.ciphertext_sha256 != recorded.ciphertext_sha256:
        raise refuse("a verified replica must have the version's recorded ciphertext hash")
    if r.action is ReplicaAction.DROPPED:
        return replace(state, replicas=state.replicas - {key})
    return state


def _repair(state: ArchiveState, event: RepairEvent, digest: str, refuse: _Refuse) -> ArchiveState:
    r = event.data
    recorded = next((v for v in state.versions if v.version == r.version), None)
    if recorded is None:
        raise refuse(f"there is no version {r.version}")
    if r.ciphertext_sha256 != recorded.ciphertext_sha256:
        raise refuse("a repair must restore the version's recorded ciphertext hash")
    if (r.source, r.version) not in state.replicas:
        raise refuse(f"{r.source} holds no replica of version {r.version}")
    return state


def _rule(
    event_type: EventType, allowed: frozenset[ArchiveStatus] | ArchiveStatus, **fields: Any
) -> Rule:
    states = allowed if isinstance(allowed, frozenset) else frozenset({allowed})
    return Rule(event_type=event_type, allowed=states, **fields)


_IN_TRANSIT = frozenset({ArchiveStatus.TRANSFER_PENDING})
_CUSTODY_ONLY = (
    "the archive is in transit: only cancel, reject, accept, holds, extensions, revocations"
)
_EXTENDABLE = frozenset(
    {ArchiveStatus.ARCHIVED, ArchiveStatus.TRANSFER_PENDING, ArchiveStatus.DISPOSITION_REVIEW}
)

RULES: Mapping[EventType, Rule] = {
    rule.event_type: rule
    for rule in (
        _rule(
            EventType.AMEND,
            ArchiveStatus.CREATED,
            when="while CREATED (archived records are immutable)",
            effect=_amend,
            legal_when="custodian; CREATED; `version` = current version + 1",
            does="new version",
        ),
        _rule(
            EventType.ARCHIVE,
            ArchiveStatus.CREATED,
            when="from CREATED",
            effect=_archive,
            legal_when="custodian; CREATED; `record_class` = the archive's class (`CREATE`'s, or the last `RECLASSIFY`'s); `commitment` = current version's commitment; `retention_deadline` ≥ `trigger_date` 00:00Z",
            does="ARCHIVED; commitment, deadline set",
        ),
        _rule(
            EventType.ACCESS,
            _ANY - _IN_TRANSIT,
            when="outside a pending transfer",
            in_transit="the archive is in transit: no access while a transfer is pending",
            effect=_access,
            legal_when="not TRANSFER_PENDING; after DESTROYED only scope `metadata` or `proof`; `grant` = null (a read; with `break_glass` true only inside a window: an earlier `BREAK_GLASS` on this archive by the same hospital and `actor`, same `purpose` and `reason_hash`, `time` < its `expires_at`, else `break_glass_unopened`), or a **disclosure** to a grantee: `grant` = the `SHARE_GRANT` leaf hash of a grant held, `time` < its `expires_at`, `actor` = the grantee's address, same `purpose`, `break_glass` false",
            does="—",
        ),
        _rule(
            EventType.SHARE_GRANT,
            frozenset({ArchiveStatus.CREATED, ArchiveStatus.ARCHIVED}),
            when="while CREATED/ARCHIVED",
            effect=_share_grant,
            legal_when="custodian; CREATED or ARCHIVED; `grantee` ≠ custodian; `expires_at` > `time`; the grantee holds no unexpired grant",
            does="grant recorded (replaces an expired one)",
        ),
        _rule(
            EventType.SHARE_REVOKE,
            _LIVE,
            when="before DESTROYED",
            effect=_share_revoke,
            legal_when="custodian; not DESTROYED; the grantee holds a grant; reason `expired` only at or after `expires_at`",
            does="grant removed",
        ),
        _rule(
            EventType.TRANSFER_OFFER,
            ArchiveStatus.ARCHIVED,
            when="from ARCHIVED",
            blocked_by_hold="transfer-out",
            effect=_transfer_offer,
            legal_when="custodian; ARCHIVED; not on hold; `to` ≠ custodian; `expires_at` null or > `time`",
            does="TRANSFER_PENDING; recipient = `to`",
        ),
        _rule(
            EventType.TRANSFER_ACCEPT,
            ArchiveStatus.TRANSFER_PENDING,
            when="while TRANSFER_PENDING",
            blocked_by_hold="transfer-out",
            effect=_transfer_accept,
            legal_when="TRANSFER_PENDING; logged by the pending recipient; `from` = custodian; `offer_hash` null or the offer's leaf hash; not on hold (the offer's expiry is enforced by the custodian's TRANSFER_CANCEL, not here: an acceptance confirmed on chain before any cancel stands)",
            does="ARCHIVED; custodian = recipient; all share grants end",
        ),
        _rule(
            EventType.TRANSFER_REJECT,
            ArchiveStatus.TRANSFER_PENDING,
            when="while TRANSFER_PENDING",
            effect=_transfer_reject,
            legal_when="TRANSFER_PENDING; logged by custodian or recipient; `by` = recipient",
            does="ARCHIVED, same custodian",
        ),
        _rule(
            EventType.TRANSFER_CANCEL,
            ArchiveStatus.TRANSFER_PENDING,
            when="while TRANSFER_PENDING",
            effect=_transfer_cancel,
            legal_when="custodian; TRANSFER_PENDING; `to` = recipient",
            does="ARCHIVED, same custodian",
        ),
        _rule(
            EventType.HOLD_PLACE,
            _LIVE,
            when="before DESTROYED",
            effect=_hold_place,
            legal_when="custodian's log; not DESTROYED; not on hold — except that a regulator hold (`by_regulator` true) takes over the custodian's own hold; a regulator hold has a member address as `actor`",
            does="on hold",
        ),
        _rule(
            EventType.HOLD_RELEASE,
            _ANY,
            when="on hold",
            effect=_hold_release,
            legal_when="custodian's log; on hold; a regulator hold is released with a member address as `actor`",
            does="hold cleared",
        ),
        _rule(
            EventType.RETENTION_EXTEND,
            _EXTENDABLE,
            when="once ARCHIVED and before DESTROYED",
            effect=_retention_extend,
            legal_when="custodian; ARCHIVED, TRANSFER_PENDING or DISPOSITION_REVIEW; `previous_deadline` = current deadline; `new_deadline` > it",
            does="deadline moved; DISPOSITION_REVIEW returns to ARCHIVED (any disposition list and approval end)",
        ),
        _rule(
            EventType.DISPOSITION_START,
            ArchiveStatus.ARCHIVED,
            when="from ARCHIVED",
            blocked_by_hold="disposition",
            in_transit=_CUSTODY_ONLY,
            effect=_disposition_start,
            legal_when="custodian; ARCHIVED; not on hold; `time` ≥ retention deadline",
            does="DISPOSITION_REVIEW",
        ),
        _rule(
            EventType.DESTROY,
            ArchiveStatus.DISPOSITION_REVIEW,
            when="from DISPOSITION_REVIEW",
            blocked_by_hold="destruction",
            in_transit=_CUSTODY_ONLY,
            effect=_destroy,
            legal_when="custodian; DISPOSITION_REVIEW; not on hold; the disposition is approved (`DISPOSITION_APPROVE` since the last `DISPOSITION_PROPOSE`) and `time` < the approval's `expires_at`",
            does="DESTROYED (terminal); all share grants end",
        ),
        _rule(
            EventType.FIXITY_CHECK,
            _SETTLED,
            when="before DESTROYED",
            in_transit=_CUSTODY_ONLY,
            effect=_fixity_check,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW; the `version` exists; when `ok`, `ciphertext_sha256` is that version's",
            does="—",
        ),
        _rule(
            EventType.TIER_MOVE,
            _SETTLED,
            when="before DESTROYED",
            in_transit=_CUSTODY_ONLY,
            effect=_tier_move,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW; `from_tier` = current tier (initially `hot`) ≠ `to_tier`",
            does="tier changed",
        ),
        _rule(
            EventType.TAG_BIND,
            _SETTLED,
            when="before DESTROYED",
            in_transit=_CUSTODY_ONLY,
            effect=_tag_bind,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW; `tag_hash` not yet bound to this archive (one archive per tag in a log: §4.3, not checkable from one bundle)",
            does="tag bound",
        ),
        _rule(
            EventType.TAG_SCAN,
            _ANY - _IN_TRANSIT,
            when="outside a pending transfer",
            in_transit=_CUSTODY_ONLY,
            effect=_tag_scan,
            legal_when="custodian; not TRANSFER_PENDING; tag bound (also after DESTROYED)",
            does="—",
        ),
        _rule(
            EventType.DISPOSITION_PROPOSE,
            ArchiveStatus.DISPOSITION_REVIEW,
            when="in DISPOSITION_REVIEW",
            blocked_by_hold="disposition",
            in_transit=_CUSTODY_ONLY,
            effect=_disposition_propose,
            legal_when="custodian; DISPOSITION_REVIEW; not on hold; replaces an earlier list and its approval",
            does="list and proposer (`actor`) recorded; no approval yet",
        ),
        _rule(
            EventType.DISPOSITION_APPROVE,
            ArchiveStatus.DISPOSITION_REVIEW,
            when="in DISPOSITION_REVIEW",
            blocked_by_hold="disposition",
            in_transit=_CUSTODY_ONLY,
            effect=_disposition_approve,
            legal_when="custodian; DISPOSITION_REVIEW; not on hold; `proposal` = the recorded list, not yet approved; `actor` ≠ its proposer (four eyes); `expires_at` > `time`",
            does="approval recorded until `expires_at`",
        ),
        _rule(
            EventType.RECLASSIFY,
            frozenset({ArchiveStatus.CREATED, ArchiveStatus.ARCHIVED}),
            when="while CREATED or ARCHIVED",
            effect=_reclassify,
            legal_when="custodian; CREATED or ARCHIVED; `previous_class` and `previous_sensitivity` = the archive's class and sensitivity; `record_class` or `sensitivity` differs from them (an ARCHIVED record's class changes only toward a retention at least as long: the custodian's node refuses any other and records the longer deadline as `RETENTION_EXTEND` right after)",
            does="class and sensitivity replaced (the deadline stays; ARCHIVE's on-chain class code stays)",
        ),
        _rule(
            EventType.BREAK_GLASS,
            _SETTLED,
            when="before DESTROYED",
            in_transit="the archive is in transit: no access while a transfer is pending",
            effect=_break_glass,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW; `actor` a staff pseudonym (not a member address); `expires_at` > `time`",
            does="opens a break-glass window: that actor's reads until `expires_at` (exclusive) may be `ACCESS` with `break_glass` true, this `purpose` and this `reason_hash` (required by the `ACCESS` rule, `break_glass_unopened`)",
        ),
        _rule(
            EventType.CONSENT_GRANT,
            frozenset(),
            when=_CONSENT_SUBJECT,
            effect=_not_on_archive,
            legal_when="never on an archive: the first event of a consent subject (§8.1): `archive_id` = the consent id, `prev` null; `record_classes` and `facts` non-empty, sorted, no repeats; `period_start` ≤ `period_end`; `expires_at` > `time`",
            does="consent live",
        ),
        _rule(
            EventType.CONSENT_REVOKE,
            frozenset(),
            when=_CONSENT_SUBJECT,
            effect=_not_on_archive,
            legal_when="never on an archive: on a consent subject (§8.1) whose consent is not revoked, logged by the hospital that granted it",
            does="consent revoked (no attestation after it)",
        ),
        _rule(
            EventType.ATTEST,
            frozenset(),
            when=_CONSENT_SUBJECT,
            effect=_not_on_archive,
            legal_when="never on an archive: on a consent subject (§8.1), logged by the hospital that granted it; consent not revoked; `time` < the consent's `expires_at`; `insurer` = the consent's insurer; `expires_at` > `time` and ≤ the consent's `expires_at`",
            does="attestation issued",
        ),
        _rule(
            EventType.DERIVE,
            ArchiveStatus.CREATED,
            when="directly after CREATE",
            effect=_derive,
            legal_when="custodian; CREATED; the archive's second event (directly after CREATE); `commitment` = version 1's commitment; `source_archive` ≠ the archive",
            does="lineage recorded",
        ),
        _rule(
            EventType.REPLICA,
            _SETTLED | {ArchiveStatus.DESTROYED},
            when="before DESTROYED (after it only `dropped`)",
            in_transit=_CUSTODY_ONLY,
            effect=_replica,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW, or DESTROYED with `action` `dropped`; `peer` ≠ custodian (but for `dropped`: a replica inherited through a transfer may be held by the new custodian); the `version` exists; `placed`: `ciphertext_sha256` is that version's and `peer` holds no replica of it; `verified`: `peer` holds one and `ciphertext_sha256` is the version's; `failed`, `dropped`: `peer` holds one",
            does="`placed` adds the replica, `dropped` removes it",
        ),
        _rule(
            EventType.REPAIR,
            _SETTLED,
            when="before DESTROYED",
            in_transit=_CUSTODY_ONLY,
            effect=_repair,
            legal_when="custodian; CREATED, ARCHIVED or DISPOSITION_REVIEW; the `version` exists; `ciphertext_sha256` is that version's; `source` holds a replica of it",
            does="—",
        ),
        _rule(
            EventType.DESTRUCTION_NOTICE,
            ArchiveStatus.DESTROYED,
            when="after DESTROYED",
            effect=_destruction_notice,
            legal_when="logged by a hospital other than the custodian, in its own log (a grantee's record; grants end at `DESTROY`, so whether it held one is not checked); DESTROYED; `prev` = the `DESTROY` leaf hash; `certificate_hash` = the `DESTROY`'s; `reason` `custodian_destroyed`",
            does="— (side event: the main chain does not move)",
        ),
    )
}
"""The lifecycle's transition rules, by event type: what the services, the verifier and the
specification (docs/proof-format.md §8, checked by a test) all read. CREATE (the first event)
and a grantee's reads (its side chain) are the two cases outside this table."""


def check_allowed(state: ArchiveState, event_type: EventType) -> None:
    """Refuse early (``TransitionRefusedError``) an event type the archive's state or hold
    forbids, before the caller does costly work (an upload) for an event ``apply`` would refuse."""
    rule = RULES[event_type]
    refusal = _state_refusal(state, rule)
    if refusal is not None:
        raise TransitionRefusedError(state.status.value, event_type.value, refusal)


def _state_refusal(state: ArchiveState, rule: Rule) -> str | None:
    if not rule.permits(state.status):
        if state.status is ArchiveStatus.TRANSFER_PENDING and rule.in_transit is not None:
            return rule.in_transit
        return f"only allowed {rule.when}"
    if rule.blocked_by_hold is not None and state.on_hold:
        return f"the archive is on legal hold: {rule.blocked_by_hold} is blocked"
    return None


def _transition(state: ArchiveState, event: Event, digest: str, refuse: _Refuse) -> ArchiveState:
    rule = RULES[EventType(event.type)]
    refusal = _state_refusal(state, rule)
    if refusal is not None:
        raise refuse(refusal)
    return rule.effect(state, event, digest, refuse)


def _check_disclosure(state: ArchiveState, event: AccessEvent, refuse: _Refuse) -> None:
    """An ACCESS in the custodian's log that names a grant records a *disclosure*: the custodian
    handed key material, ciphertext or evidence to the grantee (the actor) under that grant."""
    data = event.data
    grant = next((g for g in state.grants if g.grant_hash == data.grant), None)
    if grant is None:
        raise refuse("the custodian's access names no grant of this archive")
    if event.time >= grant.expires_at:
        raise refuse("a disclosure under a grant after the grant expired")
    if event.actor != grant.grantee:
        raise refuse(f"a disclosure under the grant of {grant.grantee} names actor {event.actor}")
    if data.purpose is not grant.purpose:
        raise refuse(f"purpose {data.purpose.value} differs from the grant's {grant.purpose.value}")
    if data.break_glass:
        raise refuse("a disclosure under a grant is never break-glass")


def _end_transfer(state: ArchiveState) -> ArchiveState:
    return replace(
        state,
        status=ArchiveStatus.ARCHIVED,
        pending_recipient=None,
        offer_hash=None,
        offer_expires_at=None,
    )
