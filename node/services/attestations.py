"""Consents and insurer attestations (docs/attestations.md).

The hospital records a patient's consent (CONSENT_GRANT, a consent subject of its own, see
``anchoring.consent``); an insurer asks for an attestation about that patient and receives an
EIP-712 document signed by this node's key, stating only the facts the consent allows about the
records in scope, never content. Issuance logs ATTEST on the consent's chain in the same unit of
work (anchored with the next batch); revocation is an ``AttestationRevocations.revoke`` call sent
through the chain outbox. No consent, no attestation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from sqlalchemy import select
from sqlalchemy.orm import Session
from ulid import ULID

from anchoring import merkle, storage
from anchoring.attestation import (
    ATTESTATION_FORMAT,
    EIP712_NAME,
    EIP712_VERSION,
    records_hash,
    typed_digest,
)
from anchoring.chain import Role as MemberRole
from anchoring.consent import ConsentState, apply_consent
from anchoring.deployment import Deployment
from anchoring.errors import TransitionRefusedError
from anchoring.events import (
    AttestData,
    AttestedFact,
    AttestEvent,
    ConsentGrantData,
    ConsentGrantEvent,
    ConsentRevokeData,
    ConsentRevokeEvent,
    ConsentRevokeReason,
    Event,
    Purpose,
    RecordClass,
    canonical_bytes,
    jcs,
    parse_event,
)
from anchoring.ids import IdentifierError, normalize_address
from anchoring.worker import enqueue_call
from node import crypto
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from node.members import MemberDirectory
from node.models import NOT_HELD, Archive, ArchiveVersion, Attestation, Consent
from node.principal import Action, Principal
from node.pseudonyms import Pseudonyms
from node.services.stays import stay_dates

DEFAULT_ATTESTATION_TTL = timedelta(days=30)
"""How long an attestation is valid unless the consent ends sooner."""


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent as the API shows it (the patient only as a pseudonym)."""

    id: str
    insurer: str
    purpose: str
    record_classes: list[str]
    facts: list[str]
    period_start: date
    period_end: date
    expires_at: datetime
    granted_at: datetime
    revoked_at: datetime | None
    grant_hash: str


def _consent_view(row: Consent) -> ConsentView:
    return ConsentView(
        id=row.id,
        insurer=row.insurer,
        purpose=row.purpose,
        record_classes=row.record_classes.split(","),
        facts=row.facts.split(","),
        period_start=row.period_start.date(),
        period_end=row.period_end.date(),
        expires_at=row.expires_at,
        granted_at=row.granted_at,
        revoked_at=row.revoked_at,
        grant_hash=row.grant_hash,
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _address(value: str, field: str) -> str:
    try:
        return normalize_address(value)
    except IdentifierError:
        raise InputError(f"{field} must be a member address", code="invalid_address") from None


class AttestationService:
    """Record and revoke consents; issue, hand out and revoke attestations."""

    def __init__(
        self,
        *,
        hospital: str,
        db: Database,
        units: UnitRunner,
        members: MemberDirectory,
        pseudonyms: Pseudonyms,
        signer: LocalAccount,
        deployment: Deployment,
        latest_block: Callable[[], int],
        ttl: timedelta = DEFAULT_ATTESTATION_TTL,
    ) -> None:
        self.hospital = hospital
        self.db = db
        self.units = units
        self.members = members
        self.pseudonyms = pseudonyms
        self.signer = signer
        self.deployment = deployment
        self.latest_block = latest_block
        self.ttl = ttl

    # -- consents ------------------------------------------------------------------------------

    def grant_consent(
        self,
        principal: Principal,
        *,
        patient_id: str,
        insurer: str,
        purpose: Purpose,
        record_classes: Sequence[RecordClass],
        facts: Sequence[AttestedFact],
        period_start: date,
        period_end: date,
        expires_at: datetime,
        document_hash: str,
    ) -> ConsentView:
        """Record a consent: CONSENT_GRANT opens a new consent subject (one unit of work)."""
        principal.require(Action.RECORD_CONSENT)
        insurer = _address(insurer, "insurer")
        if not self.members.is_active(insurer, MemberRole.INSURER):
            raise ConflictError(
                f"{insurer} is not an active insurer of the consortium", code="not_active_insurer"
            )
        patient = self.pseudonyms.patient(patient_id.strip())
        consent_id = str(ULID())
        try:
            data = ConsentGrantData(
                patient=patient,
                insurer=insurer,
                purpose=purpose,
                record_classes=sorted(set(record_classes)),
                facts=sorted(set(facts)),
                period_start=period_start,
                period_end=period_end,
                expires_at=expires_at,
                document_hash=document_hash,
            )
        except ValueError as exc:
            raise InputError(f"invalid consent: {exc}", code="invalid_consent") from None

        def unit(uow: UnitOfWork) -> ConsentView:
            event = ConsentGrantEvent(
                hospital=self.hospital,
                log_index=uow.log.size,
                archive_id=consent_id,
                actor=principal.actor,
                time=uow.now,
                prev=None,
                data=data,
            )
            leaf = self._log(uow, None, event)
            row = Consent(
                id=consent_id,
                patient_pseudonym=patient,
                insurer=insurer,
                purpose=purpose.value,
                record_classes=",".join(data.record_classes),
                facts=",".join(data.facts),
                period_start=_midnight(period_start),
                period_end=_midnight(period_end),
                expires_at=data.expires_at,
                granted_at=uow.now,
                granted_by=principal.actor,
                grant_hash=leaf,
                last_event_hash=leaf,
            )
            uow.session.add(row)
            return _consent_view(row)

        return self.units.run(unit)

    def revoke_consent(
        self, principal: Principal, consent_id: str, reason: ConsentRevokeReason
    ) -> ConsentView:
        """Log CONSENT_REVOKE: no attestation is issued under the consent afterwards."""
        principal.require(Action.RECORD_CONSENT)

        def unit(uow: UnitOfWork) -> ConsentView:
            row = self._locked_consent(uow.session, consent_id)
            state = self._consent_state(uow.session, row)
            event = ConsentRevokeEvent(
                hospital=self.hospital,
                log_index=uow.log.size,
                archive_id=row.id,
                actor=principal.actor,
                time=uow.now,
                prev=state.head,
                data=ConsentRevokeData(reason=reason),
            )
            row.last_event_hash = self._log(uow, state, event)
            row.revoked_at = uow.now
            return _consent_view(row)

        return self.units.run(unit)

    # -- attestations --------------------------------------------------------------------------

    def request(
        self,
        principal: Principal,
        *,
        patient_id: str,
        claim_start: date,
        claim_end: date,
        facts: Sequence[AttestedFact],
        record_classes: Sequence[RecordClass] | None = None,
    ) -> dict[str, Any]:
        """Issue an attestation to the calling insurer, or refuse (403) without a live consent of
        this patient for this insurer that covers the period, classes and facts asked for."""
        principal.require(Action.REQUEST_ATTESTATION)
        insurer = principal.member
        if insurer is None or not self.members.is_active(insurer, MemberRole.INSURER):
            raise PermissionDeniedError(
                "the caller is not an active insurer member", code="not_active_insurer"
            )
        if claim_end < claim_start:
            raise InputError("claim_end is before claim_start", code="invalid_period")
        revocations = self.deployment.revocations
        if revocations is None:
            raise UnavailableError("no AttestationRevocations contract is deployed")
        patient = self.pseudonyms.patient(patient_id.strip())
        wanted_facts = sorted(set(facts))
        issued_block = self.latest_block()

        def unit(uow: UnitOfWork) -> dict[str, Any]:
            row = self._consent_for(
                uow, patient, insurer, claim_start, claim_end, wanted_facts, record_classes
            )
            classes = sorted(set(record_classes or row.record_classes.split(",")))
            state = self._consent_state(uow.session, row)
            records = self._records(uow.session, patient, classes, claim_start, claim_end)
            shown = [
                _record_facts(
                    archive,
                    commitment,
                    wanted_facts,
                    stay_dates(uow.session, archive.id)
                    if AttestedFact.DATES in wanted_facts
                    else (None, None),
                )
                for archive, commitment in records
            ]
            issued_at = int(uow.now.timestamp())
            expires = min(int((uow.now + self.ttl).timestamp()), int(row.expires_at.timestamp()))
            if expires <= issued_at:  # pragma: no cover  (the consent is live past now)
                raise PermissionDeniedError("the consent expires now", code="consent_expired")
            attestation_id = crypto.random_bytes(32)
            message: dict[str, Any] = {
                "attestationId": "0x" + attestation_id.hex(),
                "issuer": self.hospital,
                "insurer": insurer,
                "patientRef": "0x" + self.pseudonyms.insurer_reference(patient, insurer),
                "consentHash": "0x" + row.grant_hash,
                "purpose": row.purpose,
                "facts": ",".join(wanted_facts),
                "claimStart": claim_start.isoformat(),
                "claimEnd": claim_end.isoformat(),
                "issuedAt": issued_at,
                "expiresAt": expires,
                "issuedBlock": issued_block,
                "revocations": revocations.address,
                "recordsHash": "0x" + records_hash(shown).hex(),
            }
            domain = {
                "name": EIP712_NAME,
                "version": EIP712_VERSION,
                "chainId": self.deployment.chain_id,
                "verifyingContract": self.deployment.notary.address,
            }
            digest = typed_digest(domain, message)
            signature = self.signer.unsafe_sign_hash(Hash32(digest)).signature
            document = {
                "format": ATTESTATION_FORMAT,
                "domain": domain,
                "message": message,
                "records": shown,
                "signature": "0x" + bytes(signature).hex(),
            }
            event = AttestEvent(
                hospital=self.hospital,
                log_index=uow.log.size,
                archive_id=row.id,
                actor=insurer,
                time=uow.now,
                prev=state.head,
                data=AttestData(
                    attestation_id=attestation_id.hex(),
                    digest=digest.hex(),
                    insurer=insurer,
                    records=len(shown),
                    expires_at=datetime.fromtimestamp(expires, UTC),
                ),
            )
            log_index = event.log_index
            row.last_event_hash = self._log(uow, state, event)
            uow.session.add(
                Attestation(
                    id=attestation_id.hex(),
                    consent_id=row.id,
                    insurer=insurer,
                    digest=digest.hex(),
                    document=canonical_json(document),
                    log_index=log_index,
                    issued_at=uow.now,
                    expires_at=datetime.fromtimestamp(expires, UTC),
                )
            )
            return document

        return self.units.run(unit)

    def get(self, principal: Principal, attestation_id: str) -> dict[str, Any]:
        """The attestation document with its ATTEST inclusion ``evidence`` once a confirmed
        checkpoint covers it (without it before). An insurer sees only its own."""
        if principal.member is not None:
            principal.require(Action.REQUEST_ATTESTATION)
        else:
            principal.require(Action.REVOKE_ATTESTATION)
        with self.db.session() as session:
            row = session.get(Attestation, attestation_id.strip().lower().removeprefix("0x"))
            if row is None or (principal.member is not None and row.insurer != principal.member):
                raise NotFoundError(
                    f"attestation {attestation_id} not found", code="attestation_not_found"
                )
            document: dict[str, Any] = _json(row.document)
            checkpoint = storage.latest_confirmed_checkpoint(session)
            if (
                checkpoint is not None
                and checkpoint.chain_index is not None
                and row.log_index < checkpoint.size
            ):
                entry = storage.entry_at(session, row.log_index)
                document["evidence"] = {
                    "event": base64.b64encode(entry.event).decode("ascii"),
                    "log_index": row.log_index,
                    "checkpoint_index": checkpoint.chain_index,
                    "tree_size": checkpoint.size,
                    "proof": [
                        h.hex()
                        for h in storage.inclusion_proof(session, row.log_index, checkpoint.size)
                    ],
                }
            return document

    def revoke(self, principal: Principal, attestation_id: str) -> datetime:
        """Revoke an attestation on chain (``AttestationRevocations.revoke``, sent by the outbox
        with the node's key: a hospital revokes only its own). Idempotence is refused: 409."""
        principal.require(Action.REVOKE_ATTESTATION)
        if self.deployment.revocations is None:
            raise UnavailableError("no AttestationRevocations contract is deployed")
        key = attestation_id.strip().lower().removeprefix("0x")

        def unit(uow: UnitOfWork) -> datetime:
            row = uow.session.execute(
                select(Attestation).where(Attestation.id == key).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise NotFoundError(
                    f"attestation {attestation_id} not found", code="attestation_not_found"
                )
            if row.revoked_at is not None:
                raise ConflictError("the attestation is already revoked", code="already_revoked")
            row.revoked_at = uow.now
            enqueue_call(
                uow.session,
                "revoke",
                [bytes.fromhex(row.id)],
                archive_id=None,
                contract="AttestationRevocations",
            )
            return uow.now

        return self.units.run(unit)

    # -- helpers -------------------------------------------------------------------------------

    def _log(self, uow: UnitOfWork, state: ConsentState | None, event: Event) -> str:
        """Check ``event`` against the consent subject's rules and append it; its leaf hash."""
        raw = canonical_bytes(event)
        leaf = merkle.leaf_hash(raw)
        try:
            apply_consent(state, event, leaf_hash=leaf)
        except TransitionRefusedError as exc:
            raise ConflictError(str(exc), code="consent_refused") from None
        uow.log.append(
            raw, archive_id=event.archive_id, event_type=event.type, time=uow.now, leaf=leaf
        )
        return leaf.hex()

    @staticmethod
    def _consent_state(session: Session, row: Consent) -> ConsentState:
        state: ConsentState | None = None
        for entry in storage.entries_for_archive(session, row.id):
            state = apply_consent(state, parse_event(entry.event))
        if state is None or state.head != row.last_event_hash:
            raise ConflictError(
                f"consent {row.id}: the log and the consent row disagree", code="log_inconsistent"
            )
        return state

    @staticmethod
    def _locked_consent(session: Session, consent_id: str) -> Consent:
        row = session.execute(
            select(Consent).where(Consent.id == consent_id.strip().upper()).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"consent {consent_id} not found", code="consent_not_found")
        if row.revoked_at is not None:
            raise ConflictError("the consent is already revoked", code="consent_revoked")
        return row

    @staticmethod
    def _consent_for(
        uow: UnitOfWork,
        patient: str,
        insurer: str,
        claim_start: date,
        claim_end: date,
        facts: Sequence[str],
        record_classes: Sequence[RecordClass] | None,
    ) -> Consent:
        """The live consent covering the request, or the most telling refusal (403)."""
        rows = (
            uow.session.execute(
                select(Consent)
                .where(Consent.patient_pseudonym == patient, Consent.insurer == insurer)
                .order_by(Consent.granted_at.desc())
                .with_for_update()
            )
            .scalars()
            .all()
        )
        if not rows:
            raise PermissionDeniedError(
                "no consent of this patient for this insurer is on record", code="no_consent"
            )
        live = [r for r in rows if r.revoked_at is None and uow.now < r.expires_at]
        if not live:
            if any(r.revoked_at is not None for r in rows):
                raise PermissionDeniedError(
                    "the patient revoked the consent", code="consent_revoked"
                )
            raise PermissionDeniedError("the consent has expired", code="consent_expired")
        why = "the request is outside the consent's scope"
        for row in live:
            classes = set(row.record_classes.split(","))
            if not (row.period_start.date() <= claim_start and claim_end <= row.period_end.date()):
                why = "the claim period is outside the consented period"
            elif record_classes and not {c.value for c in record_classes} <= classes:
                why = "a requested record class is not consented"
            elif not set(facts) <= set(row.facts.split(",")):
                why = "a requested fact is not consented"
            else:
                return row
        raise PermissionDeniedError(why, code="out_of_scope")

    def _records(
        self,
        session: Session,
        patient: str,
        classes: Sequence[str],
        claim_start: date,
        claim_end: date,
    ) -> list[tuple[Archive, str]]:
        """The patient's records this node holds in the classes, dated in the claim period, with
        each one's commitment (archived, else the current version's)."""
        archives = (
            session.execute(
                select(Archive)
                .where(
                    Archive.patient_pseudonym == patient,
                    Archive.record_class.in_(list(classes)),
                    Archive.custodian == self.hospital,
                    Archive.state.not_in(NOT_HELD),
                    Archive.trigger_date >= _midnight(claim_start),
                    Archive.trigger_date < _midnight(claim_end + timedelta(days=1)),
                )
                .order_by(Archive.trigger_date, Archive.id)
            )
            .scalars()
            .all()
        )
        result = []
        for archive in archives:
            commitment = session.execute(
                select(ArchiveVersion.commitment).where(
                    ArchiveVersion.archive_id == archive.id,
                    ArchiveVersion.version == archive.current_version,
                )
            ).scalar_one()
            result.append((archive, commitment))
        return result


def _record_facts(
    archive: Archive,
    commitment: str,
    facts: Sequence[str],
    stay: tuple[date | None, date | None] = (None, None),
) -> dict[str, Any]:
    """One record's entry: ``exists`` and exactly the facts asked for and consented; ``stay`` is
    the (admitted on, discharged on) of the encounter the record was ingested for."""
    record: dict[str, Any] = {"exists": True}
    for fact in facts:
        if fact == AttestedFact.RECORD_CLASS:
            record[fact] = archive.record_class
        elif fact == AttestedFact.STATE:
            record[fact] = archive.state
        elif fact == AttestedFact.CUSTODIAN:
            record[fact] = archive.custodian
        elif fact == AttestedFact.DATES:
            admitted, discharged = stay
            record[fact] = {
                "record_date": archive.trigger_date.date().isoformat(),
                "archived_on": archive.archived_at.date().isoformat()
                if archive.archived_at
                else None,
                "admitted_on": admitted.isoformat() if admitted else None,
                "discharged_on": discharged.isoformat() if discharged else None,
            }
        elif fact == AttestedFact.COMMITMENT:
            record[fact] = commitment
        elif fact == AttestedFact.ARCHIVE_ID:
            record[fact] = archive.id
    return record


def canonical_json(document: dict[str, Any]) -> str:
    """The document's RFC 8785 text (what is stored and handed out)."""
    return jcs(document).decode("utf-8")


def _json(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value
