"""Sharing an archive with another hospital, on both sides.

The custodian wraps the key to the grantee (SHARE_GRANT). A grantee's read: its node fetches the
grant descriptor (no key, no PHI) and applies its own access rules first; the custodian then
discloses key and ciphertext together, logging the disclosure in its own log before answering (an
ACCESS naming the grant, the grantee's address as actor); the grantee logs the read in its own log
(the grant's side chain) and decrypts. Revocation or expiry destroys the grantee's wrapped copy and
the custodian refuses further disclosures. Revocation cannot undo reads that already happened.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring import lifecycle, merkle, storage
from anchoring.bundle import ProofBundle, dump_bundle, parse_bundle
from anchoring.errors import AnchoringError
from anchoring.events import (
    AccessData,
    AccessEvent,
    AccessScope,
    Purpose,
    RevokeReason,
    ShareGrantData,
    ShareGrantEvent,
    ShareRevokeData,
    ShareRevokeEvent,
    parse_event,
)
from anchoring.ids import normalize_address
from node import crypto
from node.blobstore import BlobStore
from node.chainorder import chain_order
from node.db import Database, UnitOfWork, UnitRunner, utc_now
from node.errors import ConflictError, InputError, NotFoundError, UnavailableError
from node.keyring import KeyRing
from node.ledger import Ledger, event_time, normalise_id
from node.members import MemberDirectory
from node.models import NOT_HELD, Archive
from node.policy import PolicyAction
from node.principal import Action, Principal
from node.protocol import WRAPPED_KEY_HEADER, ShareDescriptor, VersionInfo
from node.readback import CiphertextReader
from node.remote import RemoteNodes
from node.services.permissions import AccessGate, Origin
from node.services.proofs import ProofService
from node.services.tiers import note_access

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShareView:
    """A share grant of an archive held here."""

    grantee: str
    purpose: str
    expires_at: datetime
    grant_hash: str
    active: bool

    @classmethod
    def of(cls, grant: lifecycle.ShareGrant, now: datetime) -> ShareView:
        return cls(
            grantee=grant.grantee,
            purpose=grant.purpose.value,
            expires_at=grant.expires_at,
            grant_hash=grant.grant_hash,
            active=now < grant.expires_at,
        )


@dataclass(frozen=True)
class SharedContent:
    """Content read under a share grant; the ACCESS event is already in this node's log."""

    archive_id: str
    custodian: str
    version: int
    media_type: str
    size: int
    chunks: Iterator[bytes]


class ShareService:
    """Grants, revocations and disclosures (custodian); shared reads and proofs (grantee)."""

    def __init__(
        self,
        *,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        keyring: KeyRing,
        blobs: BlobStore,
        members: MemberDirectory,
        remote: RemoteNodes,
        proofs: ProofService,
        gate: AccessGate,
        reader: CiphertextReader | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.gate = gate
        self.clock = clock
        self.db = db
        self.units = units
        self.ledger = ledger
        self.keyring = keyring
        self.blobs = blobs
        self.reader = reader or CiphertextReader(blobs)
        self.members = members
        self.remote = remote
        self.proofs = proofs

    @property
    def hospital(self) -> str:
        """This node's member address."""
        return self.ledger.hospital

    # ===========================================================================================
    # The custodian's side

    def grant(
        self, principal: Principal, archive_id: str, to: str, purpose: Purpose, expires_at: datetime
    ) -> ShareView:
        """Grant another hospital read access for a purpose until ``expires_at``."""
        principal.require(Action.SHARE)
        grantee = self.members.other_hospital(to)
        public_key = self.members.public_key(grantee)
        if expires_at.tzinfo is None:
            raise InputError("expires_at must include a timezone", code="invalid_expiry")

        def unit(uow: UnitOfWork) -> ShareView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            if expires_at <= uow.now:
                raise InputError("expires_at must be in the future", code="invalid_expiry")
            material = self.keyring.own(uow.session, archive.id)
            data = ShareGrantData(grantee=grantee, purpose=purpose, expires_at=expires_at)
            new_state = self.ledger.record(
                uow, archive, state, ShareGrantEvent, principal.actor, data
            )
            self.keyring.destroy(uow.session, archive.id, uow.now, member=grantee)  # replaced
            self.keyring.wrap_for_member(
                uow.session,
                archive.id,
                grantee,
                public_key,
                material,
                uow.now,
                purpose=purpose.value,
                expires_at=expires_at,
            )
            grant = new_state.grant_for(grantee)
            assert grant is not None
            return ShareView.of(grant, uow.now)

        return self.units.run(unit)

    def revoke(
        self,
        principal: Principal | None,
        archive_id: str,
        grantee: str,
        reason: RevokeReason = RevokeReason.REVOKED,
    ) -> None:
        """End a grant: SHARE_REVOKE and the grantee's wrapped copy is destroyed. ``principal``
        ``None``: the node itself (expiry)."""
        if principal is not None:
            principal.require(Action.SHARE)
        address = normalize_address(grantee)

        def unit(uow: UnitOfWork) -> None:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            if state.grant_for(address) is None:
                raise NotFoundError(f"{address} holds no grant on {archive_id}", code="no_grant")
            actor = principal.actor if principal is not None else self.hospital
            data = ShareRevokeData(grantee=address, reason=reason)
            self.ledger.record(uow, archive, state, ShareRevokeEvent, actor, data)
            self.keyring.destroy(uow.session, archive.id, uow.now, member=address)

        self.units.run(unit)

    def shares(self, principal: Principal, archive_id: str) -> list[ShareView]:
        """The grants of an archive held here."""
        principal.require(Action.READ_METADATA)
        with self.db.session() as session:
            archive = self.ledger.visible(session, principal, archive_id)
            state = self.ledger.state(session, archive)
        now = datetime.now(UTC)
        return [ShareView.of(grant, now) for grant in state.grants]

    def expire(self) -> int:
        """Revoke (reason ``expired``) grants past their expiry. Scheduler job."""
        with self.db.session() as session:
            due = self.keyring.expired_member_copies(session, datetime.now(UTC))
        for archive_id, grantee in due:
            try:
                self.revoke(None, archive_id, grantee, RevokeReason.EXPIRED)
            except (NotFoundError, ConflictError, AnchoringError) as exc:
                log.warning("could not expire the grant of %s on %s: %s", grantee, archive_id, exc)
        return len(due)

    # -- served to grantees (peer API) ---------------------------------------------------------

    def descriptor(self, sender: str, archive_id: str) -> ShareDescriptor:
        """For an active grantee: the grant and what the grantee needs to apply its own access
        rules (department, sensitivity, class) and to choose a version. No key, no PHI."""
        with self.db.session() as session:
            archive = _held_by_us(session, archive_id)
            grant = self._active_grant(session, archive, sender)
            return ShareDescriptor(
                archive_id=archive.id,
                custodian=self.hospital,
                grant=grant.grant_hash,
                purpose=grant.purpose,
                expires_at=grant.expires_at,
                granted_at=grant.last_time,
                record_class=archive.record_class,
                sensitivity=archive.sensitivity,
                department=archive.department,
                versions=[
                    VersionInfo(version=v.version, media_type=v.media_type, size=v.size)
                    for v in archive.versions
                ],
                current_version=archive.current_version,
            )

    def disclose_content(
        self, sender: str, archive_id: str, version: int, purpose: Purpose
    ) -> tuple[bytes, Iterator[bytes]]:
        """For an active grantee reading for the grant's purpose: the key wrapped to it and the
        version's ciphertext. The disclosure is logged first, in this log, so the evidence of the
        read does not depend on the grantee logging it too."""

        def unit(uow: UnitOfWork) -> tuple[bytes, str]:
            archive = _held_by_us(uow.session, archive_id, lock=True)
            grant = self._active_grant(uow.session, archive, sender)
            if grant.purpose is not purpose:
                raise ConflictError(
                    f"the grant is for purpose {grant.purpose.value}, not {purpose.value}",
                    code="purpose_mismatch",
                )
            wrapped = self.keyring.member_copy(uow.session, archive.id, sender)
            row = next((v for v in archive.versions if v.version == version), None)
            if row is None or row.blob_deleted_at is not None:
                raise NotFoundError(
                    f"archive {archive.id} has no version {version}", code="version_not_found"
                )
            self._log_disclosure(uow, archive, grant, sender, AccessScope.CONTENT)
            note_access(uow.session, archive.id, uow.now)  # a grantee's read keeps it hot too
            return wrapped, row.cid

        wrapped, cid = self.units.run(unit)
        return wrapped, self.reader.ciphertext(archive_id, version, cid)

    def disclose_bundle(self, sender: str, archive_id: str) -> ProofBundle:
        """The archive's bundle for a member entitled to it: an active grantee (the disclosure is
        logged, scope ``proof``) or the pending recipient of a transfer. Nobody else: bundles
        carry pseudonyms, departments and sizes."""

        def unit(uow: UnitOfWork) -> str:
            archive = _held_by_us(uow.session, archive_id, lock=True)
            if archive.pending_recipient != sender:
                grant = self._active_grant(uow.session, archive, sender)
                self._log_disclosure(uow, archive, grant, sender, AccessScope.PROOF)
            return archive.id

        return self.proofs.full(self.units.run(unit))[0]

    # ===========================================================================================
    # The grantee's side

    def read_shared(
        self, principal: Principal, custodian: str, archive_id: str, purpose: Purpose
    ) -> SharedContent:
        """Read an archive another hospital shared with us. Our own access rules apply first (a
        clinician of another department gets 404 as for a local record); then the custodian
        discloses key and ciphertext (logging it), we log the read in our log (the grant's side
        chain) and decrypt as the content streams."""
        principal.require(Action.READ_CONTENT)
        custodian = normalize_address(custodian)
        archive_id = normalise_id(archive_id)
        document = self.remote.get_json(custodian, f"/archives/{archive_id}/share")
        try:
            grant = ShareDescriptor.model_validate(document)
            info = grant.version(grant.current_version)
        except (ValidationError, LookupError):
            raise UnavailableError(f"the custodian {custodian} sent a malformed grant") from None
        self.gate.check(  # the same policy as for a local record, break-glass excepted
            principal,
            archive_id=archive_id,
            sensitivity=grant.sensitivity,
            department=grant.department,
            purpose=purpose,
            action=PolicyAction.READ_CONTENT,
            origin=Origin.SHARED,
        )
        if grant.purpose is not purpose:
            raise ConflictError(
                f"the grant is for purpose {grant.purpose.value}, not {purpose.value}",
                code="purpose_mismatch",
            )
        self._require_clock_after(grant.granted_at)
        headers, ciphertext = self.remote.open_stream(
            custodian,
            f"/archives/{archive_id}/shared/versions/{info.version}?purpose={purpose.value}",
        )
        try:
            material = self.keyring.open_member_copy(
                archive_id, base64.b64decode(headers.get(WRAPPED_KEY_HEADER, ""), validate=True)
            )
            self.units.run(lambda uow: self._log_read(uow, principal, archive_id, grant, purpose))
        except (crypto.CryptoError, ValueError):
            ciphertext.close()
            raise UnavailableError(
                f"the key sent by the custodian {custodian} does not open"
            ) from None
        except BaseException:
            ciphertext.close()
            raise
        chunks = crypto.decrypt_stream(
            material.data_key, ciphertext, crypto.archive_aad(archive_id, info.version)
        )
        return SharedContent(
            archive_id, custodian, info.version, info.media_type, info.size, chunks
        )

    def shared_bundle(self, principal: Principal, custodian: str, archive_id: str) -> bytes:
        """For a grantee: the custodian's bundle merged with this node's own reads under the grant
        (each read after the grant or read it names, times never decreasing)."""
        principal.require(Action.READ_PROOF)
        custodian = normalize_address(custodian)
        archive_id = normalise_id(archive_id)
        document = self.remote.get_json(custodian, f"/archives/{archive_id}/bundle")
        theirs = parse_bundle(json.dumps(document))
        own = self.proofs.own_entries(archive_id)
        return dump_bundle(
            ProofBundle(
                chain_id=theirs.chain_id,
                notary=theirs.notary,
                archive_id=theirs.archive_id,
                entries=chain_order(theirs.entries, own.entries),
            )
        )

    # -- helpers -------------------------------------------------------------------------------

    def _active_grant(
        self, session: Session, archive: Archive, member: str
    ) -> lifecycle.ShareGrant:
        state = self.ledger.state(session, archive)
        grant = state.active_grant(member, datetime.now(UTC))
        if grant is None:
            raise NotFoundError(
                f"{member} holds no active grant on archive {archive.id}", code="no_access"
            )
        return grant

    def _log_disclosure(
        self,
        uow: UnitOfWork,
        archive: Archive,
        grant: lifecycle.ShareGrant,
        grantee: str,
        scope: AccessScope,
    ) -> None:
        """Log, in this (the custodian's) log, that ``grantee`` was given content or evidence
        under ``grant``: an ACCESS naming the grant, with the grantee's address as actor."""
        state = self.ledger.state(uow.session, archive)
        data = AccessData(
            purpose=grant.purpose, scope=scope, break_glass=False, grant=grant.grant_hash
        )
        self.ledger.record(uow, archive, state, AccessEvent, grantee, data)

    def _require_clock_after(self, granted_at: datetime | None) -> None:
        """Refuse a read (before anything is disclosed) when this node's clock is behind the
        grant's time by more than the tolerance: the read would be dated before the grant, and
        every bundle naming it would fail verification (``time_order``)."""
        if granted_at is None:
            return
        behind = granted_at - self.clock()
        if behind > self.ledger.clock_skew_tolerance:
            raise ConflictError(
                f"this node's clock is {behind.total_seconds():.0f} s behind the custodian's "
                "grant; a read logged now would precede the grant (fix the clock: NTP)",
                code="clock_skew",
            )

    def _log_read(
        self,
        uow: UnitOfWork,
        principal: Principal,
        archive_id: str,
        grant: ShareDescriptor,
        purpose: Purpose,
    ) -> None:
        """Our read under the grant, on its side chain: the first names the grant, each next one
        the previous read under the same grant. Dated no earlier than the grant or the previous
        read (``event_time``: the custodian's clock may be ahead of ours)."""
        head, not_before = grant.grant, grant.granted_at
        for entry in storage.entries_for_archive(uow.session, archive_id):
            event = parse_event(entry.event)
            if isinstance(event, AccessEvent) and event.data.grant == grant.grant:
                head = merkle.leaf_hash(entry.event).hex()
                not_before = event.time if not_before is None else max(not_before, event.time)
        self.ledger.append_side_event(
            uow,
            AccessEvent(
                hospital=self.hospital,
                log_index=uow.log.size,
                archive_id=archive_id,
                actor=principal.actor,
                time=event_time(uow.now, not_before, self.ledger.clock_skew_tolerance),
                prev=head,
                data=AccessData(
                    purpose=purpose, scope=AccessScope.CONTENT, break_glass=False, grant=grant.grant
                ),
            ),
        )


def _held_by_us(session: Session, archive_id: str, *, lock: bool = False) -> Archive:
    query = select(Archive).where(Archive.id == normalise_id(archive_id))
    archive = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if archive is None or archive.state in NOT_HELD:
        raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
    return archive
