"""Bulk creation by Core inserts (``ArchiveService._record_creates``) against the ORM path
(``_record_create``, taken when an item has a ``within`` callback), on a real node with both
databases: the same rows, the same CREATE events byte for byte (each re-encoded by the general
encoder and rebuilt from the stored rows by its pydantic model), consistent lifecycle state, and
refusals that leave nothing behind."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from anchoring import merkle, storage
from anchoring.events import (
    CreateData,
    CreateEvent,
    Purpose,
    RecordClass,
    Sensitivity,
    canonical_bytes,
    parse_event,
)
from node.db import UnitOfWork
from node.errors import InputError
from node.ledger import Ledger
from node.models import Archive, ArchiveVersion, IngestedMessage, SearchTerm, WrappedKey
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import _STORE_THREADS, NewArchive, NewContent
from node.services.records import ArchiveView

SHAPES = [
    (RecordClass.INPATIENT, Sensitivity.NORMAL, "cardiology", "text/plain"),
    (RecordClass.LAB, Sensitivity.NORMAL, "laboratory", "text/plain"),
    (RecordClass.INPATIENT, Sensitivity.SENSITIVE, "psychiatry", "application/pdf"),
]


@pytest.fixture
def archivist(node: NodeRuntime) -> Principal:
    return node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bulk").secret)


def _items(tag: str, n: int = 7, *, orm: bool = False, department: str | None = None) -> list[Any]:
    items = []
    for i in range(n):
        record_class, sensitivity, dept, media_type = SHAPES[i % len(SHAPES)]
        new = NewArchive(
            record_class=record_class,
            sensitivity=sensitivity,
            department=department if department is not None and i == 2 else dept,
            title=f"检验报告 {i} chest pain",
            patient_id=f"MRN-{i % 3}",
            source_system="LIS",
            media_type=media_type,
            filename=f"r{i}.txt" if i % 2 else None,
            trigger_date=date(2024, 5, 1 + i % 28) if i % 3 else None,
            metadata={"class_rule": f"rule-{i}", "ingested_via": "test"},
            text=f"血常规 结果 {i} normal",
        )
        content = f"document {i} ".encode() * (50 + i)

        def message(archive_id: str, now: datetime, i: int = i) -> dict[str, Any]:
            return {
                "source_system": "LIS",
                "message_id": f"{tag}-{i}",
                "kind": "test",
                "archive_id": archive_id,
                "patient_pseudonym": None,
                "encounter": None,
                "class_rule": f"rule-{i}",
                "sensitivity_rule": "default",
                "received_at": now,
            }

        def within(uow: UnitOfWork, archive: Archive) -> None:
            return None

        items.append(NewContent(new, [content], within=within if orm else None, message=message))
    return items


def _rows(node: NodeRuntime, views: list[ArchiveView]) -> list[dict[str, Any]]:
    """Everything stored for each archive, with the values that differ by nature between two
    creations (ids, times, per-archive salts and keys) replaced."""
    out = []
    with node.db.session() as session:
        for view in views:
            archive = session.get(Archive, view.id)
            assert archive is not None
            version = session.execute(
                select(ArchiveVersion).where(ArchiveVersion.archive_id == view.id)
            ).scalar_one()
            key = session.execute(
                select(WrappedKey).where(WrappedKey.archive_id == view.id)
            ).scalar_one()
            message = session.execute(
                select(IngestedMessage).where(IngestedMessage.archive_id == view.id)
            ).scalar_one()
            terms = set(
                session.execute(
                    select(SearchTerm.term).where(SearchTerm.archive_id == view.id)
                ).scalars()
            )
            entries = storage.entries_for_archive(session, view.id)
            assert len(entries) == 1
            raw = entries[0].event
            event = json.loads(raw)
            for masked in ("log_index", "archive_id", "time"):
                event[masked] = None
            for masked in ("commitment", "ciphertext_sha256"):
                event["data"][masked] = None

            def columns(row: Any, *skip: str) -> dict[str, Any]:
                return {
                    c.key: getattr(row, c.key)
                    for c in row.__table__.columns
                    if c.key not in ("id", *skip)
                }

            out.append(
                {
                    "archive": columns(
                        archive, "created_at", "updated_at", "last_event_hash", "id"
                    ),
                    "version": columns(
                        version,
                        "archive_id",
                        "cid",
                        "ciphertext_sha256",
                        "commitment",
                        "created_at",
                        "stored_size",
                    ),
                    "key": columns(key, "archive_id", "blob", "created_at"),
                    "message": columns(message, "archive_id", "message_id", "received_at"),
                    "terms": terms,
                    "event": event,
                    "event_type": entries[0].event_type,
                }
            )
    return out


def test_core_inserts_write_what_the_orm_path_writes(
    node: NodeRuntime, archivist: Principal
) -> None:
    fast = node.archives.create_many(archivist, _items("F"))
    orm = node.archives.create_many(archivist, _items("O", orm=True))
    assert _rows(node, fast) == _rows(node, orm)
    # The views answered are what the stored rows give.
    with node.db.session() as session:
        for view in fast:
            stored = session.get(Archive, view.id)
            assert stored is not None
            assert view == ArchiveView.of(stored)


def test_spliced_create_events_are_the_canonical_bytes(
    node: NodeRuntime, archivist: Principal
) -> None:
    items = _items("S", n=9)
    views = node.archives.create_many(archivist, items)
    fresh = Ledger(node.ledger.hospital)  # no cached state: replays the log
    with node.db.session() as session:
        for view, item in zip(views, items, strict=True):
            archive = session.get(Archive, view.id)
            assert archive is not None
            (entry,) = storage.entries_for_archive(session, view.id)
            raw = entry.event
            # Re-encoded by the general encoder: identical.
            assert canonical_bytes(parse_event(raw)) == raw
            # Built from the stored rows by the model, as ``_record_create`` builds it.
            version = archive.versions[0]
            rebuilt = CreateEvent(
                hospital=node.ledger.hospital,
                log_index=entry.index,
                archive_id=archive.id,
                actor=archivist.actor,
                time=archive.created_at,
                prev=None,
                data=CreateData(
                    record_class=item.new.record_class,
                    sensitivity=item.new.sensitivity,
                    department=item.new.department,
                    patient=node.pseudonyms.patient(item.new.patient_id),
                    source_system=item.new.source_system,
                    version=1,
                    commitment=version.commitment,
                    ciphertext_sha256=version.ciphertext_sha256,
                    size=version.size,
                    media_type=item.new.media_type,
                ),
            )
            assert canonical_bytes(rebuilt) == raw
            assert merkle.leaf_hash(raw) == archive.last_event_hash
            state = fresh.state(session, archive)  # replay agrees with the catalogue row
            assert state.status.value == archive.state == "CREATED"
            assert state.head == archive.last_event_hash.hex()
            assert state.current_version.commitment == version.commitment
    # The content reads back (the wrapped key row is this node's copy).
    stream = node.archives.open_content(archivist, views[4].id, purpose=_purpose())
    assert b"".join(stream.chunks) == b"".join(items[4].content)


def _purpose() -> Any:
    from anchoring.events import Purpose

    return Purpose.TREATMENT


def _footprint(node: NodeRuntime) -> tuple[int, ...]:
    blobs = sum(1 for p in Path(node.settings.blob_dir).rglob("*") if p.is_file())
    with node.db.session() as session:
        counts = tuple(
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Archive, ArchiveVersion, WrappedKey, IngestedMessage, SearchTerm)
        )
        return (blobs, *counts, storage.current_size(session))


def test_a_colliding_message_row_refuses_the_whole_batch(
    node: NodeRuntime, archivist: Principal
) -> None:
    node.archives.create_many(archivist, _items("X", n=2))
    before = _footprint(node)
    items = _items("Y", n=5)
    # Item 3 collides with a message taken before (as a racing copy would): a unique key the
    # database refuses inside the unit, after the events of items 0-2 were appended.
    items[3] = NewContent(items[3].new, [b"late"], message=_items("X", n=2)[1].message)
    with pytest.raises(IntegrityError):
        node.archives.create_many(archivist, items)
    assert _footprint(node) == before
    # The log and the state cache are intact: the next batch appends and replays cleanly.
    views = node.archives.create_many(archivist, _items("Z", n=3))
    fresh = Ledger(node.ledger.hospital)
    with node.db.session() as session:
        for view in views:
            archive = session.get(Archive, view.id)
            assert archive is not None
            assert fresh.state(session, archive).head == archive.last_event_hash.hex()


@pytest.mark.parametrize("orm", [False, True], ids=["core", "orm"])
def test_an_invalid_value_in_a_later_item_refuses_the_batch_on_both_paths(
    node: NodeRuntime, archivist: Principal, orm: bool
) -> None:
    """A value not made by this node (here a department that is not a code) is validated by the
    event model in the fast path too: it starts a template of its own."""
    before = _footprint(node)
    with pytest.raises(ValidationError):
        node.archives.create_many(archivist, _items("V", orm=orm, department="no such dept!"))
    assert _footprint(node) == before


def test_message_rows_carry_the_units_time(node: NodeRuntime, archivist: Principal) -> None:
    """The ingestion rows written by Core carry the unit's time; the archives' times too."""
    views = node.archives.create_many(archivist, _items("T", n=4))
    with node.db.session() as session:
        received = set(
            session.execute(
                select(IngestedMessage.received_at).where(
                    IngestedMessage.archive_id.in_([v.id for v in views])
                )
            ).scalars()
        )
        created = {session.get(Archive, v.id).created_at for v in views}  # type: ignore[union-attr]
    assert len(received) == 1
    assert received == created


def test_a_blob_refused_mid_batch_leaves_no_blob_of_any_run(
    node: NodeRuntime, archivist: Principal
) -> None:
    """The blobs of a batch are stored in runs of neighbouring items, one run per store thread;
    an item refused in one run (empty content) refuses the batch, and every blob stored by any
    run, before or after it, is deleted. The first refused item's error is the one raised."""
    node.archives.create_many(archivist, _items("P", n=2))
    before = _footprint(node)
    items = _items("Q", n=3 * _STORE_THREADS + 5)  # every thread gets a run of several
    for bad in (4, len(items) - 2):
        items[bad] = NewContent(items[bad].new, [b""], message=items[bad].message)
    items[20] = NewContent(items[20].new, [b"x" * (node.settings.max_upload_bytes + 1)])
    with pytest.raises(InputError) as refused:
        node.archives.create_many(archivist, items)
    assert refused.value.code == "empty_content"  # item 4, not item 20 (payload_too_large)
    assert _footprint(node) == before
    # After a refusal, a batch across every run stores each item's blob under its own archive
    # (the blob is sealed to its archive id, so a blob out of place would not open).
    items = _items("R", n=3 * _STORE_THREADS + 5)
    views = node.archives.create_many(archivist, items)
    for view, item in zip(views, items, strict=True):
        stream = node.archives.open_content(archivist, view.id, Purpose.QUALITY)
        assert b"".join(stream.chunks) == b"".join(item.content)
        assert view.title == item.new.title
