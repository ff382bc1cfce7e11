"""Proof bundles of an archive (``archivechain.proof/v1``): the entries received from former
custodians (with their proofs, kept since the transfer) followed by this node's own anchored
entries, each proven against this node's latest confirmed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from anchoring import storage
from anchoring.bundle import BundleCheckpoint, BundleEntry, ProofBundle, dump_bundle
from anchoring.deployment import Deployment
from node.db import Database
from node.errors import ConflictError, NotFoundError
from node.models import Archive, ForeignEntry
from node.principal import Action, Principal


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
        principal.require(Action.READ_PROOF)
        archive_id = archive_id.strip().upper()
        with self.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or not principal.can_see(archive.department):
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
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

    def full(self, archive_id: str) -> tuple[ProofBundle, OwnEntries]:
        """Foreign entries (former custodians, in chain order) then this node's own."""
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
            entries=tuple(foreign) + own.entries,
        )
        return bundle, own

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
