"""The node's SQLAlchemy models. They share ``anchoring.storage.metadata`` with the log tables, so
one Alembic history covers the whole database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from anchoring.lifecycle import ArchiveStatus
from anchoring.storage import Base

__all__ = [
    "AccessDenial",
    "Alert",
    "ApiKey",
    "Archive",
    "ArchiveTier",
    "ArchiveVersion",
    "AuditCursor",
    "Base",
    "BreakGlassWindow",
    "CatalogueState",
    "ChainCursor",
    "ChainStatus",
    "ContentRead",
    "DestructionCertificate",
    "DispositionDecision",
    "DispositionItem",
    "DispositionProposal",
    "FixityStatus",
    "ForeignEntry",
    "HeldReplica",
    "IngestedMessage",
    "LogShipment",
    "MemberToken",
    "PeerNonce",
    "QcResult",
    "Replica",
    "RetentionChange",
    "SearchTerm",
    "ShippedEntry",
    "SigninNonce",
    "Transfer",
    "TransferDirection",
    "TransferState",
    "WebhookDelivery",
    "WrappedKey",
]


class CatalogueState(StrEnum):
    """The ``archives.state`` column: the lifecycle state of an archive this node holds, or why it
    does not hold it (yet, or any more). Every ``ArchiveStatus`` value is a catalogue state."""

    CREATED = "CREATED"
    ARCHIVED = "ARCHIVED"
    TRANSFER_PENDING = "TRANSFER_PENDING"
    DISPOSITION_REVIEW = "DISPOSITION_REVIEW"
    DESTROYED = "DESTROYED"
    INCOMING = "INCOMING"
    """Being received from another hospital: staged here, not yet accepted on chain."""
    TRANSFERRED = "TRANSFERRED"
    """Custody moved to another hospital; only the evidence (events) stays here."""

    @property
    def held(self) -> bool:
        """Whether this node holds custody of an archive in this state."""
        return self not in NOT_HELD


NOT_HELD = frozenset({CatalogueState.INCOMING, CatalogueState.TRANSFERRED})
"""Catalogue states of archives this node knows but does not hold."""


class ChainStatus(StrEnum):
    """The ``archives.chain_status`` column: the archive's on-chain registration."""

    NONE = "none"  # not archived yet: the chain does not know it
    PENDING = "pending"  # ``register`` queued or sent
    REGISTERED = "registered"  # confirmed on chain
    FAILED = "failed"  # ``register`` reverted (the outbox row says why)


class TransferDirection(StrEnum):
    """The ``transfers.direction`` column."""

    OUT = "out"  # this node offered the archive
    IN = "in"  # the archive was offered to this node


class TransferState(StrEnum):
    """The ``transfers.state`` column: how far the crash-safe transfer protocol got.

    Outgoing: offered → accepted | cancelled | expired | rejected. Incoming: seen → accepting →
    accepted_on_chain → accepted; seen → rejected (a check failed) or cancelled (withdrawn before
    it was collected); accepting → failed_on_chain → failed (``acceptTransfer`` reverted)."""

    OFFERED = "offered"
    ACCEPTED = "accepted"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    SEEN = "seen"
    ACCEPTING = "accepting"
    ACCEPTED_ON_CHAIN = "accepted_on_chain"
    FAILED_ON_CHAIN = "failed_on_chain"
    FAILED = "failed"


OPEN_TRANSFER_STATES = frozenset(
    {
        TransferState.OFFERED,
        TransferState.SEEN,
        TransferState.ACCEPTING,
        TransferState.ACCEPTED_ON_CHAIN,
    }
)
"""Transfers still in progress."""

if {s.value for s in ArchiveStatus} - {s.value for s in CatalogueState}:  # pragma: no cover
    raise ImportError("every lifecycle status must be a catalogue state")


class Archive(Base):
    """One archive (a medical record and its versions) held or once held by this hospital."""

    __tablename__ = "archives"
    __table_args__ = (  # newest first, as the catalogue search walks (migration 0015)
        Index("ix_archives_created_at_id", "created_at", "id"),
        Index("ix_archives_department_created_at_id", "department", "created_at", "id"),
        Index("ix_archives_state_created_at_id", "state", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    record_class: Mapped[str] = mapped_column(String(32), index=True)
    sensitivity: Mapped[str] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(256))
    patient_pseudonym: Mapped[str] = mapped_column(String(80), index=True)
    source_system: Mapped[str] = mapped_column(String(64))
    metadata_json: Mapped[dict[str, Any]]
    search_text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    custodian: Mapped[str] = mapped_column(String(42))
    trigger_date: Mapped[datetime]
    retention_policy: Mapped[str | None] = mapped_column(String(64), default=None)
    retention_deadline: Mapped[datetime | None] = mapped_column(default=None)
    on_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_by_regulator: Mapped[bool] = mapped_column(Boolean, default=False)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    last_event_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    chain_status: Mapped[str] = mapped_column(String(16), default="none")
    pending_recipient: Mapped[str | None] = mapped_column(String(42), default=None)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    archived_at: Mapped[datetime | None] = mapped_column(default=None)

    versions: Mapped[list[ArchiveVersion]] = relationship(
        back_populates="archive", order_by="ArchiveVersion.version", lazy="selectin"
    )


class ArchiveVersion(Base):
    """One stored (encrypted) version of an archive's content."""

    __tablename__ = "archive_versions"
    __table_args__ = (UniqueConstraint("archive_id", "version"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(ForeignKey("archives.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    cid: Mapped[str] = mapped_column(String(128))
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    stored_size: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(128))
    commitment: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[datetime]
    blob_deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    archive: Mapped[Archive] = relationship(back_populates="versions")


class WrappedKey(Base):
    """A wrapped copy of an archive's key material (data key + commitment salt).

    ``holder`` is ``kek:<kek id>`` for this node's own copy, or ``member:<address>`` for a copy
    wrapped to another member's public key (sharing, transfer). Destruction deletes the blob and
    keeps the row as evidence of when it happened.
    """

    __tablename__ = "wrapped_keys"
    __table_args__ = (Index("ix_wrapped_keys_archive_holder", "archive_id", "holder"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(ForeignKey("archives.id"))
    holder: Mapped[str] = mapped_column(String(64))
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    purpose: Mapped[str | None] = mapped_column(String(32), default=None)  # share copies
    expires_at: Mapped[datetime | None] = mapped_column(default=None)  # share copies
    created_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    """A hashed API key with its role (and department for clinicians)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    department: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_id: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    member: Mapped[str | None] = mapped_column(String(42), default=None)
    """The consortium member address an ``insurer`` key acts for (docs/attestations.md)."""


class Transfer(Base):
    """One custody transfer of an archive, seen from this node (``out``: we offered it;
    ``in``: it was offered to us). Its ``state`` records how far the crash-safe protocol got."""

    __tablename__ = "transfers"
    __table_args__ = (UniqueConstraint("archive_id", "direction", "offer_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    direction: Mapped[str] = mapped_column(String(3))
    peer: Mapped[str] = mapped_column(String(42))
    offer_key: Mapped[str] = mapped_column(String(80))  # offer event hash (out) or tx:log (in)
    state: Mapped[str] = mapped_column(String(32), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ForeignEntry(Base):
    """An event of an archive logged by another hospital (before a transfer to us), kept with its
    inclusion proof so this node's proof bundles span both logs."""

    __tablename__ = "foreign_entries"
    __table_args__ = (UniqueConstraint("hospital", "log_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the archive's main chain
    hospital: Mapped[str] = mapped_column(String(42))
    log_index: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[bytes] = mapped_column(LargeBinary)
    proof: Mapped[bytes] = mapped_column(LargeBinary)  # concatenated 32-byte hashes
    checkpoint_index: Mapped[int] = mapped_column(BigInteger)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    checkpoint_root: Mapped[bytes] = mapped_column(LargeBinary(32))


class PeerNonce(Base):
    """Nonces of signed node-to-node requests seen inside the replay window."""

    __tablename__ = "peer_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender: Mapped[str] = mapped_column(String(42))
    seen_at: Mapped[datetime] = mapped_column(index=True)


class ChainCursor(Base):
    """How far the chain watcher has processed contract events (one row per stream)."""

    __tablename__ = "chain_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class Alert(Base):
    """A condition a person must look at (see ``node.alerts``), deduplicated by kind and subject:
    while it is open (not acknowledged) the same kind and subject raised again is counted on this
    row. ``open_key`` is ``kind␟subject`` while open and NULL once acknowledged, so the unique
    index allows one open alert per kind and subject and any number of acknowledged ones."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]]
    count: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(80), default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditCursor(Base):
    """How far a scheduled audit has come (one row per audit, e.g. ``fixity``): the last
    archive-version id it checked in the current cycle (0: the cycle has not started) and when
    its last full cycle ended, so a restarted node continues where it stopped."""

    __tablename__ = "audit_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    cycle_started_at: Mapped[datetime | None] = mapped_column(default=None)
    cycle_completed_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime]


class FixityStatus(Base):
    """The latest fixity check of one stored archive version (the evidence is its FIXITY_CHECK
    event; this row is the catalogue's summary, for reports and the API). ``problem`` is a stable
    code when the check failed (``hash_mismatch``, ``size_mismatch``, ``blob_missing``,
    ``blob_unreadable``)."""

    __tablename__ = "fixity_status"

    version_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("archive_versions.id"),
        primary_key=True,
        autoincrement=False,
    )
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    checked_at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)
    observed_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    problem: Mapped[str | None] = mapped_column(String(32), default=None)


class WebhookDelivery(Base):
    """One alert to deliver to one webhook: its signed body is fixed when it is queued; each
    attempt moves ``next_attempt_at`` back (exponential backoff) until it is ``delivered`` or,
    after the last attempt, ``dead`` (dead-lettered: kept, never retried)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(BigInteger)
    target: Mapped[str] = mapped_column(String(512))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class IngestedMessage(Base):
    """One message received from a hospital system (a FHIR resource, an HL7 v2 message, a DICOM
    instance, an imported file), keyed by its source and the source's own message id, so a resend
    is recognised and not archived twice. ``archive_id`` is the archive it became (none for a
    message that carries no record, such as an ADT admission). ``encounter`` is the keyed
    pseudonym of the source's visit number; rules are the ids of the classification rules that
    decided class and sensitivity (``node.classification``)."""

    __tablename__ = "ingested_messages"
    __table_args__ = (UniqueConstraint("source_system", "message_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source_system: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    archive_id: Mapped[str | None] = mapped_column(
        ForeignKey("archives.id"), index=True, default=None
    )
    patient_pseudonym: Mapped[str | None] = mapped_column(String(80), index=True, default=None)
    encounter: Mapped[str | None] = mapped_column(String(80), index=True, default=None)
    class_rule: Mapped[str | None] = mapped_column(String(96), default=None)
    sensitivity_rule: Mapped[str | None] = mapped_column(String(96), default=None)
    received_at: Mapped[datetime]


class EncounterStay(Base):
    """An inpatient stay's admission and discharge instants, by the keyed pseudonym of the
    source's encounter (visit/stay) number, as ADT^A01/A03, FHIR Encounter ``period`` and the
    encounters API reported them: the admission date an insurer attestation's ``dates`` fact
    states for the records ingested for that encounter (docs/attestations.md)."""

    __tablename__ = "encounter_stays"

    encounter: Mapped[str] = mapped_column(String(80), primary_key=True)
    admitted_at: Mapped[datetime | None] = mapped_column(default=None)
    discharged_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime]


class SearchTerm(Base):
    """One keyword-search term of an archive (``node.textindex``): an inverted index served by the
    primary key's B-tree on both databases. Terms hold fragments of PHI: they leave the node's
    database only sealed to a custody transfer's recipient, and are erased with the archive's
    content.

    ``department`` repeats the archive's (fixed at creation) in the key's B-tree: a search
    bound to one department (a filter, or a department-scoped role) skips other departments'
    postings while walking them, before any archive row is read (migration 0017)."""

    __tablename__ = "search_terms"
    __table_args__ = (
        # PostgreSQL: the department rides in the key's index (INCLUDE), read by an index-only
        # walk; SQLite stores whole rows in the key's B-tree (WITHOUT ROWID, migration 0016).
        PrimaryKeyConstraint(
            "term", "archive_id", name="pk_search_terms", postgresql_include=["department"]
        ),
        # a further term of a candidate probed exactly (migration 0015)
        Index("ix_search_terms_archive_id_term", "archive_id", "term"),
        {"sqlite_with_rowid": False},
    )

    term: Mapped[str] = mapped_column(String(64))
    # No foreign key (migration 0018): the terms are written in the archive row's own unit of
    # work, and checking the key again for each of an archive's ~40 terms was a third of
    # PostgreSQL's work in a bulk import. ``verify_node_data`` reports a term without its row.
    archive_id: Mapped[str] = mapped_column(String(26))
    department: Mapped[str] = mapped_column(String(64))


class RetentionChange(Base):
    """Why an archive's retention deadline moved (the RETENTION_EXTEND event carries only the
    deadlines; the reason may hold PHI, so it stays here). ``cause``: ``request`` (an archivist's
    extension), ``encounter`` (a later visit or discharge of the patient), ``disposition`` (a
    records manager rejected destruction)."""

    __tablename__ = "retention_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    cause: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    previous_deadline: Mapped[datetime]
    new_deadline: Mapped[datetime]
    created_at: Mapped[datetime]


class DispositionDecision(StrEnum):
    """The ``disposition_items.decision`` column."""

    PENDING = "pending"  # proposed, awaiting a records manager
    APPROVED = "approved"  # a second person approved destruction (until ``expires_at``)
    EXECUTED = "executed"  # destroyed, with its certificate
    REJECTED = "rejected"  # kept: the deadline moved (RETENTION_EXTEND)
    EXPIRED = "expired"  # approved but not executed in time
    WITHDRAWN = "withdrawn"  # no longer in review (extended, held) when decided


class DispositionProposal(Base):
    """A disposition list (销毁清册): archives in review proposed for destruction by an archivist,
    with a reason that stays on this node."""

    __tablename__ = "disposition_proposals"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class DispositionItem(Base):
    """One archive of a disposition list and the second person's decision on it."""

    __tablename__ = "disposition_items"
    __table_args__ = (UniqueConstraint("proposal_id", "archive_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("disposition_proposals.id"), index=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    decision: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[str | None] = mapped_column(String(80), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)


class DestructionCertificate(Base):
    """The signed destruction certificate of an archive: its RFC 8785 bytes (hashed into the
    DESTROY event and onto the chain) and the node key's EIP-712 signature."""

    __tablename__ = "destruction_certificates"

    archive_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(132))
    created_at: Mapped[datetime]


class ContentRead(Base):
    """One content read served by this node's API (``GET /archives/{id}/content``), timed for the
    utilisation report: seconds from the request's arrival to the first and to the last body byte
    (``last_byte_seconds`` is NULL when the client went away before the end; ``completed`` then
    false). Holds no PHI: the archive id, class, purpose, version and byte count only."""

    __tablename__ = "content_reads"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26))
    version: Mapped[int] = mapped_column(Integer)
    record_class: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    read_at: Mapped[datetime] = mapped_column(index=True)
    first_byte_seconds: Mapped[float] = mapped_column(Float)
    last_byte_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    bytes_sent: Mapped[int] = mapped_column(BigInteger)
    tier: Mapped[str | None] = mapped_column(String(8), default=None)
    """Storage tier the content was read from (``hot``, ``cold``; NULL: before tiers were recorded)."""
    completed: Mapped[bool] = mapped_column(Boolean)


class QcResult(Base):
    """The latest 四性检测 of one archive version (``node.services.quality``): when, whether every
    check passed, the failed checks as ``dimension.code`` separated by commas (empty when none),
    and what ran it (``archiving`` or ``audit``)."""

    __tablename__ = "qc_results"

    version_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("archive_versions.id"),
        primary_key=True,
        autoincrement=False,
    )
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    version: Mapped[int] = mapped_column(Integer)
    checked_at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)
    failed: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str] = mapped_column(String(16))


class SigninNonce(Base):
    """A member sign-in challenge (EIP-4361 nonce): answered at most once, before
    ``expires_at``. ``used_at`` is set in the same transaction that issues the token, so a nonce
    is consumed once even across restarts."""

    __tablename__ = "signin_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_by: Mapped[str | None] = mapped_column(String(42), default=None)


class MemberToken(Base):
    """A sign-in token of a consortium member: only its SHA-256 is stored. ``key_fingerprint``
    is the SHA-256 of the member's registry public key at issuance: a rotated key no longer
    matches and the token stops working."""

    __tablename__ = "member_tokens"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    member: Mapped[str] = mapped_column(String(42), index=True)
    role: Mapped[str] = mapped_column(String(16))
    audience: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by: Mapped[str | None] = mapped_column(String(80), default=None)


class AccessDenial(Base):
    """A read the access policy refused (``node.policy``): kept for auditors and counted in
    ``/metrics``; never a chain event. No PHI: pseudonyms, codes and the archive id."""

    __tablename__ = "access_denials"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(80), index=True)
    role: Mapped[str] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(64), default=None)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    action: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    sensitivity: Mapped[str] = mapped_column(String(32))
    relation: Mapped[str] = mapped_column(String(8))
    origin: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))


class BreakGlassWindow(Base):
    """A clinician's break-glass window on one archive: reads outside the policy are allowed to
    ``actor`` until ``expires_at`` and each is logged as a break-glass ACCESS. ``event_hash`` is
    the leaf hash of the BREAK_GLASS event that opened it; ``reason`` stays here, only its hash
    goes into events."""

    __tablename__ = "break_glass_windows"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    actor: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64), default=None)
    purpose: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    reason_hash: Mapped[str] = mapped_column(String(64))
    event_hash: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    reads: Mapped[int] = mapped_column(Integer, default=0)


class Consent(Base):
    """A patient's consent to insurer attestations (``node.services.attestations``): the consent
    subject's id, scope and chain head. The patient appears only as a pseudonym."""

    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(80), index=True)
    insurer: Mapped[str] = mapped_column(String(42), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    record_classes: Mapped[str] = mapped_column(String(256))
    facts: Mapped[str] = mapped_column(String(256))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    expires_at: Mapped[datetime]
    granted_at: Mapped[datetime]
    granted_by: Mapped[str] = mapped_column(String(80))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    grant_hash: Mapped[str] = mapped_column(String(64))
    last_event_hash: Mapped[str] = mapped_column(String(64))


class Attestation(Base):
    """An attestation this node signed: the signed document (no content, no patient id), the
    log index of its ATTEST event and whether it was revoked on chain."""

    __tablename__ = "attestations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(26), index=True)
    insurer: Mapped[str] = mapped_column(String(42), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)
    log_index: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Tag(Base):
    """A smart tag (QR label or RFID EPC) bound to an archive by a TAG_BIND event
    (``node.services.tags``), with where and when it was last scanned. ``label`` is the tag's
    human-readable identity (the QR text or the GIAI tag URI): never PHI. Revocation is local:
    a revoked tag's scans are refused (the binding event stays in the log)."""

    __tablename__ = "tags"

    tag_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    label: Mapped[str] = mapped_column(String(256))
    bound_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    scan_count: Mapped[int] = mapped_column(Integer, default=0)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    last_location: Mapped[str | None] = mapped_column(String(64), default=None)
    last_reader: Mapped[str | None] = mapped_column(String(64), default=None)


class TagScanRefusal(Base):
    """A scan refused because its tag is not bound here or was revoked: counted, not logged as
    an event (there is no archive to log it under)."""

    __tablename__ = "tag_scan_refusals"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tag_hash: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64))
    refused_at: Mapped[datetime]


class Replica(Base):
    """Custodian side: an encrypted replica of one version placed at a peer hospital
    (``node.services.replicas``). ``state`` is ``active`` (held, last challenge passed or not yet
    challenged), ``failed`` (a challenge or fetch failed: re-placed elsewhere, then dropped) or
    ``dropped`` (deleted at the peer, or the archive was destroyed)."""

    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("archive_id", "version", "peer"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26), index=True)
    version: Mapped[int] = mapped_column(Integer)
    peer: Mapped[str] = mapped_column(String(42), index=True)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    placed_at: Mapped[datetime]
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    record_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    """Digest of the key record last stored at ``peer`` for this archive (None: not yet sent)."""


class HeldReplica(Base):
    """Peer side: ciphertext this node holds for another hospital (never an unwrapped key).
    Fetched, challenged and deleted by that custodian only. ``version`` 0 is the archive's key
    record: the data key wrapped under the custodian's KEK and its descriptive metadata sealed under
    that KEK (opaque here: the holder has no KEK)."""

    __tablename__ = "held_replicas"
    __table_args__ = (UniqueConstraint("custodian", "archive_id", "version"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    custodian: Mapped[str] = mapped_column(String(42), index=True)
    archive_id: Mapped[str] = mapped_column(String(26))
    version: Mapped[int] = mapped_column(Integer)
    cid: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    stored_at: Mapped[datetime]


class ShippedEntry(Base):
    """Peer side: one entry of another hospital's log, shipped to us for its disaster recovery
    (events carry pseudonyms and commitments only)."""

    __tablename__ = "shipped_entries"

    custodian: Mapped[str] = mapped_column(String(42), primary_key=True)
    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    event: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime]


class LogShipment(Base):
    """Custodian side: how many of our log entries each log-replica peer acknowledged."""

    __tablename__ = "log_shipments"

    peer: Mapped[str] = mapped_column(String(42), primary_key=True)
    shipped: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class ArchiveTier(Base):
    """Storage tier of an archive's ciphertext (absent row: ``hot``) and its last read."""

    __tablename__ = "archive_tiers"

    archive_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    tier: Mapped[str] = mapped_column(String(8))
    moved_at: Mapped[datetime | None] = mapped_column(default=None)
    last_access_at: Mapped[datetime | None] = mapped_column(default=None)


class DestructionNotice(Base):
    """A destruction notice to one grantee of a destroyed archive (past or present grant),
    queued in the destruction's own transaction and sent by the notice job until the grantee
    accepts it (``delivered``) or refuses it for good (``refused``, its code kept). Each failed
    attempt moves ``next_attempt_at`` back (exponential backoff, capped); the row survives
    restarts, so a node that stops between destruction and delivery sends it later."""

    __tablename__ = "destruction_notices"
    __table_args__ = (UniqueConstraint("archive_id", "grantee"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    archive_id: Mapped[str] = mapped_column(String(26))
    grantee: Mapped[str] = mapped_column(String(42))
    certificate_hash: Mapped[str] = mapped_column(String(64))
    destroy_event: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
