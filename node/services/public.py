"""What anyone may learn about an archive without signing in (the public verification page).

Only facts that reveal nothing about the patient or the content: that the archive exists, its
record class, its custodian hospital, its lifecycle state, when it was archived and anchored, the
checkpoint that anchors it, the destruction certificate once destroyed, and a short prefix of its
content commitment (the one printed on its QR label). Never the title, department, metadata,
patient pseudonym or sensitivity.

The public proof holds only the ``ARCHIVE`` event (and ``DESTROY`` when destroyed) with their
inclusion proofs: those events carry the record class, retention dates, the commitment and the
certificate hash — no patient pseudonym (``CREATE`` has one, so it is never published here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.bundle import BundleEntry
from anchoring.deployment import Deployment
from node.db import Database
from node.errors import NotFoundError
from node.models import Archive, DestructionCertificate
from node.services.proofs import ProofService

PUBLIC_EVENT_TYPES: Final = frozenset({"ARCHIVE", "DESTROY"})
"""Events published on the public page: none carries a patient pseudonym or free text."""
_ULID: Final = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
COMMITMENT_PREFIX_HEX: Final = 16
"""Hex digits of the commitment printed on labels and shown on the page (64 bits)."""


@dataclass(frozen=True)
class PublicCheckpoint:
    """The on-chain checkpoint that covers the archive's newest published event."""

    hospital: str
    index: int
    size: int
    root: str
    anchored_at: datetime | None


@dataclass(frozen=True)
class PublicFacts:
    """The safe facts of one archive."""

    archive_id: str
    record_class: str
    custodian: str
    state: str
    on_hold: bool
    created_at: datetime
    archived_at: datetime | None
    commitment_prefix: str | None
    checkpoint: PublicCheckpoint | None
    certificate: dict[str, Any] | None
    certificate_signature: str | None
    certificate_bytes: bytes | None
    """The certificate's canonical bytes (what is hashed and signed), for the public proof."""
    chain_id: int
    notary: str


class PublicService:
    """Reads for the public verification page (no principal: only safe facts)."""

    def __init__(self, *, db: Database, proofs: ProofService, deployment: Deployment) -> None:
        self.db = db
        self.proofs = proofs
        self.deployment = deployment

    def _archive(self, session: Session, archive_id: str) -> Archive:
        key = archive_id.strip().upper()
        archive = session.get(Archive, key) if _ULID.fullmatch(key) else None
        if archive is None:
            raise NotFoundError("no such archive", code="archive_not_found")
        return archive

    def published_entries(self, archive_id: str) -> tuple[BundleEntry, ...]:
        """The anchored ``ARCHIVE`` / ``DESTROY`` entries of the archive, with their proofs."""
        with self.db.session() as session:
            archive_id = self._archive(session, archive_id).id
        bundle, _own = self.proofs.full(archive_id)
        return tuple(e for e in bundle.entries if _event_type(e.event) in PUBLIC_EVENT_TYPES)

    def facts(self, archive_id: str) -> PublicFacts:
        """The safe facts of ``archive_id``; ``NotFoundError`` for an unknown or malformed id."""
        entries = self.published_entries(archive_id)
        with self.db.session() as session:
            archive = self._archive(session, archive_id)
            commitment = _commitment(entries)
            checkpoint = None
            if entries:
                cp = entries[-1].checkpoint
                row = session.execute(
                    select(storage.Checkpoint).where(
                        storage.Checkpoint.chain_index == cp.index,
                        storage.Checkpoint.size == cp.size,
                    )
                ).scalar_one_or_none()
                checkpoint = PublicCheckpoint(
                    hospital=cp.hospital,
                    index=cp.index,
                    size=cp.size,
                    root=cp.root.hex(),
                    anchored_at=row.block_time if row is not None else None,
                )
            certificate = signature = None
            certificate_bytes: bytes | None = None
            if archive.state == "DESTROYED":
                cert = session.get(DestructionCertificate, archive.id)
                if cert is not None:
                    certificate = json.loads(cert.document)
                    signature = cert.signature
                    certificate_bytes = bytes(cert.document)
            return PublicFacts(
                archive_id=archive.id,
                record_class=archive.record_class,
                custodian=archive.custodian,
                state=archive.state,
                on_hold=archive.on_hold,
                created_at=archive.created_at,
                archived_at=archive.archived_at,
                commitment_prefix=commitment[:COMMITMENT_PREFIX_HEX] if commitment else None,
                checkpoint=checkpoint,
                certificate=certificate,
                certificate_signature=signature,
                certificate_bytes=certificate_bytes,
                chain_id=self.deployment.chain_id,
                notary=self.deployment.notary.address,
            )


def _event_type(event: bytes) -> str | None:
    try:
        value = json.loads(event)
    except ValueError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def _commitment(entries: tuple[BundleEntry, ...]) -> str | None:
    for entry in entries:
        data = json.loads(entry.event).get("data", {})
        if isinstance(data, dict) and isinstance(data.get("commitment"), str):
            return str(data["commitment"])
    return None
