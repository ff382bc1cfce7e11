"""An archivist's correction of a classification (``POST /archives/{id}/reclassify``): a
RECLASSIFY event the lifecycle checks, the catalogue row and the deciding rule updated, refusals
that leave nothing behind; and the catalogue of one patient or encounter
(``GET /catalogue?patient_id=&encounter=``) without the id ever coming back. Real app, real node,
both databases."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime

import httpx
from sqlalchemy import select

from anchoring.storage import OutboxItem
from node.classification import SourceHints
from node.models import IngestedMessage, RetentionChange
from node.services.ingestion import IncomingDocument
from tests.api.conftest import Api

CATALOGUE = "/api/v1/catalogue"
MISSING = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
REASON = "LOINC type was wrong: this is the HIV lab report of 张三"


def _ingest(
    api: Api, message_id: str, patient: str = "MRN-RECL-1", encounter: str = "V-RECL-1"
) -> str:
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    doc = IncomingDocument(
        content=f"note {message_id}".encode(),
        media_type="text/plain",
        patient_id=patient,
        source_system="HIS",
        title="病程记录",
        department="cardiology",
        message_id=message_id,
        encounter_id=encounter,
        hints=SourceHints(document_type="18842-5"),
    )
    return api.node.ingestion.ingest(archivist, doc).archive.id


def _reclassify(api: Api, archive_id: str, body: object, who: str = "archivist") -> httpx.Response:
    return api.client.post(
        f"/api/v1/archives/{archive_id}/reclassify", json=body, headers=api.auth(who)
    )


def test_a_correction_is_a_reclassify_event_and_archiving_follows_it(api: Api) -> None:
    archive_id = _ingest(api, "RC-1")
    response = _reclassify(
        api,
        archive_id,
        {"record_class": "LAB", "sensitivity": "HIGHLY_SENSITIVE", "reason": REASON},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["record_class"], body["sensitivity"], body["state"]) == (
        "LAB",
        "HIGHLY_SENSITIVE",
        "CREATED",
    )
    assert body["metadata"]["class_rule"] == "correction"
    assert body["metadata"]["sensitivity_rule"] == "correction"
    events = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    ).json()
    reclass = [e for e in events if e["type"] == "RECLASSIFY"]
    assert len(reclass) == 1
    data = reclass[0]["event"]["data"]
    assert data == {
        "previous_class": "INPATIENT",
        "previous_sensitivity": "NORMAL",
        "record_class": "LAB",
        "sensitivity": "HIGHLY_SENSITIVE",
        "reason_hash": hashlib.sha256(REASON.encode()).hexdigest(),
    }
    assert "张三" not in json.dumps(events, ensure_ascii=False)
    with api.node.db.session() as session:
        row = session.execute(
            select(IngestedMessage).where(IngestedMessage.archive_id == archive_id)
        ).scalar_one()
        assert (row.class_rule, row.sensitivity_rule) == ("correction", "correction")
    # Archiving now registers the corrected class (LAB: its own retention).
    archived = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert archived.status_code == 200, archived.text
    assert archived.json()["record_class"] == "LAB"
    # Archived: LAB (15 years) to IMAGING (15 years) keeps the deadline, no RETENTION_EXTEND.
    deadline = archived.json()["retention_deadline"]
    again = _reclassify(api, archive_id, {"record_class": "IMAGING", "reason": "again"})
    assert again.status_code == 200, again.text
    assert (again.json()["record_class"], again.json()["retention_deadline"]) == (
        "IMAGING",
        deadline,
    )
    types = [e["type"] for e in _events(api, archive_id)]
    assert types.count("RECLASSIFY") == 2
    assert "RETENTION_EXTEND" not in types


def _events(api: Api, archive_id: str) -> list[dict[str, object]]:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    )
    assert response.status_code == 200
    events: list[dict[str, object]] = response.json()
    return events


def _archive(api: Api, archive_id: str) -> dict[str, object]:
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_an_archived_record_is_corrected_only_toward_a_longer_retention(api: Api) -> None:
    lab = _ingest(api, "RC-ARCH-1")
    assert _reclassify(api, lab, {"record_class": "LAB", "reason": "lab report"}).status_code == 200
    archived = _archive(api, lab)
    lab_deadline = datetime.fromisoformat(str(archived["retention_deadline"]))
    trigger = date.fromisoformat(str(archived["trigger_date"]))
    # Sensitivity alone: allowed, retention untouched.
    graded = _reclassify(api, lab, {"sensitivity": "SENSITIVE", "reason": "psych note"})
    assert graded.status_code == 200, graded.text
    assert graded.json()["retention_deadline"] == archived["retention_deadline"]
    # LAB (15 y) to INPATIENT (30 y, legal floor 30): RECLASSIFY then RETENTION_EXTEND to the
    # new class's deadline from the same trigger date, in one unit; the reason stays local and
    # extendRetention is queued for the chain.
    before_log = api.footprint().log_size
    longer = _reclassify(api, lab, {"record_class": "INPATIENT", "reason": REASON})
    assert longer.status_code == 200, longer.text
    new_deadline = datetime.fromisoformat(longer.json()["retention_deadline"])
    assert new_deadline > lab_deadline
    assert new_deadline.date() == trigger.replace(year=trigger.year + 30)
    assert api.footprint().log_size == before_log + 2
    tail = _events(api, lab)[-2:]
    assert [e["type"] for e in tail] == ["RECLASSIFY", "RETENTION_EXTEND"]
    extend = tail[1]["event"]
    assert isinstance(extend, dict)
    assert extend["data"]["previous_deadline"].startswith(lab_deadline.date().isoformat())
    with api.node.db.session() as session:
        change = session.execute(
            select(RetentionChange).where(RetentionChange.archive_id == lab)
        ).scalar_one()
        assert (change.cause, change.reason) == ("reclassify", REASON)
        calls = session.execute(
            select(OutboxItem.payload).where(OutboxItem.archive_id == lab)
        ).scalars()
        assert "extendRetention" in [call["function"] for call in calls]
    # INPATIENT (floor 30) back to LAB (15) or to OUTPATIENT (floor 15): refused, nothing stored.
    before = api.footprint()
    for record_class in ("LAB", "OUTPATIENT", "ADMINISTRATIVE"):
        refused = _reclassify(api, lab, {"record_class": record_class, "reason": "shorter"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "retention_would_shorten"
    assert api.footprint() == before
    view = api.client.get(f"/api/v1/archives/{lab}", headers=api.auth("archivist")).json()
    assert (view["record_class"], view["retention_deadline"]) == (
        "INPATIENT",
        longer.json()["retention_deadline"],
    )


def test_a_sensitivity_only_correction_keeps_the_class_rule(api: Api) -> None:
    archive_id = _ingest(api, "RC-2")
    response = _reclassify(api, archive_id, {"sensitivity": "SENSITIVE", "reason": "psych"})
    assert response.status_code == 200
    body = response.json()
    assert (body["record_class"], body["sensitivity"]) == ("INPATIENT", "SENSITIVE")
    assert body["metadata"]["class_rule"] == "loinc:18842-5"
    assert body["metadata"]["sensitivity_rule"] == "correction"


def test_refused_corrections_leave_nothing_behind(api: Api) -> None:
    archive_id = _ingest(api, "RC-3")
    before = api.footprint()
    cases: list[tuple[str, object, str, int, str | None]] = [
        ("cardiologist", {"record_class": "LAB", "reason": "x"}, archive_id, 403, None),
        ("auditor", {"record_class": "LAB", "reason": "x"}, archive_id, 403, None),
        ("admin", {"record_class": "LAB", "reason": "x"}, archive_id, 403, None),
        ("archivist", {"record_class": "INPATIENT", "reason": "x"}, archive_id, 409, "no_change"),
        ("archivist", {"reason": "nothing to change"}, archive_id, 422, None),
        ("archivist", {"record_class": "LAB"}, archive_id, 422, None),
        ("archivist", {"record_class": "LAB", "reason": "   "}, archive_id, 422, None),
        ("archivist", {"record_class": "SURGERY", "reason": "x"}, archive_id, 422, None),
        ("archivist", {"record_class": "LAB", "reason": "x", "by": "me"}, archive_id, 422, None),
        ("archivist", {"record_class": "LAB", "reason": "x" * 2001}, archive_id, 422, None),
        ("archivist", [1, 2], archive_id, 422, None),
        ("archivist", {"record_class": "LAB", "reason": "x"}, MISSING, 404, "archive_not_found"),
        ("archivist", {"record_class": "LAB", "reason": "x"}, "not-an-id", 422, None),
    ]
    for who, body, target, status, code in cases:
        response = _reclassify(api, target, body, who)
        assert response.status_code == status, (who, body, response.text)
        answer = response.json()
        assert answer["code"]
        assert answer["message"]
        if code is not None:
            assert answer["code"] == code
    assert api.footprint() == before
    view = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist")).json()
    assert (view["record_class"], view["sensitivity"]) == ("INPATIENT", "NORMAL")


def test_the_catalogue_of_one_patient_and_one_encounter(api: Api) -> None:
    mine = [_ingest(api, f"P-{n}", patient="MRN-CAT-A", encounter="V-A1") for n in range(2)]
    later = _ingest(api, "P-9", patient="MRN-CAT-A", encounter="V-A2")
    other = _ingest(api, "P-X", patient="MRN-CAT-B", encounter="V-B1")
    auth = api.auth("archivist")

    def ids(**params: str) -> set[str]:
        response = api.client.get(CATALOGUE, params=params, headers=auth)
        assert response.status_code == 200, response.text
        assert "MRN-CAT" not in response.text  # the id never comes back
        return {item["id"] for item in response.json()["items"]}

    assert ids(patient_id="MRN-CAT-A") == {*mine, later}
    assert ids(patient_id=" MRN-CAT-B ") == {other}
    assert ids(patient_id="MRN-CAT-NONE") == set()
    assert ids(encounter="V-A1") == set(mine)
    assert ids(patient_id="MRN-CAT-A", encounter="V-B1") == set()
    assert ids(patient_id="MRN-CAT-A", record_class="LAB") == set()
    csv_text = api.client.get(
        CATALOGUE, params={"patient_id": "MRN-CAT-A", "format": "csv"}, headers=auth
    )
    assert csv_text.status_code == 200
    assert csv_text.headers["x-total-count"] == "3"
    assert "MRN-CAT" not in csv_text.text
    # A clinician of another department sees none of them (scope applies).
    onco = api.client.get(
        CATALOGUE, params={"patient_id": "MRN-CAT-A"}, headers=api.auth("oncologist")
    )
    assert onco.status_code == 200
    assert onco.json()["items"] == []
    for bad in ("", "x" * 129, "MRN\x01"):
        refused = api.client.get(CATALOGUE, params={"patient_id": bad}, headers=auth)
        assert refused.status_code == 422, bad
        assert "MRN" not in refused.text
