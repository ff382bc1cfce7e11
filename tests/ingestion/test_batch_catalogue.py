"""Batch archiving (``POST /api/v1/archives/batch-archive``) and the catalogue
(``GET /api/v1/catalogue``, JSON and CSV) through the real app on both databases."""

from __future__ import annotations

import csv
import io
from typing import Any

from node.classification import SourceHints
from node.services.ingestion import IncomingDocument
from tests.api.conftest import Api

BATCH = "/api/v1/archives/batch-archive"
CATALOGUE = "/api/v1/catalogue"
MISSING = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
PATIENT = "MRN-CATALOGUE-77"


def _state(api: Api, archive_id: str) -> str:
    response = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def _ingest(api: Api, message_id: str, encounter: str, department: str = "cardiology") -> str:
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    doc = IncomingDocument(
        content=f"record {message_id}".encode(),
        media_type="text/plain",
        patient_id=PATIENT,
        source_system="HIS",
        title="出院小结",
        department=department,
        message_id=message_id,
        encounter_id=encounter,
        hints=SourceHints(class_hint="住院"),
    )
    return api.node.ingestion.ingest(archivist, doc).archive.id


def _batch(api: Api, body: Any, who: str = "archivist") -> Any:
    return api.client.post(BATCH, json=body, headers=api.auth(who))


def test_batch_archives_all_listed_records_in_one_unit(api: Api) -> None:
    ids = [api.create()["id"] for _ in range(3)]
    response = _batch(api, {"archive_ids": ids, "trigger_date": "2024-03-01"})
    assert response.status_code == 200, response.text
    archived = response.json()["archived"]
    assert [item["id"] for item in archived] == ids
    assert all(item["state"] == "ARCHIVED" for item in archived)
    assert all(item["trigger_date"] == "2024-03-01" for item in archived)
    assert all(_state(api, archive_id) == "ARCHIVED" for archive_id in ids)


def test_batch_with_a_failing_member_archives_nothing_and_names_every_failure(
    api: Api,
) -> None:
    fresh = [api.create()["id"] for _ in range(2)]
    done = api.create()["id"]
    assert _batch(api, {"archive_ids": [done]}).status_code == 200
    before = api.footprint()
    response = _batch(api, {"archive_ids": [fresh[0], done, MISSING, fresh[1]]})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "batch_refused"
    failed = {item["id"]: item["code"] for item in body["details"]["failed"]}
    assert set(failed) == {done, MISSING}
    assert failed[MISSING] == "archive_not_found"
    assert failed[done] == "illegal_transition"
    assert api.footprint() == before  # no event logged, nothing queued or stored
    assert [_state(api, archive_id) for archive_id in fresh] == ["CREATED", "CREATED"]


def test_batch_refuses_records_outside_the_callers_scope_and_other_roles(api: Api) -> None:
    ids = [api.create()["id"]]
    for who in ("cardiologist", "auditor", "admin"):
        response = _batch(api, {"archive_ids": ids}, who)
        assert response.status_code == 403, (who, response.text)
        assert response.json()["code"]
    assert _state(api, ids[0]) == "CREATED"


def test_batch_refuses_malformed_bodies_with_clear_codes(api: Api) -> None:
    one = api.create()["id"]
    bad: list[Any] = [
        {},
        {"archive_ids": []},
        {"archive_ids": [one], "encounter": "V-1"},
        {"archive_ids": ["not-an-id"]},
        {"archive_ids": [MISSING] * 501},
        {"archive_ids": [one], "extra": 1},
        {"encounter": ""},
        {"encounter": "x" * 129},
        {"archive_ids": one},
        [one],
    ]
    for body in bad:
        response = _batch(api, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
        assert "not-an-id" not in response.text
    twice = _batch(api, {"archive_ids": [one, one]})
    assert twice.status_code == 400
    assert twice.json()["code"] == "duplicate_archive_id"
    unauthenticated = api.client.post(BATCH, json={"archive_ids": [one]})
    assert unauthenticated.status_code == 401
    assert _state(api, one) == "CREATED"


def test_batch_by_encounter_archives_its_created_records(api: Api) -> None:
    first = _ingest(api, "M-1", "V-2024-1")
    second = _ingest(api, "M-2", "V-2024-1")
    other = _ingest(api, "M-3", "V-2024-2")
    response = _batch(api, {"encounter": "V-2024-1", "trigger_date": "2024-05-02"})
    assert response.status_code == 200, response.text
    assert sorted(item["id"] for item in response.json()["archived"]) == sorted([first, second])
    assert _state(api, other) == "CREATED"
    again = _batch(api, {"encounter": "V-2024-1"})
    assert again.status_code == 400
    assert again.json()["code"] == "encounter_empty"
    assert "V-2024-1" not in again.text
    unknown = _batch(api, {"encounter": "V-unknown"})
    assert unknown.status_code == 400
    refused = _batch(api, {"encounter": "V-2024-2"}, "cardiologist")
    assert refused.status_code == 403
    assert _state(api, other) == "CREATED"


def test_catalogue_lists_entries_without_patient_data_as_json_and_csv(api: Api) -> None:
    heart = api.create(department="cardiology")["id"]
    onco = api.create(department="oncology")["id"]
    assert _batch(api, {"archive_ids": [heart]}).status_code == 200
    response = api.client.get(CATALOGUE, headers=api.auth("archivist"))
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 2
    entries = {item["id"]: item for item in page["items"]}
    assert set(entries) == {heart, onco}
    assert entries[heart]["state"] == "ARCHIVED"
    assert entries[heart]["archived_at"] is not None
    assert entries[onco]["state"] == "CREATED"
    assert entries[onco]["department"] == "oncology"
    for entry in entries.values():
        assert {"record_class", "sensitivity", "created_at", "trigger_date"} <= set(entry)
        assert not {"patient_id", "patient_pseudonym", "title", "metadata"} & set(entry)
    assert PATIENT not in response.text

    as_csv = api.client.get(CATALOGUE, params={"format": "csv"}, headers=api.auth("archivist"))
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["x-total-count"] == "2"
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {row["id"]: row["state"] for row in rows} == {heart: "ARCHIVED", onco: "CREATED"}
    assert "patient_pseudonym" not in rows[0]
    assert {row["id"]: row["archived_at"] for row in rows}[onco] == ""


def test_catalogue_filters_and_scope(api: Api) -> None:
    heart = api.create(department="cardiology")["id"]
    onco = api.create(department="oncology")["id"]
    assert _batch(api, {"archive_ids": [onco]}).status_code == 200

    def ids(who: str = "archivist", **params: Any) -> set[str]:
        response = api.client.get(CATALOGUE, params=params, headers=api.auth(who))
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids(state="ARCHIVED") == {onco}
    assert ids(state="CREATED") == {heart}
    assert ids(record_class="INPATIENT") == {heart, onco}
    assert ids(record_class="IMAGING") == set()
    assert ids(created_from="2000-01-01T00:00:00Z") == {heart, onco}
    assert ids(created_to="2000-01-01T00:00:00Z") == set()
    assert ids(created_from="2999-01-01T00:00:00Z") == set()
    assert ids("cardiologist") == {heart}
    assert ids("auditor") == {heart, onco}
    for params in (
        {"state": "LOST"},
        {"format": "xml"},
        {"patient_id": "\x00" + PATIENT},
        {"encounter": "two words"},
        {"created_from": "yesterday"},
        {"limit": "0"},
    ):
        response = api.client.get(CATALOGUE, params=params, headers=api.auth("archivist"))
        assert response.status_code == 422, (params, response.text)
        assert PATIENT not in response.text
    assert api.client.get(CATALOGUE).status_code == 401
    page = api.client.get(CATALOGUE, params={"limit": 1}, headers=api.auth("archivist")).json()
    assert len(page["items"]) == 1
    assert page["total"] == 2


def test_catalogue_pages_by_cursor_in_json_and_csv(api: Api) -> None:
    created = [api.create(department="cardiology")["id"] for _ in range(5)]
    listed = api.client.get(CATALOGUE, params={"limit": 50}, headers=api.auth("archivist"))
    everything = [item["id"] for item in listed.json()["items"]]
    assert sorted(everything) == sorted(created)
    assert listed.json()["next_cursor"] is None  # one page holds all

    def walk(fmt: str) -> tuple[list[str], int]:
        seen: list[str] = []
        pages, cursor = 0, None
        while True:
            params: dict[str, Any] = {"limit": 2, "format": fmt}
            if cursor is not None:
                params["cursor"] = cursor
            response = api.client.get(CATALOGUE, params=params, headers=api.auth("archivist"))
            assert response.status_code == 200, response.text
            pages += 1
            if fmt == "csv":
                seen += [row["id"] for row in csv.DictReader(io.StringIO(response.text))]
                assert response.headers["x-total-count"] == "5"
                cursor = response.headers.get("x-next-cursor")
            else:
                page = response.json()
                seen += [item["id"] for item in page["items"]]
                assert page["total"] == 5
                cursor = page["next_cursor"]
            if cursor is None:
                return seen, pages

    for fmt in ("json", "csv"):
        seen, pages = walk(fmt)
        assert seen == everything, fmt  # the same order as one big page, nothing twice
        assert pages == 3, fmt

    first = api.client.get(CATALOGUE, params={"limit": 2}, headers=api.auth("archivist")).json()
    for params, status, code in (
        ({"cursor": first["next_cursor"], "offset": 2}, 400, "invalid_page"),
        ({"cursor": "djF8eHw"}, 400, "invalid_cursor"),
        ({"cursor": "not/base64"}, 422, "validation_error"),
        ({"cursor": "A" * 129}, 422, "validation_error"),
    ):
        response = api.client.get(CATALOGUE, params=params, headers=api.auth("archivist"))
        assert response.status_code == status, (params, response.text)
        assert response.json()["code"] == code
