"""Unreferenced blobs: ciphertext in the node's store that no record names.

An upload writes its ciphertext before it commits the version row that names it, so the database
never names a missing blob. A process killed between the two (``kill -9``, power loss) leaves one
complete encrypted file that nothing references; its data key was never stored, so nobody can read
it, and it only costs space. ``find_orphans`` lists such blobs and ``remove_orphans`` deletes them
(``archivechain audit orphans``; the node must be stopped, so no upload is between its two steps).

A blob is referenced while a version row names it and its deletion is not recorded
(``archive_versions.blob_deleted_at`` empty), or a replica this node holds for another hospital
names it. Either tier of a tiered store is searched; a CID referenced anywhere is kept in every
tier (a tier move interrupted by a crash leaves a copy that the next move replaces). Pins on an
IPFS daemon are listed but never removed here: in dev mode one daemon serves several nodes, and its
pins cannot be told apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.blobstore.base import BlobStore
from node.blobstore.local import LocalBlobStore
from node.config import NodeSettings
from node.models import ArchiveVersion, HeldReplica

__all__ = ["Orphan", "OrphanReport", "find_orphans", "referenced_cids", "remove_orphans", "search"]


@dataclass(frozen=True)
class Orphan:
    """One unreferenced blob: its CID, its tier, its size (None on IPFS) and whether this
    command may delete it (local stores only)."""

    cid: str
    tier: str
    size: int | None
    removable: bool


@dataclass
class OrphanReport:
    """What a search found (``orphans``) and, after ``remove_orphans``, what it deleted."""

    scanned: int = 0
    referenced: int = 0
    orphans: list[Orphan] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> list[Orphan]:
        """Orphans still stored (all of them before ``remove_orphans``)."""
        gone = set(self.removed)
        return [orphan for orphan in self.orphans if orphan.cid not in gone]


def referenced_cids(session: Session) -> set[str]:
    """Every CID a live version row or a held replica names."""
    versions = session.execute(
        select(ArchiveVersion.cid).where(ArchiveVersion.blob_deleted_at.is_(None))
    ).scalars()
    replicas = session.execute(select(HeldReplica.cid)).scalars()
    return {*versions, *replicas}


def _tiers(store: BlobStore) -> Iterator[tuple[str, BlobStore]]:
    from node.blobstore.tiered import TieredBlobStore

    if isinstance(store, TieredBlobStore):
        yield "hot", store.hot
        yield "cold", store.cold
    else:
        yield "hot", store


def _size(store: LocalBlobStore, cid: str) -> int | None:
    try:
        return os.stat(store.path_of(cid)).st_size
    except OSError:
        return None


def find_orphans(session: Session, store: BlobStore) -> OrphanReport:
    """Every blob of ``store`` (each tier) that ``referenced_cids`` does not name."""
    report = OrphanReport()
    referenced = referenced_cids(session)
    report.referenced = len(referenced)
    for tier, tier_store in _tiers(store):
        for cid in tier_store.iter_cids():
            report.scanned += 1
            if cid in referenced:
                continue
            if isinstance(tier_store, LocalBlobStore):
                orphan = Orphan(cid, tier, _size(tier_store, cid), removable=True)
            else:
                orphan = Orphan(cid, tier, None, removable=False)
            report.orphans.append(orphan)
    return report


def remove_orphans(session: Session, store: BlobStore, report: OrphanReport) -> None:
    """Delete the removable orphans of ``report`` that are still unreferenced (read again, in
    case a row named one since the search); record each deletion in ``report.removed``."""
    referenced = referenced_cids(session)
    stores = dict(_tiers(store))
    for orphan in report.orphans:
        if not orphan.removable or orphan.cid in referenced:
            continue
        if stores[orphan.tier].delete(orphan.cid):
            report.removed.append(orphan.cid)


def search(settings: NodeSettings, *, delete: bool) -> OrphanReport:
    """Open the node's database (migrated) and store, find the orphans, delete them if asked."""
    from node import migrations
    from node.blobstore import open_node_blob_store
    from node.db import Database

    url = settings.resolved_database_url
    migrations.upgrade(url)
    db = Database.connect(url)
    store = open_node_blob_store(settings)
    try:
        with db.session() as session:
            report = find_orphans(session, store)
            if delete:
                remove_orphans(session, store, report)
    finally:
        store.close()
        db.dispose()
    return report
