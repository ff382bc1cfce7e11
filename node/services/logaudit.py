"""Log audits: the node's own database checked against the chain and against itself.

1. Every stored event is re-hashed (``leaf_hash`` of its bytes) and compared with the leaf hash
   stored when it was appended (``log_nodes``, level 0); the log's root is recomputed from the
   re-hashed events at every checkpoint size the chain holds for this hospital and compared with
   the root anchored there, and at the end with the stored log head. An event row edited in the
   database therefore shows up as ``log_entry_tampered`` (naming the archive and the first bad
   index) and as ``log_root_mismatch`` for every anchored checkpoint that covers it.
2. Each held archive's per-archive hash chain (the events received with a transfer, then this
   log's) is replayed through ``anchoring.lifecycle``, which checks every ``prev`` link, the
   order of times and every transition; the first event it refuses is ``hash_chain_broken``
   (archive and log index). The replayed state is compared with the catalogue row (state, head,
   current version, hold flags, retention deadline): an archive row edited behind the node's back
   is ``catalogue_mismatch`` naming the archive and the field.

Reads only (no events are logged): run it while the node runs or is stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import lazyload

from anchoring import merkle, storage
from anchoring.chainview import ChainReader
from anchoring.errors import AnchoringError
from anchoring.events import parse_event
from anchoring.lifecycle import ArchiveState, apply
from anchoring.storage import LogEntry, LogHead, LogNode
from node.alerts import AlertNotice, AlertSink, Severity
from node.db import Database
from node.errors import UnavailableError
from node.models import NOT_HELD, Archive, ForeignEntry
from node.principal import Action, Principal

log = logging.getLogger(__name__)

PAGE = 5000


@dataclass(frozen=True, slots=True)
class LogFinding:
    """One problem the audit found (each is also an alert)."""

    kind: str
    subject: str
    detail: dict[str, str | int | bool]


@dataclass
class LogAuditReport:
    """What a log audit checked and found."""

    entries: int = 0
    checkpoints: int = 0
    archives: int = 0
    seconds: float = 0.0
    findings: list[LogFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class LogAuditService:
    """Recomputes the log against the chain and replays each archive's hash chain."""

    def __init__(
        self, *, hospital: str, db: Database, chain: ChainReader, alerts: AlertSink
    ) -> None:
        self.hospital = hospital
        self.db = db
        self.chain = chain
        self.alerts = alerts

    def audit(self, principal: Principal | None) -> LogAuditReport:
        """Run both checks; raise an alert per finding. ``UnavailableError`` when the chain
        cannot be read (nothing is concluded then)."""
        if principal is not None:
            principal.require(Action.RUN_AUDITS)
        begun = time.monotonic()
        report = LogAuditReport()
        try:
            count = self.chain.checkpoint_count(self.hospital)
            anchored = [self.chain.checkpoint_at(self.hospital, i) for i in range(count)]
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read this node's checkpoints: {exc}") from exc
        report.checkpoints = len(anchored)
        self._check_log(report, {cp.size: (cp.index, cp.root) for cp in anchored})
        self._check_archives(report)
        report.seconds = time.monotonic() - begun
        for finding in report.findings:
            self.alerts.raise_alert(
                AlertNotice(finding.kind, finding.subject, Severity.CRITICAL, finding.detail)
            )
        return report

    # -- 1. the log against its stored hashes and the chain ------------------------------------

    def _check_log(self, report: LogAuditReport, anchored: dict[int, tuple[int, bytes]]) -> None:
        frontier: list[bytes] = []
        size = 0
        first_bad: int | None = None
        flagged: set[str] = set()
        with self.db.session() as session:
            head = session.get(LogHead, storage.HEAD_ID)
            while True:
                entries = session.execute(
                    select(LogEntry.index, LogEntry.archive_id, LogEntry.event)
                    .where(LogEntry.index >= size)
                    .order_by(LogEntry.index)
                    .limit(PAGE)
                ).all()
                if not entries:
                    break
                keys = [storage.node_id(0, index) for index, _, _ in entries]
                stored: dict[int, bytes] = {
                    row.id: row.hash
                    for row in session.execute(
                        select(LogNode.id, LogNode.hash).where(LogNode.id.in_(keys))
                    )
                }
                for (index, archive_id, event), key in zip(entries, keys, strict=True):
                    if index != size:  # a row deleted: every later index is shifted
                        report.findings.append(
                            LogFinding("log_entry_missing", f"log:{size}", {"log_index": size})
                        )
                        return
                    leaf = merkle.leaf_hash(event)
                    if stored.get(key) != leaf:
                        first_bad = index if first_bad is None else first_bad
                        if archive_id not in flagged:  # the first bad entry of each archive
                            flagged.add(archive_id)
                            report.findings.append(
                                LogFinding("log_entry_tampered", archive_id, {"log_index": index})
                            )
                    frontier, _ = merkle.append_leaf(frontier, size, leaf)
                    size += 1
                    if size in anchored:
                        self._compare(report, anchored[size], size, frontier, first_bad)
                report.entries = size
        for anchored_size, (chain_index, _root) in sorted(anchored.items()):
            if anchored_size > size:
                report.findings.append(
                    LogFinding(
                        "log_entry_missing",
                        f"checkpoint:{chain_index}",
                        {"size": anchored_size, "log_size": size},
                    )
                )
        root = merkle.hash_from_subtrees(frontier) if frontier else merkle.EMPTY_ROOT
        if head is not None and (head.size != size or head.root != root):
            detail: dict[str, str | int | bool] = {"size": size, "head_size": head.size}
            if first_bad is not None:
                detail["first_bad_index"] = first_bad
            report.findings.append(LogFinding("log_head_mismatch", "log:head", detail))

    @staticmethod
    def _compare(
        report: LogAuditReport,
        checkpoint: tuple[int, bytes],
        size: int,
        frontier: list[bytes],
        first_bad: int | None,
    ) -> None:
        chain_index, root = checkpoint
        if merkle.hash_from_subtrees(frontier) != root:
            detail: dict[str, str | int | bool] = {"size": size}
            if first_bad is not None:
                detail["first_bad_index"] = first_bad
            report.findings.append(
                LogFinding("log_root_mismatch", f"checkpoint:{chain_index}", detail)
            )

    # -- 2. per-archive hash chains and the catalogue ------------------------------------------

    def _check_archives(self, report: LogAuditReport) -> None:
        with self.db.session() as session:
            ids = list(
                session.execute(
                    select(Archive.id)
                    .where(Archive.custodian == self.hospital, Archive.state.not_in(NOT_HELD))
                    .order_by(Archive.id)
                ).scalars()
            )
        for archive_id in ids:
            with self.db.session() as session:
                archive = session.get(Archive, archive_id, options=[lazyload(Archive.versions)])
                if archive is None:  # pragma: no cover  (rows are never deleted)
                    continue
                foreign = list(
                    session.execute(
                        select(ForeignEntry.event)
                        .where(ForeignEntry.archive_id == archive_id)
                        .order_by(ForeignEntry.position)
                    ).scalars()
                )
                own = storage.entries_for_archive(session, archive_id)
                report.archives += 1
                state = self._replay(report, archive_id, foreign, own)
                if state is not None:
                    self._compare_row(report, archive, state)

    @staticmethod
    def _replay(
        report: LogAuditReport, archive_id: str, foreign: list[bytes], own: list[LogEntry]
    ) -> ArchiveState | None:
        state: ArchiveState | None = None
        items = [(None, raw) for raw in foreign] + [(e.index, e.event) for e in own]
        for index, raw in items:
            try:
                event = parse_event(raw)
                if event.archive_id != archive_id or (
                    index is not None and event.log_index != index
                ):
                    raise AnchoringError("the event names another archive or log index")
                state = apply(state, event, leaf_hash=merkle.leaf_hash(raw))
            except (AnchoringError, ValueError) as exc:
                detail: dict[str, str | int | bool] = {"code": _code(exc)}
                if index is not None:
                    detail["log_index"] = index
                report.findings.append(LogFinding("hash_chain_broken", archive_id, detail))
                return None
        return state

    @staticmethod
    def _compare_row(report: LogAuditReport, archive: Archive, state: ArchiveState) -> None:
        expected = {
            "state": state.status.value,
            "last_event_hash": state.head,
            "current_version": state.current_version.version,
            "on_hold": state.on_hold,
            "hold_by_regulator": state.on_hold and state.hold_by_regulator,
            "retention_deadline": state.retention_deadline,
            "record_class": state.record_class.value,
            "department": state.department,
        }
        actual = {
            "state": archive.state,
            "last_event_hash": archive.last_event_hash.hex(),
            "current_version": archive.current_version,
            "on_hold": archive.on_hold,
            "hold_by_regulator": archive.hold_by_regulator,
            "retention_deadline": archive.retention_deadline,
            "record_class": archive.record_class,
            "department": archive.department,
        }
        for name, value in expected.items():
            if actual[name] != value:
                report.findings.append(
                    LogFinding("catalogue_mismatch", archive.id, {"field": name})
                )
                return  # the first differing field names the problem


def _code(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__name__
