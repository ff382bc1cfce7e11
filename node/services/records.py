"""Plain snapshots the services return (never live ORM objects: sessions end with the call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from node.models import Archive, ArchiveVersion

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VersionView:
    """One stored version, as callers may see it."""

    version: int
    size: int
    media_type: str
    filename: str | None
    cid: str
    ciphertext_sha256: str
    commitment: str
    created_at: datetime

    @classmethod
    def of(cls, row: ArchiveVersion) -> VersionView:
        return cls(
            version=row.version,
            size=row.size,
            media_type=row.media_type,
            filename=row.filename,
            cid=row.cid,
            ciphertext_sha256=row.ciphertext_sha256,
            commitment=row.commitment,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class ArchiveView:
    """An archive's metadata and lifecycle state (no content, no keys)."""

    id: str
    record_class: str
    sensitivity: str
    department: str
    title: str
    patient_pseudonym: str
    source_system: str
    metadata: dict[str, Any]
    state: str
    custodian: str
    trigger_date: datetime
    retention_policy: str | None
    retention_deadline: datetime | None
    on_hold: bool
    hold_by_regulator: bool
    current_version: int
    event_count: int
    chain_status: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    versions: tuple[VersionView, ...]

    @classmethod
    def of(cls, row: Archive, versions: list[ArchiveVersion] | None = None) -> ArchiveView:
        return cls(
            id=row.id,
            record_class=row.record_class,
            sensitivity=row.sensitivity,
            department=row.department,
            title=row.title,
            patient_pseudonym=row.patient_pseudonym,
            source_system=row.source_system,
            metadata=dict(row.metadata_json),
            state=row.state,
            custodian=row.custodian,
            trigger_date=row.trigger_date,
            retention_policy=row.retention_policy,
            retention_deadline=row.retention_deadline,
            on_hold=row.on_hold,
            hold_by_regulator=row.hold_by_regulator,
            current_version=row.current_version,
            event_count=row.event_count,
            chain_status=row.chain_status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            archived_at=row.archived_at,
            versions=tuple(VersionView.of(v) for v in (versions or row.versions)),
        )


@dataclass(frozen=True, slots=True)
class EventView:
    """One logged event of an archive and whether a confirmed checkpoint covers it."""

    log_index: int
    leaf_hash: str
    event_type: str
    time: datetime
    event: dict[str, Any]
    anchored: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int
    total_exact: bool = True  # false: at least ``total`` match (a capped text-search count)
    next_cursor: str | None = None  # catalogue search: resumes after this page; None: no more
