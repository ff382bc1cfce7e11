"""Unreferenced blobs: ciphertext in the node's store that no record names.

An upload writes its ciphertext before it commits the version row that names it, so the database
never names a missing blob. A process killed between the two (``kill -9``, power loss) leaves one
complete encrypted file that nothing references; its data key was never stored, so nobody can read
it, and it only costs space. ``find_orphans`` lists such blobs and ``remove_orphans`` deletes them
(``archivechain audit orphans``; the node must be stopped, so no upload is between its two steps).

A blob is referenced while a version row names it and its deletion is not recorded
(``archive_versions.blob_deleted_at`` empty), or a replica this node holds for another hospital
names it (``held_replicas``). The node's store (both tiers of a tiered store) and the store of
replicas held for others (``<data_dir>/replicas``) are searched; a CID referenced anywhere is kept
in every store (a tier move interrupted by a crash leaves a copy that the next move replaces). Pins
on an IPFS daemon are listed but never removed here: in dev mode one daemon serves several nodes,
and its pins cannot be told apart.
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

__all__ = [
    "NodeStores",
    "Orphan",
    "OrphanReport",
    "find_orphans",
    "referenced_cids",
    "remove_orphans",
    "require_node_data",
    "search",
]


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
    removed: list[Orphan] = field(default_factory=list)

    @property
    def remaining(self) -> list[Orphan]:
        """Orphans still stored (all of them before ``remove_orphans``)."""
        return [orphan for orphan in self.orphans if orphan not in self.removed]


@dataclass(frozen=True)
class NodeStores:
    """Everything a node stores blobs in: its own store (``open_node_blob_store``) and the store
    of replicas it holds for other hospitals (None if it never held one)."""

    own: BlobStore
    replicas: LocalBlobStore | None

    def close(self) -> None:
        """Close both stores."""
        self.own.close()
        if self.replicas is not None:
            self.replicas.close()


def referenced_cids(session: Session) -> set[str]:
    """Every CID a live version row or a held replica names."""
    versions = session.execute(
        select(ArchiveVersion.cid).where(ArchiveVersion.blob_deleted_at.is_(None))
    ).scalars()
    replicas = session.execute(select(HeldReplica.cid)).scalars()
    return {*versions, *replicas}


def _tiers(store: BlobStore | NodeStores) -> Iterator[tuple[str, BlobStore]]:
    """``store``'s parts by name: ``hot`` and ``cold`` of a tiered store, or ``hot`` alone, and
    ``replicas`` when ``store`` is a ``NodeStores``."""
    from node.blobstore.tiered import TieredBlobStore

    if isinstance(store, NodeStores):
        yield from _tiers(store.own)
        if store.replicas is not None:
            yield "replicas", store.replicas
    elif isinstance(store, TieredBlobStore):
        yield "hot", store.hot
        yield "cold", store.cold
    else:
        yield "hot", store


def _size(store: LocalBlobStore, cid: str) -> int | None:
    try:
        return os.stat(store.path_of(cid)).st_size
    except OSError:
        return None


def find_orphans(session: Session, store: BlobStore | NodeStores) -> OrphanReport:
    """Every blob of ``store`` (each part, ``_tiers``) that ``referenced_cids`` does not name."""
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


def remove_orphans(session: Session, store: BlobStore | NodeStores, report: OrphanReport) -> None:
    """Delete the removable orphans of ``report`` that are still unreferenced (read again, in
    case a row named one since the search); record each deletion in ``report.removed``."""
    referenced = referenced_cids(session)
    stores = dict(_tiers(store))
    for orphan in report.orphans:
        if not orphan.removable or orphan.cid in referenced:
            continue
        if stores[orphan.tier].delete(orphan.cid):
            report.removed.append(orphan)


def require_node_data(settings: NodeSettings) -> None:
    """``ConfigError`` unless ``settings`` name an existing node: its keystore, and for SQLite its
    database file (so a mistyped ``--data-dir`` is refused instead of given an empty node)."""
    from sqlalchemy.engine import make_url

    from node.errors import ConfigError

    keystore = settings.resolved_keystore_path
    if not keystore.is_file():
        raise ConfigError(f"no node here: {keystore} does not exist", code="no_node_data")
    url = make_url(settings.resolved_database_url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:" and not os.path.isfile(database):
        raise ConfigError(f"no node database here: {database} does not exist", code="no_node_data")


def search(settings: NodeSettings, *, delete: bool) -> OrphanReport:
    """Open the node's database and stores, find the orphans, delete them if asked. The node's
    data must exist (``require_node_data``); the database is migrated first, as the node would."""
    from node import migrations
    from node.blobstore import open_node_blob_store
    from node.db import Database

    require_node_data(settings)
    url = settings.resolved_database_url
    migrations.upgrade(url)
    db = Database.connect(url)
    replicas = LocalBlobStore(settings.replica_dir) if settings.replica_dir.is_dir() else None
    stores = NodeStores(open_node_blob_store(settings), replicas)
    try:
        with db.session() as session:
            report = find_orphans(session, stores)
            if delete:
                remove_orphans(session, stores, report)
    finally:
        stores.close()
        db.dispose()
    return report
