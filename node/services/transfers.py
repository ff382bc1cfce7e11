"""Custody transfer of an archive between hospital nodes, on both sides.

Transfer A → B, crash-safe, each step committed before the next external action:

* at A, ``offer``: the archive's key material is wrapped (ECIES) to B's registered public key,
  TRANSFER_OFFER is logged, ``offerTransfer`` is queued in the outbox;
* at B, the chain watcher sees ``TransferOffered``; ``process_incoming`` fetches the package from
  A over the signed node API (``node.protocol.TransferPackage``), verifies A's proof bundle against
  the chain, checks every version's ciphertext hash and, after decrypting, its content commitment,
  stores ciphertext and key (under B's KEK) and queues ``acceptTransfer`` — or, if any check fails,
  queues ``rejectTransfer``;
* when ``acceptTransfer`` is confirmed, B logs TRANSFER_ACCEPT (chained to A's head) and the
  archive becomes B's; if it reverted (A cancelled, a hold, expiry), B deletes what it stored;
* A's watcher sees ``TransferAccepted`` and destroys every copy of the key it held (its events
  stay as evidence), or ``TransferRejected`` and logs TRANSFER_REJECT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from anchoring import lifecycle, merkle
from anchoring.bundle import ProofBundle, bundle_to_json, parse_bundle
from anchoring.chainview import ChainReader
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError, BundleFormatError
from anchoring.events import (
    CancelReason,
    TransferAcceptData,
    TransferAcceptEvent,
    TransferCancelData,
    TransferCancelEvent,
    TransferOfferData,
    TransferOfferEvent,
    TransferRejectData,
    TransferRejectEvent,
)
from anchoring.ids import archive_key
from anchoring.lifecycle import ArchiveState, ArchiveStatus
from anchoring.verifier import Status, verify_bundle
from anchoring.worker import enqueue_call
from node import crypto, textindex
from node.blobstore import BlobRef, BlobStore
from node.config import NodeSettings
from node.custodyguard import chain_refusals
from node.db import Database, UnitOfWork, UnitRunner, utc_now
from node.errors import ConflictError, NotFoundError, UnavailableError
from node.keyring import KeyRing
from node.ledger import Ledger, normalise_id
from node.members import MemberDirectory
from node.models import (
    OPEN_TRANSFER_STATES,
    Archive,
    ArchiveVersion,
    CatalogueState,
    ChainStatus,
    ForeignEntry,
    SearchTerm,
    Transfer,
    TransferDirection,
    TransferState,
    WrappedKey,
)
from node.peers import PeerRefusedError
from node.principal import Action, Principal
from node.protocol import (
    SealedMetadata,
    SealedTerms,
    TransferPackage,
    TransferTerms,
    VersionInfo,
)
from node.readback import CiphertextReader
from node.remote import RemoteNodes
from node.searchtext import TextTap, reads_content
from node.services.archives import insert_terms, search_text
from node.services.proofs import ProofService
from node.textindex import archive_texts, is_term, more_terms, ordered_terms

log = logging.getLogger(__name__)

_METADATA_AAD = "archivechain/transfer-metadata/v1"
_TERMS_AAD = "archivechain/transfer-terms/v1"
_PEER_BUSY = frozenset({502, 503, 504})
"""A peer's error statuses that mean "not now" (down, restarting, overloaded) rather than "not
this": an optional document refused with one is asked for again on the next run."""

FaultHook = Callable[[str], None]
"""Test seam: called with a point name (``transfer-staged``, ``transfer-completing``) so
fault-injection tests can kill the process exactly there. Refused outside dev mode."""


@dataclass(frozen=True, slots=True)
class TransferView:
    """A transfer as callers see it."""

    archive_id: str
    direction: TransferDirection
    peer: str
    state: TransferState
    expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Transfer) -> TransferView:
        return cls(
            row.archive_id,
            TransferDirection(row.direction),
            row.peer,
            TransferState(row.state),
            row.expires_at,
            row.error,
            row.created_at,
            row.updated_at,
        )


class TransferService:
    """Offers custody (sender) and takes it (recipient)."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        deployment: Deployment,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        keyring: KeyRing,
        blobs: BlobStore,
        members: MemberDirectory,
        remote: RemoteNodes,
        proofs: ProofService,
        chain: ChainReader,
        fault_hook: FaultHook | None = None,
        reader: CiphertextReader | None = None,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.db = db
        self.units = units
        self.ledger = ledger
        self.keyring = keyring
        self.blobs = blobs
        self.reader = reader or CiphertextReader(blobs)
        self.members = members
        self.remote = remote
        self.proofs = proofs
        self.chain = chain
        self.fault_hook = fault_hook

    @property
    def hospital(self) -> str:
        """This node's member address."""
        return self.ledger.hospital

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # ===========================================================================================
    # The offering side (A)

    def offer(self, principal: Principal, archive_id: str, to: str) -> TransferView:
        """Offer custody to another hospital (ARCHIVED, not on hold): wrap, log, queue."""
        principal.require(Action.TRANSFER)
        recipient = self.members.other_hospital(to)
        public_key = self.members.public_key(recipient)
        ttl = timedelta(seconds=self.settings.transfer_offer_ttl)
        self._require_free_on_chain(archive_id)

        def unit(uow: UnitOfWork) -> TransferView:
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            material = self.keyring.own(uow.session, archive.id)
            expires = uow.now + ttl
            data = TransferOfferData(to=recipient, expires_at=expires)
            new_state = self.ledger.record(
                uow, archive, state, TransferOfferEvent, principal.actor, data
            )
            archive.pending_recipient = recipient
            self.keyring.wrap_for_member(
                uow.session, archive.id, recipient, public_key, material, uow.now
            )
            enqueue_call(
                uow.session,
                "offerTransfer",
                [archive_key(archive.id), recipient],
                archive_id=archive.id,
            )
            row = Transfer(
                archive_id=archive.id,
                direction=TransferDirection.OUT,
                peer=recipient,
                offer_key=new_state.head,
                state=TransferState.OFFERED,
                expires_at=expires,
                created_at=uow.now,
                updated_at=uow.now,
            )
            uow.session.add(row)
            uow.session.flush()
            return TransferView.of(row)

        return self.units.run(unit)

    def transfers(self, principal: Principal, limit: int = 200) -> list[TransferView]:
        """Transfers this node took part in, newest first."""
        principal.require(Action.TRANSFER)
        with self.db.session() as session:
            rows = session.execute(select(Transfer).order_by(Transfer.id.desc()).limit(limit))
            return [TransferView.of(row) for row in rows.scalars()]

    def cancel(
        self, principal: Principal, archive_id: str, reason: CancelReason = CancelReason.WITHDRAWN
    ) -> TransferView:
        """Withdraw a pending offer: log, queue ``cancelTransfer``, destroy the recipient's copy."""
        principal.require(Action.TRANSFER)
        return self.units.run(lambda uow: self._cancel(uow, principal, archive_id, reason))

    def _cancel(
        self, uow: UnitOfWork, principal: Principal | None, archive_id: str, reason: CancelReason
    ) -> TransferView:
        archive = self.ledger.held(uow.session, principal, archive_id)
        state = self.ledger.state(uow.session, archive)
        row = _open_transfer(uow.session, archive.id, TransferDirection.OUT)
        if state.status is not ArchiveStatus.TRANSFER_PENDING or row is None:
            raise ConflictError(
                f"archive {archive_id} has no pending transfer", code="no_pending_transfer"
            )
        actor = principal.actor if principal is not None else self.hospital
        data = TransferCancelData(to=row.peer, reason=reason)
        self.ledger.record(uow, archive, state, TransferCancelEvent, actor, data)
        archive.pending_recipient = None
        enqueue_call(
            uow.session, "cancelTransfer", [archive_key(archive.id)], archive_id=archive.id
        )
        self.keyring.destroy(uow.session, archive.id, uow.now, member=row.peer)
        row.state = (
            TransferState.EXPIRED if reason is CancelReason.EXPIRED else TransferState.CANCELLED
        )
        row.updated_at = uow.now
        return TransferView.of(row)

    def expire_offers(self) -> int:
        """Cancel (reason ``expired``) every outgoing offer past its expiry. Scheduler job."""
        now = datetime.now(UTC)
        with self.db.session() as session:
            due = list(
                session.execute(
                    select(Transfer.archive_id).where(
                        Transfer.direction == TransferDirection.OUT,
                        Transfer.state == TransferState.OFFERED,
                        Transfer.expires_at < now,
                    )
                ).scalars()
            )
        done = 0
        for archive_id in due:

            def expire(uow: UnitOfWork, target: str = archive_id) -> TransferView:
                return self._cancel(uow, None, target, CancelReason.EXPIRED)

            try:
                self.units.run(expire)
                done += 1
            except (ConflictError, AnchoringError) as exc:
                log.warning("could not expire the offer of %s: %s", archive_id, exc)
        return done

    def _require_free_on_chain(self, archive_id: str) -> None:
        """Before a key is wrapped to a recipient: the chain must show the archive ARCHIVED here
        and not on hold (``node.custodyguard``: a regulator's hold may not be mirrored yet).
        Archives not registered, or not held here, are left to the offer's own checks."""
        wanted = normalise_id(archive_id)
        refused = chain_refusals(self.db, self.chain.custody, self.hospital, [wanted], "the offer")
        if wanted in refused:
            raise refused[wanted]

    def offer_accepted(self, archive_id: str, recipient: str) -> None:
        """Chain watcher: ``TransferAccepted`` for an archive we offered. Destroy our keys and
        delete our ciphertext (recorded as deleted)."""

        def unit(uow: UnitOfWork) -> list[str]:
            archive = uow.session.get(Archive, archive_id)
            row = _open_transfer(uow.session, archive_id, TransferDirection.OUT)
            if archive is None or archive.state == CatalogueState.TRANSFERRED:
                return []
            self.keyring.destroy(uow.session, archive_id, uow.now)
            archive.state = CatalogueState.TRANSFERRED
            archive.custodian = recipient
            archive.pending_recipient = None
            archive.updated_at = uow.now
            if row is not None:
                row.state = TransferState.ACCEPTED
                row.updated_at = uow.now
            cids = []
            for version in archive.versions:
                if version.blob_deleted_at is None:
                    cids.append(version.cid)
                    # Recorded with the keys' destruction: the ciphertext is deleted right after
                    # the commit, and a file a crash leaves behind opens with no key here. A
                    # version still marked present would be a missing blob to every check that
                    # lists the blobs this node keeps (backup, restore, verification).
                    version.blob_deleted_at = uow.now
            return cids

        self._delete_blobs(archive_id, self.units.run(unit))

    def offer_rejected(self, archive_id: str, by: str, reason_hash: bytes) -> None:
        """Chain watcher: the recipient rejected our offer. Log it; drop the recipient's copy."""

        def unit(uow: UnitOfWork) -> None:
            archive = uow.session.get(Archive, archive_id)
            row = _open_transfer(uow.session, archive_id, TransferDirection.OUT)
            if archive is None or row is None:
                return
            state = self.ledger.state(uow.session, archive)
            if state.status is ArchiveStatus.TRANSFER_PENDING:
                data = TransferRejectData(by=by, reason_hash=reason_hash.hex())
                self.ledger.record(uow, archive, state, TransferRejectEvent, self.hospital, data)
            archive.pending_recipient = None
            self.keyring.destroy(uow.session, archive_id, uow.now, member=by)
            row.state = TransferState.REJECTED
            row.updated_at = uow.now

        self.units.run(unit)

    # -- served to the recipient (peer API) ----------------------------------------------------

    def transfer_package(self, sender: str, archive_id: str) -> TransferPackage:
        """What the pending recipient needs: sealed key and metadata, versions, head, bundle."""
        with self.db.session() as session:
            archive = _offered_to(session, archive_id, sender)
            wrapped = self.keyring.member_copy(session, archive_id, sender)
            versions = list(archive.versions)
            sealed = SealedMetadata(
                title=archive.title,
                metadata=archive.metadata_json,
                patient_pseudonym=archive.patient_pseudonym,
                filenames={str(v.version): v.filename for v in versions},
            )
            sealed_metadata = crypto.ecies_encrypt(
                self.members.public_key(sender),
                sealed.model_dump_json().encode(),
                crypto.encode_aad(_METADATA_AAD, archive_id, sender),
            )
            fields: dict[str, Any] = {
                "archive_id": archive_id,
                "custodian": self.hospital,
                "recipient": sender,
                "record_class": archive.record_class,
                "sensitivity": archive.sensitivity,
                "department": archive.department,
                "source_system": archive.source_system,
                "trigger_date": archive.trigger_date.date(),
                "wrapped_key": wrapped,
                "sealed_metadata": sealed_metadata,
                "versions": [
                    VersionInfo(version=v.version, media_type=v.media_type, size=v.size)
                    for v in versions
                ],
                "head": archive.last_event_hash.hex(),
            }
        return TransferPackage(**fields, bundle=bundle_to_json(self.proofs.full(archive_id)[0]))

    def transfer_terms(self, sender: str, archive_id: str) -> TransferTerms:
        """The archive's search terms sealed to the pending recipient ``sender``: they hold the
        words of text extracted at ingestion, which the recipient cannot cut from the content."""
        with self.db.session() as session:
            _offered_to(session, archive_id, sender)  # 404 unless the offer is to sender
            # Only what a recipient keeps (a row cut by an older rule would be dropped there),
            # in code point order (not the database's collation), at most the cap: an archive
            # amended before the cap covered amendments can hold more, and SealedTerms refuses
            # more (a 500 here would hold the transfer up until the offer expires).
            terms = sorted(
                term
                for term in session.execute(
                    select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
                ).scalars()
                if is_term(term)
            )[: textindex.MAX_TERMS_PER_ARCHIVE]
        sealed = crypto.ecies_encrypt(
            self.members.public_key(sender),
            SealedTerms(terms=terms).model_dump_json().encode(),
            crypto.encode_aad(_TERMS_AAD, archive_id, sender),
        )
        return TransferTerms(
            archive_id=archive_id, custodian=self.hospital, recipient=sender, sealed_terms=sealed
        )

    def ciphertext(self, sender: str, archive_id: str, version: int) -> Iterator[bytes]:
        """A version's ciphertext for the pending recipient of a transfer (the offer is the
        evidence of this disclosure). Grantees read through ``ShareService.disclose_content``."""
        with self.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or archive.state == CatalogueState.TRANSFERRED:
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            if archive.pending_recipient != sender:
                raise NotFoundError(
                    f"no transfer of {archive_id} is pending for {sender}", code="no_access"
                )
            self.keyring.member_copy(session, archive_id, sender)
            row = next((v for v in archive.versions if v.version == version), None)
            if row is None or row.blob_deleted_at is not None:
                raise NotFoundError(
                    f"archive {archive_id} has no version {version}", code="version_not_found"
                )
            cid = row.cid
        return self.reader.ciphertext(archive_id, version, cid)

    # ===========================================================================================
    # The receiving side (B)

    def offer_seen(self, archive_id: str, sender: str, offer_key: str) -> None:
        """Chain watcher: ``TransferOffered`` to us. Record it; ``process_incoming`` does the rest."""

        def unit(uow: UnitOfWork) -> None:
            exists = uow.session.execute(
                select(Transfer).where(
                    Transfer.archive_id == archive_id,
                    Transfer.direction == TransferDirection.IN,
                    Transfer.offer_key == offer_key,
                )
            ).scalar_one_or_none()
            if exists is None:
                uow.session.add(
                    Transfer(
                        archive_id=archive_id,
                        direction=TransferDirection.IN,
                        peer=sender,
                        offer_key=offer_key,
                        state=TransferState.SEEN,
                        created_at=uow.now,
                        updated_at=uow.now,
                    )
                )

        self.units.run(unit)

    def offer_withdrawn(self, archive_id: str) -> None:
        """Chain watcher: ``TransferCancelled`` of an offer to us not collected yet: forget it."""

        def unit(uow: UnitOfWork) -> None:
            rows = uow.session.execute(
                select(Transfer).where(
                    Transfer.archive_id == archive_id,
                    Transfer.direction == TransferDirection.IN,
                    Transfer.state == TransferState.SEEN,
                )
            ).scalars()
            for row in rows:
                row.state = TransferState.CANCELLED
                row.updated_at = uow.now

        self.units.run(unit)

    def process_incoming(self) -> int:
        """Move every incoming transfer one step further. Scheduler job; safe to repeat.

        One transfer's failure never holds up the others: a peer or the chain being unavailable
        (or an unknown peer) is noted on the transfer, and so is any unexpected error (logged at
        ERROR with the transfer id and the exception's type only — its message could carry
        record content); either way the transfer is tried again on the next run, and the run
        goes on with the next transfer and does not raise."""
        with self.db.session() as session:
            rows = list(
                session.execute(
                    select(Transfer.id, Transfer.state)
                    .where(
                        Transfer.direction == TransferDirection.IN,
                        Transfer.state.in_(
                            [
                                TransferState.SEEN,
                                TransferState.ACCEPTED_ON_CHAIN,
                                TransferState.FAILED_ON_CHAIN,
                            ]
                        ),
                    )
                    .order_by(Transfer.id)
                ).all()
            )
        for transfer_id, state in rows:
            try:
                if state == TransferState.SEEN:
                    self._receive(transfer_id)
                elif state == TransferState.ACCEPTED_ON_CHAIN:
                    self._complete(transfer_id)
                else:
                    self._abandon(transfer_id)
            except (UnavailableError, NotFoundError) as exc:  # peer/chain down or unknown peer
                self._note_safely(transfer_id, str(exc))  # try again on the next run
            except Exception as exc:  # anything else: this transfer only, retried next run
                kind = type(exc).__name__
                log.error(
                    "incoming transfer %d (%s) failed unexpectedly: %s; retried on the next run",
                    transfer_id,
                    state,
                    kind,
                )
                self._note_safely(transfer_id, f"unexpected error: {kind}")
        return len(rows)

    def _receive(self, transfer_id: int) -> None:
        with self.db.session() as session:
            row = session.get_one(Transfer, transfer_id)
            archive_id, sender = row.archive_id, row.peer
        document = self.remote.get_json(sender, f"/archives/{archive_id}/transfer")
        try:
            received = self._check_package(archive_id, sender, document)
        except _PackageRefusedError as refused:
            self._refuse(transfer_id, refused)
            return
        # The custodian's terms before any ciphertext: a failure to get them (custodian down,
        # offer withdrawn) is retried on the next run, and costs no download to repeat.
        theirs = self._fetch_terms(sender, archive_id)
        stored: list[BlobRef] = []
        texts: list[str] = []
        try:
            for version in received.versions:
                ref, text = self._fetch_version(sender, received, version)
                stored.append(ref)
                texts.append(text)
        except _PackageRefusedError as refused:
            self._delete_blobs(archive_id, [ref.cid for ref in stored])
            self._refuse(transfer_id, refused)
            return
        except BaseException:  # the versions already fetched are not left behind either
            self._delete_blobs(archive_id, [ref.cid for ref in stored])
            raise
        meta = received.meta
        # Found by the same words as at the former custodian: title, metadata and the text of
        # its content, every version's in version order, under one MAX_TERMS_PER_ARCHIVE cap —
        # the set its creation and amendments gave there (``node.textindex.more_terms``) — and
        # the custodian's own terms, which add the words of text extracted at ingestion. Cut
        # here rather than on the database writer's thread.
        try:
            terms = set(ordered_terms(*archive_texts(meta.title, meta.metadata), *texts))
            # in code point order whatever order the custodian sent them in
            terms.update(more_terms(sorted(set(theirs)), terms))
            self.units.run(lambda uow: self._stage(uow, transfer_id, received, stored, terms))
        except BaseException:
            self._delete_blobs(archive_id, [ref.cid for ref in stored])
            raise
        self._fault("transfer-staged")

    def _check_package(self, archive_id: str, sender: str, document: dict[str, Any]) -> _Received:
        try:
            package = TransferPackage.model_validate(document)
            bundle = parse_bundle(json.dumps(package.bundle))
        except (ValidationError, BundleFormatError, TypeError, ValueError) as exc:
            raise _PackageRefusedError(
                "malformed_package", f"malformed transfer package: {exc}"
            ) from None
        if bundle.archive_id != archive_id or bundle.notary != self.deployment.notary.address:
            raise _PackageRefusedError(
                "wrong_bundle", "the bundle is for another archive or notary"
            )
        last = bundle.entries[-1] if bundle.entries else None
        if last is None or merkle.leaf_hash(last.event).hex() != package.head:
            # The custodian's newest events (the offer) are not anchored yet: retry later.
            raise UnavailableError("the offer is not anchored yet at the custodian; retrying")
        report = verify_bundle(bundle, self.chain)
        if report.status is Status.CHAIN_UNAVAILABLE:
            raise UnavailableError("the chain could not be read to verify the offer")
        state = report.final_state
        if not report.ok or state is None:
            reason = report.failure.message if report.failure else "invalid"
            raise _PackageRefusedError("bundle_invalid", f"the custodian's bundle fails: {reason}")
        if (
            state.status is not ArchiveStatus.TRANSFER_PENDING
            or state.pending_recipient != self.hospital
            or state.custodian != sender
            or state.head != package.head
        ):
            raise _PackageRefusedError(
                "not_offered", "the verified events do not offer this archive to us"
            )
        if state.offer_expires_at is not None and datetime.now(UTC) >= state.offer_expires_at:
            raise _PackageRefusedError(
                "offer_expired", "the offer expired before it could be accepted"
            )
        try:
            material = self.keyring.open_member_copy(archive_id, package.wrapped_key)
            meta = SealedMetadata.model_validate_json(
                self.keyring.open_sealed(
                    package.sealed_metadata,
                    crypto.encode_aad(_METADATA_AAD, archive_id, self.hospital),
                )
            )
        except (crypto.CryptoError, ValidationError, ValueError):
            raise _PackageRefusedError(
                "key_unwrap_failed", "the wrapped key or metadata does not open"
            ) from None
        return _Received(archive_id, sender, package, bundle, state, material, meta)

    def _fetch_terms(self, sender: str, archive_id: str) -> list[str]:
        """The custodian's search terms for the archive (``TransferTerms``), in order; none from a
        node that predates them (404 ``not_found``: no such route), that fails to serve them (an
        error status other than 502–504) or whose document does not open (logged: they are
        search hints only, so the transfer goes on with the terms this node cuts itself; a term
        it sent that is not one is dropped). A refusal of the offer (``no_such_transfer``) or an
        unreachable, overloaded peer is raised, as for the package: tried again next run."""
        path = f"/archives/{archive_id}/transfer/terms"
        try:
            document = self.remote.get_json(sender, path)
        except NotFoundError as exc:
            if exc.code == "not_found":
                log.info("transfer of %s: %s serves no search terms", archive_id, sender)
                return []
            raise
        except (PeerRefusedError, ConflictError) as exc:
            status = exc.status if isinstance(exc, PeerRefusedError) else 409
            if status in _PEER_BUSY:
                raise
            log.warning(
                "transfer of %s: %s answered %d for its search terms; going on without them",
                archive_id, sender, status,
            )  # fmt: skip
            return []
        try:
            answer = TransferTerms.model_validate(document)
            if (answer.archive_id, answer.custodian, answer.recipient) != (
                archive_id,
                sender,
                self.hospital,
            ):
                raise ValueError("terms for another archive, custodian or recipient")
            sealed = SealedTerms.model_validate_json(
                self.keyring.open_sealed(
                    answer.sealed_terms, crypto.encode_aad(_TERMS_AAD, archive_id, self.hospital)
                )
            )
        except (crypto.CryptoError, ValidationError, ValueError):
            log.warning(
                "transfer of %s: %s's search terms are unusable; ignored", archive_id, sender
            )
            return []
        return [term for term in sealed.terms if is_term(term)]

    def _fetch_version(
        self, sender: str, received: _Received, version: lifecycle.ContentVersion
    ) -> tuple[BlobRef, str]:
        """Store one version's ciphertext; check its hash and, decrypted, its commitment. Also
        returns the text keyword search reads of it (``node.searchtext.TextTap``)."""
        chunks = self.remote.stream(
            sender, f"/archives/{received.archive_id}/versions/{version.version}/ciphertext"
        )
        ref = self.blobs.put_stream(chunks)
        if ref.sha256 != version.ciphertext_sha256:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefusedError(
                "ciphertext_mismatch", f"version {version.version}: ciphertext hash differs"
            )
        commitment = crypto.Commitment(received.material.salt)
        tap: TextTap | None = None
        try:
            plaintext: Iterable[bytes] = crypto.decrypt_stream(
                received.material.data_key,
                self.blobs.open_stream(ref.cid),
                crypto.archive_aad(received.archive_id, version.version),
            )
            if reads_content(version.media_type, self.settings):
                plaintext = tap = TextTap(plaintext, version.media_type, self.settings)
            for plain in plaintext:
                commitment.update(plain)
        except crypto.CryptoError:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefusedError(
                "decrypt_failed", f"version {version.version} does not decrypt"
            ) from None
        if commitment.hexdigest() != version.commitment:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefusedError(
                "commitment_mismatch", f"version {version.version}: content commitment differs"
            )
        try:
            text = tap.text() if tap is not None else ""
        except BaseException:  # reading its text failed: no blob is left without its row
            self._delete_blobs(received.archive_id, [ref.cid])
            raise
        return ref, text

    def _stage(
        self,
        uow: UnitOfWork,
        transfer_id: int,
        received: _Received,
        stored: list[BlobRef],
        terms: set[str],
    ) -> None:
        """Store the received archive (not yet ours) with its search ``terms`` and queue
        ``acceptTransfer``."""
        row = uow.session.get_one(Transfer, transfer_id)
        if row.state != TransferState.SEEN:
            raise ConflictError("transfer already processed", code="already_processed")
        state, package, meta = received.state, received.package, received.meta
        archive_id = received.archive_id
        if uow.session.get(Archive, archive_id) is not None:
            raise ConflictError(
                f"archive {archive_id} is already known here (a transfer back to a former "
                "custodian is not supported yet)",
                code="archive_known",
            )
        archive = Archive(
            id=archive_id,
            record_class=state.record_class.value,
            sensitivity=state.sensitivity.value,
            department=state.department,
            title=meta.title,
            patient_pseudonym=meta.patient_pseudonym,
            source_system=package.source_system,
            metadata_json=dict(meta.metadata),
            search_text=search_text(meta.title, meta.metadata),
            state=CatalogueState.INCOMING,
            custodian=received.sender,
            trigger_date=datetime.combine(
                state.trigger_date or uow.now.date(), datetime.min.time(), UTC
            ),
            retention_policy=state.retention_policy,
            retention_deadline=state.retention_deadline,
            on_hold=state.on_hold,
            hold_by_regulator=state.hold_by_regulator,
            current_version=state.current_version.version,
            last_event_hash=bytes.fromhex(state.head),
            event_count=state.event_count,
            chain_status=ChainStatus.REGISTERED,
            pending_recipient=self.hospital,
            created_by=received.sender,
            created_at=uow.now,
            updated_at=uow.now,
            archived_at=uow.now,
        )
        uow.session.add(archive)
        for version, ref in zip(state.versions, stored, strict=True):
            uow.session.add(
                ArchiveVersion(
                    archive_id=archive_id,
                    version=version.version,
                    cid=ref.cid,
                    ciphertext_sha256=ref.sha256,
                    stored_size=ref.size,
                    size=version.size,
                    media_type=version.media_type,
                    commitment=version.commitment,
                    filename=meta.filenames.get(str(version.version)),
                    created_at=uow.now,
                )
            )
        self.keyring.store_own(uow.session, archive_id, received.material, uow.now)
        insert_terms(
            uow.session.connection(),
            [(term, archive_id, state.department) for term in sorted(terms)],
        )
        for position, entry in enumerate(received.bundle.entries):
            uow.session.add(
                ForeignEntry(
                    archive_id=archive_id,
                    position=position,
                    hospital=entry.hospital,
                    log_index=entry.log_index,
                    event=entry.event,
                    proof=b"".join(entry.proof),
                    checkpoint_index=entry.checkpoint.index,
                    checkpoint_size=entry.checkpoint.size,
                    checkpoint_root=entry.checkpoint.root,
                )
            )
        enqueue_call(
            uow.session, "acceptTransfer", [archive_key(archive_id)], archive_id=archive_id
        )
        row.state = TransferState.ACCEPTING
        row.updated_at = uow.now

    def _refuse(self, transfer_id: int, refused: _PackageRefusedError) -> None:
        """A check failed: reject on chain with a reason hash (the custodian logs the rejection
        when it sees it, so the archive's hash chain never forks)."""
        log.warning("refusing incoming transfer %d: %s", transfer_id, refused)
        reason_hash = hashlib.sha256(f"{refused.reason}: {refused}".encode()).hexdigest()

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != TransferState.SEEN:
                return
            enqueue_call(
                uow.session,
                "rejectTransfer",
                [archive_key(row.archive_id), bytes.fromhex(reason_hash)],
                archive_id=row.archive_id,
            )
            row.state = TransferState.REJECTED
            row.error = str(refused)
            row.updated_at = uow.now

        self.units.run(unit)

    def chain_accept_confirmed(self, session: Session, archive_id: str) -> None:
        """Outbox handler (worker transaction): ``acceptTransfer`` mined successfully."""
        _mark_incoming(
            session, archive_id, TransferState.ACCEPTING, TransferState.ACCEPTED_ON_CHAIN
        )

    def chain_accept_failed(self, session: Session, archive_id: str) -> None:
        """Outbox handler (worker transaction): ``acceptTransfer`` reverted."""
        _mark_incoming(session, archive_id, TransferState.ACCEPTING, TransferState.FAILED_ON_CHAIN)

    def _complete(self, transfer_id: int) -> None:
        """Custody is ours on chain: log TRANSFER_ACCEPT chained to the former custodian's head."""
        self._fault("transfer-completing")

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != TransferState.ACCEPTED_ON_CHAIN:
                return
            archive = uow.session.get_one(Archive, row.archive_id)
            state = self.ledger.state(uow.session, archive)
            data = TransferAcceptData.model_validate(
                {"from": row.peer, "offer_hash": state.offer_hash}
            )
            self.ledger.record(uow, archive, state, TransferAcceptEvent, self.hospital, data)
            archive.custodian = self.hospital
            archive.pending_recipient = None
            archive.state = CatalogueState.ARCHIVED
            row.state = TransferState.ACCEPTED
            row.updated_at = uow.now

        self.units.run(unit)

    def _abandon(self, transfer_id: int) -> None:
        """``acceptTransfer`` reverted: delete everything staged for the archive."""

        def unit(uow: UnitOfWork) -> tuple[str, list[str]]:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != TransferState.FAILED_ON_CHAIN:
                return row.archive_id, []
            archive = uow.session.get(Archive, row.archive_id)
            cids: list[str] = []
            if archive is not None and archive.state == CatalogueState.INCOMING:
                cids = [v.cid for v in archive.versions]
                for model in (WrappedKey, ArchiveVersion, ForeignEntry, SearchTerm):
                    uow.session.execute(delete(model).where(model.archive_id == row.archive_id))
                uow.session.delete(archive)
            row.state = TransferState.FAILED
            row.updated_at = uow.now
            return row.archive_id, cids

        archive_id, cids = self.units.run(unit)
        self._delete_blobs(archive_id, cids)

    # -- helpers -------------------------------------------------------------------------------

    def _note_safely(self, transfer_id: int, error: str) -> None:
        """``_note``, but a failure to record the note (the database down) is only logged: the
        other incoming transfers still get their turn."""
        try:
            self._note(transfer_id, error)
        except Exception as exc:
            kind = type(exc).__name__
            log.error("could not note the error of incoming transfer %d: %s", transfer_id, kind)

    def _note(self, transfer_id: int, error: str) -> None:
        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            row.attempts += 1
            row.error = error[:500]
            row.updated_at = uow.now

        self.units.run(unit)

    def _delete_blobs(self, archive_id: str, cids: list[str]) -> None:
        for cid in cids:
            try:
                self.blobs.delete(cid)
            except Exception:
                log.exception("could not delete blob %s of archive %s", cid, archive_id)


def _open_transfer(
    session: Session, archive_id: str, direction: TransferDirection
) -> Transfer | None:
    return session.execute(
        select(Transfer)
        .where(
            Transfer.archive_id == archive_id,
            Transfer.direction == direction,
            Transfer.state.in_(OPEN_TRANSFER_STATES),
        )
        .order_by(Transfer.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _mark_incoming(
    session: Session, archive_id: str, was: TransferState, now: TransferState
) -> None:
    row = session.execute(
        select(Transfer).where(
            Transfer.archive_id == archive_id,
            Transfer.direction == TransferDirection.IN,
            Transfer.state == was,
        )
    ).scalar_one_or_none()
    if row is not None:
        row.state = now
        row.updated_at = utc_now()


def _offered_to(session: Session, archive_id: str, recipient: str) -> Archive:
    """The archive whose transfer is pending for ``recipient`` (404 ``no_such_transfer`` for
    anyone else, as for an archive that does not exist): what the peer routes that serve the
    pending recipient read."""
    archive = session.get(Archive, archive_id)
    if archive is None or archive.pending_recipient != recipient:
        raise NotFoundError(
            f"no transfer of {archive_id} is pending for {recipient}", code="no_such_transfer"
        )
    return archive


@dataclass(frozen=True)
class _Received:
    archive_id: str
    sender: str
    package: TransferPackage
    bundle: ProofBundle
    state: ArchiveState
    material: crypto.KeyMaterial
    meta: SealedMetadata

    @property
    def versions(self) -> tuple[lifecycle.ContentVersion, ...]:
        return self.state.versions


class _PackageRefusedError(Exception):
    """A received package failed a check; the transfer is rejected on chain."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
