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
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pypdf import PdfWriter

from api.main import create_app
from node.quality import usability_problem
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


def test_archiving_under_warn_keeps_the_alert(api: Api) -> None:
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
