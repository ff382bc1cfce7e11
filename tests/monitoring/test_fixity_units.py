"""What one fixity unit of work writes, checked row by row on a real node (real files, SQLite and
PostgreSQL): the FIXITY_CHECK events of a batch (in order, chained, their spliced bytes equal to
the canonical encoding), the archive rows settled by one statement (head, event count, state and
holds), the ``fixity_status`` rows inserted and later replaced by the upsert, the alerts, and the
scheduled cursor across a restart when ticks end inside batches. A mismatch in the middle of a
batch, a missing blob, an archive with two versions and one on hold are in the same unit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from anchoring import merkle
from anchoring.events import FixityCheckData, FixityCheckEvent, canonical_bytes, parse_event
from anchoring.storage import LogEntry
from api.main import create_app
from node.db import UnitOfWork
from node.ledger import Ledger, Settled
from node.models import Archive, ArchiveVersion, AuditCursor, FixityStatus
from node.runtime import NodeRuntime
from node.services.audits import MISSING_SHA256, AuditScope
from tests.api.conftest import Api, issue_keys, serve
from tests.fixtures.node import MakeNode
from tests.monitoring.test_fixity import _blob_path, _open_alerts


def _rows_agree_with_the_log(node: NodeRuntime) -> None:
    """Every archive row is what a fresh replay of its events says (head, state, holds), and its
    event count is the number of its events in the log."""
    fresh = Ledger(node.ledger.hospital)  # no cache: replays from the log
    with node.db.session() as session:
        for archive in session.execute(select(Archive)).scalars():
            entries = session.execute(
                select(LogEntry.event)
                .where(LogEntry.archive_id == archive.id)
                .order_by(LogEntry.index)
            ).scalars()
            count = len(list(entries))
            state = fresh.state(session, archive)  # raises when the head disagrees
            assert archive.last_event_hash == bytes.fromhex(state.head)
            assert archive.event_count == count, archive.id
            assert archive.state == state.status.value
            assert archive.on_hold is state.on_hold
            assert archive.hold_by_regulator is (state.on_hold and state.hold_by_regulator)


def _fixity_entries(node: NodeRuntime) -> list[tuple[int, str, bytes]]:
    with node.db.session() as session:
        return [
            (row.index, row.archive_id, row.event)
            for row in session.execute(
                select(LogEntry)
                .where(LogEntry.event_type == "FIXITY_CHECK")
                .order_by(LogEntry.index)
            ).scalars()
        ]


def test_one_unit_with_a_mismatch_in_the_middle_and_a_missing_blob(
    make_node: MakeNode, database_url: str
) -> None:
    node = make_node(database_url=database_url, fixity_batch_size=100, fixity_read_workers=2)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        ids = [api.create()["id"] for _ in range(7)]
        amended = api.client.post(
            f"/api/v1/archives/{ids[2]}/amend",
            headers=api.auth("archivist"),
            files={"file": ("v2.txt", b"second version " * 300, "text/plain")},
        )
        assert amended.status_code == 200, amended.text
        held = api.client.post(
            f"/api/v1/archives/{ids[4]}/hold",
            headers=api.auth("archivist"),
            json={"reason": "litigation"},
        )
        assert held.status_code == 200, held.text
        flipped, missing = ids[3], ids[5]
        path = _blob_path(node, flipped)
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 3] ^= 0x80
        path.write_bytes(bytes(changed))
        _blob_path(node, missing).unlink()
        with node.db.session() as session:
            before = {
                a.id: (a.event_count, a.state, a.on_hold)
                for a in session.execute(select(Archive)).scalars()
            }
            versions = [
                (v.id, v.archive_id, v.version, v.ciphertext_sha256)
                for v in session.execute(
                    select(ArchiveVersion).order_by(ArchiveVersion.id)
                ).scalars()
            ]
        assert len(versions) == 8  # seven archives, one of them with two versions
        _rows_agree_with_the_log(node)

        report = node.fixity.audit(None, AuditScope())
        assert (report.checked, report.passed, report.failed, report.skipped) == (8, 6, 2, 0)
        assert [(f.archive_id, f.problem) for f in report.failures] == [
            (flipped, "hash_mismatch"),
            (missing, "blob_missing"),
        ]
        assert _open_alerts(api) == sorted(
            [("fixity_mismatch", flipped, 1), ("blob_missing", missing, 1)]
        )

        # the events: one per version, in version order, each chained to its archive's head
        observed = {
            (archive_id, version): (
                hashlib.sha256(changed).hexdigest()
                if archive_id == flipped
                else MISSING_SHA256
                if archive_id == missing
                else sha
            )
            for _, archive_id, version, sha in versions
        }
        entries = _fixity_entries(node)
        assert len(entries) == 8
        events = [parse_event(raw) for _, _, raw in entries]
        for (index, archive_id, raw), event in zip(entries, events, strict=True):
            assert isinstance(event, FixityCheckEvent)
            assert canonical_bytes(event) == raw  # the spliced bytes are the canonical ones
            assert (event.log_index, event.archive_id) == (index, archive_id)
            assert event.hospital == node.ledger.hospital
        # within a unit the versions of one archive are logged together, archives in the order
        # of their first version (so the amended archive's version 2 follows its version 1)
        order = sorted(versions, key=lambda v: ([a for _, a, _, _ in versions].index(v[1]), v[2]))
        assert [
            (e.archive_id, e.data.version) for e in events if isinstance(e, FixityCheckEvent)
        ] == [(archive_id, version) for _, archive_id, version, _ in order]
        assert [e.data for e in events if isinstance(e, FixityCheckEvent)] == [
            FixityCheckData(
                version=version,
                ciphertext_sha256=observed[archive_id, version],
                ok=archive_id not in (flipped, missing),
            )
            for _, archive_id, version, _ in order
        ]
        times = {e.time for e in events}
        assert len(times) == 1  # one unit of work
        # the two checks of the amended archive: the second's prev is the first's leaf hash
        amended_events = [
            (raw, e)
            for (_, _, raw), e in zip(entries, events, strict=True)
            if e.archive_id == ids[2]
        ]
        assert len(amended_events) == 2
        assert amended_events[1][1].prev == merkle.leaf_hash(amended_events[0][0]).hex()

        # the archive rows: settled by one statement, as a replay of the log says
        _rows_agree_with_the_log(node)
        with node.db.session() as session:
            after = {a.id: a for a in session.execute(select(Archive)).scalars()}
            statuses = {s.version_id: s for s in session.execute(select(FixityStatus)).scalars()}
        (checked_at,) = times
        for archive_id, (count, state, on_hold) in before.items():
            row = after[archive_id]
            checks = 2 if archive_id == ids[2] else 1
            assert (row.event_count, row.state, row.on_hold) == (count + checks, state, on_hold)
            assert row.updated_at == checked_at
        assert after[ids[4]].on_hold is True  # the hold survives the bulk update

        # the status rows: one per version, with what was observed
        assert set(statuses) == {version_id for version_id, *_ in versions}
        for version_id, archive_id, version, _ in versions:
            status = statuses[version_id]
            assert status.archive_id == archive_id
            assert status.checked_at == checked_at
            if archive_id == flipped:
                expected: tuple[Any, ...] = (
                    False,
                    hashlib.sha256(changed).hexdigest(),
                    "hash_mismatch",
                )
            elif archive_id == missing:
                expected = (False, None, "blob_missing")
            else:
                expected = (True, observed[archive_id, version], None)
            assert (status.ok, status.observed_sha256, status.problem) == expected

        # repaired and audited again: the status rows are replaced (not duplicated), the
        # repaired blob passes, the missing one fails again (its alert counted twice)
        path.write_bytes(original)
        again = node.fixity.audit(None, AuditScope())
        assert (again.checked, again.passed, again.failed) == (8, 7, 1)
        assert _open_alerts(api) == sorted(
            [("fixity_mismatch", flipped, 1), ("blob_missing", missing, 2)]
        )
        with node.db.session() as session:
            replaced = {
                s.version_id: (s.ok, s.problem, s.checked_at)
                for s in session.execute(select(FixityStatus)).scalars()
            }
        assert len(replaced) == 8
        assert all(at > checked_at for _, _, at in replaced.values())
        assert {v: (ok, problem) for v, (ok, problem, _) in replaced.items()} == {
            version_id: (archive_id != missing, "blob_missing" if archive_id == missing else None)
            for version_id, archive_id, _, _ in versions
        }
        assert len(_fixity_entries(node)) == 16
        _rows_agree_with_the_log(node)
        log_audit = node.log_audit.audit(None)
        assert [f for f in log_audit.findings if f.kind == "catalogue_mismatch"] == []


def test_settling_many_rows_keeps_the_sessions_copies_true(
    make_node: MakeNode, database_url: str
) -> None:
    """``Ledger.settle_many`` updates rows without the ORM; a copy of a row already loaded in the
    unit's session is brought up to date, so a later flush of that copy cannot undo it."""
    node = make_node(database_url=database_url)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archive_id = api.create()["id"]
    with node.db.session() as session:
        sha = session.execute(
            select(ArchiveVersion.ciphertext_sha256).where(ArchiveVersion.archive_id == archive_id)
        ).scalar_one()

    def unit(uow: UnitOfWork) -> tuple[bytes, int]:
        archive = uow.session.get(Archive, archive_id)
        assert archive is not None
        state = node.ledger.state(uow.session, archive)
        event = FixityCheckEvent(
            hospital=node.ledger.hospital,
            log_index=uow.log.size,
            archive_id=archive_id,
            actor=node.ledger.hospital,
            time=uow.now,
            prev=state.head,
            data=FixityCheckData(version=1, ciphertext_sha256=sha, ok=True),
        )
        leaf, state = node.ledger.log_event(uow, archive_id, state, event)
        count = archive.event_count + 1
        node.ledger.settle_many(uow, [Settled(archive_id, leaf, state, count)])
        assert (archive.last_event_hash, archive.event_count) == (leaf, count)
        assert archive.updated_at == uow.now
        archive.title = archive.title + " (renamed)"  # a later change to the loaded copy
        return leaf, count

    leaf, count = node.committer.run(unit)
    with node.db.session() as session:
        row = session.get(Archive, archive_id)
        assert row is not None
        assert (row.last_event_hash, row.event_count) == (leaf, count)
        assert row.title.endswith(" (renamed)")
    _rows_agree_with_the_log(node)
    assert node.ledger.cached(archive_id, leaf) is not None


def test_ticks_ending_inside_batches_continue_from_the_cursor_after_a_restart(
    make_node: MakeNode, database_url: str
) -> None:
    """Five versions per tick in batches of three (3 + 2), units as small as one version.
    Each tick's events, status rows and cursor are exactly those of the versions it checked; a
    restarted node continues after the cursor; the cycle checks every version exactly once."""
    node = make_node(
        database_url=database_url,
        fixity_versions_per_tick=5,
        fixity_batch_size=3,
        fixity_interval=3600.0,
    )
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        ids = [api.create()["id"] for _ in range(8)]
    missing = ids[6]
    _blob_path(node, missing).unlink()
    with node.db.session() as session:
        version_ids = list(
            session.execute(select(ArchiveVersion.id).order_by(ArchiveVersion.id)).scalars()
        )

    first = node.fixity.tick()
    assert first is not None
    assert (first.checked, first.failed, first.cycle_complete) == (5, 0, False)
    cursor = node.fixity.cursor()
    assert cursor is not None
    assert cursor.position == version_ids[4]
    assert cursor.cycle_completed_at is None
    started = cursor.cycle_started_at
    assert [archive_id for _, archive_id, _ in _fixity_entries(node)] == ids[:5]
    with node.db.session() as session:
        assert sorted(session.execute(select(FixityStatus.version_id)).scalars()) == version_ids[:5]
    settings = node.settings
    node.close()

    restarted = NodeRuntime.open(settings)
    try:
        restarted.start(scheduler=False)
        second = restarted.fixity.tick()
        assert second is not None
        assert (second.checked, second.failed, second.cycle_complete) == (3, 1, True)
        assert [(f.archive_id, f.problem) for f in second.failures] == [(missing, "blob_missing")]
        entries = _fixity_entries(restarted)
        assert [archive_id for _, archive_id, _ in entries] == ids  # each once, in order
        checks = [parse_event(raw) for _, _, raw in entries]
        assert [e.data.ok for e in checks if isinstance(e, FixityCheckEvent)] == [
            archive_id != missing for archive_id in ids
        ]
        with restarted.db.session() as session:
            cursor = session.get(AuditCursor, "fixity")
            statuses = {
                s.version_id: (s.ok, s.problem)
                for s in session.execute(select(FixityStatus)).scalars()
            }
        assert cursor is not None
        assert (cursor.position, cursor.cycle_started_at) == (0, started)
        assert cursor.cycle_completed_at is not None
        assert statuses == {
            version_id: (archive_id != missing, "blob_missing" if archive_id == missing else None)
            for version_id, archive_id in zip(version_ids, ids, strict=True)
        }
        assert restarted.fixity.tick() is None  # the next cycle is not due yet
        later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
        restarted.fixity.clock = lambda: later
        third = restarted.fixity.tick()
        assert third is not None
        assert third.checked == 5
        cursor = restarted.fixity.cursor()
        assert cursor is not None
        assert cursor.position == version_ids[4]
        assert cursor.cycle_started_at == later
        _rows_agree_with_the_log(restarted)
    finally:
        restarted.close()
