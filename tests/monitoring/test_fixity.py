"""Fixity audits on a real node (real files in a local blob store, SQLite and PostgreSQL): a byte
flipped in a blob file and a deleted blob are found by the next audit, each as a failing
FIXITY_CHECK event and exactly one alert of the right kind; intact blobs pass and are logged as
passing; scopes select what is read; the scheduled audit keeps a persistent cursor across a
restart; the read rate is bounded; a catalogue row changed behind the node's back is reported."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from node.blobstore.local import LocalBlobStore
from node.config import NodeSettings
from node.models import ArchiveVersion, AuditCursor, FixityStatus
from node.runtime import NodeRuntime
from node.services.audits import MISSING_SHA256, AuditScope, Throttle
from tests.api.conftest import Api
from tests.fixtures.node import MakeNode

FIXITY = "/api/v1/audits/fixity"


def _fixity_events(api: Api, archive_id: str) -> list[dict[str, Any]]:
    events = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    ).json()
    return [e["event"]["data"] for e in events if e["type"] == "FIXITY_CHECK"]


def _blob_path(node: NodeRuntime, archive_id: str, version: int = 1) -> Path:
    with node.db.session() as session:
        cid = session.execute(
            select(ArchiveVersion.cid).where(
                ArchiveVersion.archive_id == archive_id, ArchiveVersion.version == version
            )
        ).scalar_one()
    assert isinstance(node.blobs, LocalBlobStore)
    return node.blobs.path_of(cid)


def _open_alerts(api: Api) -> list[tuple[str, str, int]]:
    """Open alerts, but ``qc_failed`` (``test_quality.py`` covers it)."""
    items = api.client.get("/api/v1/alerts", headers=api.auth("archivist")).json()["items"]
    return sorted((a["kind"], a["subject"], a["count"]) for a in items if a["kind"] != "qc_failed")


def test_intact_blobs_pass_and_each_check_is_logged(api: Api) -> None:
    first, second = api.create()["id"], api.create()["id"]
    amended = api.client.post(
        f"/api/v1/archives/{second}/amend",
        headers=api.auth("archivist"),
        files={"file": ("v2.txt", b"second version " * 500, "text/plain")},
    )
    assert amended.status_code == 200
    archived = api.client.post(f"/api/v1/archives/{first}/archive", headers=api.auth("archivist"))
    assert archived.status_code == 200

    response = api.client.post(FIXITY, json={}, headers=api.auth("archivist"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["checked"], report["passed"], report["failed"]) == (3, 3, 0)
    assert report["failures"] == []
    stored = sum(_blob_path(api.node, a, v).stat().st_size for a, v in ((first, 1), (second, 1)))
    stored += _blob_path(api.node, second, 2).stat().st_size
    assert report["bytes_read"] == stored

    with api.node.db.session() as session:
        versions = {
            (v.archive_id, v.version): v.ciphertext_sha256
            for v in session.execute(select(ArchiveVersion)).scalars()
        }
        statuses = session.execute(select(FixityStatus)).scalars().all()
    assert _fixity_events(api, first) == [
        {"version": 1, "ciphertext_sha256": versions[(first, 1)], "ok": True}
    ]
    assert _fixity_events(api, second) == [
        {"version": 1, "ciphertext_sha256": versions[(second, 1)], "ok": True},
        {"version": 2, "ciphertext_sha256": versions[(second, 2)], "ok": True},
    ]
    assert len(statuses) == 3
    assert all(s.ok and s.problem is None for s in statuses)
    assert _open_alerts(api) == []


def test_a_flipped_byte_and_a_deleted_blob_raise_exactly_the_right_alerts(api: Api) -> None:
    flipped, deleted, intact = (api.create()["id"] for _ in range(3))
    path = _blob_path(api.node, flipped)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _blob_path(api.node, deleted).unlink()

    report = api.client.post(FIXITY, json={"scope": "all"}, headers=api.auth("archivist")).json()
    assert (report["checked"], report["passed"], report["failed"]) == (3, 1, 2)
    assert sorted((f["archive_id"], f["problem"]) for f in report["failures"]) == sorted(
        [(flipped, "hash_mismatch"), (deleted, "blob_missing")]
    )
    assert _open_alerts(api) == sorted(
        [("fixity_mismatch", flipped, 1), ("blob_missing", deleted, 1)]
    )
    assert _fixity_events(api, flipped) == [
        {"version": 1, "ciphertext_sha256": hashlib.sha256(data).hexdigest(), "ok": False}
    ]
    assert _fixity_events(api, deleted) == [
        {"version": 1, "ciphertext_sha256": MISSING_SHA256, "ok": False}
    ]
    assert [e["ok"] for e in _fixity_events(api, intact)] == [True]
    metrics = api.client.get("/metrics").text
    assert 'archivechain_alerts_open{kind="fixity_mismatch",severity="critical"} 1.0' in metrics
    assert 'archivechain_alerts_open{kind="blob_missing",severity="critical"} 1.0' in metrics

    # the next audit finds the same problems: the same alerts, counted again
    api.client.post(FIXITY, json={}, headers=api.auth("archivist"))
    assert _open_alerts(api) == sorted(
        [("fixity_mismatch", flipped, 2), ("blob_missing", deleted, 2)]
    )
    with api.node.db.session() as session:
        problems = {
            s.archive_id: (s.ok, s.problem) for s in session.execute(select(FixityStatus)).scalars()
        }
    assert problems == {
        flipped: (False, "hash_mismatch"),
        deleted: (False, "blob_missing"),
        intact: (True, None),
    }


def test_a_truncated_blob_is_a_size_mismatch(api: Api) -> None:
    archive_id = api.create()["id"]
    path = _blob_path(api.node, archive_id)
    path.write_bytes(path.read_bytes()[:-1])
    report = api.client.post(FIXITY, json={}, headers=api.auth("archivist")).json()
    assert [(f["archive_id"], f["problem"]) for f in report["failures"]] == [
        (archive_id, "size_mismatch")
    ]
    assert _open_alerts(api) == [("fixity_mismatch", archive_id, 1)]


def test_scopes_select_what_is_read(api: Api) -> None:
    lab = api.create(record_class="LAB")["id"]
    inpatient = [api.create()["id"] for _ in range(2)]
    archivist = api.auth("archivist")
    by_class = api.client.post(
        FIXITY, json={"scope": "class", "record_class": "LAB"}, headers=archivist
    ).json()
    assert by_class["checked"] == 1
    assert [e["ok"] for e in _fixity_events(api, lab)] == [True]
    assert _fixity_events(api, inpatient[0]) == []
    by_id = api.client.post(
        FIXITY,
        json={"scope": "archives", "archive_ids": [inpatient[1]]},
        headers=archivist,
    ).json()
    assert by_id["checked"] == 1
    assert len(_fixity_events(api, inpatient[1])) == 1
    assert _fixity_events(api, inpatient[0]) == []


def test_fixity_audit_refusals(api: Api) -> None:
    archive_id = api.create()["id"]
    archivist = api.auth("archivist")
    for body, code in (
        ({"scope": "archives"}, "invalid_scope"),
        ({"scope": "class"}, "invalid_scope"),
        ({"scope": "all", "archive_ids": [archive_id]}, "invalid_scope"),
        ({"scope": "all", "record_class": "LAB"}, "invalid_scope"),
    ):
        refused = api.client.post(FIXITY, json=body, headers=archivist)
        assert refused.status_code == 400, body
        assert refused.json()["code"] == code
    for body in (
        {"scope": "everything"},
        {"scope": "archives", "archive_ids": ["not-an-id"]},
        {"scope": "archives", "archive_ids": [archive_id] * 1001},
        {"scope": "class", "record_class": "SURGERY"},
        {"unknown": 1},
        [],
    ):
        assert api.client.post(FIXITY, json=body, headers=archivist).status_code == 422, body
    for who in ("auditor", "admin", "cardiologist"):
        assert api.client.post(FIXITY, json={}, headers=api.auth(who)).status_code == 403
    assert api.client.post(FIXITY, json={}).status_code == 401
    assert _fixity_events(api, archive_id) == []  # nothing refused was audited


def test_the_scheduled_audit_continues_after_a_restart(
    make_node: MakeNode, database_url: str
) -> None:
    node = make_node(
        database_url=database_url,
        fixity_versions_per_tick=2,
        fixity_batch_size=1,
        fixity_interval=3600.0,
    )
    from api.main import create_app
    from tests.api.conftest import issue_keys, serve

    with serve(create_app(node)) as client:
        api = Api(node=node, app=create_app(node), client=client, keys=issue_keys(node))
        ids = [api.create()["id"] for _ in range(5)]
    with node.db.session() as session:
        version_ids = list(
            session.execute(select(ArchiveVersion.id).order_by(ArchiveVersion.id)).scalars()
        )
    first = node.fixity.tick()
    assert first is not None
    assert first.checked == 2
    assert not first.cycle_complete
    cursor = node.fixity.cursor()
    assert cursor is not None
    assert cursor.position == version_ids[1]
    settings: NodeSettings = node.settings
    node.close()

    restarted = NodeRuntime.open(settings)
    try:
        restarted.start(scheduler=False)
        second = restarted.fixity.tick()
        assert second is not None
        assert second.checked == 2
        third = restarted.fixity.tick()
        assert third is not None
        assert third.checked == 1
        assert third.cycle_complete
        assert restarted.fixity.tick() is None  # the next cycle is not due yet
        with restarted.db.session() as session:
            cursor = session.get(AuditCursor, "fixity")
            checked = {
                s.archive_id: s.checked_at for s in session.execute(select(FixityStatus)).scalars()
            }
        assert cursor is not None
        assert cursor.position == 0
        assert cursor.cycle_completed_at is not None
        assert set(checked) == set(ids)  # each version exactly once in the cycle
        later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
        restarted.fixity.clock = lambda: later  # the next cycle is due an hour after the last
        again = restarted.fixity.tick()
        assert again is not None
        assert again.checked == 2
    finally:
        restarted.close()


def test_the_read_rate_is_bounded(make_node: MakeNode, database_url: str) -> None:
    node = make_node(database_url=database_url, fixity_max_bytes_per_second=40_000.0)
    from api.main import create_app
    from tests.api.conftest import issue_keys, serve

    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        for _ in range(4):
            api.create()
    begun = time.monotonic()
    report = node.fixity.audit(None, AuditScope())
    elapsed = time.monotonic() - begun
    assert report.checked == 4
    assert report.bytes_read > 40_000
    assert elapsed >= report.bytes_read / 40_000 - 0.05


def test_the_throttle_sleeps_what_the_rate_requires() -> None:
    slept: list[float] = []
    throttle = Throttle(1000.0, sleep=slept.append)
    throttle.consume(500)
    throttle.consume(500)
    assert slept
    assert 0.9 <= slept[-1] <= 1.0  # 1000 bytes at 1000 B/s: about a second ahead
    unthrottled = Throttle(0.0, sleep=slept.append)
    count = len(slept)
    unthrottled.consume(10**9)
    assert len(slept) == count


def test_a_catalogue_hash_changed_in_the_database_is_reported(api: Api) -> None:
    archive_id = api.create()["id"]
    with api.node.db.transaction() as session:
        session.execute(
            update(ArchiveVersion)
            .where(ArchiveVersion.archive_id == archive_id)
            .values(ciphertext_sha256="ab" * 32)
        )
    report = api.client.post(FIXITY, json={}, headers=api.auth("archivist")).json()
    assert (report["checked"], report["passed"]) == (1, 1)  # the blob matches the log's hash
    alerts = api.client.get("/api/v1/alerts", headers=api.auth("archivist")).json()["items"]
    assert [(a["kind"], a["subject"], a["detail"]) for a in alerts] == [
        ("catalogue_mismatch", archive_id, {"version": 1, "field": "ciphertext_sha256"})
    ]


def test_reads_run_ahead_and_units_commit_in_order(make_node: MakeNode, database_url: str) -> None:
    """Three reader threads and batches of 4: every version is checked once, the FIXITY_CHECK
    events are logged in version order (units commit in order whatever order the reads finish
    in), a flipped byte among them is exactly one alert, and the scheduled audit's cursor ends
    on the last version."""
    node = make_node(
        database_url=database_url,
        fixity_batch_size=4,
        fixity_read_workers=3,
        fixity_versions_per_tick=6,
    )
    from api.main import create_app
    from tests.api.conftest import issue_keys, serve

    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        ids = [api.create()["id"] for _ in range(9)]
        path = _blob_path(node, ids[5])
        path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
        report = node.fixity.audit(None, AuditScope())
        assert (report.checked, report.passed, report.failed) == (9, 8, 1)
        assert [(f.archive_id, f.problem) for f in report.failures] == [(ids[5], "hash_mismatch")]
        indexes = []
        for archive_id in ids:
            events = api.client.get(
                f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
            ).json()
            checks = [e["event"] for e in events if e["type"] == "FIXITY_CHECK"]
            assert len(checks) == 1
            assert checks[0]["data"]["ok"] is (archive_id != ids[5])
            indexes.append(checks[0]["log_index"])
        assert indexes == sorted(indexes)
        assert _open_alerts(api) == [("fixity_mismatch", ids[5], 1)]

        first = node.fixity.tick()  # 6 of 9: a batch of 4, then one of 2
        assert first is not None
        assert (first.checked, first.failed, first.cycle_complete) == (6, 1, False)
        with node.db.session() as session:
            version_ids = list(
                session.execute(select(ArchiveVersion.id).order_by(ArchiveVersion.id)).scalars()
            )
        cursor = node.fixity.cursor()
        assert cursor is not None
        assert cursor.position == version_ids[5]
        second = node.fixity.tick()
        assert second is not None
        assert (second.checked, second.failed, second.cycle_complete) == (3, 0, True)
        with node.db.session() as session:
            assert len(list(session.execute(select(FixityStatus)).scalars())) == 9
        assert _open_alerts(api) == [("fixity_mismatch", ids[5], 2)]
