"""Proof bundles of an archive from this node's log (``archivechain.proof/v1``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from anchoring import storage
from anchoring.bundle import BundleCheckpoint, BundleEntry, ProofBundle, dump_bundle
from anchoring.storage import Checkpoint, CheckpointState
from node.errors import ConflictError, NotFoundError
from node.models import Archive
from node.services.principal import Action, Principal

if TYPE_CHECKING:
    from node.runtime import NodeRuntime


@dataclass(frozen=True)
class BuiltBundle:
    """A serialised bundle and how many newer events of the archive still await anchoring."""

    document: bytes
    entries: int
    unanchored: int
    checkpoint_index: int
    checkpoint_size: int


class ProofService:
    """Builds proof bundles against the latest confirmed checkpoint."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.rt = runtime

    def bundle(self, principal: Principal, archive_id: str) -> BuiltBundle:
        """Every anchored event of the archive with its inclusion proof.

        Events newer than the latest confirmed checkpoint are left out (and counted): a bundle
        only contains what a verifier can check against the chain right now.
        """
        principal.require(Action.READ_PROOF)
        archive_id = archive_id.strip().upper()
        with self.rt.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None or not principal.can_see(archive.department):
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            checkpoint = session.execute(
                select(Checkpoint)
                .where(
                    Checkpoint.state == CheckpointState.CONFIRMED,
                    Checkpoint.chain_index.is_not(None),
                )
                .order_by(Checkpoint.size.desc())
                .limit(1)
            ).scalar_one_or_none()
            entries = storage.entries_for_archive(session, archive_id)
            covered = [e for e in entries if checkpoint is not None and e.index < checkpoint.size]
            if checkpoint is None or not covered:
                raise ConflictError(
                    f"archive {archive_id} has no anchored event yet; retry in a few seconds",
                    code="proof_pending",
                )
            assert checkpoint.chain_index is not None
            anchor = BundleCheckpoint(
                hospital=self.rt.hospital,
                index=checkpoint.chain_index,
                size=checkpoint.size,
                root=checkpoint.root,
            )
            bundle_entries = tuple(
                BundleEntry(
                    hospital=self.rt.hospital,
                    log_index=entry.index,
                    event=entry.event,
                    proof=tuple(storage.inclusion_proof(session, entry.index, checkpoint.size)),
                    checkpoint=anchor,
                )
                for entry in covered
            )
        bundle = ProofBundle(
            chain_id=self.rt.deployment.chain_id,
            notary=self.rt.deployment.notary.address,
            archive_id=archive_id,
            entries=bundle_entries,
        )
        return BuiltBundle(
            document=dump_bundle(bundle),
            entries=len(bundle_entries),
            unanchored=len(entries) - len(covered),
            checkpoint_index=anchor.index,
            checkpoint_size=anchor.size,
        )
