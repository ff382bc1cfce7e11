"""Retention through the API (both databases, real anvil): deadlines only move later, with the
reason kept on this node and the deadline moved on chain too; a later visit or discharge of the
same patient extends that patient's records of the matching classes, never the others."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from anchoring import storage
from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from node.models import Archive, RetentionChange
from tests.api.conftest import Api


def _archive(api: Api, **metadata: Any) -> dict[str, Any]:
    created = api.create(**metadata)
    archived = api.client.post(
        f"/api/v1/archives/{created['id']}/archive", headers=api.auth("archivist")
    )
    assert archived.status_code == 200, archived.text
    body: dict[str, Any] = archived.json()
    return body


def _deadline(day: date) -> str:
    return datetime.combine(day, time(), UTC).isoformat().replace("+00:00", "Z")


def _events(api: Api, archive_id: str) -> list[dict[str, Any]]:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def _get(api: Api, archive_id: str) -> dict[str, Any]:
    with api.node.db.session() as session:
        row = session.get_one(Archive, archive_id)
        return {
            "state": row.state,
            "deadline": row.retention_deadline,
            "trigger": row.trigger_date,
            "events": row.event_count,
        }


def _on_chain_deadline(chain: RpcChain, archive_id: str) -> int:
    return chain.custody(archive_id).retention_deadline


def _verifies(api: Api, chain: RpcChain, archive_id: str) -> None:
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist"))
    assert proof.status_code == 200, proof.text
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()


def test_archiving_sets_the_deadline_from_the_class_policy(api: Api) -> None:
    outpatient = _archive(api, record_class="OUTPATIENT", trigger_date="2024-05-02")
    inpatient = _archive(api, record_class="INPATIENT", trigger_date="2024-02-29")
    assert outpatient["retention_policy"] == "outpatient-15y"
    assert outpatient["retention_deadline"] == _deadline(date(2039, 5, 2))
    assert inpatient["retention_policy"] == "inpatient-30y"
    assert inpatient["retention_deadline"] == _deadline(date(2054, 2, 28))


def test_extension_moves_the_deadline_in_the_log_and_on_chain_and_keeps_the_reason_here(
    api: Api, chain: RpcChain
) -> None:
    archive_id = _archive(api, record_class="OUTPATIENT", trigger_date="2024-05-02")["id"]
    api.node.worker.run_until_anchored(timeout=30)
    reason = "cohort study of patient MRN-0001 until 2045"
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/retention",
        headers=api.auth("archivist"),
        json={"new_deadline": "2045-01-01", "reason": reason},
    )
    assert response.status_code == 200, response.text
    assert response.json()["retention_deadline"] == _deadline(date(2045, 1, 1))
    extend = _events(api, archive_id)[-1]
    assert extend["type"] == "RETENTION_EXTEND"
    assert extend["event"]["data"] == {
        "previous_deadline": "2039-05-02T00:00:00Z",
        "new_deadline": "2045-01-01T00:00:00Z",
    }
    with api.node.db.session() as session:
        change = session.execute(
            select(RetentionChange).where(RetentionChange.archive_id == archive_id)
        ).scalar_one()
        assert (change.cause, change.reason) == ("request", reason)
        logged = b"".join(e.event for e in storage.entries_for_archive(session, archive_id))
    assert b"MRN-0001" not in logged  # the reason stays local
    assert b"cohort" not in logged

    api.node.worker.run_until_anchored(timeout=30)
    expected = int(datetime(2045, 1, 1, tzinfo=UTC).timestamp())
    assert _on_chain_deadline(chain, archive_id) == expected
    _verifies(api, chain, archive_id)


def test_shortening_and_other_refusals_change_nothing(api: Api) -> None:
    archivist = api.auth("archivist")
    archive_id = _archive(api, record_class="OUTPATIENT", trigger_date="2024-05-02")["id"]
    created_only = api.create(record_class="OUTPATIENT")["id"]
    url = f"/api/v1/archives/{archive_id}/retention"
    before = api.footprint()
    for day in ("2039-05-02", "2039-05-01", "2030-01-01"):
        response = api.client.post(
            url, headers=archivist, json={"new_deadline": day, "reason": "x"}
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "retention_shortened"
    not_archived = api.client.post(
        f"/api/v1/archives/{created_only}/retention",
        headers=archivist,
        json={"new_deadline": "2099-01-01", "reason": "x"},
    )
    assert (not_archived.status_code, not_archived.json()["code"]) == (409, "not_archived")
    for who in ("cardiologist", "auditor", "admin"):
        denied = api.client.post(
            url, headers=api.auth(who), json={"new_deadline": "2099-01-01", "reason": "x"}
        )
        assert denied.status_code in (403, 404), (who, denied.text)
    for body in (
        {"new_deadline": "2099-01-01"},
        {"new_deadline": "2099-01-01", "reason": "   "},
        {"new_deadline": "2099-02-30", "reason": "x"},
        {"new_deadline": "2099-01-01", "reason": "x", "extra": 1},
    ):
        invalid = api.client.post(url, headers=archivist, json=body)
        assert invalid.status_code == 422, (body, invalid.text)
    unknown = api.client.post(
        "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/retention",
        headers=archivist,
        json={"new_deadline": "2099-01-01", "reason": "x"},
    )
    assert unknown.status_code == 404
    assert api.footprint() == before
    assert _get(api, archive_id)["deadline"] == datetime(2039, 5, 2, tzinfo=UTC)


def _visit(api: Api, patient: str, kind: str, at: datetime, who: str = "archivist") -> Any:
    return api.client.post(
        f"/api/v1/patients/{patient}/encounters",
        headers=api.auth(who),
        json={"kind": kind, "at": at.isoformat(), "encounter_id": "V-1", "source_system": "HIS"},
    )


def test_a_later_visit_extends_the_patients_visit_classes_only(api: Api, chain: RpcChain) -> None:
    outpatient = _archive(api, record_class="OUTPATIENT", trigger_date="2024-05-02")["id"]
    emergency = _archive(api, record_class="EMERGENCY", trigger_date="2023-01-10")["id"]
    inpatient = _archive(api, record_class="INPATIENT", trigger_date="2024-05-02")["id"]
    lab = _archive(api, record_class="LAB", trigger_date="2024-05-02")["id"]
    other = _archive(api, record_class="OUTPATIENT", patient_id="MRN-0002")["id"]
    pending = api.create(record_class="OUTPATIENT", trigger_date="2024-05-02")["id"]
    api.node.worker.run_until_anchored(timeout=30)
    untouched = {i: _get(api, i) for i in (inpatient, lab, other)}

    yesterday = datetime.now(UTC) - timedelta(days=1)
    response = _visit(api, "MRN-0001", "visit", yesterday)
    assert response.status_code == 204, response.text
    expected = datetime.combine(yesterday.date().replace(year=yesterday.year + 15), time(), UTC)
    for archive_id in (outpatient, emergency):
        after = _get(api, archive_id)
        assert after["deadline"] == expected
        assert after["trigger"] == datetime.combine(yesterday.date(), time(), UTC)
        assert _events(api, archive_id)[-1]["type"] == "RETENTION_EXTEND"
    for archive_id, before in untouched.items():
        assert _get(api, archive_id) == before
    # A record not yet archived takes the later trigger date: its deadline runs from the visit.
    assert _get(api, pending)["trigger"] == datetime.combine(yesterday.date(), time(), UTC)
    archived = api.client.post(
        f"/api/v1/archives/{pending}/archive", headers=api.auth("archivist")
    ).json()
    assert archived["retention_deadline"] == _deadline(expected.date())

    # The same report again, or an earlier visit, moves nothing (triggers never move back).
    counts = {i: _get(api, i)["events"] for i in (outpatient, emergency)}
    assert _visit(api, "MRN-0001", "visit", yesterday).status_code == 204
    assert _visit(api, "MRN-0001", "visit", datetime(2025, 1, 1, tzinfo=UTC)).status_code == 204
    assert {i: _get(api, i)["events"] for i in counts} == counts

    # A discharge restarts the inpatient clock, not the outpatient one.
    assert _visit(api, "MRN-0001", "discharge", yesterday).status_code == 204
    assert _get(api, inpatient)["deadline"] == datetime.combine(
        yesterday.date().replace(year=yesterday.year + 30), time(), UTC
    )
    assert {i: _get(api, i)["events"] for i in counts} == counts

    api.node.worker.run_until_anchored(timeout=30)
    for archive_id in (outpatient, emergency, inpatient):
        deadline = _get(api, archive_id)["deadline"]
        assert _on_chain_deadline(chain, archive_id) == int(deadline.timestamp())
        _verifies(api, chain, archive_id)


def test_encounter_refusals(api: Api) -> None:
    outpatient = _archive(api, record_class="OUTPATIENT", trigger_date="2024-05-02")["id"]
    before = api.footprint()
    future = _visit(api, "MRN-0001", "visit", datetime.now(UTC) + timedelta(days=2))
    assert (future.status_code, future.json()["code"]) == (400, "trigger_in_future")
    assert _visit(api, "MRN-0001", "visit", datetime.now(UTC), "cardiologist").status_code == 403
    assert _visit(api, "MRN-0001", "visit", datetime.now(UTC), "auditor").status_code == 403
    url = "/api/v1/patients/MRN-0001/encounters"
    for body in (
        {"kind": "visit"},
        {"kind": "transfer", "at": "2025-01-01T00:00:00Z"},
        {"kind": "visit", "at": "2025-01-01T00:00:00"},  # no offset
        {"kind": "discharge", "at": 217},  # a unix number, not the schema's string
        {"kind": "visit", "at": "2025-01-01T00:00:00Z", "ward": "5B"},
    ):
        response = api.client.post(url, headers=api.auth("archivist"), json=body)
        assert response.status_code == 422, (body, response.text)
    assert api.footprint() == before
    assert _get(api, outpatient)["deadline"] == datetime(2039, 5, 2, tzinfo=UTC)
