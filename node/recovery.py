"""Rebuilding a node from the consortium (docs/recovery.md §2 and §4): the log from the peers it
was shipped to, checked against this hospital's on-chain checkpoints entry by entry before
anything is committed; the catalogue brought to the rebuilt log; missing blobs from replicas.

Runs on a data directory whose node is *not* running (``archivechain restore --from-peers``), with
the keystore (to sign peer requests as this hospital) and the settings (peer URLs, chain).

Trust: a peer is trusted for nothing. Each returned entry must parse as a canonical event of this
hospital with the right ``log_index``; the Merkle root after each entry is compared with every
on-chain checkpoint of that size. A peer whose entries miss a root is reported (``lying``) and the
next peer is asked; nothing it sent is kept. Entries past the latest checkpoint cannot be checked
against the chain: they are taken only when at least two peers return identical bytes for them
(``tail_quorum``), else they count as lost.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring import lifecycle, merkle, storage
from anchoring.errors import AnchoringError
from anchoring.events import (
    AmendEvent,
    CreateEvent,
    EventType,
    ReplicaAction,
    ReplicaEvent,
    parse_event,
)
from anchoring.storage import Checkpoint, CheckpointState, LogWriter
from node.blobstore import BlobStore
from node.db import Database
from node.errors import NodeError
from node.models import Archive, ArchiveVersion, Replica

log = logging.getLogger(__name__)

PAGE = 1000

Fetch = Callable[[str, int, int], dict[str, Any]]
"""``fetch(peer, start, limit)``: the peer's answer to ``GET /peer/v1/log/entries``."""


@dataclass
class LogRecovery:
    """What a log rebuild did."""

    hospital: str = ""
    local_size: int = 0
    chain_size: int = 0
    recovered: int = 0
    tail_recovered: int = 0
    tail_unverified: int = 0
    source: str | None = None
    lying: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    archives_resynced: int = 0
    archives_recreated: int = 0
    replicas_known: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the log now reaches the chain's latest checkpoint."""
        return self.local_size + self.recovered >= self.chain_size


def fetch_entries(fetch: Fetch, peer: str, start: int, end: int | None) -> list[bytes]:
    """The peer's entries ``start`` .. ``end`` (None: all it holds), page by page."""
    out: list[bytes] = []
    position = start
    while end is None or position < end:
        limit = PAGE if end is None else min(PAGE, end - position)
        answer = fetch(peer, position, limit)
        entries = answer.get("entries")
        if not isinstance(entries, list) or not entries:
            break
        for item in entries:
            if not isinstance(item, str):
                raise ValueError("not a base64 string")
            out.append(base64.b64decode(item, validate=True))
        position += len(entries)
    return out


def rebuild_log(
    db: Database,
    hospital: str,
    checkpoints: Sequence[Any],
    peers: Sequence[str],
    fetch: Fetch,
    *,
    tail_quorum: int = 2,
) -> LogRecovery:
    """Bring this node's log up to (at least) the latest on-chain checkpoint from ``peers``.

    ``checkpoints``: every on-chain checkpoint of ``hospital`` (``size``, ``root``, ``index``,
    ``anchored_at``). Commits the entries, the on-chain checkpoints as confirmed rows (so the
    anchoring worker continues from the latest one) and the catalogue resync in one transaction."""
    report = LogRecovery(hospital=hospital)
    with db.session() as session:
        report.local_size = storage.current_size(session)
    report.chain_size = max((c.size for c in checkpoints), default=0)
    by_size: dict[int, list[Any]] = {}
    for checkpoint in checkpoints:
        by_size.setdefault(checkpoint.size, []).append(checkpoint)

    fetched: dict[str, list[bytes]] = {}
    for peer in peers:
        try:
            fetched[peer] = fetch_entries(fetch, peer, report.local_size, None)
        except (NodeError, ValueError, binascii.Error) as exc:
            report.unreachable.append(peer)
            report.problems.append(f"{peer}: {exc}")
    verified: list[bytes] | None = None
    for peer, raws in fetched.items():
        problem = _check(raws, report.local_size, report.chain_size, hospital, by_size, db)
        if problem is not None:
            report.lying.append(peer)
            report.problems.append(f"{peer}: {problem}")
            continue
        verified, report.source = raws[: report.chain_size - report.local_size], peer
        break
    if verified is None:
        verified = []
        if report.chain_size > report.local_size:
            report.problems.append("no peer returned this hospital's log up to the chain")
            return report
    # The unanchored tail: only what ``tail_quorum`` honest-looking peers agree on, byte for byte.
    tail: list[bytes] = []
    honest = [raws for peer, raws in fetched.items() if peer not in report.lying]
    offset = len(verified)
    while True:
        candidates = [raws[offset] for raws in honest if len(raws) > offset]
        if not candidates:
            break
        agreeing = max(candidates.count(c) for c in candidates)
        if agreeing < tail_quorum or len(set(candidates)) > 1:
            report.tail_unverified = max(len(r) for r in honest) - offset
            break
        tail.append(candidates[0])
        offset += 1
    report.recovered, report.tail_recovered = len(verified), len(tail)
    _commit(db, hospital, [*verified, *tail], checkpoints, report)
    return report


def _check(
    raws: list[bytes],
    start: int,
    chain_size: int,
    hospital: str,
    by_size: dict[int, list[Any]],
    db: Database,
) -> str | None:
    """Why ``raws`` (entries from ``start``) are not this hospital's log, or None."""
    if start + len(raws) < chain_size:
        return f"holds {start + len(raws)} entries, the chain {chain_size}"
    with db.session() as session:
        writer = LogWriter.open(session)
        frontier = list(writer.frontier)
    size = start
    for raw in raws[: max(0, chain_size - start)]:
        try:
            event = parse_event(raw)
        except AnchoringError as exc:
            return f"entry {size} is not a canonical event ({exc})"
        if event.log_index != size or event.hospital != hospital:
            return f"entry {size} names index {event.log_index} of {event.hospital}"
        frontier, _ = merkle.append_leaf(frontier, size, merkle.leaf_hash(raw))
        size += 1
        for checkpoint in by_size.get(size, []):
            if merkle.hash_from_subtrees(frontier) != checkpoint.root:
                return (
                    f"the root after entry {size - 1} differs from checkpoint #{checkpoint.index}"
                )
    return None


def _commit(
    db: Database,
    hospital: str,
    raws: list[bytes],
    checkpoints: Sequence[Any],
    report: LogRecovery,
) -> None:
    now = datetime.now(UTC)
    with db.transaction() as session:
        writer = LogWriter.open(session)
        touched: set[str] = set()
        for raw in raws:
            event = parse_event(raw)
            writer.append(raw, archive_id=event.archive_id, event_type=event.type, time=event.time)
            touched.add(event.archive_id)
        writer.flush()
        known = {
            size
            for size in session.execute(
                select(Checkpoint.size).where(Checkpoint.state == CheckpointState.CONFIRMED)
            ).scalars()
        }
        for checkpoint in checkpoints:
            if checkpoint.size in known:
                continue
            anchored = datetime.fromtimestamp(checkpoint.anchored_at, UTC)
            session.add(
                Checkpoint(
                    size=checkpoint.size,
                    root=checkpoint.root,
                    state=CheckpointState.CONFIRMED,
                    chain_index=checkpoint.index,
                    block_time=anchored,
                    planned_at=anchored,
                    confirmed_at=now,
                )
            )
        for archive_id in sorted(touched):
            _resync(session, hospital, archive_id, report)


def _resync(session: Session, hospital: str, archive_id: str, report: LogRecovery) -> None:
    """Bring one archive's catalogue row (and its replica rows) to its events in the log."""
    events = [parse_event(e.event) for e in storage.entries_for_archive(session, archive_id)]
    main = [e for e in events if e.hospital == hospital]
    if not main or not isinstance(main[0], CreateEvent):
        return  # a received transfer or a grantee's side chain: not rebuilt here
    state = lifecycle.replay(e for e in main if not _side_read(e, hospital))
    archive = session.get(Archive, archive_id)
    create = main[0].data
    if archive is None:
        report.archives_recreated += 1
        archive = Archive(
            id=archive_id,
            record_class=create.record_class.value,
            sensitivity=create.sensitivity.value,
            department=create.department,
            title="",
            patient_pseudonym=create.patient,
            source_system=create.source_system,
            metadata_json={"recovered": "from peers: descriptive metadata was lost"},
            search_text="",
            state=state.status.value,
            custodian=state.custodian,
            trigger_date=main[0].time,
            current_version=state.current_version.version,
            last_event_hash=bytes.fromhex(state.head),
            event_count=state.event_count,
            chain_status="registered",
            created_by=main[0].actor,
            created_at=main[0].time,
            updated_at=state.last_time,
        )
        session.add(archive)
    else:
        report.archives_resynced += 1
    archive.state = state.status.value
    archive.custodian = state.custodian
    archive.last_event_hash = bytes.fromhex(state.head)
    archive.event_count = state.event_count
    archive.on_hold = state.on_hold
    archive.hold_by_regulator = state.on_hold and state.hold_by_regulator
    archive.current_version = state.current_version.version
    archive.retention_deadline = state.retention_deadline
    archive.retention_policy = state.retention_policy
    present = {
        v.version
        for v in session.execute(
            select(ArchiveVersion).where(ArchiveVersion.archive_id == archive_id)
        ).scalars()
    }
    from node.blobstore.local import cid_for_sha256

    for event in main:
        if not isinstance(event, CreateEvent | AmendEvent):
            continue
        data = event.data
        if data.version not in present:
            session.add(
                ArchiveVersion(
                    archive_id=archive_id,
                    version=data.version,
                    cid=cid_for_sha256(bytes.fromhex(data.ciphertext_sha256)),
                    ciphertext_sha256=data.ciphertext_sha256,
                    stored_size=0,
                    size=data.size,
                    media_type=data.media_type,
                    commitment=data.commitment,
                    created_at=event.time,
                )
            )
    # Replica rows follow the REPLICA events (the backup may predate placements).
    rows = {
        (r.peer, r.version): r
        for r in session.execute(select(Replica).where(Replica.archive_id == archive_id)).scalars()
    }
    for event in main:
        if not isinstance(event, ReplicaEvent):
            continue
        r = event.data
        row = rows.get((r.peer, r.version))
        if row is None:
            row = Replica(
                archive_id=archive_id,
                version=r.version,
                peer=r.peer,
                ciphertext_sha256=r.ciphertext_sha256,
                size=0,
                state="active",
                placed_at=event.time,
                failures=0,
            )
            session.add(row)
            rows[(r.peer, r.version)] = row
        row.state = {
            ReplicaAction.PLACED: "active",
            ReplicaAction.VERIFIED: "active",
            ReplicaAction.FAILED: "failed",
            ReplicaAction.DROPPED: "dropped",
        }[r.action]
    sizes = {v.version: v.size for v in state.versions}
    for row in rows.values():
        if row.size == 0:
            row.size = _stored_size(session, archive_id, row.version, sizes)
    report.replicas_known += sum(1 for r in rows.values() if r.state == "active")


def _stored_size(session: Session, archive_id: str, version: int, sizes: dict[int, int]) -> int:
    stored = session.execute(
        select(ArchiveVersion.stored_size).where(
            ArchiveVersion.archive_id == archive_id, ArchiveVersion.version == version
        )
    ).scalar_one_or_none()
    return int(stored or sizes.get(version, 0))


def _side_read(event: Any, hospital: str) -> bool:
    return bool(event.type == EventType.ACCESS and event.hospital != hospital)


def fetch_blobs_from_replicas(
    db: Database, blobs: BlobStore, stream: Callable[[str, str], Any]
) -> tuple[int, int, list[str]]:
    """Fetch every held version's missing blob from an active replica, checked against its hash.
    ``stream(peer, path)`` yields the replica's bytes. (restored, bytes, problems)."""
    from node.services.replicas import HELD_STATES, replica_path

    restored, moved, problems = 0, 0, []
    with db.session() as session:
        rows = session.execute(
            select(ArchiveVersion, Replica.peer)
            .join(Archive, Archive.id == ArchiveVersion.archive_id)
            .join(
                Replica,
                (Replica.archive_id == ArchiveVersion.archive_id)
                & (Replica.version == ArchiveVersion.version),
            )
            .where(
                Archive.state.in_(HELD_STATES),
                ArchiveVersion.blob_deleted_at.is_(None),
                Replica.state == "active",
            )
            .order_by(ArchiveVersion.id)
        ).all()
        session.expunge_all()
    done: set[int] = set()
    for version, peer in rows:
        if version.id in done or blobs.exists(version.cid):
            continue
        try:
            ref = blobs.put_stream(stream(peer, replica_path(version.archive_id, version.version)))
        except NodeError as exc:
            problems.append(f"{version.archive_id} v{version.version} from {peer}: {exc}")
            continue
        if ref.sha256 != version.ciphertext_sha256:
            blobs.delete(ref.cid)
            problems.append(f"{version.archive_id} v{version.version}: {peer} sent other bytes")
            continue
        with db.transaction() as session:
            stored = session.get_one(ArchiveVersion, version.id)
            stored.cid, stored.stored_size = ref.cid, ref.size
        done.add(version.id)
        restored += 1
        moved += ref.size
    return restored, moved, problems


def chain_checkpoints(settings: Any, hospital: str, reader: Any = None) -> list[Any]:
    """Every on-chain checkpoint of ``hospital`` (``reader``: a ``ChainReader``; default the
    notary of the deployment file over ``settings.rpc_url``)."""
    from anchoring.deployment import Deployment
    from anchoring.rpcview import NotaryReader

    if reader is None:
        deployment = Deployment.load(settings.resolved_deployment_file)
        reader = NotaryReader(settings.rpc_url, deployment.notary.address)
    count = reader.checkpoint_count(hospital)
    return [reader.checkpoint_at(hospital, index) for index in range(count)]


@dataclass
class PeerRestore:
    """What ``restore_from_peers`` did: the log rebuild and the blobs fetched from replicas."""

    log: LogRecovery
    blobs_restored: int = 0
    bytes_fetched: int = 0
    blob_problems: list[str] = field(default_factory=list)


def restore_from_peers(settings: Any, *, reader: Any = None) -> PeerRestore:
    """Rebuild the node of ``settings`` (not running) from the consortium: its log from the peers
    it shipped it to (checked against every on-chain checkpoint of this hospital), the catalogue
    and replica rows from that log, then every missing blob from a replica (checked against its
    recorded hash). The keystore signs the peer requests; the data directory's database may be
    empty (keystore-only restore) or an older backup."""
    from node import migrations
    from node.blobstore import open_blob_store
    from node.keystore import Keystore
    from node.peers import PeerClient
    from node.remote import RemoteNodes
    from node.services.logship import LOG_KEY
    from node.services.replicas import rendezvous

    keystore = Keystore.load(settings.resolved_keystore_path, settings.passphrase())
    hospital = keystore.address
    checkpoints = chain_checkpoints(settings, hospital, reader)
    client = PeerClient(keystore.account())
    remote = RemoteNodes(client, settings.peers)
    url = settings.resolved_database_url
    migrations.upgrade(url)
    db = Database.connect(url)
    blobs = open_blob_store(
        settings.blob_store, local_root=settings.blob_dir, ipfs_api=settings.ipfs_api
    )
    try:
        peers = rendezvous(LOG_KEY, list(settings.peers), len(settings.peers))

        def fetch(peer: str, start: int, limit: int) -> dict[str, Any]:
            return remote.get_json(peer, f"/log/entries?start={start}&limit={limit}")

        log_report = rebuild_log(db, hospital, checkpoints, peers, fetch)
        result = PeerRestore(log=log_report)
        if log_report.complete:
            restored, moved, problems = fetch_blobs_from_replicas(db, blobs, remote.stream)
            result.blobs_restored, result.bytes_fetched = restored, moved
            result.blob_problems = problems
        return result
    finally:
        blobs.close()
        db.dispose()
        client.close()
