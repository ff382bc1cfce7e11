"""Log audits on a real node (real anvil, SQLite and PostgreSQL): an untouched log agrees with the
chain; an event row rewritten in the database is named (archive, first bad index) and every
anchored checkpoint covering it is reported; an archive row rewritten in the database is a
catalogue mismatch naming the archive and the field. Each finding is exactly one alert."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from anchoring import storage
from anchoring.storage import LogEntry
from node.models import Archive
from tests.api.conftest import Api

LOG_AUDIT = "/api/v1/audits/log"


def _history(api: Api) -> tuple[str, str]:
    """Two archives, anchored in two checkpoints (sizes 1 and 3): A created; B created and
    archived. Returns their ids."""
    first = api.create()["id"]
    api.node.worker.run_until_anchored(timeout=30)
    second = api.create(record_class="LAB")["id"]
    archived = api.client.post(f"/api/v1/archives/{second}/archive", headers=api.auth("archivist"))
    assert archived.status_code == 200
    api.node.worker.run_until_anchored(timeout=30)
    return first, second


def _audit(api: Api) -> dict[str, Any]:
    response = api.client.post(LOG_AUDIT, headers=api.auth("archivist"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _alerts(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    """Open alerts, but ``qc_failed`` (the fixtures' PDF is not a real PDF; archiving it raises
    that alert under the default ``warn`` policy)."""
    items = api.client.get("/api/v1/alerts", headers=api.auth("auditor")).json()["items"]
    return sorted((a["kind"], a["subject"], a["detail"]) for a in items if a["kind"] != "qc_failed")


def _findings(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return sorted((f["kind"], f["subject"], f["detail"]) for f in report["findings"])


def test_an_untouched_log_agrees_with_the_chain(api: Api) -> None:
    _history(api)
    report = _audit(api)
    assert report["ok"] is True
    assert (report["entries"], report["checkpoints"], report["archives"]) == (3, 2, 2)
    assert report["findings"] == []
    assert _alerts(api) == []


def test_a_rewritten_event_row_is_named_and_contradicts_the_chain(api: Api) -> None:
    first, second = _history(api)
    with api.node.db.session() as session:
        create_b = (
            session.execute(
                select(LogEntry).where(LogEntry.archive_id == second).order_by(LogEntry.index)
            )
            .scalars()
            .first()
        )
    assert create_b is not None
    index = create_b.index
    assert index == 1
    forged = create_b.event.replace(b'"department":"cardiology"', b'"department":"oncology"')
    assert forged != create_b.event
    with api.node.db.transaction() as session:
        session.execute(update(LogEntry).where(LogEntry.index == index).values(event=forged))

    report = _audit(api)
    assert report["ok"] is False
    expected = sorted(
        [
            ("log_entry_tampered", second, {"log_index": 1}),
            # the checkpoint of size 1 does not cover it; the one of size 3 (chain index 1) does
            ("log_root_mismatch", "checkpoint:1", {"size": 3, "first_bad_index": 1}),
            ("log_head_mismatch", "log:head", {"size": 3, "head_size": 3, "first_bad_index": 1}),
            # the ARCHIVE event (index 2) still links to the original CREATE
            ("hash_chain_broken", second, {"code": "prev_mismatch", "log_index": 2}),
        ]
    )
    assert _findings(report) == expected
    assert _alerts(api) == expected
    assert first not in {subject for _, subject, _ in expected}


def test_a_rewritten_archive_row_is_a_catalogue_mismatch(api: Api) -> None:
    first, second = _history(api)
    with api.node.db.transaction() as session:
        session.execute(update(Archive).where(Archive.id == first).values(state="DESTROYED"))
        session.execute(update(Archive).where(Archive.id == second).values(on_hold=True))
    report = _audit(api)
    expected = sorted(
        [
            ("catalogue_mismatch", first, {"field": "state"}),
            ("catalogue_mismatch", second, {"field": "on_hold"}),
        ]
    )
    assert _findings(report) == expected
    assert _alerts(api) == expected
    with api.node.db.session() as session:  # the audit only reads
        assert storage.current_size(session) == 3


def test_log_audit_refusals(api: Api) -> None:
    for who in ("auditor", "admin", "cardiologist"):
        assert api.client.post(LOG_AUDIT, headers=api.auth(who)).status_code == 403
    assert api.client.post(LOG_AUDIT).status_code == 401
