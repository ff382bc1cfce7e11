"""Custody transfer and record sharing between hospital nodes (issue 5).

Transfer A → B, crash-safe, each step committed before the next external action:

* at A, ``offer``: the archive's key material is wrapped (ECIES) to B's registered public key,
  TRANSFER_OFFER is logged, ``offerTransfer`` is queued in the outbox;
* at B, the chain watcher sees ``TransferOffered``; ``process_incoming`` fetches the package from
  A over the signed node API, verifies A's proof bundle against the chain, checks every version's
  ciphertext hash and, after decrypting, its content commitment, stores ciphertext and key (under
  B's KEK) and queues ``acceptTransfer`` — or, if any check fails, queues ``rejectTransfer`` and
  logs TRANSFER_REJECT;
* when ``acceptTransfer`` is confirmed, B logs TRANSFER_ACCEPT (chained to A's head) and the
  archive becomes B's; if it reverted (A cancelled, a hold, expiry), B deletes what it stored;
* A's watcher sees ``TransferAccepted`` and destroys every copy of the key it held (its events
  stay as evidence), or ``TransferRejected`` and logs TRANSFER_REJECT.

Sharing: the custodian wraps the key to the grantee (SHARE_GRANT); the grantee's node fetches the
wrapped key and ciphertext on every read, logging ACCESS (with the grant's hash and purpose) in its
own log; revocation or expiry deletes the wrapped copy and the custodian refuses further fetches.
Revocation cannot undo reads that already happened: content already read stays read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from anchoring import lifecycle, merkle, storage
from anchoring.bundle import (
    BundleEntry,
    ProofBundle,
    bundle_to_json,
    dump_bundle,
    parse_bundle,
)
from anchoring.chain import Role
from anchoring.errors import AnchoringError, BundleFormatError
from anchoring.events import (
    AccessData,
    AccessEvent,
    AccessScope,
    CancelReason,
    Purpose,
    RevokeReason,
    ShareGrantData,
    ShareGrantEvent,
    ShareRevokeData,
    ShareRevokeEvent,
    TransferAcceptData,
    TransferAcceptEvent,
    TransferCancelData,
    TransferCancelEvent,
    TransferOfferData,
    TransferOfferEvent,
    TransferRejectData,
    TransferRejectEvent,
    canonical_bytes,
    parse_event,
)
from anchoring.ids import IdentifierError, archive_key, normalize_address
from anchoring.lifecycle import ArchiveState, ArchiveStatus
from anchoring.verifier import verify_bundle
from anchoring.worker import enqueue_call
from node import crypto
from node.blobstore import BlobRef
from node.db import UnitOfWork
from node.errors import ConflictError, InputError, NotFoundError, UnavailableError
from node.models import (
    NOT_HELD,
    Archive,
    ArchiveVersion,
    CatalogueState,
    ForeignEntry,
    Transfer,
    WrappedKey,
)
from node.peers import PeerRefusedError
from node.services.archives import search_text
from node.services.principal import Action, Principal

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSFERRED = CatalogueState.TRANSFERRED
INCOMING = CatalogueState.INCOMING

_METADATA_AAD = "archivechain/transfer-metadata/v1"
WRAPPED_KEY_HEADER = "X-ArchiveChain-Wrapped-Key"
"""Response header of a disclosure: the data key wrapped (ECIES) to the grantee, base64."""


def merge_by_time(*sequences: tuple[BundleEntry, ...]) -> tuple[BundleEntry, ...]:
    """One bundle order for entries from several logs: by event time, stable, so each log's own
    order is kept and, at equal times, earlier sequences come first (pass the custodian's first:
    a grantee's read never precedes the grant it names). Each sequence is already in time order."""
    merged = [entry for sequence in sequences for entry in sequence]
    times = {id(entry): parse_event(entry.event).time for entry in merged}
    return tuple(sorted(merged, key=lambda entry: times[id(entry)]))


@dataclass(frozen=True, slots=True)
class TransferView:
    """A transfer as callers see it."""

    archive_id: str
    direction: str
    peer: str
    state: str
    expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Transfer) -> TransferView:
        return cls(
            row.archive_id,
            row.direction,
            row.peer,
            row.state,
            row.expires_at,
            row.error,
            row.created_at,
            row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class ShareView:
    """A share grant of an archive held here."""

    grantee: str
    purpose: str
    expires_at: datetime
    grant_hash: str
    active: bool


@dataclass(frozen=True)
class SharedContent:
    """Content read under a share grant; the ACCESS event is already in this node's log."""

    archive_id: str
    custodian: str
    version: int
    media_type: str
    size: int
    chunks: Iterator[bytes]


class FederationService:
    """Transfers and shares, on both sides."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.rt = runtime
        self.archives = runtime.archives
        self.fault_hook: Callable[[str], None] | None = None
        """Test seam: called at ``transfer-staged`` (B stored the package and queued the
        accept) and ``transfer-completing`` (accepted on chain, before TRANSFER_ACCEPT is
        logged), so fault-injection tests can kill the process exactly there."""

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # ===========================================================================================
    # Directory: who is who

    def resolve_hospital(self, who: str) -> str:
        """An active hospital's address from an address or its registered name (not ourselves)."""
        try:
            address = normalize_address(who)
        except IdentifierError:
            matches = [
                m.address
                for m in self._members()
                if m.role is Role.HOSPITAL and m.name.lower() == who.strip().lower()
            ]
            if len(matches) != 1:
                raise InputError(
                    f"{who!r} names no single consortium hospital", code="unknown_hospital"
                ) from None
            address = matches[0]
        if address == self.rt.hospital:
            raise InputError("a hospital cannot transfer or share with itself", code="self_target")
        member = self._member(address)
        if member.role is not Role.HOSPITAL or not member.active:
            raise ConflictError(
                f"{address} is not an active hospital of the consortium", code="not_active_hospital"
            )
        return address

    def peer_url(self, address: str) -> str:
        """Base URL of another hospital's node (from configuration)."""
        url = self.rt.settings.peers.get(address)
        if not url:
            raise NotFoundError(
                f"no node is configured for hospital {address}", code="unknown_peer"
            )
        return url

    def _from_peer(self, call: Callable[[], T]) -> T:
        """Run a peer request; a peer's 401/403/404 (no grant, no transfer, not a member) becomes
        a 404 here, anything else stays a 503 (the peer is unavailable)."""
        try:
            return call()
        except PeerRefusedError as exc:
            if exc.status in (401, 403, 404):
                raise NotFoundError(
                    f"the custodian refused: {exc.peer_code}", code=exc.peer_code
                ) from None
            if exc.status == 409:  # e.g. the archive is in transit, or the purpose differs
                raise ConflictError(
                    f"the custodian refused: {exc.peer_code}", code=exc.peer_code
                ) from None
            raise

    def _members(self) -> list[Any]:
        try:
            return self.rt.chain.members()
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read the registry: {exc}") from None

    def _member(self, address: str) -> Any:
        try:
            return self.rt.chain.member(address)
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read the registry: {exc}") from None

    # ===========================================================================================
    # Transfer: the offering side (A)

    def offer(self, principal: Principal, archive_id: str, to: str) -> TransferView:
        """Offer custody to another hospital (ARCHIVED, not on hold): wrap, log, queue."""
        principal.require(Action.TRANSFER)
        recipient = self.resolve_hospital(to)
        public_key = bytes(self._member(recipient).public_key)
        ttl = timedelta(seconds=self.rt.settings.transfer_offer_ttl)

        def unit(uow: UnitOfWork) -> TransferView:
            archive = self.archives._load_for_update(uow.session, principal, archive_id)
            self._require_custodian(archive)
            state = self.archives._state(uow.session, archive)
            material = self._own_material(uow.session, archive.id)
            expires = uow.now + ttl
            data = TransferOfferData(to=recipient, expires_at=expires)
            new_state = self.archives._record(
                uow, archive, state, TransferOfferEvent, principal.actor, data
            )
            archive.pending_recipient = recipient
            uow.session.add(
                WrappedKey(
                    archive_id=archive.id,
                    holder=f"member:{recipient}",
                    blob=crypto.ecies_wrap_key_material(
                        public_key, material, crypto.member_wrap_aad(archive.id, recipient)
                    ),
                    created_at=uow.now,
                )
            )
            enqueue_call(
                uow.session,
                "offerTransfer",
                [archive_key(archive.id), recipient],
                archive_id=archive.id,
            )
            row = Transfer(
                archive_id=archive.id,
                direction="out",
                peer=recipient,
                offer_key=new_state.head,
                state="offered",
                expires_at=expires,
                created_at=uow.now,
                updated_at=uow.now,
            )
            uow.session.add(row)
            uow.session.flush()
            return TransferView.of(row)

        return self.rt.committer.run(unit)

    def transfers(self, principal: Principal, limit: int = 200) -> list[TransferView]:
        """Transfers this node took part in, newest first."""
        principal.require(Action.TRANSFER)
        with self.rt.db.session() as session:
            rows = session.execute(select(Transfer).order_by(Transfer.id.desc()).limit(limit))
            return [TransferView.of(row) for row in rows.scalars()]

    def cancel(
        self, principal: Principal, archive_id: str, reason: CancelReason = CancelReason.WITHDRAWN
    ) -> TransferView:
        """Withdraw a pending offer: log, queue ``cancelTransfer``, destroy the recipient's copy."""
        principal.require(Action.TRANSFER)
        return self.rt.committer.run(lambda uow: self._cancel(uow, principal, archive_id, reason))

    def _cancel(
        self, uow: UnitOfWork, principal: Principal | None, archive_id: str, reason: CancelReason
    ) -> TransferView:
        archive = (
            self.archives._load_for_update(uow.session, principal, archive_id)
            if principal is not None
            else uow.session.get_one(Archive, archive_id)
        )
        state = self.archives._state(uow.session, archive)
        row = self._open_transfer(uow.session, archive.id, "out")
        if state.status is not ArchiveStatus.TRANSFER_PENDING or row is None:
            raise ConflictError(
                f"archive {archive_id} has no pending transfer", code="no_pending_transfer"
            )
        actor = principal.actor if principal is not None else self._system_actor()
        data = TransferCancelData(to=row.peer, reason=reason)
        self.archives._record(uow, archive, state, TransferCancelEvent, actor, data)
        archive.pending_recipient = None
        enqueue_call(
            uow.session, "cancelTransfer", [archive_key(archive.id)], archive_id=archive.id
        )
        self._destroy_keys(uow, archive.id, holder=f"member:{row.peer}")
        row.state = "cancelled" if reason is not CancelReason.EXPIRED else "expired"
        row.updated_at = uow.now
        return TransferView.of(row)

    def expire_offers(self) -> int:
        """Cancel (reason ``expired``) every outgoing offer past its expiry. Scheduler job."""
        now = datetime.now(UTC)
        with self.rt.db.session() as session:
            due = list(
                session.execute(
                    select(Transfer.archive_id).where(
                        Transfer.direction == "out",
                        Transfer.state == "offered",
                        Transfer.expires_at < now,
                    )
                ).scalars()
            )
        done = 0
        for archive_id in due:

            def expire(uow: UnitOfWork, target: str = archive_id) -> TransferView:
                return self._cancel(uow, None, target, CancelReason.EXPIRED)

            try:
                self.rt.committer.run(expire)
                done += 1
            except (ConflictError, AnchoringError) as exc:
                log.warning("could not expire the offer of %s: %s", archive_id, exc)
        return done

    def offer_accepted(self, archive_id: str, recipient: str) -> None:
        """Chain watcher: ``TransferAccepted`` for an archive we offered. Destroy our keys."""

        def unit(uow: UnitOfWork) -> list[str]:
            archive = uow.session.get(Archive, archive_id)
            row = self._open_transfer(uow.session, archive_id, "out")
            if archive is None or archive.state == TRANSFERRED:
                return []
            self._destroy_keys(uow, archive_id, holder=None)
            archive.state = TRANSFERRED
            archive.custodian = recipient
            archive.pending_recipient = None
            archive.updated_at = uow.now
            if row is not None:
                row.state = "accepted"
                row.updated_at = uow.now
            return [v.cid for v in archive.versions if v.blob_deleted_at is None]

        cids = self.rt.committer.run(unit)
        self._delete_blobs(archive_id, cids)

    def offer_rejected(self, archive_id: str, by: str, reason_hash: bytes) -> None:
        """Chain watcher: the recipient rejected our offer. Log it; drop the recipient's copy."""

        def unit(uow: UnitOfWork) -> None:
            archive = uow.session.get(Archive, archive_id)
            row = self._open_transfer(uow.session, archive_id, "out")
            if archive is None or row is None:
                return
            state = self.archives._state(uow.session, archive)
            if state.status is ArchiveStatus.TRANSFER_PENDING:
                data = TransferRejectData(by=by, reason_hash=reason_hash.hex())
                self.archives._record(
                    uow, archive, state, TransferRejectEvent, self._system_actor(), data
                )
            archive.pending_recipient = None
            self._destroy_keys(uow, archive_id, holder=f"member:{by}")
            row.state = "rejected"
            row.updated_at = uow.now

        self.rt.committer.run(unit)

    # -- the package served to the recipient (peer API) ----------------------------------------

    def transfer_package(self, sender: str, archive_id: str) -> dict[str, Any]:
        """What the pending recipient needs: sealed key and metadata, versions, head, bundle."""
        with self.rt.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or archive.pending_recipient != sender:
                raise NotFoundError(
                    f"no transfer of {archive_id} is pending for {sender}", code="no_such_transfer"
                )
            wrapped = self._member_copy(session, archive_id, sender)
            versions = list(archive.versions)
            head = archive.last_event_hash.hex()
            sealed_metadata = crypto.ecies_encrypt(
                bytes(self._member(sender).public_key),
                json.dumps(
                    {
                        "title": archive.title,
                        "metadata": archive.metadata_json,
                        "patient_pseudonym": archive.patient_pseudonym,
                        "filenames": {str(v.version): v.filename for v in versions},
                    }
                ).encode(),
                crypto.encode_aad(_METADATA_AAD, archive_id, sender),
            )
            document: dict[str, Any] = {
                "archive_id": archive_id,
                "custodian": self.rt.hospital,
                "recipient": sender,
                "record_class": archive.record_class,
                "sensitivity": archive.sensitivity,
                "department": archive.department,
                "source_system": archive.source_system,
                "trigger_date": archive.trigger_date.date().isoformat(),
                "wrapped_key": base64.b64encode(wrapped).decode(),
                "sealed_metadata": base64.b64encode(sealed_metadata).decode(),
                "versions": [
                    {"version": v.version, "media_type": v.media_type, "size": v.size}
                    for v in versions
                ],
                "head": head,
            }
        document["bundle"] = bundle_to_json(self.full_bundle(archive_id))
        return document

    def ciphertext(self, sender: str, archive_id: str, version: int) -> Iterator[bytes]:
        """A version's ciphertext for the pending recipient of a transfer (the offer is the
        evidence of this disclosure). Grantees read through ``disclose_content``."""
        with self.rt.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or archive.state == TRANSFERRED:
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            if archive.pending_recipient != sender:
                raise NotFoundError(
                    f"no transfer of {archive_id} is pending for {sender}", code="no_access"
                )
            self._member_copy(session, archive_id, sender)
            cid = self._version_cid(archive, version)
        return self.rt.blobs.open_stream(cid)

    # ===========================================================================================
    # Transfer: the receiving side (B)

    def offer_seen(self, archive_id: str, sender: str, offer_key: str) -> None:
        """Chain watcher: ``TransferOffered`` to us. Record it; ``process_incoming`` does the rest."""

        def unit(uow: UnitOfWork) -> None:
            exists = uow.session.execute(
                select(Transfer).where(
                    Transfer.archive_id == archive_id,
                    Transfer.direction == "in",
                    Transfer.offer_key == offer_key,
                )
            ).scalar_one_or_none()
            if exists is None:
                uow.session.add(
                    Transfer(
                        archive_id=archive_id,
                        direction="in",
                        peer=sender,
                        offer_key=offer_key,
                        state="seen",
                        created_at=uow.now,
                        updated_at=uow.now,
                    )
                )

        self.rt.committer.run(unit)

    def process_incoming(self) -> int:
        """Move every incoming transfer one step further. Scheduler job; safe to repeat."""
        with self.rt.db.session() as session:
            rows = list(
                session.execute(
                    select(Transfer.id, Transfer.state).where(
                        Transfer.direction == "in",
                        Transfer.state.in_(["seen", "accepted_on_chain", "failed_on_chain"]),
                    )
                ).all()
            )
        for transfer_id, state in rows:
            try:
                if state == "seen":
                    self._receive(transfer_id)
                elif state == "accepted_on_chain":
                    self._complete(transfer_id)
                else:
                    self._abandon(transfer_id)
            except (UnavailableError, NotFoundError) as exc:  # peer/chain down or unknown peer
                self._note(transfer_id, str(exc))  # try again on the next run
        return len(rows)

    def _receive(self, transfer_id: int) -> None:
        with self.rt.db.session() as session:
            row = session.get_one(Transfer, transfer_id)
            archive_id, sender = row.archive_id, row.peer
        url = self.peer_url(sender)
        package = self.rt.peer_client.get_json(url, sender, f"/archives/{archive_id}/transfer")
        try:
            received = self._check_package(archive_id, sender, package)
        except _PackageRefused as refused:
            self._refuse(transfer_id, refused)
            return
        stored: list[BlobRef] = []
        try:
            for version in received.versions:
                stored.append(self._fetch_version(url, sender, received, version))
        except _PackageRefused as refused:
            self._delete_blobs(archive_id, [ref.cid for ref in stored])
            self._refuse(transfer_id, refused)
            return
        try:
            self.rt.committer.run(lambda uow: self._stage(uow, transfer_id, received, stored))
        except BaseException:
            self._delete_blobs(archive_id, [ref.cid for ref in stored])
            raise
        self._fault("transfer-staged")

    def _check_package(self, archive_id: str, sender: str, package: dict[str, Any]) -> _Received:
        try:
            bundle = parse_bundle(json.dumps(package["bundle"]))
            wrapped = base64.b64decode(package["wrapped_key"], validate=True)
            sealed = base64.b64decode(package["sealed_metadata"], validate=True)
            head = str(package["head"])
        except (KeyError, TypeError, ValueError, BundleFormatError) as exc:
            raise _PackageRefused(
                "malformed_package", f"malformed transfer package: {exc}"
            ) from None
        if bundle.archive_id != archive_id or bundle.notary != self.rt.deployment.notary.address:
            raise _PackageRefused("wrong_bundle", "the bundle is for another archive or notary")
        last = bundle.entries[-1] if bundle.entries else None
        if last is None or merkle.leaf_hash(last.event).hex() != head:
            # The custodian's newest events (the offer) are not anchored yet: retry later.
            raise UnavailableError("the offer is not anchored yet at the custodian; retrying")
        report = verify_bundle(bundle, self.rt.chain)
        if report.status.value == "chain unavailable":
            raise UnavailableError("the chain could not be read to verify the offer")
        state = report.final_state
        if not report.ok or state is None:
            reason = report.failure.message if report.failure else "invalid"
            raise _PackageRefused("bundle_invalid", f"the custodian's bundle fails: {reason}")
        if (
            state.status is not ArchiveStatus.TRANSFER_PENDING
            or state.pending_recipient != self.rt.hospital
            or state.custodian != sender
            or state.head != head
        ):
            raise _PackageRefused(
                "not_offered", "the verified events do not offer this archive to us"
            )
        if state.offer_expires_at is not None and datetime.now(UTC) >= state.offer_expires_at:
            raise _PackageRefused("offer_expired", "the offer expired before it could be accepted")
        aad = crypto.member_wrap_aad(archive_id, self.rt.hospital)
        try:
            material = crypto.ecies_unwrap_key_material(
                self.rt.keystore.encryption_private_key, wrapped, aad
            )
            meta = json.loads(
                crypto.ecies_decrypt(
                    self.rt.keystore.encryption_private_key,
                    sealed,
                    crypto.encode_aad(_METADATA_AAD, archive_id, self.rt.hospital),
                )
            )
        except (crypto.CryptoError, ValueError):
            raise _PackageRefused(
                "key_unwrap_failed", "the wrapped key or metadata does not open"
            ) from None
        return _Received(archive_id, sender, package, bundle, state, material, meta)

    def _fetch_version(
        self, url: str, sender: str, received: _Received, version: lifecycle.ContentVersion
    ) -> BlobRef:
        """Store one version's ciphertext; check its hash and, decrypted, its commitment."""
        chunks = self.rt.peer_client.stream(
            url, sender, f"/archives/{received.archive_id}/versions/{version.version}/ciphertext"
        )
        ref = self.rt.blobs.put_stream(chunks)
        if ref.sha256 != version.ciphertext_sha256:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefused(
                "ciphertext_mismatch", f"version {version.version}: ciphertext hash differs"
            )
        commitment = crypto.Commitment(received.material.salt)
        try:
            for plain in crypto.decrypt_stream(
                received.material.data_key,
                self.rt.blobs.open_stream(ref.cid),
                crypto.archive_aad(received.archive_id, version.version),
            ):
                commitment.update(plain)
        except crypto.CryptoError:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefused(
                "decrypt_failed", f"version {version.version} does not decrypt"
            ) from None
        if commitment.hexdigest() != version.commitment:
            self._delete_blobs(received.archive_id, [ref.cid])
            raise _PackageRefused(
                "commitment_mismatch", f"version {version.version}: content commitment differs"
            )
        return ref

    def _stage(
        self, uow: UnitOfWork, transfer_id: int, received: _Received, stored: list[BlobRef]
    ) -> None:
        """Store the received archive (not yet ours) and queue ``acceptTransfer``."""
        row = uow.session.get_one(Transfer, transfer_id)
        if row.state != "seen":
            raise ConflictError("transfer already processed", code="already_processed")
        state, package, meta = received.state, received.package, received.meta
        archive_id = received.archive_id
        kek_id, kek = self.rt.keystore.current_kek()
        existing = uow.session.get(Archive, archive_id)
        if existing is not None:
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
            title=str(meta.get("title", "")),
            patient_pseudonym=str(meta.get("patient_pseudonym", "")),
            source_system=str(package.get("source_system", "")),
            metadata_json=dict(meta.get("metadata") or {}),
            search_text="",
            state=INCOMING,
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
            chain_status="registered",
            pending_recipient=self.rt.hospital,
            created_by=received.sender,
            created_at=uow.now,
            updated_at=uow.now,
            archived_at=uow.now,
        )
        archive.search_text = search_text(archive.title, archive.metadata_json)
        uow.session.add(archive)
        filenames = meta.get("filenames") or {}
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
                    filename=filenames.get(str(version.version)),
                    created_at=uow.now,
                )
            )
        uow.session.add(
            WrappedKey(
                archive_id=archive_id,
                holder=f"kek:{kek_id}",
                blob=crypto.wrap_key_material(
                    kek, received.material, crypto.kek_wrap_aad(archive_id, kek_id)
                ),
                created_at=uow.now,
            )
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
        row.state = "accepting"
        row.updated_at = uow.now

    def _refuse(self, transfer_id: int, refused: _PackageRefused) -> None:
        """A check failed: reject on chain with a reason hash and log TRANSFER_REJECT."""
        log.warning("refusing incoming transfer %d: %s", transfer_id, refused)
        reason_hash = hashlib.sha256(f"{refused.reason}: {refused}".encode()).hexdigest()

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != "seen":
                return
            enqueue_call(
                uow.session,
                "rejectTransfer",
                [archive_key(row.archive_id), bytes.fromhex(reason_hash)],
                archive_id=row.archive_id,
            )
            row.state = "rejected"
            row.error = str(refused)
            row.updated_at = uow.now

        self.rt.committer.run(unit)

    def chain_accept_confirmed(self, session: Session, archive_id: str) -> None:
        """Outbox handler (worker transaction): ``acceptTransfer`` mined successfully."""
        self._mark_incoming(session, archive_id, "accepting", "accepted_on_chain")

    def chain_accept_failed(self, session: Session, archive_id: str) -> None:
        """Outbox handler (worker transaction): ``acceptTransfer`` reverted."""
        self._mark_incoming(session, archive_id, "accepting", "failed_on_chain")

    def _mark_incoming(self, session: Session, archive_id: str, was: str, now: str) -> None:
        row = session.execute(
            select(Transfer).where(
                Transfer.archive_id == archive_id,
                Transfer.direction == "in",
                Transfer.state == was,
            )
        ).scalar_one_or_none()
        if row is not None:
            row.state = now
            row.updated_at = datetime.now(UTC)

    def _complete(self, transfer_id: int) -> None:
        """Custody is ours on chain: log TRANSFER_ACCEPT chained to the former custodian's head."""
        self._fault("transfer-completing")

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != "accepted_on_chain":
                return
            archive = uow.session.get_one(Archive, row.archive_id)
            state = self.archives._state(uow.session, archive)
            data = TransferAcceptData.model_validate(
                {"from": row.peer, "offer_hash": state.offer_hash}
            )
            self.archives._record(
                uow, archive, state, TransferAcceptEvent, self._system_actor(), data
            )
            archive.custodian = self.rt.hospital
            archive.pending_recipient = None
            archive.state = ArchiveStatus.ARCHIVED.value
            row.state = "accepted"
            row.updated_at = uow.now

        self.rt.committer.run(unit)

    def _abandon(self, transfer_id: int) -> None:
        """``acceptTransfer`` reverted: delete everything staged for the archive."""

        def unit(uow: UnitOfWork) -> list[str]:
            row = uow.session.get_one(Transfer, transfer_id)
            if row.state != "failed_on_chain":
                return []
            archive = uow.session.get(Archive, row.archive_id)
            cids: list[str] = []
            if archive is not None and archive.state == INCOMING:
                cids = [v.cid for v in archive.versions]
                for model in (WrappedKey, ArchiveVersion, ForeignEntry):
                    uow.session.execute(delete(model).where(model.archive_id == row.archive_id))
                uow.session.delete(archive)
            row.state = "failed"
            row.updated_at = uow.now
            return cids

        archive_id = self._transfer_archive(transfer_id)
        self._delete_blobs(archive_id, self.rt.committer.run(unit))

    # ===========================================================================================
    # Sharing

    def grant(
        self, principal: Principal, archive_id: str, to: str, purpose: Purpose, expires_at: datetime
    ) -> ShareView:
        """Grant another hospital read access for a purpose until ``expires_at``."""
        principal.require(Action.SHARE)
        grantee = self.resolve_hospital(to)
        public_key = bytes(self._member(grantee).public_key)
        if expires_at.tzinfo is None:
            raise InputError("expires_at must include a timezone", code="invalid_expiry")

        def unit(uow: UnitOfWork) -> ShareView:
            archive = self.archives._load_for_update(uow.session, principal, archive_id)
            self._require_custodian(archive)
            state = self.archives._state(uow.session, archive)
            if expires_at <= uow.now:
                raise InputError("expires_at must be in the future", code="invalid_expiry")
            material = self._own_material(uow.session, archive.id)
            data = ShareGrantData(grantee=grantee, purpose=purpose, expires_at=expires_at)
            new_state = self.archives._record(
                uow, archive, state, ShareGrantEvent, principal.actor, data
            )
            self._destroy_keys(uow, archive.id, holder=f"member:{grantee}")  # a replaced grant
            uow.session.add(
                WrappedKey(
                    archive_id=archive.id,
                    holder=f"member:{grantee}",
                    blob=crypto.ecies_wrap_key_material(
                        public_key, material, crypto.member_wrap_aad(archive.id, grantee)
                    ),
                    purpose=purpose.value,
                    expires_at=expires_at,
                    created_at=uow.now,
                )
            )
            grant = new_state.grant_for(grantee)
            assert grant is not None
            return _share_view(grant, uow.now)

        return self.rt.committer.run(unit)

    def revoke(
        self,
        principal: Principal | None,
        archive_id: str,
        grantee: str,
        reason: RevokeReason = RevokeReason.REVOKED,
    ) -> None:
        """End a grant: SHARE_REVOKE and the grantee's wrapped copy is destroyed."""
        if principal is not None:
            principal.require(Action.SHARE)
        address = normalize_address(grantee)

        def unit(uow: UnitOfWork) -> None:
            archive = (
                self.archives._load_for_update(uow.session, principal, archive_id)
                if principal is not None
                else uow.session.get_one(Archive, archive_id)
            )
            state = self.archives._state(uow.session, archive)
            if state.grant_for(address) is None:
                raise NotFoundError(f"{address} holds no grant on {archive_id}", code="no_grant")
            actor = principal.actor if principal is not None else self._system_actor()
            data = ShareRevokeData(grantee=address, reason=reason)
            self.archives._record(uow, archive, state, ShareRevokeEvent, actor, data)
            self._destroy_keys(uow, archive.id, holder=f"member:{address}")

        self.rt.committer.run(unit)

    def shares(self, principal: Principal, archive_id: str) -> list[ShareView]:
        """The grants of an archive held here."""
        principal.require(Action.READ_METADATA)
        with self.rt.db.session() as session:
            archive = self.archives._visible(session, principal, archive_id)
            state = self.archives._state(session, archive)
        now = datetime.now(UTC)
        return [_share_view(grant, now) for grant in state.grants]

    def expire_shares(self) -> int:
        """Revoke (reason ``expired``) grants past their expiry. Scheduler job."""
        now = datetime.now(UTC)
        with self.rt.db.session() as session:
            due = list(
                session.execute(
                    select(WrappedKey.archive_id, WrappedKey.holder).where(
                        WrappedKey.holder.like("member:%"),
                        WrappedKey.expires_at < now,
                        WrappedKey.destroyed_at.is_(None),
                    )
                ).all()
            )
        for archive_id, holder in due:
            try:
                self.revoke(None, archive_id, holder.removeprefix("member:"), RevokeReason.EXPIRED)
            except (NotFoundError, ConflictError, AnchoringError) as exc:
                log.warning("could not expire the grant of %s on %s: %s", holder, archive_id, exc)
        return len(due)

    def share_package(self, sender: str, archive_id: str) -> dict[str, Any]:
        """For an active grantee: the grant and what the grantee needs to apply its own access
        rules (department, sensitivity, class) and to choose a version (peer API). No key
        material and no PHI: the key travels only with the logged ``disclose_content``."""
        with self.rt.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or archive.state == TRANSFERRED:
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            grant = self._active_grant(session, archive, sender)
            return {
                "archive_id": archive_id,
                "custodian": self.rt.hospital,
                "grant": grant.grant_hash,
                "purpose": grant.purpose.value,
                "expires_at": grant.expires_at.isoformat(),
                "record_class": archive.record_class,
                "sensitivity": archive.sensitivity,
                "department": archive.department,
                "versions": [
                    {"version": v.version, "media_type": v.media_type, "size": v.size}
                    for v in archive.versions
                ],
                "current_version": archive.current_version,
            }

    def disclose_content(
        self, sender: str, archive_id: str, version: int, purpose: Purpose
    ) -> tuple[bytes, Iterator[bytes]]:
        """For an active grantee, reading under its grant for the grant's purpose: the key
        wrapped to the grantee and the version's ciphertext. The disclosure is logged first (an
        ACCESS in this log naming the grant, the grantee as actor), so the evidence of the read
        does not depend on the grantee logging it too."""

        def unit(uow: UnitOfWork) -> tuple[bytes, str]:
            archive = self._held_for_peer(uow.session, archive_id)
            grant = self._active_grant(uow.session, archive, sender)
            if grant.purpose is not purpose:
                raise ConflictError(
                    f"the grant is for purpose {grant.purpose.value}, not {purpose.value}",
                    code="purpose_mismatch",
                )
            wrapped = self._member_copy(uow.session, archive.id, sender)
            cid = self._version_cid(archive, version)
            self._log_disclosure(uow, archive, grant, sender, AccessScope.CONTENT)
            return wrapped, cid

        wrapped, cid = self.rt.committer.run(unit)
        return wrapped, self.rt.blobs.open_stream(cid)

    def peer_bundle(self, sender: str, archive_id: str) -> ProofBundle:
        """The archive's bundle for a member entitled to it: an active grantee (the disclosure is
        logged, scope ``proof``) or the pending recipient of a transfer. Nobody else: bundles
        carry pseudonyms, departments and sizes."""
        archive_id = archive_id.strip().upper()

        def unit(uow: UnitOfWork) -> None:
            archive = uow.session.get(Archive, archive_id)
            if archive is None or archive.state in NOT_HELD:
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            if archive.pending_recipient == sender:
                return
            grant = self._active_grant(uow.session, archive, sender)
            self._log_disclosure(uow, archive, grant, sender, AccessScope.PROOF)

        self.rt.committer.run(unit)
        return self.full_bundle(archive_id)

    def read_shared(
        self, principal: Principal, custodian: str, archive_id: str, purpose: Purpose
    ) -> SharedContent:
        """Read an archive another hospital shared with us. The grantee's own access rules apply
        first (a clinician of another department gets 404 as for a local record); then the
        custodian discloses key and ciphertext (logging it in its log), this node logs the read
        in its own log (the grant's side chain), and the content is decrypted as it streams."""
        principal.require(Action.READ_CONTENT)
        custodian = normalize_address(custodian)
        archive_id = archive_id.strip().upper()
        url = self.peer_url(custodian)
        package = self._from_peer(
            lambda: self.rt.peer_client.get_json(url, custodian, f"/archives/{archive_id}/share")
        )
        try:
            department = str(package["department"])
            granted = Purpose(package["purpose"])
            grant_hash = str(package["grant"])
            version = int(package["current_version"])
            info = next(v for v in package["versions"] if v["version"] == version)
        except (KeyError, TypeError, ValueError, StopIteration):
            raise UnavailableError(f"the custodian {custodian} sent a malformed grant") from None
        principal.require_visible(archive_id, department)
        if granted is not purpose:
            raise ConflictError(
                f"the grant is for purpose {granted.value}, not {purpose.value}",
                code="purpose_mismatch",
            )
        headers, ciphertext = self._from_peer(
            lambda: self.rt.peer_client.open_stream(
                url,
                custodian,
                f"/archives/{archive_id}/shared/versions/{version}?purpose={purpose.value}",
            )
        )
        try:
            material = crypto.ecies_unwrap_key_material(
                self.rt.keystore.encryption_private_key,
                base64.b64decode(headers.get(WRAPPED_KEY_HEADER, ""), validate=True),
                crypto.member_wrap_aad(archive_id, self.rt.hospital),
            )

            def unit(uow: UnitOfWork) -> None:
                # The grantee's ACCESS events form a side chain: the first names the grant, each
                # next one the previous read under the same grant.
                head = grant_hash
                for entry in storage.entries_for_archive(uow.session, archive_id):
                    event = parse_event(entry.event)
                    if isinstance(event, AccessEvent) and event.data.grant == grant_hash:
                        head = merkle.leaf_hash(entry.event).hex()
                event = AccessEvent(
                    hospital=self.rt.hospital,
                    log_index=uow.log.size,
                    archive_id=archive_id,
                    actor=principal.actor,
                    time=uow.now,
                    prev=head,
                    data=AccessData(
                        purpose=purpose,
                        scope=AccessScope.CONTENT,
                        break_glass=False,
                        grant=grant_hash,
                    ),
                )
                uow.log.append(
                    canonical_bytes(event),
                    archive_id=archive_id,
                    event_type=event.type,
                    time=uow.now,
                )

            self.rt.committer.run(unit)
        except (crypto.CryptoError, ValueError):
            ciphertext.close()
            raise UnavailableError(
                f"the key sent by the custodian {custodian} does not open"
            ) from None
        except BaseException:
            ciphertext.close()
            raise
        chunks = crypto.decrypt_stream(
            material.data_key, ciphertext, crypto.archive_aad(archive_id, version)
        )
        return SharedContent(
            archive_id, custodian, version, str(info["media_type"]), int(info["size"]), chunks
        )

    # ===========================================================================================
    # Evidence across logs

    def full_bundle(self, archive_id: str) -> ProofBundle:
        """Every anchored event of the archive this node knows, across logs."""
        return self.rt.proofs.full(archive_id)[0]

    def shared_bundle(self, principal: Principal, custodian: str, archive_id: str) -> bytes:
        """For a grantee: the custodian's bundle plus this node's own reads under the grant."""
        principal.require(Action.READ_PROOF)
        custodian = normalize_address(custodian)
        url = self.peer_url(custodian)
        document = self._from_peer(
            lambda: self.rt.peer_client.get_json(url, custodian, f"/archives/{archive_id}/bundle")
        )
        theirs = parse_bundle(json.dumps(document))
        own = self.rt.proofs.own_entries(archive_id)
        return dump_bundle(
            ProofBundle(
                chain_id=theirs.chain_id,
                notary=theirs.notary,
                archive_id=theirs.archive_id,
                entries=merge_by_time(theirs.entries, own.entries),
            )
        )

    # ===========================================================================================
    # helpers

    def _require_custodian(self, archive: Archive) -> None:
        if archive.custodian != self.rt.hospital or archive.state in NOT_HELD:
            raise ConflictError(
                f"this hospital is not the custodian of archive {archive.id}", code="not_custodian"
            )

    def _own_material(self, session: Session, archive_id: str) -> crypto.KeyMaterial:
        holder, blob = self.archives._own_wrapped_key(session, archive_id)
        return self.archives._unwrap(archive_id, holder, blob)

    def _held_for_peer(self, session: Session, archive_id: str) -> Archive:
        """The archive, locked, when this node holds it (a peer never sees others)."""
        archive = session.execute(
            select(Archive).where(Archive.id == archive_id.strip().upper()).with_for_update()
        ).scalar_one_or_none()
        if archive is None or archive.state in NOT_HELD:
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        return archive

    def _version_cid(self, archive: Archive, version: int) -> str:
        row = next((v for v in archive.versions if v.version == version), None)
        if row is None or row.blob_deleted_at is not None:
            raise NotFoundError(
                f"archive {archive.id} has no version {version}", code="version_not_found"
            )
        return row.cid

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
        state = self.archives._state(uow.session, archive)
        data = AccessData(
            purpose=grant.purpose, scope=scope, break_glass=False, grant=grant.grant_hash
        )
        self.archives._record(uow, archive, state, AccessEvent, grantee, data)

    def _member_copy(self, session: Session, archive_id: str, member: str) -> bytes:
        row = session.execute(
            select(WrappedKey)
            .where(
                WrappedKey.archive_id == archive_id,
                WrappedKey.holder == f"member:{member}",
                WrappedKey.destroyed_at.is_(None),
            )
            .order_by(WrappedKey.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None or row.blob is None:
            raise NotFoundError(
                f"no key of archive {archive_id} is held for {member}", code="no_access"
            )
        return row.blob

    def _active_grant(self, session: Session, archive: Archive, sender: str) -> Any:
        state = self.archives._state(session, archive)
        grant = state.active_grant(sender, datetime.now(UTC))
        if grant is None:
            raise NotFoundError(
                f"{sender} holds no active grant on archive {archive.id}", code="no_access"
            )
        return grant

    def _destroy_keys(self, uow: UnitOfWork, archive_id: str, holder: str | None) -> None:
        query = select(WrappedKey).where(
            WrappedKey.archive_id == archive_id, WrappedKey.destroyed_at.is_(None)
        )
        if holder is not None:
            query = query.where(WrappedKey.holder == holder)
        for row in uow.session.execute(query).scalars():
            row.blob = None
            row.destroyed_at = uow.now

    def _open_transfer(self, session: Session, archive_id: str, direction: str) -> Transfer | None:
        return session.execute(
            select(Transfer)
            .where(
                Transfer.archive_id == archive_id,
                Transfer.direction == direction,
                Transfer.state.in_(["offered", "seen", "accepting", "accepted_on_chain"]),
            )
            .order_by(Transfer.id.desc())
            .limit(1)
        ).scalar_one_or_none()

    def _transfer_archive(self, transfer_id: int) -> str:
        with self.rt.db.session() as session:
            return session.get_one(Transfer, transfer_id).archive_id

    def _note(self, transfer_id: int, error: str) -> None:
        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get_one(Transfer, transfer_id)
            row.attempts += 1
            row.error = error[:500]
            row.updated_at = uow.now

        self.rt.committer.run(unit)

    def _delete_blobs(self, archive_id: str, cids: list[str]) -> None:
        for cid in cids:
            try:
                self.rt.blobs.delete(cid)
            except Exception:
                log.exception("could not delete blob %s of archive %s", cid, archive_id)

    def _system_actor(self) -> str:
        """The actor of events the node logs on its own (watcher, expiry jobs): its address."""
        return self.rt.hospital


@dataclass(frozen=True)
class _Received:
    archive_id: str
    sender: str
    package: dict[str, Any]
    bundle: ProofBundle
    state: ArchiveState
    material: crypto.KeyMaterial
    meta: dict[str, Any]

    @property
    def versions(self) -> tuple[lifecycle.ContentVersion, ...]:
        return self.state.versions


class _PackageRefused(Exception):
    """A received package failed a check; the transfer is rejected on chain."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _share_view(grant: lifecycle.ShareGrant, now: datetime) -> ShareView:
    return ShareView(
        grantee=grant.grantee,
        purpose=grant.purpose.value,
        expires_at=grant.expires_at,
        grant_hash=grant.grant_hash,
        active=now < grant.expires_at,
    )
