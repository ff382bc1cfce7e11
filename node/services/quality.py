"""四性检测 (DA/T 70-2018, GB/T 18894-2016) of one archive, at archiving time and on demand:

- authenticity (真实性): the stored ciphertext hashes to the hash its CREATE/AMEND event recorded,
  and the decrypted content, with the archive's salt, to the recorded commitment; the archive's
  events replay (they exist and chain); in audits, every event this node logged for it more than
  ``anchoring_lag_alert_seconds`` ago is covered by the latest confirmed checkpoint (anchored);
- integrity (完整性): the metadata required for its class (``qc_required_metadata``) is present,
  its versions are numbered 1..n in the log and the catalogue alike;
- usability (可用性): every version opens in its media type (``node.quality``);
- security (安全性): this node holds its wrapped key, no stored blob is the plaintext.

Every version's content is checked (authenticity, usability, security) and its result stored on
that version; a failure of an earlier version is listed with its version (``usability.
pdf_unreadable@v1``), one of the current version or of the archive as a whole without.

A failure is an alert (``qc_failed``, subject the archive, detail the failed checks). What
archiving does with a failure is ``qc_policy``: ``refuse`` (409 ``qc_failed``, the failed checks
listed), ``warn`` (archive, the alert stays), ``off`` (no check).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from sqlalchemy import JSON, LargeBinary, Text, and_, func, inspect, select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.errors import AnchoringError
from node import crypto
from node.alerts import AlertNotice, AlertSink, Severity
from node.blobstore import BlobStore
from node.config import NodeSettings
from node.db import Clock, Database, utc_now
from node.errors import NodeError
from node.keyring import KeyRing
from node.ledger import Ledger, normalise_id
from node.models import NOT_HELD, Archive, QcResult
from node.principal import Action, Principal
from node.process import NODE_PID_FILE
from node.quality import SNIFF_BYTES, plaintext_kind, usability_problem
from node.services.audits import AUDITABLE_STATES, AuditScope, ScopeKind

log = logging.getLogger(__name__)


QcTrigger = Literal["archiving", "audit"]
"""What ran a check (``qc_results.trigger``): archiving a record, or an audit."""


@dataclass(frozen=True, slots=True)
class QcCheck:
    """One failed check: its dimension and a stable code."""

    dimension: str  # authenticity | integrity | usability | security
    code: str
    version: int | None = None
    """An earlier version whose content failed (None: the archive or its current version)."""

    def __str__(self) -> str:
        suffix = f"@v{self.version}" if self.version is not None else ""
        return f"{self.dimension}.{self.code}{suffix}"


@dataclass
class QcReport:
    """The failed checks of one archive (empty: every check passed)."""

    archive_id: str
    failed: list[QcCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class QcResultView:
    """The stored result of the latest check of one version."""

    archive_id: str
    version: int
    checked_at: object
    ok: bool
    failed: tuple[QcCheck, ...]
    trigger: str

    @classmethod
    def of(cls, row: QcResult) -> QcResultView:
        return cls(
            row.archive_id, row.version, row.checked_at, row.ok, parse_failed(row.failed),
            row.trigger,
        )  # fmt: skip


def parse_failed(text: str) -> tuple[QcCheck, ...]:
    """``dimension.code,…`` (as stored) back into checks."""
    checks = []
    for item in text.split(","):
        dimension, _, code = item.partition(".")
        if dimension and code:
            checks.append(QcCheck(dimension, code))
    return tuple(checks)


@dataclass
class QcAuditReport:
    """What an on-demand or scheduled QC audit checked and found. ``plaintext``: findings of
    the data-directory scan (scope ``all`` only), as ``file:<path>:<kind>`` (path relative to
    ``data_dir``) or ``column:<table>.<column>``."""

    archives: int = 0
    passed: int = 0
    failures: list[QcReport] = field(default_factory=list)
    plaintext: list[str] = field(default_factory=list)
    seconds: float = 0.0


# Unbounded (binary, text, JSON) columns the schema may hold, none of them record content:
# hashes, canonical events and proofs, wrapped keys, catalogue metadata and its search text,
# chain transactions, error texts, alert details and webhook bodies.
ALLOWED_LARGE_COLUMNS = frozenset(
    {
        "alerts.detail",
        "archives.metadata_json",
        "archives.search_text",
        "archives.last_event_hash",
        "chain_outbox.payload",
        "chain_outbox.raw_tx",
        "chain_outbox.error",
        "chain_outbox_attempts.fees",
        "destruction_certificates.document",  # the signed certificate: ids and hashes, no PHI
        "disposition_items.reason",  # reasons typed by records staff (kept on this node)
        "disposition_proposals.reason",
        "retention_changes.reason",
        "break_glass_windows.reason",  # a clinician's stated emergency, kept on this node
        "attestations.document",  # the signed attestation: facts and hashes, no content, no id
        "shipped_entries.event",  # a peer's canonical log events (pseudonyms and hashes only)
        "checkpoints.root",
        "checkpoints.error",
        "foreign_entries.event",
        "foreign_entries.proof",
        "foreign_entries.checkpoint_root",
        "log_entries.event",
        "log_head.root",
        "log_head.frontier",
        "log_nodes.hash",
        "log_upper_nodes.hash",
        "qc_results.failed",
        "transfers.error",
        "webhook_deliveries.body",
        "wrapped_keys.blob",
    }
)
# Files of the data directory that are text by design (configuration, encrypted keystore, log,
# the running node's pid file).
TEXT_FILES = frozenset(
    {"node.toml", "keystore.json", "deployment.json", "node.log", "tombstones.jsonl", NODE_PID_FILE}
)


class QualityService:
    """Runs the four checks on one archive."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        ledger: Ledger,
        keyring: KeyRing,
        blobs: BlobStore,
        alerts: AlertSink,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.keyring = keyring
        self.blobs = blobs
        self.alerts = alerts
        self.clock = clock

    def results(self, principal: Principal, archive_id: str) -> list[QcResultView]:
        """The stored result of every checked version of a held archive (oldest version
        first); 404 when this node does not hold it."""
        principal.require(Action.READ_REPORTS)
        with self.db.session() as session:
            archive = self.ledger.held(session, principal, archive_id)
            rows = session.scalars(
                select(QcResult).where(QcResult.archive_id == archive.id).order_by(QcResult.version)
            ).all()
            return [QcResultView.of(row) for row in rows]

    def audit(self, principal: Principal | None, scope: AuditScope) -> QcAuditReport:
        """Re-run 四性检测 on every auditable archive in ``scope`` (held, CREATED, ARCHIVED or
        DISPOSITION_REVIEW); each result is stored (trigger ``audit``), each failure alerted."""
        if principal is not None:
            principal.require(Action.RUN_AUDITS)
        begun = time.monotonic()
        query = select(Archive.id).where(
            and_(Archive.custodian == self.ledger.hospital, Archive.state.not_in(NOT_HELD)),
            Archive.state.in_(AUDITABLE_STATES),
        )
        if scope.kind is ScopeKind.ARCHIVES:
            query = query.where(Archive.id.in_([normalise_id(a) for a in scope.archive_ids]))
        elif scope.kind is ScopeKind.CLASS and scope.record_class is not None:
            query = query.where(Archive.record_class == scope.record_class.value)
        with self.db.session() as session:
            ids = list(session.scalars(query.order_by(Archive.id)))
        report = QcAuditReport()
        for archive_id in ids:
            result = self.check(archive_id, trigger="audit")
            report.archives += 1
            if result.ok:
                report.passed += 1
            else:
                report.failures.append(result)
        if scope.kind is ScopeKind.ALL:
            report.plaintext = self.scan_plaintext()
        report.seconds = time.monotonic() - begun
        return report

    def scan_plaintext(self) -> list[str]:
        """The security check "no plaintext under the data directory" (see docs/monitoring.md):
        every file under ``data_dir`` is sniffed (its first 4 KiB) for a readable format, and
        the live database schema may hold no unbounded column outside ``ALLOWED_LARGE_COLUMNS``.
        Each finding is a critical ``plaintext_found`` alert."""
        findings: list[str] = []
        root = self.settings.data_dir
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                relative = path.relative_to(root)
                known_text = len(relative.parts) == 1 and (
                    relative.name in TEXT_FILES or relative.name.startswith("node.log.")
                )
                try:
                    with path.open("rb") as handle:
                        head = handle.read(SNIFF_BYTES)
                except OSError:
                    continue
                kind = plaintext_kind(head, text_too=not known_text)
                if kind is not None:
                    findings.append(f"file:{relative.as_posix()}:{kind}")
        schema = inspect(self.db.reader)
        for table in sorted(schema.get_table_names()):
            for column in schema.get_columns(table):
                name = f"{table}.{column['name']}"
                if (
                    isinstance(column["type"], (LargeBinary, Text, JSON))
                    and name not in ALLOWED_LARGE_COLUMNS
                ):
                    findings.append(f"column:{name}")
        for finding in findings:
            self.alerts.raise_alert(
                AlertNotice("plaintext_found", finding[:128], Severity.CRITICAL, {})
            )
        return findings

    def check(self, archive_id: str, *, trigger: QcTrigger = "archiving") -> QcReport:
        """Check the archive and each of its versions, store each version's result; raise
        ``qc_failed`` when anything failed."""
        archive_id = normalise_id(archive_id)
        report = QcReport(archive_id)
        failed = report.failed
        with self.db.session() as session:
            archive = session.get(Archive, archive_id)
            if archive is None:
                return report  # the caller's own lookup reports it
            try:
                state = self.ledger.state(session, archive)
            except (NodeError, AnchoringError):
                failed.append(QcCheck("authenticity", "events_inconsistent"))
                state = None
            try:
                material: crypto.KeyMaterial | None = self.keyring.own(session, archive_id)
            except NodeError:
                failed.append(QcCheck("security", "key_missing"))
                material = None
            if trigger == "audit" and not self._anchored(session, archive_id):
                failed.append(QcCheck("authenticity", "events_unanchored"))
            required = self.settings.qc_required_metadata.get(archive.record_class, [])
            missing = [k for k in required if archive.metadata_json.get(k) in (None, "", [], {})]
            if missing:
                failed.append(QcCheck("integrity", "metadata_missing:" + ",".join(missing)))
            rows = sorted(archive.versions, key=lambda v: v.version)
        numbers = [v.version for v in rows]
        if numbers != list(range(1, len(numbers) + 1)) or (
            state is not None and [v.version for v in state.versions] != numbers
        ):
            failed.append(QcCheck("integrity", "versions_incomplete"))
        whole = list(failed)  # the archive's own checks, stored on every version
        per_version: dict[int, list[QcCheck]] = {}
        for row in rows:
            own: list[QcCheck] = []
            if state is not None and material is not None and row.blob_deleted_at is None:
                recorded = next((v for v in state.versions if v.version == row.version), None)
                self._content(archive_id, row.version, row.cid, row.media_type,
                              recorded, material, own)  # fmt: skip
            per_version[row.version] = own
            earlier = row is not rows[-1]
            failed.extend(QcCheck(c.dimension, c.code, row.version) if earlier else c for c in own)
        self._store(
            archive_id,
            [(row.id, row.version, whole + per_version[row.version]) for row in rows],
            trigger,
        )
        if failed:
            self.alerts.raise_alert(
                AlertNotice(
                    "qc_failed",
                    archive_id,
                    Severity.WARNING,
                    {"failed": ",".join(str(c) for c in failed)[:500]},
                )
            )
        return report

    def _anchored(self, session: Session, archive_id: str) -> bool:
        """Whether every event this node logged for the archive before the anchoring grace
        (``anchoring_lag_alert_seconds``) lies inside the latest confirmed checkpoint. Younger
        events are not yet due; events received from former custodians were anchored by them."""
        due = self.clock() - timedelta(seconds=self.settings.anchoring_lag_alert_seconds)
        last_due = session.scalar(
            select(func.max(storage.LogEntry.index)).where(
                storage.LogEntry.archive_id == archive_id, storage.LogEntry.time <= due
            )
        )
        if last_due is None:
            return True
        checkpoint = storage.latest_confirmed_checkpoint(session)
        return checkpoint is not None and last_due < checkpoint.size

    def _store(
        self, archive_id: str, results: list[tuple[int, int, list[QcCheck]]], trigger: QcTrigger
    ) -> None:
        """Store each (version row id, version, failed checks) in one transaction."""
        if not results:
            return
        now = self.clock()
        with self.db.transaction() as session:
            for version_id, version, failed in results:
                session.merge(
                    QcResult(
                        version_id=version_id,
                        archive_id=archive_id,
                        version=version,
                        checked_at=now,
                        ok=not failed,
                        failed=",".join(str(c) for c in failed),
                        trigger=trigger,
                    )
                )

    def _content(
        self,
        archive_id: str,
        version: int,
        cid: str,
        media_type: str,
        recorded: object,
        material: crypto.KeyMaterial,
        failed: list[QcCheck],
    ) -> None:
        limit = self.settings.qc_max_bytes
        ciphertext_hash = hashlib.sha256()
        head = b""

        def ciphertext() -> object:
            nonlocal head
            for chunk in self.blobs.open_stream(cid):
                ciphertext_hash.update(chunk)
                if len(head) < 4096:
                    head += chunk[: 4096 - len(head)]
                yield chunk

        commitment = crypto.Commitment(material.salt)
        plaintext = bytearray()
        too_big = False
        try:
            for chunk in crypto.decrypt_stream(
                material.data_key,
                ciphertext(),  # type: ignore[arg-type]
                crypto.archive_aad(archive_id, version),
            ):
                commitment.update(chunk)
                if not too_big:
                    plaintext += chunk
                    if len(plaintext) > limit:
                        too_big, plaintext = True, bytearray()
        except crypto.CryptoError:  # the ciphertext does not authenticate: tampered
            failed.append(QcCheck("authenticity", "ciphertext_invalid"))
            return
        except (NodeError, OSError):  # missing or unreadable blob
            failed.append(QcCheck("authenticity", "content_unreadable"))
            return
        if recorded is not None:
            if ciphertext_hash.hexdigest() != getattr(recorded, "ciphertext_sha256", None):
                failed.append(QcCheck("authenticity", "ciphertext_hash_mismatch"))
            if commitment.hexdigest() != getattr(recorded, "commitment", None):
                failed.append(QcCheck("authenticity", "commitment_mismatch"))
        if not too_big:
            content = bytes(plaintext)
            problem = usability_problem(media_type, content)
            if problem is not None:
                failed.append(QcCheck("usability", problem))
            sample = content[:64]
            if len(sample) >= 16 and sample in head:
                failed.append(QcCheck("security", "plaintext_stored"))
