"""The destruction ledger (tombstones): backups cannot resurrect a destroyed key.

Cryptographic erasure means every copy of the key is gone (NIST SP 800-88 Rev. 1) — including the
copy inside a database backup taken before the destruction. So each destruction is also written
to an append-only file kept apart from the database (``tombstone_file``, by default
``data_dir/tombstones.jsonl``; ``archivechain backup`` carries it, but a backup's copy predates
later destructions, so keep the live file on another volume as well), one JSON line per archive:
``{"archive_id", "certificate_hash", "destroyed_at"}`` — no PHI. Every start replays it before
the node serves: an archive named there loses every live key copy, its ciphertext and its descriptive metadata again, and its catalogue entry says DESTROYED, whatever
the restored database said.

A line is appended (and fsynced) once the destruction has committed; a start also appends the
destroyed archives the database knows of but the file lacks (a stop between the two), so the file
catches up before it is needed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from anchoring.events import format_time
from anchoring.lifecycle import ArchiveStatus
from node.blobstore import BlobStore
from node.db import Database
from node.erasure import erase_archive_content
from node.models import Archive, ArchiveVersion, DestructionCertificate, WrappedKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """One destroyed archive."""

    archive_id: str
    certificate_hash: str
    destroyed_at: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay had to do again."""

    tombstones: int  # lines in the ledger
    appended: int  # destroyed archives the ledger lacked
    keys_destroyed: int  # live key copies found (restored) and destroyed again
    archives_reverted: int  # catalogue entries that were not DESTROYED (an older backup)
    blobs_deleted: int


class TombstoneLedger:
    """An append-only JSON-lines file of destroyed archives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, tombstones: Iterable[Tombstone]) -> None:
        """Write the lines and fsync them (file and directory) before returning."""
        lines = "".join(
            json.dumps(
                {
                    "archive_id": t.archive_id,
                    "certificate_hash": t.certificate_hash,
                    "destroyed_at": t.destroyed_at,
                },
                sort_keys=True,
                separators=(",", ":"),
            )
            + "\n"
            for t in tombstones
        )
        if not lines:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            if not created and self.path.stat().st_size:
                with self.path.open("rb") as existing:
                    existing.seek(-1, os.SEEK_END)
                    if existing.read(1) != b"\n":  # a torn line: never glue onto it
                        lines = "\n" + lines
            with self.path.open("a", encoding="ascii") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                descriptor = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)

    def read(self) -> list[Tombstone]:
        """Every tombstone (a torn last line, from a crash while appending, is skipped)."""
        if not self.path.exists():
            return []
        found: list[Tombstone] = []
        for number, line in enumerate(self.path.read_text(encoding="ascii").splitlines(), 1):
            try:
                obj = json.loads(line)
                found.append(
                    Tombstone(
                        str(obj["archive_id"]),
                        str(obj["certificate_hash"]),
                        str(obj["destroyed_at"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                log.warning("tombstone ledger %s: line %d unreadable, skipped", self.path, number)
        return found

    def replay(self, db: Database, blobs: BlobStore, now: datetime) -> ReplayOutcome:
        """Catch the ledger up with the database, then make every tombstone true again."""
        known = {t.archive_id for t in self.read()}
        with db.session() as session:
            missing = [
                Tombstone(row.archive_id, row.sha256, format_time(row.created_at))
                for row in session.execute(select(DestructionCertificate)).scalars()
                if row.archive_id not in known
            ]
        self.append(missing)
        tombstones = self.read()
        ids = sorted({t.archive_id for t in tombstones})
        keys = reverted = 0
        cids: list[tuple[str, str]] = []
        with db.transaction() as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in session.execute(
                    select(WrappedKey).where(
                        WrappedKey.archive_id.in_(chunk), WrappedKey.destroyed_at.is_(None)
                    )
                ).scalars():
                    row.blob = None
                    row.destroyed_at = now
                    keys += 1
                for archive in session.execute(
                    select(Archive).where(
                        Archive.id.in_(chunk), Archive.state != ArchiveStatus.DESTROYED.value
                    )
                ).scalars():
                    archive.state = ArchiveStatus.DESTROYED.value
                    archive.updated_at = now
                    reverted += 1
                # What the destruction erased (a restored backup may hold it again).
                erase_archive_content(session, chunk)
                cids.extend(
                    session.execute(
                        select(ArchiveVersion.archive_id, ArchiveVersion.cid).where(
                            ArchiveVersion.archive_id.in_(chunk),
                            ArchiveVersion.blob_deleted_at.is_(None),
                        )
                    ).tuples()
                )
        deleted = 0
        gone: list[str] = []
        for _, cid in cids:
            try:
                if blobs.delete(cid):
                    deleted += 1
                if not blobs.exists(cid):
                    gone.append(cid)
            except Exception as exc:  # retried at the next start (and by the retention job)
                log.warning("tombstoned blob not deleted yet: %s", type(exc).__name__)
        if gone:
            with db.transaction() as session:
                for version in session.execute(
                    select(ArchiveVersion).where(ArchiveVersion.cid.in_(gone))
                ).scalars():
                    version.blob_deleted_at = now
        outcome = ReplayOutcome(len(tombstones), len(missing), keys, reverted, deleted)
        if keys or reverted or deleted or missing:
            log.warning(
                "tombstone replay: %d key copies and %d blobs destroyed again, %d archives "
                "marked DESTROYED, %d tombstones appended (a restored backup?)",
                keys,
                deleted,
                reverted,
                len(missing),
            )
        return outcome
