"""四性检测 (DA/T 70-2018, GB/T 18894-2016) of one archive, at archiving time and on demand:

- authenticity (真实性): the stored ciphertext hashes to the hash its CREATE/AMEND event recorded,
  and the decrypted content, with the archive's salt, to the recorded commitment; the archive's
  events replay (they exist and chain);
- integrity (完整性): the metadata required for its class (``qc_required_metadata``) is present,
  its versions are numbered 1..n in the log and the catalogue alike;
- usability (可用性): the current version opens in its media type (``node.quality``);
- security (安全性): this node holds its wrapped key, the stored blob is not the plaintext.

A failure is an alert (``qc_failed``, subject the archive, detail the failed checks). What
archiving does with a failure is ``qc_policy``: ``refuse`` (409 ``qc_failed``, the failed checks
listed), ``warn`` (archive, the alert stays), ``off`` (no check).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from anchoring.errors import AnchoringError
from node import crypto
from node.alerts import AlertNotice, AlertSink, Severity
from node.blobstore import BlobStore
from node.config import NodeSettings
from node.db import Database
from node.errors import NodeError
from node.keyring import KeyRing
from node.ledger import Ledger, normalise_id
from node.models import Archive
from node.quality import usability_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QcCheck:
    """One failed check: its dimension and a stable code."""

    dimension: str  # authenticity | integrity | usability | security
    code: str

    def __str__(self) -> str:
        return f"{self.dimension}.{self.code}"


@dataclass
class QcReport:
    """The failed checks of one archive (empty: every check passed)."""

    archive_id: str
    failed: list[QcCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


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
    ) -> None:
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.keyring = keyring
        self.blobs = blobs
        self.alerts = alerts

    def check(self, archive_id: str) -> QcReport:
        """Check the archive; raise ``qc_failed`` when anything failed."""
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
        if state is not None and material is not None and rows:
            current = rows[-1]
            recorded = next((v for v in state.versions if v.version == current.version), None)
            self._content(archive_id, current.version, current.cid, current.media_type,
                          recorded, material, failed)  # fmt: skip
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
