"""Proof bundles of an archive (``archivechain.proof/v1``): the entries received from former
custodians (with their proofs, kept since the transfer) and this node's own anchored entries,
each proven against this node's latest confirmed checkpoint, in one order where every event
follows the event its ``prev`` names and times never decrease (``node.chainorder``).

A caller that wants every event it just caused in the bundle waits first
(``ProofService.wait_anchored``, the API's ``?wait=N``) instead of polling the proof itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select

from anchoring import storage
from anchoring.bundle import (
    BundleCheckpoint,
    BundleEntry,
    CertificateClaim,
    ProofBundle,
    dump_bundle,
)
from anchoring.deployment import Deployment
from node.chainorder import chain_order
from node.db import Database
from node.errors import ConflictError, NotFoundError
from node.models import Archive, DestructionCertificate, ForeignEntry
from node.principal import Action, Principal

MAX_PROOF_WAIT: Final = 30
"""Longest wait for anchoring a proof request may ask for, in seconds (it holds a connection)."""
ANCHORING_POLL_INTERVAL: Final = 0.2
"""Seconds between two reads of the anchored size while waiting (one short query each)."""


@dataclass(frozen=True)
class OwnEntries:
    """This node's anchored entries of one archive and how many newer ones await anchoring."""

    entries: tuple[BundleEntry, ...]
    unanchored: int
    checkpoint: BundleCheckpoint | None


@dataclass(frozen=True)
class BuiltBundle:
    """A serialised bundle and how many newer events of the archive still await anchoring."""

    document: bytes
    entries: int
    unanchored: int
    checkpoint_index: int | None
    checkpoint_size: int | None


_DESTROY_TYPE = b'"type":"DESTROY"'


class ProofService:
    """Builds proof bundles."""

    def __init__(self, *, hospital: str, deployment: Deployment, db: Database) -> None:
        self.hospital = hospital
        self.deployment = deployment
        self.db = db

    def bundle(self, principal: Principal, archive_id: str) -> BuiltBundle:
        """Every anchored event of the archive known here, across logs.

        Events newer than the latest confirmed checkpoint are left out (and counted): a bundle
        only contains what a verifier can check against the chain right now.
        """
        archive_id = self._visible_archive(principal, archive_id)
        bundle, own = self.full(archive_id)
        if not bundle.entries:
            raise ConflictError(
                f"archive {archive_id} has no anchored event yet; retry in a few seconds",
                code="proof_pending",
            )
        return BuiltBundle(
            document=dump_bundle(bundle),
            entries=len(bundle.entries),
            unanchored=own.unanchored,
            checkpoint_index=own.checkpoint.index if own.checkpoint else None,
            checkpoint_size=own.checkpoint.size if own.checkpoint else None,
        )

    async def wait_anchored(self, principal: Principal, archive_id: str, timeout: float) -> None:
        """Wait until every event of the archive recorded in this node's log when called is
        covered by a confirmed checkpoint; ``ConflictError`` (``proof_pending``) after ``timeout``
        seconds (at most ``MAX_PROOF_WAIT``).

        Polls the anchored size every ``ANCHORING_POLL_INTERVAL`` seconds: each poll is one short
        query in a worker thread, and between polls neither a thread nor a connection is held.
        Events recorded after the call are not waited for.
        """
        timeout = min(max(timeout, 0.0), MAX_PROOF_WAIT)
        loop = asyncio.get_running_loop()
        archive_id, needed = await asyncio.to_thread(self._anchoring_target, principal, archive_id)
        deadline = loop.time() + timeout
        while True:
            anchored = await asyncio.to_thread(self._anchored_size)
            if anchored >= needed:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConflictError(
                    f"archive {archive_id}: events up to log index {needed - 1} are not all "
                    f"anchored after {timeout:g} s (anchored: {anchored} log entries); "
                    "retry in a few seconds",
                    code="proof_pending",
                )
            await asyncio.sleep(min(ANCHORING_POLL_INTERVAL, remaining))

    def _visible_archive(self, principal: Principal, archive_id: str) -> str:
        """The normalised id of an archive the caller may see proofs of (404 otherwise)."""
        principal.require(Action.READ_PROOF)
        archive_id = archive_id.strip().upper()
        with self.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or not principal.can_see(archive.department):
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        return archive_id

    def _anchoring_target(self, principal: Principal, archive_id: str) -> tuple[str, int]:
        """``(archive id, log size)``: the confirmed checkpoint size that covers every event of the
        archive in this node's log right now (0 when it has none here)."""
        archive_id = self._visible_archive(principal, archive_id)
        with self.db.session() as session:
            last = session.execute(
                select(func.max(storage.LogEntry.index)).where(
                    storage.LogEntry.archive_id == archive_id
                )
            ).scalar_one_or_none()
        return archive_id, 0 if last is None else int(last) + 1

    def _anchored_size(self) -> int:
        with self.db.session() as session:
            return storage.anchored_size(session)

    def full(self, archive_id: str) -> tuple[ProofBundle, OwnEntries]:
        """Foreign entries (former custodians', in chain order) and this node's own, merged into one
        bundle order (``node.chainorder``): reads this node logged as a grantee before it received
        the archive sit among the former custodian's events, not after them."""
        with self.db.session() as session:
            foreign = [
                BundleEntry(
                    hospital=f.hospital,
                    log_index=f.log_index,
                    event=f.event,
                    proof=tuple(f.proof[i : i + 32] for i in range(0, len(f.proof), 32)),
                    checkpoint=BundleCheckpoint(
                        f.hospital, f.checkpoint_index, f.checkpoint_size, f.checkpoint_root
                    ),
                )
                for f in session.execute(
                    select(ForeignEntry)
                    .where(ForeignEntry.archive_id == archive_id)
                    .order_by(ForeignEntry.position)
                ).scalars()
            ]
        own = self.own_entries(archive_id)
        bundle = ProofBundle(
            chain_id=self.deployment.chain_id,
            notary=self.deployment.notary.address,
            archive_id=archive_id,
            entries=chain_order(foreign, own.entries),
            certificate=self._certificate(archive_id, own.entries),
        )
        return bundle, own

    def _certificate(
        self, archive_id: str, entries: tuple[BundleEntry, ...]
    ) -> CertificateClaim | None:
        """The destruction certificate, once the DESTROY event is among the anchored entries."""
        # Canonical bytes: the DESTROY event, and only it, holds exactly this text.
        if not any(_DESTROY_TYPE in e.event for e in entries):
            return None
        with self.db.session() as session:
            row = session.get(DestructionCertificate, archive_id)
            if row is None:
                return None
            return CertificateClaim(document=row.document, signature=row.signature)

    def own_entries(self, archive_id: str) -> OwnEntries:
        """This node's entries of the archive covered by its latest confirmed checkpoint."""
        with self.db.session() as session:
            checkpoint = storage.latest_confirmed_checkpoint(session)
            entries = storage.entries_for_archive(session, archive_id)
            if checkpoint is None or checkpoint.chain_index is None:
                return OwnEntries((), len(entries), None)
            anchor = BundleCheckpoint(
                hospital=self.hospital,
                index=checkpoint.chain_index,
                size=checkpoint.size,
                root=checkpoint.root,
            )
            covered = tuple(
                BundleEntry(
                    hospital=self.hospital,
                    log_index=entry.index,
                    event=entry.event,
                    proof=tuple(storage.inclusion_proof(session, entry.index, checkpoint.size)),
                    checkpoint=anchor,
                )
                for entry in entries
                if entry.index < checkpoint.size
            )
        return OwnEntries(covered, len(entries) - len(covered), anchor)
