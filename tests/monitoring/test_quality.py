"""四性检测 with real files: the usability check on valid and broken PDFs (made with pypdf and cut
short), DICOM (pydicom's bundled CT_small.dcm, whole and truncated), FHIR JSON and text in the
right and a wrong charset; and at archiving time on a real node (SQLite and PostgreSQL): under
``refuse`` a broken record is refused with 409 ``qc_failed`` listing the failed checks and nothing
is archived, a sound one is archived; under ``warn`` the broken one is archived and the
``qc_failed`` alert stays; tampered stored content fails authenticity; missing required metadata
fails integrity."""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pypdf import PdfWriter
from sqlalchemy import text

from api.main import create_app
from node.process import NODE_PID_FILE, write_pid_file
from node.quality import plaintext_kind, usability_problem
from tests.api.conftest import Api, archive_metadata, issue_keys, serve
from tests.fixtures.node import MakeNode
from tests.monitoring.test_fixity import _blob_path


def _pdf(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


PDF = _pdf()
DICOM = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
PATIENT = json.dumps({"resourceType": "Patient", "id": "p1", "gender": "female"}).encode()
OBSERVATION = json.dumps(
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "valueQuantity": {"value": 13.2, "unit": "g/dL"},
    }
).encode()
GB_TEXT = "出院小结：患者恢复良好。".encode("gb18030")


@pytest.mark.parametrize(
    ("media_type", "content", "problem"),
    [
        ("application/pdf", PDF, None),
        ("application/pdf", PDF[: len(PDF) // 2], "pdf_unreadable"),
        ("application/pdf", PDF[:-40], "pdf_unreadable"),
        ("application/pdf", b"%PDF-1.7 not really a pdf", "pdf_unreadable"),
        ("application/dicom", DICOM, None),
        ("application/dicom", DICOM[: int(len(DICOM) * 0.6)], "dicom_unreadable"),
        ("application/dicom", DICOM[:1000], "dicom_unreadable"),
        ("application/dicom", PDF, "dicom_unreadable"),
        ("application/fhir+json", PATIENT, None),
        ("application/fhir+json", b'{"id": "p1"}', "fhir_invalid"),
        ("application/fhir+json", b'{"resourceType": 7}', "fhir_invalid"),
        ("application/fhir+json", PATIENT[:-1], "fhir_invalid"),
        ("application/fhir+json", b"[]", "fhir_invalid"),
        ("application/fhir+json", OBSERVATION, None),
        (
            "application/fhir+json",
            b'{"resourceType": "Observation", "status": "final"}',
            "fhir_invalid",
        ),  # no code: a required element (1..1)
        (
            "application/fhir+json",
            b'{"resourceType": "Patient", "colour": "blue"}',
            "fhir_invalid",
        ),  # no such element
        (
            "application/fhir+json",
            b'{"resourceType": "Patient", "birthDate": "yesterday"}',
            "fhir_invalid",
        ),  # not a FHIR date
        (
            "application/fhir+json",
            b'{"resourceType": "Patient", "gender": ["female"]}',
            "fhir_invalid",
        ),  # a code, not a list
        ("application/fhir+json", b'{"resourceType": "NoSuchResource"}', "fhir_invalid"),
        ("text/plain", b"discharge", None),
        ("text/plain", GB_TEXT, "text_wrong_charset"),  # no charset: UTF-8
        ("text/plain; charset=gb18030", GB_TEXT, None),
        ("text/plain; charset=utf-8", GB_TEXT, "text_wrong_charset"),
        ("text/plain; charset=no-such-charset", GB_TEXT, "unknown_charset"),
        ("image/png", b"anything", None),  # not checked
    ],
)
def test_usability(media_type: str, content: bytes, problem: str | None) -> None:
    assert usability_problem(media_type, content) == problem


def _upload(api: Api, content: bytes, media_type: str, **metadata: Any) -> str:
    response = api.upload(
        content=content, media_type=media_type, filename="f", metadata=archive_metadata(**metadata)
    )
    assert response.status_code == 201, response.text
    archive_id: str = response.json()["id"]
    return archive_id


@pytest.fixture
def warn_api(make_node: MakeNode, database_url: str) -> Iterator[Api]:
    """The app over a node whose ``qc_policy`` is ``warn`` (the default is ``refuse``)."""
    node = make_node(database_url=database_url, qc_policy="warn")
    app = create_app(node)
    with serve(app) as client:
        yield Api(node=node, app=app, client=client, keys=issue_keys(node))


def test_archiving_under_refuse(make_node: MakeNode, database_url: str) -> None:
    node = make_node(
        database_url=database_url,
        qc_policy="refuse",
        qc_required_metadata={"LAB": ["specimen"]},
    )
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archivist = api.auth("archivist")
        broken_pdf = _upload(api, PDF[: len(PDF) // 2], "application/pdf")
        truncated_dicom = _upload(api, DICOM[: len(DICOM) // 2], "application/dicom")
        no_specimen = _upload(api, PATIENT, "application/fhir+json", record_class="LAB")
        tampered = _upload(api, PDF, "application/pdf")
        sound = [
            _upload(api, PDF, "application/pdf"),
            _upload(api, DICOM, "application/dicom"),
            _upload(
                api,
                PATIENT,
                "application/fhir+json",
                record_class="LAB",
                metadata={"specimen": "blood"},
            ),
        ]
        path = _blob_path(node, tampered)
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))

        expected = {
            broken_pdf: "usability.pdf_unreadable",
            truncated_dicom: "usability.dicom_unreadable",
            no_specimen: "integrity.metadata_missing:specimen",
            tampered: "authenticity.ciphertext_invalid",
        }
        for archive_id, check in expected.items():
            refused = client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist)
            assert refused.status_code == 409, refused.text
            assert refused.json()["code"] == "qc_failed"
            assert check in refused.json()["message"]
            state = client.get(f"/api/v1/archives/{archive_id}", headers=archivist).json()
            assert state["state"] == "CREATED"  # nothing archived
        for archive_id in sound:
            archived = client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist)
            assert archived.status_code == 200, archived.text
        alerts = client.get(
            "/api/v1/alerts", params={"kind": "qc_failed"}, headers=archivist
        ).json()["items"]
        assert {a["subject"]: a["detail"]["failed"] for a in alerts} == expected


def test_refuse_is_the_default(api: Api) -> None:
    assert api.node.settings.qc_policy == "refuse"
    archive_id = _upload(api, GB_TEXT, "text/plain")
    refused = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "qc_failed"
    assert "usability.text_wrong_charset" in refused.json()["message"]


def test_every_version_is_checked(api: Api) -> None:
    """A broken first version fails QC even when the current one is sound: refused under
    ``refuse``, the failure named with its version; each version's result is stored."""
    archivist = api.auth("archivist")
    archive_id = _upload(api, PDF[: len(PDF) // 2], "application/pdf")
    amended = api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        headers=archivist,
        files={"file": ("v2.pdf", PDF, "application/pdf")},
    )
    assert amended.status_code == 200, amended.text
    refused = api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist)
    assert refused.status_code == 409, refused.text
    assert "usability.pdf_unreadable@v1" in refused.json()["message"]
    results = _quality(api, archive_id)
    assert [(r["version"], r["ok"], _failed(r)) for r in results] == [
        (1, False, ["usability.pdf_unreadable"]),
        (2, True, []),
    ]
    alerts = api.client.get(
        "/api/v1/alerts", params={"kind": "qc_failed"}, headers=archivist
    ).json()["items"]
    assert [(a["subject"], a["detail"]["failed"]) for a in alerts] == [
        (archive_id, "usability.pdf_unreadable@v1")
    ]
    state = api.client.get(f"/api/v1/archives/{archive_id}", headers=archivist).json()
    assert state["state"] == "CREATED"


def test_archiving_under_warn_keeps_the_alert(warn_api: Api) -> None:
    api = warn_api
    archive_id = _upload(api, GB_TEXT, "text/plain")
    archived = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert archived.status_code == 200  # warn: archived anyway
    alerts = api.client.get(
        "/api/v1/alerts", params={"kind": "qc_failed"}, headers=api.auth("auditor")
    ).json()["items"]
    assert [(a["subject"], a["detail"]["failed"]) for a in alerts] == [
        (archive_id, "usability.text_wrong_charset")
    ]


def _quality(api: Api, archive_id: str, who: str = "auditor") -> list[dict[str, Any]]:
    response = api.client.get(f"/api/v1/archives/{archive_id}/quality", headers=api.auth(who))
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()
    return results


def _failed(result: dict[str, Any]) -> list[str]:
    return [f"{c['dimension']}.{c['code']}" for c in result["failed"]]


def test_results_are_stored_shown_rerun_by_the_audit_and_reported(warn_api: Api) -> None:
    api = warn_api
    archivist = api.auth("archivist")
    names = {
        "sound": _upload(api, PDF, "application/pdf"),
        "broken": _upload(api, PDF[: len(PDF) // 2], "application/pdf"),
        "gb": _upload(api, GB_TEXT, "text/plain"),
        "fhir": _upload(api, PATIENT, "application/fhir+json", record_class="LAB"),
        "unarchived": _upload(api, DICOM, "application/dicom"),
    }
    for name in ("sound", "broken", "gb", "fhir"):
        archived = api.client.post(f"/api/v1/archives/{names[name]}/archive", headers=archivist)
        assert archived.status_code == 200, archived.text  # warn
    assert _quality(api, names["unarchived"]) == []  # never checked
    sound = _quality(api, names["sound"])
    assert [(r["version"], r["ok"], r["failed"], r["trigger"]) for r in sound] == [
        (1, True, [], "archiving")
    ]
    (broken,) = _quality(api, names["broken"])
    assert (broken["ok"], _failed(broken)) == (False, ["usability.pdf_unreadable"])

    # the stored blob of "sound" is tampered: the on-demand QC audit finds it and stores it
    path = _blob_path(api.node, names["sound"])
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    audited = api.client.post("/api/v1/audits/quality", json={"scope": "all"}, headers=archivist)
    assert audited.status_code == 200, audited.text
    body = audited.json()
    expected = {
        names["sound"]: ["authenticity.ciphertext_invalid"],
        names["broken"]: ["usability.pdf_unreadable"],
        names["gb"]: ["usability.text_wrong_charset"],
    }
    assert (body["ok"], body["archives"], body["passed"]) == (False, 5, 2)
    assert body["plaintext"] == []  # every blob is ciphertext, the schema holds no content
    assert {f["archive_id"]: _failed(f) for f in body["failures"]} == expected
    (after,) = _quality(api, names["sound"], who="archivist")
    assert (after["ok"], after["trigger"], _failed(after)) == (
        False,
        "audit",
        ["authenticity.ciphertext_invalid"],
    )
    (unarchived,) = _quality(api, names["unarchived"])
    assert (unarchived["ok"], unarchived["trigger"]) == (True, "audit")

    # the compliance report's QC failure rate by dimension, computed from `expected`
    report = api.client.get("/api/v1/reports/compliance", headers=api.auth("auditor")).json()
    checked = len(names)
    by_dimension = {
        d: sum(1 for checks in expected.values() if any(c.startswith(d + ".") for c in checks))
        for d in ("authenticity", "integrity", "usability", "security")
    }
    assert report["qc"] == {
        "archives": len(names),
        "checked": checked,
        "never_checked": 0,
        "failed": len(expected),
        "rate": len(expected) / checked,
        "by_dimension": {d: {"failed": n, "rate": n / checked} for d, n in by_dimension.items()},
    }
    as_csv = api.client.get(
        "/api/v1/reports/compliance", params={"format": "csv"}, headers=api.auth("auditor")
    ).text
    assert "qc,usability,failed,2\n" in as_csv
    assert f"qc,ALL,rate,{3 / 5:.6f}\n" in as_csv


def test_quality_routes_refusals(api: Api) -> None:
    archive_id = api.create()["id"]
    missing = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
    unknown = api.client.get(f"/api/v1/archives/{missing}/quality", headers=api.auth("auditor"))
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "archive_not_found"
    path = f"/api/v1/archives/{archive_id}/quality"
    assert api.client.get(path, headers=api.auth("cardiologist")).status_code == 403
    assert api.client.get(path, headers=api.auth("admin")).status_code == 403
    assert api.client.get(path).status_code == 401
    audit = "/api/v1/audits/quality"
    assert api.client.post(audit, json={"scope": "all"}).status_code == 401
    assert (
        api.client.post(audit, json={"scope": "all"}, headers=api.auth("auditor")).status_code
        == 403
    )
    archivist = api.auth("archivist")
    for body in (
        {"scope": "nope"},
        {"scope": "all", "x": 1},
        {"scope": "archives", "archive_ids": ["bad"]},
    ):
        assert api.client.post(audit, json=body, headers=archivist).status_code == 422, body
    empty = api.client.post(audit, json={"scope": "archives", "archive_ids": []}, headers=archivist)
    assert empty.status_code in (400, 422)
    nested = api.client.post(
        audit, content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert nested.status_code in (400, 401, 413, 422)


def test_plaintext_scan_finds_readable_files_and_content_columns(api: Api) -> None:
    archive_id = _upload(api, PDF, "application/pdf")
    blob = _blob_path(api.node, archive_id)
    data_dir = api.node.settings.data_dir
    assert blob.is_relative_to(data_dir)
    assert api.node.quality.scan_plaintext() == []
    # ciphertext-like; fixed random bytes (20 fresh ones decode as text about once in 10^6 runs)
    noise = random.Random(0)
    for head in (blob.read_bytes()[:4096], noise.randbytes(4096), noise.randbytes(20)):
        assert plaintext_kind(head, text_too=True) is None
    # leaks: a decrypted copy beside the blobs, a JSON export, a text note, a DICOM, a table
    (blob.parent / "leak.pdf").write_bytes(PDF)
    (data_dir / "export.json").write_bytes(PATIENT)
    (data_dir / "blobs" / "note").write_bytes(GB_TEXT.decode("gb18030").encode("utf-8"))
    (data_dir / "scan.bin").write_bytes(DICOM)
    with api.node.db.transaction() as session:
        session.execute(text("CREATE TABLE content_cache (id INTEGER, content TEXT)"))
    findings = api.node.quality.scan_plaintext()
    relative = (blob.parent / "leak.pdf").relative_to(data_dir).as_posix()
    assert sorted(findings) == sorted(
        [
            f"file:{relative}:pdf",
            "file:export.json:json",
            "file:blobs/note:text",
            "file:scan.bin:dicom",
            "column:content_cache.content",
        ]
    )
    audited = api.client.post(
        "/api/v1/audits/quality", json={"scope": "all"}, headers=api.auth("archivist")
    ).json()
    assert audited["ok"] is False
    assert sorted(audited["plaintext"]) == sorted(findings)
    alerts = api.client.get(
        "/api/v1/alerts", params={"kind": "plaintext_found"}, headers=api.auth("auditor")
    ).json()["items"]
    assert sorted(a["subject"] for a in alerts) == sorted(findings)
    assert {a["severity"] for a in alerts} == {"critical"}
    # the node's own text files (configuration, keystore, log, pid file) are not findings as text
    (data_dir / "node.toml").write_text("hospital = 'x'\n")
    write_pid_file(data_dir / NODE_PID_FILE, "node")
    (data_dir / "blobs" / NODE_PID_FILE).write_bytes((data_dir / NODE_PID_FILE).read_bytes())
    scanned = api.node.quality.scan_plaintext()
    assert "file:node.toml:text" not in scanned
    assert not any(f.startswith(f"file:{NODE_PID_FILE}:") for f in scanned), scanned
    assert f"file:blobs/{NODE_PID_FILE}:json" in scanned  # known by name only at the top


def test_scheduled_qc_audit_rechecks_and_stores(database_url: str, make_node: MakeNode) -> None:
    node = make_node(database_url=database_url, qc_audit_interval=0.5, start=False)
    node.start(scheduler=True)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archive_id = _upload(api, GB_TEXT, "text/plain")  # never archived: only the audit checks

        def audited() -> list[dict[str, Any]]:
            return [r for r in _quality(api, archive_id) if r["trigger"] == "audit"]

        deadline = time.monotonic() + 30
        while not audited() and time.monotonic() < deadline:
            time.sleep(0.2)
        (result,) = audited()
        assert _failed(result) == ["usability.text_wrong_charset"]


def test_batch_archiving_is_refused_by_quality_control(api: Api) -> None:
    """``POST /archives/batch-archive`` under ``refuse``: a record failing 四性检测 refuses the
    whole batch, each failing record named with ``qc_failed``; nothing is archived."""
    archivist = api.auth("archivist")
    sound = _upload(api, PDF, "application/pdf")
    broken = _upload(api, PDF[: len(PDF) // 2], "application/pdf")
    gb = _upload(api, GB_TEXT, "text/plain")
    batch = "/api/v1/archives/batch-archive"
    refused = api.client.post(batch, json={"archive_ids": [sound, broken, gb]}, headers=archivist)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "batch_refused"
    assert {i["id"]: i["code"] for i in body["details"]["failed"]} == {
        broken: "qc_failed",
        gb: "qc_failed",
    }
    for archive_id in (sound, broken, gb):
        state = api.client.get(f"/api/v1/archives/{archive_id}", headers=archivist).json()
        assert state["state"] == "CREATED"
    accepted = api.client.post(batch, json={"archive_ids": [sound]}, headers=archivist)
    assert accepted.status_code == 200, accepted.text
    assert [a["state"] for a in accepted.json()["archived"]] == ["ARCHIVED"]


def test_the_audit_fails_authenticity_until_the_events_are_anchored(
    make_node: MakeNode, database_url: str
) -> None:
    """Authenticity asks that the events be present *and anchored*: an audit after the anchoring
    grace finds the archive's events outside every confirmed checkpoint (``events_unanchored``);
    once the worker anchored them the same audit passes."""
    node = make_node(database_url=database_url, anchoring_lag_alert_seconds=0.5)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archivist = api.auth("archivist")
        archive_id = _upload(api, PDF, "application/pdf")
        archived = client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist)
        assert archived.status_code == 200, archived.text  # at archiving time: not yet due
        assert _failed(_quality(api, archive_id)[0]) == []
        time.sleep(1.0)

        def audit() -> list[str]:
            body = client.post(
                "/api/v1/audits/quality",
                json={"scope": "archives", "archive_ids": [archive_id]},
                headers=archivist,
            ).json()
            return [c for f in body["failures"] for c in _failed(f)]

        assert audit() == ["authenticity.events_unanchored"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node.worker.tick()
            if not audit():
                break
            time.sleep(0.5)
        assert audit() == []
