"""Storage tiers (docs/recovery.md §3): archives of a class listed in ``tier_cold_after_days``
move to the cold tier that many days after archiving, and, for a class listed in
``tier_cold_idle_days``, only once they were not read for that many days (the last access is kept
by every content read). A cold archive of such a class read within that window moves back to hot
(``recall`` does it on demand). Each move copies every version's ciphertext to the other store,
checks it there, deletes the old copy and logs TIER_MOVE.
Reads stay transparent (``TieredBlobStore``); the fixity audit reads through the same store, so it
covers both tiers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring.errors import AnchoringError
from anchoring.events import StorageTier, TierMoveData, TierMoveEvent
from anchoring.lifecycle import ArchiveStatus
from node.blobstore import BlobRef, BlobStore
from node.blobstore.tiered import TieredBlobStore
from node.config import NodeSettings
from node.db import Clock, Database, UnitOfWork, UnitRunner, utc_now
from node.errors import NodeError
from node.ledger import Ledger
from node.models import Archive, ArchiveTier, ArchiveVersion

log = logging.getLogger(__name__)

MOVABLE = (ArchiveStatus.ARCHIVED.value, ArchiveStatus.DISPOSITION_REVIEW.value)


def note_access(session: Session, archive_id: str, now: datetime) -> ArchiveTier:
    """Keep ``now`` as the archive's last access (the idle-time policy reads it) and return its
    tier row, made ``hot`` if it had none. Every content read calls it: the node's own readers'
    and a grantee's through the peer API, in the caller's transaction."""
    row = session.get(ArchiveTier, archive_id)
    if row is None:
        row = ArchiveTier(archive_id=archive_id, tier=StorageTier.HOT.value)
        session.add(row)
    row.last_access_at = now
    return row


@dataclass
class TierReport:
    """What one tier step did."""

    moved: int = 0
    bytes_moved: int = 0
    problems: list[str] = field(default_factory=list)


class TierService:
    """Moves archives to the cold tier by the per-class age policy."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        blobs: BlobStore,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.ledger = ledger
        self.blobs = blobs
        self.clock = clock

    def due(self, limit: int = 1000) -> list[str]:
        """Archives held here, hot, whose class policy says they are due for the cold tier: old
        enough and, where the class has an idle policy, not read within it."""
        now = self.clock()
        due: list[str] = []
        with self.db.session() as session:
            tiers = {
                archive_id: (tier, last)
                for archive_id, tier, last in session.execute(
                    select(ArchiveTier.archive_id, ArchiveTier.tier, ArchiveTier.last_access_at)
                )
            }
            for record_class, days in sorted(self.settings.tier_cold_after_days.items()):
                idle = self.settings.tier_cold_idle_days.get(record_class)
                rows = session.execute(
                    select(Archive.id)
                    .where(
                        Archive.custodian == self.ledger.hospital,
                        Archive.state.in_(MOVABLE),
                        Archive.record_class == record_class,
                        Archive.archived_at <= now - timedelta(days=days),
                    )
                    .order_by(Archive.archived_at)
                ).scalars()
                for archive_id in rows:
                    tier, last = tiers.get(archive_id, (StorageTier.HOT.value, None))
                    if tier == StorageTier.COLD.value:
                        continue
                    if idle is not None and last is not None and last > now - timedelta(days=idle):
                        continue  # read recently: stays hot
                    due.append(archive_id)
                    if len(due) >= limit:
                        return due
        return due

    def recalled(self, limit: int = 1000) -> list[str]:
        """Cold archives of a class with an idle policy that were read within it (back to hot)."""
        now = self.clock()
        out: list[str] = []
        with self.db.session() as session:
            for record_class, idle in sorted(self.settings.tier_cold_idle_days.items()):
                rows = session.execute(
                    select(Archive.id)
                    .join(ArchiveTier, ArchiveTier.archive_id == Archive.id)
                    .where(
                        Archive.custodian == self.ledger.hospital,
                        Archive.state.in_(MOVABLE),
                        Archive.record_class == record_class,
                        ArchiveTier.tier == StorageTier.COLD.value,
                        ArchiveTier.last_access_at > now - timedelta(days=idle),
                        ArchiveTier.last_access_at > ArchiveTier.moved_at,
                    )
                    .order_by(Archive.id)
                    .limit(limit)
                ).scalars()
                out += list(rows)
        return out[:limit]

    def tick(self) -> TierReport:
        """Move every due archive to cold and every recalled one back (nothing without a cold
        store)."""
        report = TierReport()
        if not isinstance(self.blobs, TieredBlobStore):
            return report
        for archive_id in self.due():
            self.move(archive_id, report)
        for archive_id in self.recalled():
            self.move(archive_id, report, to=StorageTier.HOT)
        return report

    def recall(self, archive_id: str) -> TierReport:
        """Bring one archive back to the hot tier now (TIER_MOVE ``cold`` → ``hot``)."""
        report = TierReport()
        if isinstance(self.blobs, TieredBlobStore):
            self.move(archive_id, report, to=StorageTier.HOT)
        return report

    def move(self, archive_id: str, report: TierReport, to: StorageTier = StorageTier.COLD) -> bool:
        """Copy the archive's blobs to tier ``to`` and check them there (SHA-256 and size against
        the catalogue, re-read in that store); then one unit of work logs TIER_MOVE and records
        each copy's id in that store as the version's ``cid`` (an IPFS cold store names a blob by
        its own CID); only after it commits are the old copies deleted. A failed copy or a refused
        event deletes the new copies and leaves the archive where it was."""
        assert isinstance(self.blobs, TieredBlobStore)
        blobs = self.blobs
        source = StorageTier.HOT if to is StorageTier.COLD else StorageTier.COLD
        with self.db.session() as session:
            versions = [
                (version_id, BlobRef(cid, size, sha))
                for version_id, cid, size, sha in session.execute(
                    select(
                        ArchiveVersion.id,
                        ArchiveVersion.cid,
                        ArchiveVersion.stored_size,
                        ArchiveVersion.ciphertext_sha256,
                    ).where(
                        ArchiveVersion.archive_id == archive_id,
                        ArchiveVersion.blob_deleted_at.is_(None),
                    )
                )
            ]
        copies: list[tuple[int, BlobRef, BlobRef]] = []  # (version row, old, new)

        def undo() -> None:  # the new copies, in the target store (the recorded ones stay)
            for _, old, new in copies:
                if new is not old:
                    blobs.drop(new.cid, to.value)

        try:
            for version_id, ref in versions:
                copies.append((version_id, ref, blobs.copy(ref, to.value)))
        except (NodeError, OSError) as exc:
            undo()
            report.problems.append(f"{archive_id}: {exc}")
            return False

        def unit(uow: UnitOfWork) -> None:
            archive = self.ledger.held(uow.session, None, archive_id)
            state = self.ledger.state(uow.session, archive)
            if state.tier is not to:
                data = TierMoveData(from_tier=state.tier, to_tier=to)
                self.ledger.record(uow, archive, state, TierMoveEvent, self.ledger.hospital, data)
            for version_id, _, new in copies:
                uow.session.get_one(ArchiveVersion, version_id).cid = new.cid
            row = uow.session.get(ArchiveTier, archive_id)
            if row is None:
                row = ArchiveTier(archive_id=archive_id, tier=to.value)
                uow.session.add(row)
            row.tier, row.moved_at = to.value, uow.now

        try:
            self.units.run(unit)
        except (NodeError, AnchoringError) as exc:  # the blobs stay where they were
            undo()
            report.problems.append(f"{archive_id}: TIER_MOVE refused: {exc}")
            return False
        for _, old, new in copies:
            if new is not old:
                try:
                    blobs.drop(old.cid, source.value)
                except (NodeError, OSError) as exc:  # an orphan copy: space, not data, is lost
                    report.problems.append(f"{archive_id}: old {source.value} copy kept: {exc}")
        report.moved += 1
        report.bytes_moved += sum(ref.size for _, ref in versions)
        return True
