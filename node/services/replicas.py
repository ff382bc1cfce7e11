"""Encrypted replicas at peer hospitals (docs/recovery.md §1).

Custodian side (``ReplicaService``): every version this node holds gets ``k`` replicas of its
ciphertext (``replica_count``, per class ``replica_count_by_class``) at peer hospitals chosen by
rendezvous hashing over the active consortium hospitals with a configured node URL, so placement
is deterministic and spread evenly. Each placement, challenge outcome and drop is a REPLICA event
in this node's log; a local blob found missing or corrupt is fetched back from a replica, checked
against the recorded hash and restored (REPAIR event). Only ciphertext travels, plus one *key
record* per archive and holder: the data key as this node keeps it (wrapped under its KEK) and the
descriptive metadata (title, metadata, file names) sealed under the same KEK. The KEK never leaves
the keystore (and its backup), so a replica holder cannot read; a node that lost its database gets
the keys and titles of archives created after its last backup back from the records
(``node.recovery.restore_records``).

Holder side (``ReplicaHolder``): stores ciphertext for other active hospitals within a quota per
sender, in its own directory (never mixed with the node's own blobs), and answers fetches,
challenges and deletions only to the hospital that placed the replica.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.chain import Role
from anchoring.errors import AnchoringError
from anchoring.events import (
    EventType,
    RepairData,
    RepairEvent,
    ReplicaAction,
    ReplicaData,
    ReplicaEvent,
)
from anchoring.lifecycle import ArchiveStatus
from node import crypto
from node.alerts import AlertNotice, AlertSink, Severity
from node.blobstore import BlobNotFoundError, BlobStore
from node.config import NodeSettings
from node.db import Clock, Database, UnitOfWork, UnitRunner, utc_now
from node.errors import ConflictError, InputError, NodeError, NotFoundError, UnavailableError
from node.keyring import KEK_HOLDER_PREFIX
from node.keystore import Keystore
from node.ledger import Ledger, normalise_id
from node.members import MemberDirectory
from node.models import Archive, ArchiveVersion, HeldReplica, Replica, WrappedKey
from node.peers import PeerRefusedError
from node.remote import RemoteNodes

log = logging.getLogger(__name__)

CHALLENGE_DOMAIN = b"archivechain-replica-challenge/v1"
"""Prefix of every challenge answer's hashed bytes (so an answer is never another hash)."""
ACTIVE, FAILED, DROPPED = "active", "failed", "dropped"
PARALLEL = 8
"""Replica transfers and challenges in flight at once."""
UNREACHABLE_LIMIT = 3
"""Consecutive unanswered challenges after which a replica may count as failed (``unreachable``)."""
UNREACHABLE_AFTER = timedelta(hours=1)
"""… once its holder has also not answered for this long (since the replica's last passed
challenge, or its placement): a peer down for minutes, or one whose chain is down, keeps its
replicas."""
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
"""A peer's answers that say it cannot answer now (its chain or database is down, its proxy cannot
reach it): no evidence about the replica, counted like no answer."""
HELD_STATES = (
    ArchiveStatus.CREATED.value,
    ArchiveStatus.ARCHIVED.value,
    ArchiveStatus.DISPOSITION_REVIEW.value,
)


def cannot_answer_now(exc: Exception) -> bool:
    """True when a peer's error says only that it could not answer now: no answer (unreachable,
    timed out, stopped sending), an answer of 502, 503 or 504, or no node configured for it. A
    peer's other refusals (404: it no longer holds the replica; 401, 403, 409, 500) are answers."""
    if isinstance(exc, PeerRefusedError):
        return exc.status in UNAVAILABLE_STATUSES
    return isinstance(exc, UnavailableError) or (
        isinstance(exc, NotFoundError) and exc.code == "unknown_peer"
    )


def rendezvous(key: str, candidates: Iterable[str], count: int) -> list[str]:
    """The ``count`` candidates with the highest score SHA-256(key ‖ 0x00 ‖ address in lower case):
    highest random weight hashing, so each key's holders are stable and keys spread evenly."""

    def score(address: str) -> bytes:
        return hashlib.sha256(key.encode() + b"\x00" + address.lower().encode()).digest()

    return sorted(set(candidates), key=score, reverse=True)[:count]


def challenge_answer(nonce: bytes, data: bytes) -> str:
    """Hex SHA-256(domain ‖ nonce ‖ data): the answer to a challenge over the bytes ``data``."""
    return hashlib.sha256(CHALLENGE_DOMAIN + nonce + data).hexdigest()


def read_range(chunks: Iterable[bytes], offset: int, length: int) -> bytes:
    """Bytes ``offset`` .. ``offset + length`` of a stream of chunks."""
    out = bytearray()
    position = 0
    for chunk in chunks:
        end = position + len(chunk)
        if end > offset and position < offset + length:
            out += chunk[max(0, offset - position) : offset + length - position]
        position = end
        if position >= offset + length:
            break
    return bytes(out)


def replica_path(archive_id: str, version: int) -> str:
    """The peer API path of one replica (below ``/peer/v1``)."""
    return f"/replicas/{archive_id}/versions/{version}"


RECORD_VERSION = 0
"""``HeldReplica.version`` of an archive's key record at its holder."""
MAX_RECORD_BYTES = 60 * 1024
"""Largest key record (JSON: wrapped key and sealed metadata, base64)."""


def record_path(archive_id: str) -> str:
    """The peer API path of an archive's key record (below ``/peer/v1``)."""
    return f"/replicas/{archive_id}/record"


def record_aad(archive_id: str, kek_id: str) -> bytes:
    """Associated data of the metadata sealed in a key record (binds archive and KEK)."""
    return crypto.encode_aad("archivechain/replica-record/v1", archive_id, kek_id)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An archive's key record: its data key wrapped under the KEK ``kek_id`` (exactly the bytes
    of the custodian's ``WrappedKey`` row) and its descriptive metadata sealed under that KEK."""

    archive_id: str
    kek_id: str
    wrapped_key: bytes
    sealed_metadata: bytes

    def to_json(self) -> bytes:
        """The record as sent to and kept by a holder."""
        return json.dumps(
            {
                "archive_id": self.archive_id,
                "kek_id": self.kek_id,
                "key": base64.b64encode(self.wrapped_key).decode(),
                "sealed": base64.b64encode(self.sealed_metadata).decode(),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def parse(cls, body: bytes, archive_id: str) -> KeyRecord:
        """A record from its JSON (400 ``invalid_record`` unless exactly its fields, for
        ``archive_id``, at most ``MAX_RECORD_BYTES``)."""
        if len(body) > MAX_RECORD_BYTES:
            raise InputError(
                f"a key record is at most {MAX_RECORD_BYTES} bytes", code="invalid_record"
            )
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise InputError("the key record is not JSON", code="invalid_record") from None
        fields = {"archive_id", "kek_id", "key", "sealed"}
        if not isinstance(document, dict) or set(document) != fields:
            raise InputError(
                "a key record is {archive_id, kek_id, key, sealed}", code="invalid_record"
            )
        if not all(isinstance(document[f], str) for f in fields):
            raise InputError("key record fields are strings", code="invalid_record")
        if document["archive_id"] != archive_id:
            raise InputError("the key record names another archive", code="invalid_record")
        kek_id = document["kek_id"]
        if not 0 < len(kek_id) <= 64 or not kek_id.isascii() or not kek_id.isprintable():
            raise InputError("kek_id: 1 to 64 printable ASCII characters", code="invalid_record")
        try:
            key = base64.b64decode(document["key"], validate=True)
            sealed = base64.b64decode(document["sealed"], validate=True)
        except (ValueError, binascii.Error):
            raise InputError("key, sealed: base64", code="invalid_record") from None
        if not key or not sealed:
            raise InputError("key, sealed: not empty", code="invalid_record")
        return cls(archive_id, kek_id, key, sealed)


@dataclass
class ReplicaReport:
    """What one replica step did."""

    placed: int = 0
    verified: int = 0
    failed: int = 0
    dropped: int = 0
    repaired: int = 0
    bytes_sent: int = 0
    bytes_fetched: int = 0
    records_sent: int = 0
    keks_retired: int = 0
    unavailable: int = 0
    """Challenges (or fetches) the holder could not answer now: no answer, 502, 503 or 504."""
    problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, counter: str, amount: int) -> None:
        """Add to a counter (transfers run in several threads)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)


@dataclass(frozen=True, slots=True)
class _Version:
    archive_id: str
    version: int
    cid: str
    sha256: str
    size: int
    record_class: str


RecordInputs = tuple[str, bytes, bytes, str]
"""(KEK id, wrapped key, metadata JSON, digest) of an archive's current key record."""
_IN_CHUNK = 500


def record_inputs(session: Session, archive_ids: Sequence[str]) -> dict[str, RecordInputs]:
    """The current key record's inputs of each archive (absent when this node holds no key of
    its own for it): a few queries for the whole set."""
    found: dict[str, RecordInputs] = {}
    ids = sorted(set(archive_ids))
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        keys: dict[str, WrappedKey] = {}
        for row in session.execute(
            select(WrappedKey)
            .where(
                WrappedKey.archive_id.in_(chunk),
                WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"),
                WrappedKey.destroyed_at.is_(None),
                WrappedKey.blob.is_not(None),
            )
            .order_by(WrappedKey.id)
        ).scalars():
            keys[row.archive_id] = row  # the newest row wins, as in KeyRing.own
        filenames: dict[str, dict[str, str | None]] = {}
        for archive_id, number, name in session.execute(
            select(ArchiveVersion.archive_id, ArchiveVersion.version, ArchiveVersion.filename)
            .where(ArchiveVersion.archive_id.in_(chunk))
            .order_by(ArchiveVersion.archive_id, ArchiveVersion.version)
        ):
            filenames.setdefault(archive_id, {})[str(number)] = name
        for archive_id, title, fields in session.execute(
            select(Archive.id, Archive.title, Archive.metadata_json).where(Archive.id.in_(chunk))
        ):
            key = keys.get(archive_id)
            if key is None or key.blob is None:
                continue
            kek_id = key.holder.removeprefix(KEK_HOLDER_PREFIX)
            metadata = json.dumps(
                {"title": title, "metadata": fields, "filenames": filenames.get(archive_id, {})},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
            digest = hashlib.sha256(
                crypto.encode_aad(
                    "archivechain/replica-record-digest/v1", kek_id, key.blob, metadata
                )
            ).hexdigest()
            found[archive_id] = (kek_id, bytes(key.blob), metadata, digest)
    return found


def stale_records(
    session: Session, hospital: str, archive_ids: set[str] | None = None
) -> list[tuple[str, str, RecordInputs]]:
    """``(archive id, peer, current record)`` for every active holder of a held archive of
    ``hospital`` (of ``archive_ids``, or all) whose stored key record is missing or not the
    current one: a new version, a metadata change or a KEK rotation since it was sent. Archives
    this node holds no key for (transferred, destroyed) are not listed."""
    query = (
        select(Replica.archive_id, Replica.peer, Replica.record_digest)
        .join(Archive, Archive.id == Replica.archive_id)
        .where(
            Replica.state == ACTIVE,
            Archive.custodian == hospital,
            Archive.state.in_(HELD_STATES),
        )
    )
    if archive_ids is not None:
        if not archive_ids:
            return []
        query = query.where(Replica.archive_id.in_(sorted(archive_ids)))
    sent: dict[tuple[str, str], set[str | None]] = {}
    for archive_id, peer, digest in session.execute(query):
        sent.setdefault((archive_id, peer), set()).add(digest)
    current = record_inputs(session, [archive_id for archive_id, _ in sent])
    stale: list[tuple[str, str, RecordInputs]] = []
    for (archive_id, peer), digests in sorted(sent.items()):
        inputs = current.get(archive_id)
        if inputs is not None and digests != {inputs[3]}:
            stale.append((archive_id, peer, inputs))
    return stale


class ReplicaService:
    """Custodian side: place, challenge, repair from and drop this node's replicas."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        blobs: BlobStore,
        members: MemberDirectory,
        remote: RemoteNodes,
        alerts: AlertSink,
        keystore: Keystore,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.ledger = ledger
        self.blobs = blobs
        self.members = members
        self.remote = remote
        self.alerts = alerts
        self.keystore = keystore
        self.clock = clock
        self.hospital = ledger.hospital
        self._repair_locks = tuple(threading.Lock() for _ in range(64))

    # -- placement -----------------------------------------------------------------------------

    def candidates(self) -> list[str]:
        """Active consortium hospitals other than this one that have a configured node URL."""
        return [
            m.address
            for m in self.members.members()
            if m.role is Role.HOSPITAL
            and m.active
            and m.address != self.hospital
            and m.address in self.settings.peers
        ]

    def wanted(self, record_class: str) -> int:
        """Replicas wanted for a version of ``record_class``."""
        return self.settings.replica_count_by_class.get(record_class, self.settings.replica_count)

    def tick(self) -> ReplicaReport:
        """One scheduled step: place missing replicas, drop replicas no longer needed (failed and
        replaced, or of destroyed archives), then challenge the replicas that are due (not verified
        for ``replica_challenge_interval``), those checked longest ago first."""
        report = ReplicaReport()
        self.release_inherited(report)
        self.place(report)
        self.send_records(report)
        self.retire_keks(report)
        self.drop_unneeded(report)
        self.challenge(report, self.settings.replica_batch)
        return report

    def retire_keks(self, report: ReplicaReport | None = None) -> ReplicaReport:
        """After a KEK rotation: retire the old KEKs once no data key is wrapped under them and
        every holder has the key record sealed under the current KEK (``stale_records`` empty).
        Until then the old KEKs stay in the keystore, so ``restore --from-peers`` can open a
        record that a holder still keeps under one of them."""
        from node.services.kek import KekRotationService

        report = report or ReplicaReport()
        rotation = KekRotationService(keystore=self.keystore, db=self.db, units=self.units)
        if not rotation.pending_kek_ids():
            return report
        try:
            report.add("keks_retired", len(rotation.retire_unused()))
        except Exception as exc:  # the keystore could not be saved: the next step retries
            report.problems.append(f"KEK retirement: {type(exc).__name__}")
        return report

    def place(self, report: ReplicaReport | None = None, limit: int | None = None) -> ReplicaReport:
        """Place the replicas missing for held versions (up to ``limit`` versions)."""
        report = report or ReplicaReport()
        limit = limit or self.settings.replica_batch
        if not self.settings.peers:
            return report  # no peer configured: nothing to ask the registry
        try:
            candidates = self.candidates()
        except UnavailableError as exc:
            report.problems.append(f"registry: {exc}")
            return report
        if not candidates:
            return report
        work: list[tuple[_Version, str]] = []
        for version, active, failed in self._short(limit):
            order = [
                p
                for p in rendezvous(version.archive_id, candidates, len(candidates))
                if p not in active and p not in failed
            ]
            work += [(version, p) for p in order[: self.wanted(version.record_class) - len(active)]]
        # Several uploads at once (their units still commit one after another, grouped).
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda item: self._place_one(item[0], item[1], report), work))
        self.send_records(report, {version.archive_id for version, _ in work})
        return report

    # -- key records ---------------------------------------------------------------------------

    def send_records(
        self, report: ReplicaReport | None = None, archive_ids: set[str] | None = None
    ) -> ReplicaReport:
        """Store the current key record at every active holder of each held archive (of
        ``archive_ids``, or all) whose stored record is missing or out of date (new version,
        metadata changed, KEK rotated)."""
        report = report or ReplicaReport()
        if archive_ids is not None and not archive_ids:
            return report
        work: list[tuple[str, str, KeyRecord, str]] = []
        with self.db.session() as session:
            stale = stale_records(session, self.hospital, archive_ids)
        for archive_id, peer, (kek_id, wrapped, metadata, digest) in stale:
            try:
                kek = self.keystore.kek(kek_id)
            except Exception as exc:  # a KEK retired mid-rotation: next step, re-wrapped
                report.problems.append(f"{archive_id} key record: {type(exc).__name__}")
                continue
            sealed = crypto.seal(kek, metadata, record_aad(archive_id, kek_id))
            work.append((archive_id, peer, KeyRecord(archive_id, kek_id, wrapped, sealed), digest))

        def send(item: tuple[str, str, KeyRecord, str]) -> None:
            archive_id, peer, record, digest = item
            try:
                self.remote.send_json(peer, "PUT", record_path(archive_id), record.to_json())
            except NodeError as exc:
                report.problems.append(f"{archive_id} key record → {peer}: {exc}")
                return

            def unit(uow: UnitOfWork) -> None:
                for row in uow.session.execute(
                    select(Replica).where(Replica.archive_id == archive_id, Replica.peer == peer)
                ).scalars():
                    row.record_digest = digest

            self.units.run(unit)
            report.add("records_sent", 1)

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(send, work))
        return report

    def _short(self, limit: int) -> list[tuple[_Version, set[str], set[str]]]:
        """Held versions with fewer active replicas than wanted: (version, active, failed peers)."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    ArchiveVersion.archive_id,
                    ArchiveVersion.version,
                    ArchiveVersion.cid,
                    ArchiveVersion.ciphertext_sha256,
                    ArchiveVersion.stored_size,
                    Archive.record_class,
                )
                .join(Archive, Archive.id == ArchiveVersion.archive_id)
                .where(
                    ArchiveVersion.blob_deleted_at.is_(None),
                    Archive.custodian == self.hospital,
                    Archive.state.in_(HELD_STATES),
                )
                .order_by(ArchiveVersion.id)
            ).all()
            existing: dict[tuple[str, int], list[tuple[str, str]]] = {}
            for archive_id, number, peer, state in session.execute(
                select(Replica.archive_id, Replica.version, Replica.peer, Replica.state).where(
                    Replica.state != DROPPED
                )
            ):
                existing.setdefault((archive_id, number), []).append((peer, state))
        short: list[tuple[_Version, set[str], set[str]]] = []
        for row in rows:
            version = _Version(*row)
            held = existing.get((version.archive_id, version.version), [])
            active = {p for p, s in held if s == ACTIVE}
            failed = {p for p, s in held if s == FAILED}
            if len(active) < self.wanted(version.record_class):
                short.append((version, active, failed))
                if len(short) >= limit:
                    break
        return short

    def _place_one(self, version: _Version, peer: str, report: ReplicaReport) -> bool:
        # Streamed from the blob store to the peer, signed by the recorded hash: never held
        # whole in memory. A local blob that is not those bytes is refused by the peer (its
        # digest differs), so corruption is never replicated; the fixity audit repairs it.
        if version.size <= 0:
            report.problems.append(f"{version.archive_id}/{version.version}: size unknown")
            return False
        try:
            chunks = _Counted(self.blobs.open_stream(version.cid))
            answer = self.remote.send_stream(
                peer,
                "PUT",
                replica_path(version.archive_id, version.version),
                chunks,
                version.sha256,
                version.size,
            )
        except (OSError, NodeError) as exc:
            report.problems.append(f"{version.archive_id}/{version.version} → {peer}: {exc}")
            log.warning("replica of %s not placed at %s: %s", version.archive_id, peer, exc)
            return False
        if answer.get("sha256") != version.sha256 or answer.get("size") != version.size:
            report.problems.append(f"{peer} acknowledged other bytes")
            return False
        body_size = version.size

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.execute(
                select(Replica).where(
                    Replica.archive_id == version.archive_id,
                    Replica.version == version.version,
                    Replica.peer == peer,
                )
            ).scalar_one_or_none()
            self._log(uow, version.archive_id, ReplicaAction.PLACED, peer, version)
            if row is None:
                row = Replica(
                    archive_id=version.archive_id,
                    version=version.version,
                    peer=peer,
                    ciphertext_sha256=version.sha256,
                    size=body_size,
                    state=ACTIVE,
                    placed_at=uow.now,
                    failures=0,
                )
                uow.session.add(row)
            row.state, row.placed_at, row.failures, row.verified_at = ACTIVE, uow.now, 0, None
            row.record_digest = None  # the key record goes (again) with the replica

        try:
            self.units.run(unit)
        except (NodeError, AnchoringError) as exc:  # e.g. the archive was destroyed meanwhile
            report.problems.append(f"{version.archive_id}: REPLICA refused: {exc}")
            return False
        report.add("placed", 1)
        report.add("bytes_sent", body_size)
        return True

    def _log(
        self,
        uow: UnitOfWork,
        archive_id: str,
        action: ReplicaAction,
        peer: str,
        version: _Version | Replica,
    ) -> None:
        archive = uow.session.execute(
            select(Archive).where(Archive.id == archive_id).with_for_update()
        ).scalar_one()
        if archive.custodian != self.hospital:
            raise ConflictError(f"archive {archive_id} is not ours", code="not_custodian")
        state = self.ledger.state(uow.session, archive)
        number = version.version
        sha = version.sha256 if isinstance(version, _Version) else version.ciphertext_sha256
        data = ReplicaData(action=action, peer=peer, version=number, ciphertext_sha256=sha)
        self.ledger.record(uow, archive, state, ReplicaEvent, self.hospital, data)

    # -- challenges ----------------------------------------------------------------------------

    def challenge(
        self, report: ReplicaReport | None = None, limit: int = 100, *, every: bool = False
    ) -> ReplicaReport:
        """Challenge up to ``limit`` active replicas that are due (least recently verified first):
        not yet verified, or last verified ``replica_challenge_interval`` ago or more (``every``:
        due or not, as the drill's "challenge all"). A replica whose challenge went unanswered
        stays due (its ``verified_at`` does not move), so it is asked again at the next step. Each
        peer hashes a random byte range with a fresh nonce; the answer is compared with the same
        range of the local blob (or, when the local blob is gone or corrupt, the whole replica is
        fetched and checked against the recorded hash, which also repairs the local blob).

        The interval keeps the evidence to a periodic proof of retrievability: every passed
        challenge is a REPLICA ``verified`` event in the archive's chain, and challenging each
        replica at every step (every 30 s) grew an idle archive's chain by thousands of events a
        day."""
        report = report or ReplicaReport()
        query = (
            select(Replica)
            .join(Archive, Archive.id == Replica.archive_id)
            .where(Replica.state == ACTIVE, Archive.state.in_(HELD_STATES))
        )
        if not every:
            due = self.clock() - timedelta(seconds=self.settings.replica_challenge_interval)
            query = query.where(or_(Replica.verified_at.is_(None), Replica.verified_at <= due))
        with self.db.session() as session:
            rows = list(
                session.execute(
                    query.order_by(
                        Replica.verified_at.is_not(None), Replica.verified_at, Replica.id
                    ).limit(limit)
                ).scalars()
            )
            session.expunge_all()
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda row: self._challenge_one(row, report), rows))
        return report

    def challenge_versions(self, versions: Sequence[tuple[str, int]]) -> tuple[int, int, int]:
        """Fixity-audit hook: challenge every active replica of ``versions`` (``(archive id,
        version)`` pairs whose local blob the audit just found intact), as ``challenge`` does but
        whether due or not (``replica_challenge_interval`` does not apply: an audit, scheduled every
        ``fixity_interval`` or asked for, checks now; a pass restarts the interval).
        Returns (verified, failed, unavailable): a challenge the holder could not answer now
        (no answer, 502, 503, 504) is unavailable, not failed, until the holder has been silent
        long enough to count as gone (``UNREACHABLE_LIMIT``, ``UNREACHABLE_AFTER``)."""
        wanted = {(normalise_id(a), n) for a, n in versions}
        if not wanted:
            return 0, 0, 0
        rows: list[Replica] = []
        with self.db.session() as session:
            ids = sorted({a for a, _ in wanted})
            for start in range(0, len(ids), _IN_CHUNK):
                rows += [
                    row
                    for row in session.execute(
                        select(Replica)
                        .where(
                            Replica.archive_id.in_(ids[start : start + _IN_CHUNK]),
                            Replica.state == ACTIVE,
                        )
                        .order_by(Replica.id)
                    ).scalars()
                    if (row.archive_id, row.version) in wanted
                ]
            session.expunge_all()
        report = ReplicaReport()
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda row: self._challenge_one(row, report), rows))
        return report.verified, report.failed, report.unavailable

    def _local(self, row: Replica) -> bytes | None:
        """The version's local ciphertext if present and intact."""
        with self.db.session() as session:
            cid = session.execute(
                select(ArchiveVersion.cid).where(
                    ArchiveVersion.archive_id == row.archive_id,
                    ArchiveVersion.version == row.version,
                )
            ).scalar_one()
        try:
            body = b"".join(self.blobs.open_stream(cid))
        except (OSError, NodeError):
            return None
        return body if hashlib.sha256(body).hexdigest() == row.ciphertext_sha256 else None

    def _challenge_one(self, row: Replica, report: ReplicaReport) -> None:
        local = self._local(row)
        if local is None:  # the local copy is bad: the replica must deliver all of it
            unanswered: dict[int, str] = {}
            if self._repair_with(row.archive_id, row.version, report, unanswered):
                return
            if row.id in unanswered:  # the holder could not answer now: not evidence of loss
                self._unanswered(row, report, unanswered[row.id])
                return
            self._outcome(row, ok=False, reason="fetch_failed", report=report)
            return
        length = min(self.settings.replica_challenge_bytes, row.size)
        offset = secrets.randbelow(row.size - length + 1) if row.size else 0
        nonce = secrets.token_bytes(32)
        expected = challenge_answer(nonce, local[offset : offset + length])
        body = json.dumps({"nonce": nonce.hex(), "offset": offset, "length": length}).encode()
        try:
            answer = self.remote.send_json(
                row.peer, "POST", replica_path(row.archive_id, row.version) + "/challenge", body
            )
        except (UnavailableError, NotFoundError) as exc:
            if isinstance(exc, PeerRefusedError) and not cannot_answer_now(exc):
                # An answer, and a no (404: the replica is gone; 401, 403, 409, 500).
                self._outcome(row, ok=False, reason=f"refused_{exc.status}", report=report)
            else:
                self._unanswered(row, report, str(exc))
            return
        ok = answer.get("sha256") == expected
        self._outcome(row, ok=ok, reason="ok" if ok else "wrong_answer", report=report)

    def _unanswered(self, row: Replica, report: ReplicaReport, why: str) -> None:
        """The holder could not answer now (no answer, 502, 503, 504; e.g. its chain is down): no
        event and no alert, the replica stays active and is challenged again at the next step.
        Only a holder silent for ``UNREACHABLE_LIMIT`` consecutive challenges and
        ``UNREACHABLE_AFTER`` since the replica was due for a challenge (its last pass plus
        ``replica_challenge_interval``, or its placement) loses it (``unreachable``): the silence
        counts from when the replica job first asked, not from a pass a day ago."""
        log.warning("replica challenge to %s unanswered: %s", row.peer, why)
        interval = timedelta(seconds=self.settings.replica_challenge_interval)

        def unit(uow: UnitOfWork) -> bool:
            stored = uow.session.get_one(Replica, row.id)
            stored.failures += 1
            silent_since = (
                stored.placed_at if stored.verified_at is None else stored.verified_at + interval
            )
            return (
                stored.failures >= UNREACHABLE_LIMIT and uow.now - silent_since >= UNREACHABLE_AFTER
            )

        if self.units.run(unit):
            self._outcome(row, ok=False, reason="unreachable", report=report)
            return
        report.add("unavailable", 1)
        report.problems.append(f"{row.peer} did not answer a challenge: {why}")

    def _outcome(self, row: Replica, *, ok: bool, reason: str, report: ReplicaReport) -> None:
        action = ReplicaAction.VERIFIED if ok else ReplicaAction.FAILED

        def unit(uow: UnitOfWork) -> bool:
            stored = uow.session.get_one(Replica, row.id)
            if stored.state != ACTIVE:
                return False  # already failed (e.g. by the repair that fetched it) or dropped
            self._log(uow, row.archive_id, action, row.peer, stored)
            if ok:
                stored.verified_at, stored.failures = uow.now, 0
            else:
                stored.state = FAILED
            return True

        try:
            if not self.units.run(unit):
                return
        except (NodeError, AnchoringError) as exc:
            report.problems.append(f"{row.archive_id}: REPLICA refused: {exc}")
            return
        if ok:
            report.add("verified", 1)
            return
        report.add("failed", 1)
        self.alerts.raise_alert(
            AlertNotice(
                "replica_failed",
                row.archive_id,
                Severity.CRITICAL,
                {"version": row.version, "peer": row.peer, "reason": reason},
            )
        )

    # -- repair --------------------------------------------------------------------------------

    def ensure_local(self, archive_id: str, version: int) -> str | None:
        """Repair on read (``node.readback``): the CID of the version's local ciphertext once it
        is present and intact, restored from a replica first (``repair``) when it is not; None
        when no replica delivered it."""
        archive_id = normalise_id(archive_id)
        if not self.repair(archive_id, version):
            return None
        with self.db.session() as session:
            return session.execute(
                select(ArchiveVersion.cid).where(
                    ArchiveVersion.archive_id == archive_id, ArchiveVersion.version == version
                )
            ).scalar_one()

    def repair(self, archive_id: str, version: int, report: ReplicaReport | None = None) -> bool:
        """Restore a missing or corrupt local blob from a replica: fetched, checked against the
        recorded SHA-256, stored, and logged (REPAIR). A replica that delivers other bytes is
        recorded as failed. True when the local blob is intact afterwards.

        Repairs of one version are serialised (readers, the fixity audit, challenges and
        ``repair_missing`` may ask at once), and each first re-checks the local blob: one that a
        concurrent repair restored meanwhile is not fetched or logged again."""
        return self._repair_with(archive_id, version, report or ReplicaReport(), {})

    def _repair_with(
        self, archive_id: str, version: int, report: ReplicaReport, unanswered: dict[int, str]
    ) -> bool:
        """``repair``; ``unanswered`` gets the id of each replica whose holder could not answer
        now (no answer, 502, 503, 504), with the reason."""
        archive_id = normalise_id(archive_id)
        with self._repair_locks[hash((archive_id, version)) % len(self._repair_locks)]:
            return self._repair(archive_id, version, report, unanswered)

    def _intact(self, cid: str, sha256: str) -> bool:
        """True when the local blob ``cid`` is present and hashes to ``sha256``."""
        hasher = hashlib.sha256()
        try:
            for chunk in self.blobs.open_stream(cid):
                hasher.update(chunk)
        except (OSError, NodeError):
            return False
        return hasher.hexdigest() == sha256

    def _repair(
        self, archive_id: str, version: int, report: ReplicaReport, unanswered: dict[int, str]
    ) -> bool:
        with self.db.session() as session:
            target = session.execute(
                select(ArchiveVersion).where(
                    ArchiveVersion.archive_id == archive_id, ArchiveVersion.version == version
                )
            ).scalar_one_or_none()
            replicas = list(
                session.execute(
                    select(Replica)
                    .where(
                        Replica.archive_id == archive_id,
                        Replica.version == version,
                        Replica.state == ACTIVE,
                    )
                    .order_by(Replica.verified_at.desc(), Replica.id)
                ).scalars()
            )
            session.expunge_all()
        if target is None:
            return False
        if self._intact(target.cid, target.ciphertext_sha256):
            return True  # restored by a concurrent repair (or never broken)
        for row in replicas:
            try:
                counted = _Counted(self.remote.stream(row.peer, replica_path(archive_id, version)))
                ref = self.blobs.put_stream(counted)
            except NodeError as exc:  # unreachable, refused, stopped sending
                report.problems.append(f"{row.peer}: {exc}")
                if cannot_answer_now(exc):
                    unanswered[row.id] = str(exc)
                continue
            report.add("bytes_fetched", counted.size)
            if ref.sha256 != target.ciphertext_sha256:
                if ref.cid != target.cid:
                    self.blobs.delete(ref.cid)
                self._outcome(row, ok=False, reason="wrong_bytes", report=report)
                continue

            def unit(uow: UnitOfWork, row: Replica = row, cid: str = ref.cid) -> None:
                archive = uow.session.execute(
                    select(Archive).where(Archive.id == archive_id).with_for_update()
                ).scalar_one()
                state = self.ledger.state(uow.session, archive)
                data = RepairData(
                    version=version, ciphertext_sha256=target.ciphertext_sha256, source=row.peer
                )
                self.ledger.record(uow, archive, state, RepairEvent, self.hospital, data)
                stored = uow.session.get_one(ArchiveVersion, target.id)
                stored.cid = cid

            self.units.run(unit)
            report.add("repaired", 1)
            log.info("repaired %s v%d from the replica at %s", archive_id, version, row.peer)
            return True
        return False

    def repair_missing(self, report: ReplicaReport | None = None) -> ReplicaReport:
        """Repair every held version whose local blob is absent (e.g. a wiped blob directory)."""
        report = report or ReplicaReport()
        with self.db.session() as session:
            rows = session.execute(
                select(ArchiveVersion.archive_id, ArchiveVersion.version, ArchiveVersion.cid)
                .join(Archive, Archive.id == ArchiveVersion.archive_id)
                .where(
                    ArchiveVersion.blob_deleted_at.is_(None),
                    Archive.custodian == self.hospital,
                    Archive.state.in_(HELD_STATES),
                )
                .order_by(ArchiveVersion.id)
            ).all()
        missing = [(a, n) for a, n, cid in rows if not self.blobs.exists(cid)]
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda item: self.repair(item[0], item[1], report), missing))
        return report

    def repair_failures(self, failures: Sequence[Any]) -> None:
        """Fixity-audit hook: repair each failed version (``archive_id``, ``version``)."""
        for failure in failures:
            try:
                self.repair(failure.archive_id, failure.version)
            except (NodeError, AnchoringError, OSError) as exc:
                log.error("repair of %s failed: %s", failure.archive_id, exc)

    # -- dropping ------------------------------------------------------------------------------

    def holders(self, session: Session, archive_id: str) -> list[dict[str, Any]]:
        """Replicas of an archive not yet dropped (for its destruction certificate)."""
        return [
            {"peer": peer, "version": number}
            for peer, number in session.execute(
                select(Replica.peer, Replica.version)
                .where(Replica.archive_id == archive_id, Replica.state != DROPPED)
                .order_by(Replica.version, Replica.peer)
            )
        ]

    def holders_many(
        self, session: Session, archive_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """``holders`` of many archives in one query (archives without replicas are absent)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for archive_id, peer, number in session.execute(
            select(Replica.archive_id, Replica.peer, Replica.version)
            .where(Replica.archive_id.in_(archive_ids), Replica.state != DROPPED)
            .order_by(Replica.archive_id, Replica.version, Replica.peer)
        ).tuples():
            found.setdefault(archive_id, []).append({"peer": peer, "version": number})
        return found

    def drop_unneeded(self, report: ReplicaReport | None = None) -> ReplicaReport:
        """Delete at their holders the replicas of destroyed (or no longer held) archives, and
        failed replicas once the version has its replicas elsewhere; log REPLICA ``dropped``."""
        report = report or ReplicaReport()
        with self.db.session() as session:
            rows = list(
                session.execute(
                    select(Replica, Archive.state, Archive.record_class, Archive.custodian)
                    .join(Archive, Archive.id == Replica.archive_id)
                    .where(Replica.state != DROPPED)
                    .order_by(Replica.id)
                ).all()
            )
            active_count: dict[tuple[str, int], int] = {}
            for replica, _state, _cls, _custodian in rows:
                if replica.state == ACTIVE:
                    key = (replica.archive_id, replica.version)
                    active_count[key] = active_count.get(key, 0) + 1
            session.expunge_all()
        for replica, state, record_class, custodian in rows:
            if state == ArchiveStatus.TRANSFER_PENDING.value:
                continue  # in transit: kept until accepted (then dropped) or cancelled (kept)
            transferred = custodian != self.hospital
            gone = transferred or state not in HELD_STATES
            replaced = replica.state == FAILED and active_count.get(
                (replica.archive_id, replica.version), 0
            ) >= self.wanted(record_class)
            if gone or replaced:
                # After a transfer this node may no longer log on the archive: the new custodian
                # logs REPLICA dropped for the replicas it inherits (``release_inherited``).
                self._drop(replica, report, log_event=not transferred)
        return report

    def release_inherited(self, report: ReplicaReport | None = None) -> ReplicaReport:
        """For archives received by transfer: log REPLICA ``dropped`` for each replica the chain
        still counts from the previous custodian (placed by it, deleted by it at its holders once
        custody moved: this node cannot fetch them), so that this node places its own."""
        report = report or ReplicaReport()
        with self.db.session() as session:
            received = list(
                session.execute(
                    select(Archive.id)
                    .where(
                        Archive.custodian == self.hospital,
                        Archive.state.in_(HELD_STATES),
                        Archive.id.in_(
                            select(storage.LogEntry.archive_id).where(
                                storage.LogEntry.event_type == EventType.TRANSFER_ACCEPT.value
                            )
                        ),
                    )
                    .order_by(Archive.id)
                ).scalars()
            )
            pending = []
            for archive_id in received:  # read first: a unit only where there is work
                archive = session.get_one(Archive, archive_id)
                ours = set(
                    session.execute(
                        select(Replica.peer, Replica.version).where(
                            Replica.archive_id == archive_id, Replica.state != DROPPED
                        )
                    ).tuples()
                )
                if set(self.ledger.state(session, archive).replicas) - ours:
                    pending.append(archive_id)
        for archive_id in pending:

            def unit(uow: UnitOfWork, archive_id: str = archive_id) -> int:
                archive = uow.session.execute(
                    select(Archive).where(Archive.id == archive_id).with_for_update()
                ).scalar_one()
                ours = {
                    (peer, number)
                    for peer, number in uow.session.execute(
                        select(Replica.peer, Replica.version).where(
                            Replica.archive_id == archive_id, Replica.state != DROPPED
                        )
                    )
                }
                state = self.ledger.state(uow.session, archive)
                inherited = sorted(set(state.replicas) - ours)
                for peer, number in inherited:
                    recorded = next(v for v in state.versions if v.version == number)
                    data = ReplicaData(
                        action=ReplicaAction.DROPPED,
                        peer=peer,
                        version=number,
                        ciphertext_sha256=recorded.ciphertext_sha256,
                    )
                    state = self.ledger.record(
                        uow, archive, state, ReplicaEvent, self.hospital, data
                    )
                return len(inherited)

            try:
                report.add("dropped", self.units.run(unit))
            except (NodeError, AnchoringError) as exc:
                report.problems.append(f"{archive_id}: inherited replicas: {exc}")
        return report

    def _drop(self, row: Replica, report: ReplicaReport, *, log_event: bool) -> None:
        try:
            self.remote.send_json(row.peer, "DELETE", replica_path(row.archive_id, row.version))
        except NodeError as exc:  # a refusing or absent holder: dropped on our side anyway
            log.warning("replica delete at %s not confirmed: %s", row.peer, exc)

        def unit(uow: UnitOfWork) -> None:
            stored = uow.session.get_one(Replica, row.id)
            if stored.state == DROPPED:
                return
            archive = uow.session.get(Archive, row.archive_id)
            if log_event and archive is not None and archive.custodian == self.hospital:
                self._log(uow, row.archive_id, ReplicaAction.DROPPED, row.peer, stored)
            stored.state = DROPPED

        try:
            self.units.run(unit)
        except (NodeError, AnchoringError) as exc:
            report.problems.append(f"{row.archive_id}: REPLICA dropped refused: {exc}")
            return
        report.add("dropped", 1)


class _Counted:
    """Iterates chunks and counts their bytes."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            yield chunk


# ------------------------------------------------------------------------------------------
# Holder side


@dataclass(frozen=True, slots=True)
class Challenge:
    """A replica challenge: hash ``length`` bytes from ``offset`` after ``nonce``."""

    nonce: bytes
    offset: int
    length: int

    @classmethod
    def parse(cls, body: bytes, max_length: int) -> Challenge:
        """The challenge in a JSON body ``{"nonce": 64 hex, "offset": int, "length": int}``."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise InputError("the challenge is not JSON", code="invalid_challenge") from None
        if not isinstance(document, dict) or set(document) != {"nonce", "offset", "length"}:
            raise InputError(
                "a challenge is an object with nonce, offset and length", code="invalid_challenge"
            )
        nonce, offset, length = document["nonce"], document["offset"], document["length"]
        if not isinstance(nonce, str) or len(nonce) != 64:
            raise InputError("nonce: 64 hex characters", code="invalid_challenge")
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            raise InputError("nonce: 64 hex characters", code="invalid_challenge") from None
        for name, value in (("offset", offset), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name}: a non-negative integer", code="invalid_challenge")
        if length > max_length:
            raise InputError(f"length: at most {max_length}", code="invalid_challenge")
        return cls(raw, offset, length)


class ReplicaHolder:
    """Holder side: ciphertext kept for other hospitals, within a quota per sender."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        store: BlobStore,
        hospital: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.store = store
        self.hospital = hospital

    def accept(self, sender: str, archive_id: str, version: int, body: bytes) -> dict[str, Any]:
        """``accept_stream`` of a body held in memory (tests, small bodies)."""
        sha = hashlib.sha256(body).hexdigest()
        return self.accept_stream(sender, archive_id, version, [body], sha, len(body))

    def accept_stream(
        self,
        sender: str,
        archive_id: str,
        version: int,
        chunks: Iterable[bytes],
        sha256: str,
        declared: int | None,
    ) -> dict[str, Any]:
        """Store the streamed ciphertext as ``sender``'s replica of the version (idempotent for
        the same bytes). ``sha256``: the digest the sender signed; ``declared``: its
        Content-Length. Refused before a byte is read: 409 ``replica_conflict`` for other bytes
        under the same name, ``replica_quota_exceeded`` beyond the quota; after reading, 400
        ``replica_digest_mismatch`` when the bytes are not the announced ones (nothing kept).
        The sender is an active hospital (checked by the peer API).

        The quota is checked again in the unit of work that inserts the row, against the total
        held for the sender read there: units run one after another on the writer thread, so
        uploads streamed in parallel (each of which passed the checks before and after reading
        against a total that did not yet count the others) cannot together exceed it. One
        refused there answers ``replica_quota_exceeded`` too and its stored bytes are deleted
        (unless another row names the same blob)."""
        archive_id = normalise_id(archive_id)
        if sender == self.hospital:
            raise InputError("a node does not hold its own replicas", code="self_target")
        with self.db.session() as session:
            existing = self._row(session, sender, archive_id, version)
            used = _held_total(session, sender)
        if existing is not None:
            if existing.sha256 != sha256:
                raise ConflictError(
                    "another ciphertext is held under this version", code="replica_conflict"
                )
            if self.store.exists(existing.cid):
                return {"sha256": sha256, "size": existing.size}
        elif declared is not None and used + declared > self.settings.replica_quota_bytes:
            raise ConflictError(
                "the replica quota for this hospital is used up", code="replica_quota_exceeded"
            )
        ref = self.store.put_stream(chunks)
        if ref.sha256 != sha256 or (declared is not None and ref.size != declared):
            self._delete_unshared(ref.cid)
            raise InputError(
                "the replica's bytes are not the ones announced and signed",
                code="replica_digest_mismatch",
            )
        if existing is None and used + ref.size > self.settings.replica_quota_bytes:
            self._delete_unshared(ref.cid)
            raise ConflictError(
                "the replica quota for this hospital is used up", code="replica_quota_exceeded"
            )

        def unit(uow: UnitOfWork) -> None:
            row = self._row(uow.session, sender, archive_id, version)
            if row is None:
                if _held_total(uow.session, sender) + ref.size > self.settings.replica_quota_bytes:
                    raise ConflictError(
                        "the replica quota for this hospital is used up",
                        code="replica_quota_exceeded",
                    )
                uow.session.add(
                    HeldReplica(
                        custodian=sender,
                        archive_id=archive_id,
                        version=version,
                        cid=ref.cid,
                        sha256=sha256,
                        size=ref.size,
                        stored_at=uow.now,
                    )
                )
            else:
                row.cid = ref.cid

        try:
            self.units.run(unit)
        except ConflictError:
            self._delete_unshared(ref.cid)
            raise
        return {"sha256": sha256, "size": ref.size}

    def accept_record(self, sender: str, archive_id: str, body: bytes) -> dict[str, Any]:
        """Keep ``sender``'s key record of an archive (replacing the one before: records follow
        new versions, metadata changes and KEK rotations). Opaque here: its key is wrapped and its
        metadata sealed under the sender's KEK. Only next to a replica of the archive held for the
        sender (409 ``replica_not_found`` otherwise), within the same quota."""
        archive_id = normalise_id(archive_id)
        if sender == self.hospital:
            raise InputError("a node does not hold its own replicas", code="self_target")
        KeyRecord.parse(body, archive_id)
        sha = hashlib.sha256(body).hexdigest()
        with self.db.session() as session:
            replicas = session.execute(
                select(func.count()).where(
                    HeldReplica.custodian == sender,
                    HeldReplica.archive_id == archive_id,
                    HeldReplica.version != RECORD_VERSION,
                )
            ).scalar_one()
            existing = self._row(session, sender, archive_id, RECORD_VERSION)
            used = _held_total(session, sender)
        if not replicas:
            raise NotFoundError(
                "no replica of this archive is held for the sender", code="replica_not_found"
            )
        if existing is not None and existing.sha256 == sha and self.store.exists(existing.cid):
            return {"sha256": sha, "size": len(body)}
        freed = existing.size if existing is not None else 0
        if used - freed + len(body) > self.settings.replica_quota_bytes:
            raise ConflictError(
                "the replica quota for this hospital is used up", code="replica_quota_exceeded"
            )
        ref = self.store.put_stream([body])

        def unit(uow: UnitOfWork) -> str | None:
            row = self._row(uow.session, sender, archive_id, RECORD_VERSION)
            held = _held_total(uow.session, sender) - (row.size if row is not None else 0)
            if held + len(body) > self.settings.replica_quota_bytes:  # again: parallel uploads
                raise ConflictError(
                    "the replica quota for this hospital is used up", code="replica_quota_exceeded"
                )
            if row is None:
                uow.session.add(
                    HeldReplica(
                        custodian=sender,
                        archive_id=archive_id,
                        version=RECORD_VERSION,
                        cid=ref.cid,
                        sha256=sha,
                        size=len(body),
                        stored_at=uow.now,
                    )
                )
                return None
            old = row.cid
            row.cid, row.sha256, row.size, row.stored_at = ref.cid, sha, len(body), uow.now
            return old if old != ref.cid else None

        try:
            replaced = self.units.run(unit)
        except ConflictError:
            self._delete_unshared(ref.cid)
            raise
        if replaced is not None:
            self._delete_unshared(replaced)
        return {"sha256": sha, "size": len(body)}

    def fetch_record(self, sender: str, archive_id: str) -> bytes:
        """``sender``'s key record of the archive (404 ``replica_not_found`` to anyone else)."""
        row = self._held(sender, archive_id, RECORD_VERSION)
        try:
            return b"".join(self.store.open_stream(row.cid))
        except BlobNotFoundError:
            raise NotFoundError("no such key record", code="replica_not_found") from None

    def _delete_unshared(self, cid: str) -> None:
        with self.db.session() as session:
            shared = session.execute(
                select(func.count()).select_from(HeldReplica).where(HeldReplica.cid == cid)
            ).scalar_one()
        if not shared:
            self.store.delete(cid)

    def fetch(self, sender: str, archive_id: str, version: int) -> Iterator[bytes]:
        """The ciphertext of ``sender``'s replica (404 ``replica_not_found`` to anyone else)."""
        row = self._held(sender, archive_id, version)
        try:
            return self.store.open_stream(row.cid)
        except BlobNotFoundError:
            raise NotFoundError("no such replica", code="replica_not_found") from None

    def answer(self, sender: str, archive_id: str, version: int, body: bytes) -> dict[str, str]:
        """Answer a challenge: SHA-256(domain ‖ nonce ‖ the requested range of the stored bytes)."""
        challenge = Challenge.parse(body, 1024 * 1024)
        row = self._held(sender, archive_id, version)
        if challenge.offset + challenge.length > row.size:
            raise InputError("the range ends after the replica", code="invalid_challenge")
        try:
            chunks = self.store.open_stream(row.cid)
        except BlobNotFoundError:
            raise NotFoundError("no such replica", code="replica_not_found") from None
        data = read_range(chunks, challenge.offset, challenge.length)
        return {"sha256": challenge_answer(challenge.nonce, data)}

    def drop(self, sender: str, archive_id: str, version: int) -> dict[str, bool]:
        """Delete ``sender``'s replica (absent: ``deleted`` false); with the archive's last
        replica held for the sender, its key record goes too."""
        archive_id = normalise_id(archive_id)
        with self.db.session() as session:
            if self._row(session, sender, archive_id, version) is None:
                return {"deleted": False}

        def unit(uow: UnitOfWork) -> list[str]:
            stored = self._row(uow.session, sender, archive_id, version)
            if stored is None:
                return []
            cids = [stored.cid]
            uow.session.delete(stored)
            uow.session.flush()
            left = uow.session.execute(
                select(HeldReplica).where(
                    HeldReplica.custodian == sender, HeldReplica.archive_id == archive_id
                )
            ).scalars()
            rest = list(left)
            if all(r.version == RECORD_VERSION for r in rest):
                for record in rest:
                    cids.append(record.cid)
                    uow.session.delete(record)
            return cids

        for cid in self.units.run(unit):
            self._delete_unshared(cid)
        return {"deleted": True}

    def held_for(self, sender: str) -> tuple[int, int]:
        """(replicas, bytes) held for ``sender``."""
        with self.db.session() as session:
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(HeldReplica.size), 0)).where(
                    HeldReplica.custodian == sender
                )
            ).one()
        return int(count), int(size)

    def _held(self, sender: str, archive_id: str, version: int) -> HeldReplica:
        with self.db.session() as session:
            row = self._row(session, sender, normalise_id(archive_id), version)
            if row is None:
                raise NotFoundError("no such replica", code="replica_not_found")
            session.expunge(row)
            return row

    @staticmethod
    def _row(session: Session, sender: str, archive_id: str, version: int) -> HeldReplica | None:
        return session.execute(
            select(HeldReplica).where(
                HeldReplica.custodian == sender,
                HeldReplica.archive_id == archive_id,
                HeldReplica.version == version,
            )
        ).scalar_one_or_none()


def _held_total(session: Session, sender: str) -> int:
    """Bytes held for ``sender`` (replicas and key records), as the session sees them now."""
    return int(
        session.execute(
            select(func.coalesce(func.sum(HeldReplica.size), 0)).where(
                HeldReplica.custodian == sender
            )
        ).scalar_one()
    )


RepairHook = Callable[[Sequence[Any]], None]
