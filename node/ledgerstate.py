"""Lifecycle states of approved archives read set-based, without replaying their events.

``Ledger.states`` replays each archive's events (parse, re-encode, hash and apply each one) when
its state is not in the ledger's cache (10,000 entries): a disposition run over more archives than
that replayed every archive, which cost more than the destruction itself. Most archives reaching
destruction have the plain history of the disposition path — CREATE, ARCHIVE, DISPOSITION_START,
DISPOSITION_PROPOSE, DISPOSITION_APPROVE, with any number of reads (ACCESS without a grant or
break-glass) and fixity checks in between, which do not change the state. For those the state
after the last event is fully determined by the catalogue row, its one version row, the
disposition list and item, and the time of the last log entry: ``plain_states`` builds it from
two queries for a whole chunk (the log entries' type and time, and whether any events came from a
former custodian), after checking that the head hash in the catalogue is the leaf hash of the
log's last entry for that archive.

Every other history (holds, grants, transfers, extensions, amendments, reclassification, tier
moves, tags, replicas, break-glass, …) is left out of the answer: the caller replays those with
``Ledger.states``. ``tests/node/test_ledgerstate.py`` proves the built state equal to the
replayed one, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring import merkle
from anchoring.events import EventType, RecordClass, Sensitivity
from anchoring.lifecycle import ArchiveState, ArchiveStatus, ContentVersion
from anchoring.storage import LogEntry
from node.models import (
    Archive,
    ArchiveVersion,
    DispositionDecision,
    DispositionItem,
    DispositionProposal,
    ForeignEntry,
)

PLAIN_PATH = (
    EventType.CREATE.value,
    EventType.ARCHIVE.value,
    EventType.DISPOSITION_START.value,
    EventType.DISPOSITION_PROPOSE.value,
    EventType.DISPOSITION_APPROVE.value,
)
"""The main-chain event types of an archive on the plain disposition path, in order."""
NEUTRAL = frozenset({EventType.ACCESS.value, EventType.FIXITY_CHECK.value})
"""Event types that may appear after CREATE on the plain path: the custodian's own reads (an
ACCESS naming a grant needs a SHARE_GRANT, a break-glass one a BREAK_GLASS, neither of which is
on the path) and fixity checks; neither changes the state beyond its head, time and count."""


class VersionRow(NamedTuple):
    """What a destruction reads of one content version (a plain row, not an ORM object)."""

    version: int
    commitment: str
    ciphertext_sha256: str
    size: int
    media_type: str
    cid: str
    blob_deleted_at: datetime | None


def version_rows(session: Session, archive_ids: Sequence[str]) -> dict[str, list[VersionRow]]:
    """The content versions of ``archive_ids`` in version order, by archive id (every id is a
    key), from one query: thousands of archives without building an ORM object per version."""
    rows: dict[str, list[VersionRow]] = {archive_id: [] for archive_id in archive_ids}
    for row in session.execute(
        select(
            ArchiveVersion.archive_id,
            ArchiveVersion.version,
            ArchiveVersion.commitment,
            ArchiveVersion.ciphertext_sha256,
            ArchiveVersion.size,
            ArchiveVersion.media_type,
            ArchiveVersion.cid,
            ArchiveVersion.blob_deleted_at,
        )
        .where(ArchiveVersion.archive_id.in_(archive_ids))
        .order_by(ArchiveVersion.archive_id, ArchiveVersion.version)
    ).tuples():
        rows[row[0]].append(VersionRow(*row[1:]))
    return rows


def plain_states(
    session: Session,
    hospital: str,
    proposal: DispositionProposal,
    pairs: Sequence[tuple[DispositionItem, Archive]],
    versions: Mapping[str, Sequence[VersionRow]],
) -> dict[str, ArchiveState]:
    """The lifecycle states of the archives of ``pairs`` (approved items of ``proposal`` and their
    locked catalogue rows; ``versions`` their content versions, from ``version_rows``) whose
    history is the plain disposition path, by archive id; archives with any other history are not
    in the answer (replay them)."""
    candidates = {
        archive.id: (item, archive)
        for item, archive in pairs
        if _plain_row(hospital, item, archive, versions.get(archive.id, ()))
    }
    if not candidates:
        return {}
    ids = sorted(candidates)
    foreign = set(
        session.execute(
            select(ForeignEntry.archive_id).where(ForeignEntry.archive_id.in_(ids)).distinct()
        ).scalars()
    )
    types: dict[str, list[str]] = {archive_id: [] for archive_id in ids}
    last: dict[str, tuple[int, datetime]] = {}
    for archive_id, index, event_type, at in session.execute(
        select(LogEntry.archive_id, LogEntry.index, LogEntry.event_type, LogEntry.time)
        .where(LogEntry.archive_id.in_(ids))
        .order_by(LogEntry.archive_id, LogEntry.index)
    ).tuples():
        types[archive_id].append(event_type)
        last[archive_id] = (index, at)
    plain = [
        archive_id
        for archive_id in ids
        if archive_id not in foreign
        and _plain_path(types[archive_id])
        and len(types[archive_id]) == candidates[archive_id][1].event_count
    ]
    if not plain:
        return {}
    # The catalogue's head must be the leaf hash of the log's last entry of the archive (as the
    # replay checks it against the replayed head): one query for those entries' bytes.
    wanted = [last[archive_id][0] for archive_id in plain]
    heads: dict[str, bytes] = {
        archive_id: raw
        for archive_id, raw in session.execute(
            select(LogEntry.archive_id, LogEntry.event).where(LogEntry.index.in_(wanted))
        ).tuples()
    }
    states: dict[str, ArchiveState] = {}
    for archive_id in plain:
        item, archive = candidates[archive_id]
        raw = heads.get(archive_id)
        if raw is None or merkle.leaf_hash(raw) != archive.last_event_hash:
            continue  # the replay reports the inconsistency (log_inconsistent)
        (version,) = versions[archive_id]
        assert archive.retention_deadline is not None  # _plain_row
        states[archive_id] = ArchiveState(
            archive_id=archive_id,
            status=ArchiveStatus.DISPOSITION_REVIEW,
            custodian=hospital,
            creator=hospital,
            record_class=RecordClass(archive.record_class),
            sensitivity=Sensitivity(archive.sensitivity),
            department=archive.department,
            versions=(
                ContentVersion(
                    version.version,
                    version.commitment,
                    version.ciphertext_sha256,
                    version.size,
                    version.media_type,
                ),
            ),
            head=archive.last_event_hash.hex(),
            last_time=last[archive_id][1],
            event_count=archive.event_count,
            commitment=version.commitment,
            retention_policy=archive.retention_policy,
            trigger_date=archive.trigger_date.date(),
            retention_deadline=archive.retention_deadline,
            disposition_proposal=proposal.id,
            disposition_proposed_by=proposal.proposed_by,
            disposition_approved_until=item.expires_at,
        )
    return states


def _plain_row(
    hospital: str, item: DispositionItem, archive: Archive, versions: Sequence[VersionRow]
) -> bool:
    """What the catalogue and the item must say for the plain path (else: replay)."""
    return (
        item.decision == DispositionDecision.APPROVED.value
        and item.expires_at is not None
        and archive.custodian == hospital
        and archive.state == ArchiveStatus.DISPOSITION_REVIEW.value
        and not archive.on_hold
        and not archive.hold_by_regulator
        and archive.pending_recipient is None
        and archive.current_version == 1
        and len(versions) == 1
        and versions[0].version == 1
        and archive.retention_policy is not None
        and archive.retention_deadline is not None
    )


def _plain_path(types: list[str]) -> bool:
    """CREATE first, then the disposition path in order, with only neutral events between."""
    if not types or types[0] != EventType.CREATE.value:
        return False
    return tuple(t for t in types if t not in NEUTRAL) == PLAIN_PATH
