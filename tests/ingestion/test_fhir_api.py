"""FHIR R4 over the real app and node (both databases): resources built with ``fhir.resources``
become classified archives; resends are answered, not archived again; Encounters reach the
encounter listeners once; Bundles (transaction all-or-nothing, batch per entry); searchset reads;
every refusal is an OperationOutcome with the right status, hostile bodies included."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter

from node.encounters import EncounterKind, EncounterReport
from tests.api.conftest import UPLOAD_LIMIT, Api, real_pdf

FHIR = "application/fhir+json"
PDF = real_pdf(40)  # a real PDF: it passes 四性检测 when archived
LOINC = "http://loinc.org"
PATIENT = "P-77"


class Recorder:
    """An encounter listener that keeps what it hears."""

    def __init__(self) -> None:
        self.reports: list[EncounterReport] = []

    def report_encounter(self, report: EncounterReport) -> None:
        self.reports.append(report)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def document_reference(
    identifier: str = "doc-1", loinc: str | None = "18842-5", patient: str = PATIENT, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:oid:1.2.3.4", "value": identifier},
        "status": "current",
        "subject": {"reference": f"Patient/{patient}"},
        "description": "出院小结",
        "date": "2024-05-02T08:00:00+08:00",
        "content": [{"attachment": {"contentType": "application/pdf", "data": b64(PDF)}}],
        "context": {"encounter": [{"reference": "Encounter/E-1"}]},
    }
    if loinc:
        data["type"] = {"coding": [{"system": LOINC, "code": loinc}]}
    data.update(extra)
    return DocumentReference.model_validate(data).model_dump(mode="json", exclude_none=True)


def diagnostic_report() -> dict[str, Any]:
    return DiagnosticReport.model_validate(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": "urn:lis", "value": "R-9"}],
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                            "code": "LAB",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": "56888-1"}], "text": "HIV screen"},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "presentedForm": [{"contentType": "application/pdf", "data": b64(PDF)}],
        }
    ).model_dump(mode="json", exclude_none=True)


def post(api: Api, path: str, body: Any, who: str = "archivist", **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": FHIR, **(api.auth(who) if who else {}), **kwargs.pop("headers", {})}
    return api.client.post(f"/fhir/r4/{path}".rstrip("/"), content=content, headers=headers)


def outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["details"]["coding"][0]["code"] == code
    return issue


def test_an_attachment_title_is_cleaned_and_cut_to_a_file_name(api: Api) -> None:
    """A FHIR attachment's title becomes the version's file name as an upload's name does
    (``node.filenames.display_name``): base name only, no control characters, cut to 255, on
    both databases (PostgreSQL refused a title over 256 characters: a 500). A NUL never gets this
    far: the JSON body is refused (400 ``invalid_encoding``)."""
    resource = document_reference()
    resource["content"][0]["attachment"]["title"] = "C:\\scans/出院\x01小结" + "x" * 300
    created = post(api, "DocumentReference", resource)
    assert created.status_code == 201, created.text
    archive_id = created.headers["location"].rsplit("/", 1)[-1]
    view = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    assert view.json()["versions"][0]["filename"] == ("出院小结" + "x" * 300)[:255]
    resource = document_reference()
    resource["content"][0]["attachment"]["title"] = "出院\x00小结"
    refused = post(api, "DocumentReference", resource)
    assert refused.status_code == 400, refused.text


def test_document_reference_is_archived_once(api: Api) -> None:
    created = post(api, "DocumentReference", document_reference())
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    archive_id = location.rsplit("/", 1)[-1]
    assert location == f"/fhir/r4/DocumentReference/{archive_id}"
    assert "class INPATIENT" in created.json()["issue"][0]["diagnostics"]
    archive = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    meta = archive.json()
    assert meta["record_class"] == "INPATIENT"
    assert meta["metadata"]["class_rule"] == "loinc:18842-5"
    assert meta["source_system"] == "FHIR"
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content?purpose=treatment", headers=api.auth("archivist")
    )
    assert content.content == PDF
    assert content.headers["content-type"] == "application/pdf"

    before = api.footprint()
    again = post(api, "DocumentReference", document_reference())
    assert again.status_code == 200
    assert again.headers["location"] == location
    after = api.footprint()
    assert (after.blobs, after.archives) == (before.blobs, before.archives)


def test_diagnostic_report_graded_by_its_code(api: Api) -> None:
    created = post(api, "DiagnosticReport", diagnostic_report())
    assert created.status_code == 201, created.text
    archive_id = created.headers["location"].rsplit("/", 1)[-1]
    meta = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist")).json()
    assert (meta["record_class"], meta["sensitivity"]) == ("LAB", "HIGHLY_SENSITIVE")
    assert meta["metadata"]["sensitivity_rule"] == "code:loinc:56888-1"


def test_composition_is_archived_as_the_resource(api: Api) -> None:
    composition = Composition.model_validate(
        {
            "resourceType": "Composition",
            "identifier": {"system": "urn:his", "value": "C-1"},
            "status": "final",
            "type": {"coding": [{"system": LOINC, "code": "34111-5"}]},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "date": "2024-05-02T08:00:00Z",
            "author": [{"display": "Dr. Example"}],
            "title": "急诊病历",
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">胸痛</div>',
            },
        }
    ).model_dump(mode="json", exclude_none=True)
    created = post(api, "Composition", composition)
    assert created.status_code == 201, created.text
    archive_id = created.headers["location"].rsplit("/", 1)[-1]
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content?purpose=treatment", headers=api.auth("archivist")
    )
    assert content.headers["content-type"] == FHIR
    stored = json.loads(content.content)
    assert stored["title"] == "急诊病历"
    meta = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist")).json()
    assert meta["record_class"] == "EMERGENCY"


def test_encounters_reach_the_listeners_once(api: Api) -> None:
    recorder = Recorder()
    api.node.encounters.add(recorder)
    encounter = Encounter.model_validate(
        {
            "resourceType": "Encounter",
            "identifier": [{"system": "urn:his:visit", "value": "V-1"}],
            "status": "finished",
            "class": {"code": "IMP"},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "period": {"start": "2024-04-20T08:00:00Z", "end": "2024-05-02T10:00:00Z"},
        }
    ).model_dump(mode="json", exclude_none=True, by_alias=True)
    first = post(api, "Encounter", encounter)
    assert first.status_code == 201, first.text
    assert post(api, "Encounter", encounter).status_code == 200
    assert len(recorder.reports) == 1
    report = recorder.reports[0]
    assert report.kind is EncounterKind.DISCHARGE
    assert report.patient_id == PATIENT
    assert report.encounter_id == "urn:his:visit|V-1"
    assert report.at.isoformat() == "2024-05-02T10:00:00+00:00"
    assert report.admitted_at is not None  # period.start of an inpatient stay
    assert report.admitted_at.isoformat() == "2024-04-20T08:00:00+00:00"
    planned = {**encounter, "status": "planned"}
    assert post(api, "Encounter", planned).status_code == 200
    assert len(recorder.reports) == 1


def _transaction(kind: str = "transaction", *entries: dict[str, Any]) -> dict[str, Any]:
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": kind, "entry": list(entries)})
    return bundle.model_dump(mode="json", exclude_none=True, by_alias=True)


def _post_entry(resource: dict[str, Any], full_url: str) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def test_transaction_with_a_binary_and_the_encounter_class(api: Api) -> None:
    recorder = Recorder()
    api.node.encounters.add(recorder)
    doc = document_reference(identifier="doc-tx", loinc=None)
    doc["content"] = [{"attachment": {"contentType": "application/pdf", "url": "urn:uuid:bin-1"}}]
    doc["context"] = {"encounter": [{"reference": "urn:uuid:enc-1"}]}
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "EMER"},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "period": {"end": "2024-05-02T10:00:00Z"},
    }
    binary = {"resourceType": "Binary", "contentType": "application/pdf", "data": b64(PDF)}
    bundle = _transaction(
        "transaction",
        _post_entry(encounter, "urn:uuid:enc-1"),
        _post_entry(binary, "urn:uuid:bin-1"),
        _post_entry(doc, "urn:uuid:doc-1"),
        _post_entry(diagnostic_report(), "urn:uuid:rep-1"),
    )
    response = post(api, "", bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in body["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    doc_id = body["entry"][1]["response"]["location"].rsplit("/", 1)[-1]
    meta = api.client.get(f"/api/v1/archives/{doc_id}", headers=api.auth("archivist")).json()
    assert meta["record_class"] == "EMERGENCY"
    assert meta["metadata"]["class_rule"] == "encounter-class:EMER"
    assert meta["state"] == "ARCHIVED"  # the finished encounter closed: its records archived
    assert [r.kind for r in recorder.reports] == [EncounterKind.VISIT]
    content = api.client.get(
        f"/api/v1/archives/{doc_id}/content?purpose=treatment", headers=api.auth("archivist")
    )
    assert content.content == PDF
    # The same transaction again stores nothing and reports nothing.
    before = api.footprint()
    again = post(api, "", bundle).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK", "200 OK", "200 OK"]
    assert api.footprint().archives == before.archives
    assert len(recorder.reports) == 1


def test_a_transaction_with_one_bad_entry_stores_nothing(api: Api) -> None:
    bad = document_reference(identifier="doc-bad")
    del bad["subject"]
    bundle = _transaction(
        "transaction",
        _post_entry(document_reference(identifier="doc-ok"), "urn:uuid:a"),
        _post_entry(bad, "urn:uuid:b"),
    )
    before = api.footprint()
    issue = outcome(post(api, "", bundle), 422, "fhir_unprocessable")
    assert "subject" in issue["diagnostics"]
    assert api.footprint() == before


def test_a_batch_answers_each_entry(api: Api) -> None:
    bad = document_reference(identifier="doc-bad")
    del bad["subject"]
    good = _post_entry(document_reference(identifier="doc-ok"), "urn:uuid:a")
    bundle = _transaction("batch", good, _post_entry(bad, "urn:uuid:b"))
    response = post(api, "", bundle)
    # the bad entry is refused while the bundle is read: a batch needs every entry usable
    assert response.status_code == 422, response.text
    odd = document_reference(identifier="doc-odd")
    odd["content"][0]["attachment"]["contentType"] = "application/x-msdownload"
    bundle = _transaction("batch", good, _post_entry(odd, "urn:uuid:c"))
    body = post(api, "", bundle).json()
    assert body["type"] == "batch-response"
    assert body["entry"][0]["response"]["status"] == "201 Created"
    assert body["entry"][1]["response"]["status"].startswith("415")
    assert (
        "unsupported_media_type"
        in body["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
    )


def test_search_document_references(api: Api) -> None:
    for number in range(3):
        post(api, "DocumentReference", document_reference(identifier=f"s-{number}"))
    post(api, "DocumentReference", document_reference(identifier="s-nursing", loinc="34746-8"))
    post(api, "DocumentReference", document_reference(identifier="other", patient="P-88"))
    found = api.client.get("/fhir/r4/DocumentReference?patient=P-77", headers=api.auth("archivist"))
    assert found.status_code == 200, found.text
    bundle = Bundle.model_validate(found.json())  # a valid R4(B) searchset
    assert bundle.type == "searchset"
    assert bundle.total == 4
    first = found.json()["entry"][0]["resource"]
    assert first["subject"] == {"reference": "Patient/P-77"}
    assert first["content"][0]["attachment"]["url"].startswith("/api/v1/archives/")
    by_type = api.client.get(
        "/fhir/r4/DocumentReference?patient=P-77&type=http://loinc.org|34746-8",
        headers=api.auth("archivist"),
    ).json()
    assert by_type["total"] == 1
    assert by_type["entry"][0]["resource"]["type"]["coding"][0]["code"] == "34746-8"
    dated = api.client.get(
        "/fhir/r4/DocumentReference?patient=P-77&date=lt2000-01-01", headers=api.auth("archivist")
    ).json()
    assert dated["total"] == 0
    everyone = api.client.get("/fhir/r4/DocumentReference", headers=api.auth("archivist")).json()
    assert everyone["total"] == 5
    assert "identifier" in everyone["entry"][0]["resource"]["subject"]  # pseudonym, no id
    one_id = everyone["entry"][0]["resource"]["id"]
    read = api.client.get(f"/fhir/r4/DocumentReference/{one_id}", headers=api.auth("auditor"))
    DocumentReference.model_validate(read.json())
    # A clinician of another department sees none of them.
    other = api.client.get("/fhir/r4/DocumentReference", headers=api.auth("oncologist")).json()
    assert other["total"] == 0
    outcome(
        api.client.get("/fhir/r4/DocumentReference?date=yesterday", headers=api.auth("archivist")),
        400,
        "invalid_search_parameter",
    )
    outcome(api.client.get("/fhir/r4/DocumentReference"), 401, "missing_api_key")


def test_capability_statement(api: Api) -> None:
    response = api.client.get("/fhir/r4/metadata")
    assert response.status_code == 200
    assert response.json()["fhirVersion"] == "4.0.1"


# --------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda d: d.pop("status"), 400, "fhir_invalid"),
        (lambda d: d.update(bogus=1), 400, "fhir_invalid"),
        (lambda d: d["content"][0]["attachment"].update(data="!!notbase64"), 400, "fhir_invalid"),
        (lambda d: d.update(resourceType="Patient"), 400, "fhir_invalid"),
        (lambda d: d.update(status="entered-in-error"), 422, "fhir_unprocessable"),
        (lambda d: d.pop("subject"), 422, "fhir_unprocessable"),
        (lambda d: d["content"][0]["attachment"].pop("data"), 422, "fhir_unprocessable"),
        (
            lambda d: d["content"][0]["attachment"].update(contentType="application/x-msdownload"),
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_invalid_resources_are_refused_with_an_operation_outcome(
    api: Api, mutate: Any, status: int, code: str
) -> None:
    data = document_reference()
    mutate(data)
    before = api.footprint()
    issue = outcome(post(api, "DocumentReference", data), status, code)
    assert PATIENT not in issue["diagnostics"]  # values sent are never echoed
    assert api.footprint() == before


def test_refusals_before_and_around_the_body(api: Api) -> None:
    good = json.dumps(document_reference()).encode()
    outcome(post(api, "DocumentReference", good, who=""), 401, "missing_api_key")
    outcome(post(api, "DocumentReference", good, who="auditor"), 403, "forbidden")
    outcome(post(api, "Patient", good), 404, "fhir_type_not_supported")
    outcome(
        post(api, "DocumentReference", good, headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    outcome(post(api, "DocumentReference", b"{not json"), 400, "fhir_invalid")
    outcome(post(api, "DocumentReference", b"[1, 2]"), 400, "fhir_invalid")
    outcome(post(api, "", json.loads(good)), 400, "fhir_invalid")  # not a Bundle


def test_hostile_bodies(api: Api) -> None:
    deep = b'{"resourceType":"Bundle","entry":' + b"[" * 40_000 + b"]" * 40_000 + b"}"
    # Anonymous: refused before a byte of the body is read.
    outcome(post(api, "", deep, who=""), 401, "missing_api_key")
    outcome(post(api, "", deep), 400, "json_too_deep")
    outcome(post(api, "DocumentReference", b"\xff\xfe{}"), 400, "invalid_encoding")
    outcome(post(api, "DocumentReference", b'{"a": "\\ud800"}'), 400, "invalid_encoding")
    huge = b'{"resourceType":"DocumentReference","x":"' + b"A" * (UPLOAD_LIMIT * 3) + b'"}'
    outcome(post(api, "DocumentReference", huge), 413, "payload_too_large")
    # Anonymous and too large: the declared length is refused first, nothing read either way.
    outcome(post(api, "DocumentReference", huge, who=""), 413, "payload_too_large")
    # Within the body limit, but the decoded attachment is above the upload limit.
    big = document_reference()
    big["content"][0]["attachment"]["data"] = b64(b"%PDF" + bytes(UPLOAD_LIMIT + 1))
    outcome(post(api, "DocumentReference", big), 413, "payload_too_large")
    # A bundle of many entries is bounded too.
    many = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 1001}
    response = post(api, "", many)
    assert response.status_code in (400, 413, 422)
    assert response.json()["resourceType"] == "OperationOutcome"
    assert api.footprint().archives == 0
