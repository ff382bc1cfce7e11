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
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
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
from anchoring.ids import ZERO_ADDRESS
from anchoring.storage import Checkpoint, CheckpointState, LogWriter
from node.blobstore import BlobStore
from node.db import Database
from node.errors import NodeError
from node.models import Archive, ArchiveVersion, CatalogueState, Replica, WrappedKey

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
    custody_mismatches: dict[str, str] = field(default_factory=dict)
    tail_refused: int = 0
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
    custody: Callable[[str], Any] | None = None,
) -> LogRecovery:
    """Bring this node's log up to (at least) the latest on-chain checkpoint from ``peers``.

    ``checkpoints``: every on-chain checkpoint of ``hospital`` (``size``, ``root``, ``index``,
    ``anchored_at``). ``custody(archive_id)``: the chain's custody record of an archive; each
    rebuilt archive's custodian, state and hold are compared with it: an unanchored tail entry
    that makes them disagree is refused (with every tail entry after it), a disagreement within
    the anchored log (the chain moved on: a transfer accepted, a hold placed) is reported in
    ``custody_mismatches`` and custody is taken from the chain (another custodian: the archive is
    recorded TRANSFERRED to it). Commits the entries, the on-chain checkpoints as confirmed rows
    (so the anchoring worker continues from the latest one) and the catalogue resync in one
    transaction."""
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
    chain_custody: dict[str, Any] = {}
    if custody is not None:
        tail, chain_custody = _compare_custody(db, hospital, verified, tail, custody, report)
    report.recovered, report.tail_recovered = len(verified), len(tail)
    _commit(db, hospital, [*verified, *tail], checkpoints, report, chain_custody)
    return report


def _custody_of(state: Any) -> tuple[str, int, bool]:
    expected = lifecycle.expected_custody(state)
    return expected.custodian.lower(), int(expected.state), expected.on_hold


def _compare_custody(
    db: Database,
    hospital: str,
    verified: list[bytes],
    tail: list[bytes],
    custody: Callable[[str], Any],
    report: LogRecovery,
) -> tuple[list[bytes], dict[str, Any]]:
    """(the tail kept, chain records of archives whose anchored log disagrees with the chain)."""
    events = [parse_event(raw) for raw in [*verified, *tail]]
    touched = sorted({e.archive_id for e in events})
    with db.session() as session:
        local = {
            archive_id: [
                parse_event(entry.event)
                for entry in storage.entries_for_archive(session, archive_id)
            ]
            for archive_id in touched
        }

    def state_of(archive_id: str, upto: int) -> Any:
        main = [
            e
            for e in [*local[archive_id], *events[:upto]]
            if e.archive_id == archive_id and e.hospital == hospital and not _side_read(e, hospital)
        ]
        if not main or not isinstance(main[0], CreateEvent):
            return None
        return lifecycle.replay(main)

    mismatched: dict[str, Any] = {}
    cut = len(tail)
    for archive_id in touched:
        record = custody(archive_id)
        on_chain = (record.custodian.lower(), int(record.state), bool(record.on_hold))
        if int(record.state) == 0:
            on_chain = (ZERO_ADDRESS.lower(), 0, False)
        anchored = state_of(archive_id, len(verified))
        full = state_of(archive_id, len(events))
        if full is None:
            continue
        if anchored is not None and _custody_of(anchored) != on_chain:
            mismatched[archive_id] = record
            report.custody_mismatches[archive_id] = (
                f"log: {_custody_of(anchored)}, chain: {on_chain}"
            )
            continue
        if _custody_of(full) != on_chain:
            # The first tail entry of this archive is where the tail stops being believable.
            first = next(
                i for i, e in enumerate(events[len(verified) :]) if e.archive_id == archive_id
            )
            cut = min(cut, first)
    if cut < len(tail):
        report.tail_refused = len(tail) - cut
        report.problems.append(
            f"{len(tail) - cut} unanchored entries refused: custody they imply is not the chain's"
        )
    return tail[:cut], mismatched


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
    chain_custody: dict[str, Any] | None = None,
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
        for archive_id, record in (chain_custody or {}).items():
            archive = session.get(Archive, archive_id)
            if archive is None or int(record.state) == 0:
                continue
            archive.on_hold = bool(record.on_hold)
            if record.custodian.lower() != hospital.lower():
                # Custody from the chain: another hospital holds it now (as the chain watcher
                # records an accepted transfer). No replica or key of it is restored here.
                archive.state, archive.custodian = CatalogueState.TRANSFERRED, record.custodian
                archive.pending_recipient = None
                _mark_blobs_gone(session, archive_id, now)
                for key in session.execute(
                    select(WrappedKey).where(
                        WrappedKey.archive_id == archive_id, WrappedKey.destroyed_at.is_(None)
                    )
                ).scalars():
                    key.blob, key.destroyed_at = None, now  # as the watcher does on acceptance


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
    if archive.state in _BLOBS_GONE:  # destroyed or handed over: its ciphertext left here
        _mark_blobs_gone(session, archive_id, state.last_time)
    if archive.state == CatalogueState.DESTROYED:  # a backup from before the destruction
        _erase_destroyed(session, archive, state.last_time)


_BLOBS_GONE = frozenset({CatalogueState.DESTROYED, CatalogueState.TRANSFERRED})
"""Catalogue states in which this node no longer keeps an archive's ciphertext."""


def _erase_destroyed(session: Session, archive: Archive, when: datetime) -> None:
    """What the destruction erased, which a backup from before it holds again: the live key
    copies and the PHI-bearing columns and rows (as the tombstone replay at start does)."""
    from node.erasure import ERASED_COLUMNS, erase_archive_content

    for name, value in ERASED_COLUMNS:
        setattr(archive, name, value)
    session.flush()
    erase_archive_content(session, [archive.id])
    for key in session.execute(
        select(WrappedKey).where(
            WrappedKey.archive_id == archive.id, WrappedKey.destroyed_at.is_(None)
        )
    ).scalars():
        key.blob, key.destroyed_at = None, when


def _mark_blobs_gone(session: Session, archive_id: str, when: datetime) -> None:
    """Mark every version of the archive whose blob is not marked gone as deleted at ``when``
    (as destruction and an accepted transfer do), so verification does not look for it."""
    session.flush()
    session.execute(
        update(ArchiveVersion)
        .where(ArchiveVersion.archive_id == archive_id, ArchiveVersion.blob_deleted_at.is_(None))
        .values(blob_deleted_at=when)
        .execution_options(synchronize_session=False)
    )


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


@dataclass
class RecordRestore:
    """What ``restore_records`` did: archives whose key (and title, metadata) came back from a key
    record at a replica holder, and those still without a key."""

    restored: int = 0
    rewrapped: int = 0  # of them, records under an older KEK, re-wrapped to the current one
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def restore_records(
    db: Database, keystore: Any, hospital: str, get_json: Callable[[str, str], dict[str, Any]]
) -> RecordRestore:
    """For every archive held by this hospital that has no key of its own (created after the
    backup, recreated from the log), fetch its key record from a holder of one of its replicas:
    the wrapped key must unwrap under the KEK the record names — the current one or any older KEK
    the keystore still holds (a rotation keeps an old KEK until every holder has the record under
    the new one, docs/recovery.md) — bound to the archive id, and the sealed metadata must open,
    else the record is refused and the next holder asked. The key row is kept wrapped: as the
    holder returned it when under the current KEK, else re-wrapped to the current KEK (so no row
    depends on a KEK about to be retired); title, metadata, file names and search terms are
    restored. ``get_json(peer, path)``: a signed peer GET."""
    from node import crypto
    from node.keyring import KEK_HOLDER_PREFIX, kek_holder
    from node.models import SearchTerm
    from node.services.archives import search_text
    from node.services.replicas import HELD_STATES, KeyRecord, record_aad, record_path
    from node.textindex import archive_texts, index_terms

    result = RecordRestore()
    with db.session() as session:
        keyed = select(WrappedKey.archive_id).where(
            WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"), WrappedKey.destroyed_at.is_(None)
        )
        archives = list(
            session.execute(
                select(Archive.id)
                .where(
                    Archive.custodian == hospital,
                    Archive.state.in_(HELD_STATES),
                    Archive.id.not_in(keyed),
                )
                .order_by(Archive.id)
            ).scalars()
        )
        holders: dict[str, list[str]] = {}
        for archive_id, peer in session.execute(
            select(Replica.archive_id, Replica.peer)
            .where(Replica.state != "dropped")
            .order_by(Replica.id.desc())
        ):
            if peer not in holders.setdefault(archive_id, []):
                holders[archive_id].append(peer)
    for archive_id in archives:
        found = None
        for peer in holders.get(archive_id, []):
            try:
                answer = get_json(peer, record_path(archive_id))
                record = KeyRecord.parse(json.dumps(answer).encode(), archive_id)
                kek = keystore.kek(record.kek_id)
                material = crypto.unwrap_key_material(
                    kek, record.wrapped_key, crypto.kek_wrap_aad(archive_id, record.kek_id)
                )
                metadata = json.loads(
                    crypto.open_sealed(
                        kek, record.sealed_metadata, record_aad(archive_id, record.kek_id)
                    )
                )
            except (NodeError, AnchoringError, ValueError, KeyError) as exc:
                result.problems.append(f"{archive_id} key record from {peer}: {exc}")
                continue
            except Exception as exc:  # a wrong KEK or altered bytes (CryptoError), unknown KEK
                result.problems.append(f"{archive_id} key record from {peer}: {type(exc).__name__}")
                continue
            current_id, current_kek = keystore.current_kek()
            if record.kek_id == current_id:
                wrapped = (current_id, record.wrapped_key)
            else:
                wrapped = (
                    current_id,
                    crypto.wrap_key_material(
                        current_kek, material, crypto.kek_wrap_aad(archive_id, current_id)
                    ),
                )
                result.rewrapped += 1
            del material  # unwrapped to prove the record is this node's; kept wrapped only
            found = (wrapped, metadata)
            break
        if found is None:
            result.missing.append(archive_id)
            continue
        (kek_id, wrapped_key), metadata = found
        now = datetime.now(UTC)
        with db.transaction() as session:
            archive = session.get_one(Archive, archive_id)
            session.add(
                WrappedKey(
                    archive_id=archive_id,
                    holder=kek_holder(kek_id),
                    blob=wrapped_key,
                    created_at=now,
                )
            )
            title = str(metadata.get("title", ""))
            fields = metadata.get("metadata") or {}
            archive.title, archive.metadata_json = title, fields
            archive.search_text = search_text(title, fields)
            names = metadata.get("filenames") or {}
            for version in session.execute(
                select(ArchiveVersion).where(ArchiveVersion.archive_id == archive_id)
            ).scalars():
                if names.get(str(version.version)) is not None:
                    version.filename = str(names[str(version.version)])
            terms = index_terms(*archive_texts(title, fields))
            present = set(
                session.execute(
                    select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
                ).scalars()
            )
            for term in sorted(terms - present):
                session.add(
                    SearchTerm(term=term, archive_id=archive_id, department=archive.department)
                )
        result.restored += 1
    return result


def _reader(settings: Any) -> Any:
    """The notary of the deployment file over ``settings.rpc_url``."""
    from anchoring.deployment import Deployment
    from anchoring.rpcview import NotaryReader

    deployment = Deployment.load(settings.resolved_deployment_file)
    return NotaryReader(settings.rpc_url, deployment.notary.address)


def chain_checkpoints(settings: Any, hospital: str, reader: Any = None) -> list[Any]:
    """Every on-chain checkpoint of ``hospital`` (``reader``: a ``ChainReader``; default the
    notary of the deployment file over ``settings.rpc_url``)."""
    if reader is None:
        reader = _reader(settings)
    count = reader.checkpoint_count(hospital)
    return [reader.checkpoint_at(hospital, index) for index in range(count)]


@dataclass
class PeerRestore:
    """What ``restore_from_peers`` did: the log rebuild and the blobs fetched from replicas."""

    log: LogRecovery
    records: RecordRestore = field(default_factory=RecordRestore)
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
    from node.blobstore import claim_daemons, open_node_blob_store
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
    blobs = open_node_blob_store(settings)  # a blob still in the cold tier is not fetched
    try:
        # Before any blob is fetched into it: not another node's (or tier's) IPFS daemon.
        claim_daemons(blobs, hospital, production=settings.mode == "production")
        peers = rendezvous(LOG_KEY, list(settings.peers), len(settings.peers))

        def fetch(peer: str, start: int, limit: int) -> dict[str, Any]:
            return remote.get_json(peer, f"/log/entries?start={start}&limit={limit}")

        custody = reader.custody if reader is not None else _reader(settings).custody
        log_report = rebuild_log(db, hospital, checkpoints, peers, fetch, custody=custody)
        result = PeerRestore(log=log_report)
        if log_report.complete:
            # Entries a peer holds past the rebuilt log (unanchored, not agreed by the quorum)
            # would conflict with the new ones this node logs at those indices: dropped there.
            size = log_report.local_size + log_report.recovered + log_report.tail_recovered
            for peer in peers:
                try:
                    remote.send_json(
                        peer, "POST", "/log/truncate", json.dumps({"size": size}).encode()
                    )
                except NodeError as exc:
                    log_report.problems.append(f"{peer}: log not truncated to {size}: {exc}")
            result.records = restore_records(db, keystore, hospital, remote.get_json)
            restored, moved, problems = fetch_blobs_from_replicas(db, blobs, remote.stream)
            result.blobs_restored, result.bytes_fetched = restored, moved
            result.blob_problems = problems
        return result
    finally:
        blobs.close()
        db.dispose()
        client.close()
