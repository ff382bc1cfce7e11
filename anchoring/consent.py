"""Consent subjects: the patient-level chain of CONSENT_GRANT → ATTEST* → CONSENT_REVOKE.

A consent is not an archive, so its events never enter an archive's chain. Each consent is its own
*subject*: the events' ``archive_id`` field holds the consent id (a ULID minted when the consent is
recorded, never an archive's id), CONSENT_GRANT opens the chain (``prev`` null), and every later
event's ``prev`` is the previous event's leaf hash, all in the granting hospital's log. Pure: no
clock, no I/O; "now" is the event's time (docs/proof-format.md §8.1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from anchoring.errors import EventTimeOrderError, PrevHashMismatchError, TransitionRefusedError
from anchoring.events import (
    AttestedFact,
    AttestEvent,
    ConsentGrantEvent,
    ConsentRevokeEvent,
    Event,
    Purpose,
    RecordClass,
    event_leaf_hash,
)


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One consent after some of its events."""

    consent_id: str
    hospital: str
    patient: str
    insurer: str
    purpose: Purpose
    record_classes: frozenset[RecordClass]
    period_start: date
    period_end: date
    facts: frozenset[AttestedFact]
    expires_at: datetime
    grant_hash: str  # leaf hash (hex) of the CONSENT_GRANT
    head: str
    last_time: datetime
    revoked: bool = False
    attestations: int = 0

    def live(self, at: datetime) -> bool:
        """Whether attestations may be issued under the consent at ``at``."""
        return not self.revoked and at < self.expires_at


def _state_name(state: ConsentState | None) -> str:
    if state is None:
        return "NONE"
    return "REVOKED" if state.revoked else "CONSENTED"


def apply_consent(
    state: ConsentState | None, event: Event, *, leaf_hash: bytes | None = None
) -> ConsentState:
    """The consent's state after ``event`` or ``TransitionRefusedError`` naming the broken rule."""
    name = _state_name(state)
    digest = (leaf_hash or event_leaf_hash(event)).hex()

    def refuse(reason: str) -> TransitionRefusedError:
        return TransitionRefusedError(name, event.type, reason)

    if state is None:
        if not isinstance(event, ConsentGrantEvent):
            raise refuse("a consent subject's first event must be CONSENT_GRANT")
        data = event.data
        if data.expires_at <= event.time:
            raise refuse("the consent expires before it is granted")
        return ConsentState(
            consent_id=event.archive_id,
            hospital=event.hospital,
            patient=data.patient,
            insurer=data.insurer,
            purpose=data.purpose,
            record_classes=frozenset(data.record_classes),
            period_start=data.period_start,
            period_end=data.period_end,
            facts=frozenset(data.facts),
            expires_at=data.expires_at,
            grant_hash=digest,
            head=digest,
            last_time=event.time,
        )
    if event.archive_id != state.consent_id:
        raise refuse(f"event is for subject {event.archive_id}, not {state.consent_id}")
    if event.prev != state.head:
        raise PrevHashMismatchError(name, event.type, f"prev {event.prev} is not {state.head}")
    if event.time < state.last_time:
        raise EventTimeOrderError(name, event.type, "dated before the previous event")
    if event.hospital != state.hospital:
        raise refuse(f"logged by {event.hospital}, not by the granting hospital")
    if state.revoked:
        raise refuse("the consent is revoked")
    if isinstance(event, ConsentRevokeEvent):
        return replace(state, revoked=True, head=digest, last_time=event.time)
    if isinstance(event, AttestEvent):
        attest = event.data
        if event.time >= state.expires_at:
            raise refuse("the consent has expired")
        if attest.insurer != state.insurer:
            raise refuse(f"insurer {attest.insurer} is not the consent's {state.insurer}")
        if not event.time < attest.expires_at <= state.expires_at:
            raise refuse("the attestation must expire after issuance and not after the consent")
        return replace(
            state, head=digest, last_time=event.time, attestations=state.attestations + 1
        )
    raise refuse(f"{event.type} is not an event of a consent subject")
