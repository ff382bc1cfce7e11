"""DICOMweb STOW-RS over the real app and node (both databases), with pydicom's bundled test files:
instances become IMAGING archives (metadata from pydicom, the patient only as a pseudonym),
resends store nothing, refused parts are listed in FailedSOPSequence, bad bodies are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from node.models import Archive
from tests.api.conftest import UPLOAD_LIMIT, Api

BOUNDARY = "stow-boundary-7d1"


def dicom_file(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    return Path(str(path)).read_bytes()


CT = dicom_file("CT_small.dcm")
MR = dicom_file("MR_small.dcm")


def multipart(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(
    api: Api, body: bytes, path: str = "/dicomweb/studies", who: str = "archivist", **headers: str
) -> Any:
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    all_headers = {"Content-Type": content_type, **(api.auth(who) if who else {}), **headers}
    return api.client.post(path, content=body, headers=all_headers)


def sop_uids(sequence: dict[str, Any]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in sequence["Value"]]


def test_instances_are_stored_once(api: Api) -> None:
    response = stow(api, multipart(CT, MR))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    body = response.json()
    ct, mr = (
        pydicom.dcmread(get_testdata_file("CT_small.dcm")),
        pydicom.dcmread(get_testdata_file("MR_small.dcm")),
    )
    assert sop_uids(body["00081199"]) == [ct.SOPInstanceUID, mr.SOPInstanceUID]
    assert "00081198" not in body
    url = body["00081199"]["Value"][0]["00081190"]["Value"][0]
    archive_id = url.rsplit("/", 1)[-1]
    meta = api.client.get(url, headers=api.auth("archivist")).json()
    assert (meta["record_class"], meta["source_system"]) == ("IMAGING", "PACS")
    assert meta["metadata"]["modality"] == "CT"
    assert meta["metadata"]["study_uid"] == ct.StudyInstanceUID
    assert meta["metadata"]["class_rule"] == "dicom-modality"
    assert meta["patient_pseudonym"] == api.node.pseudonyms.patient(ct.PatientID)
    assert meta["trigger_date"].startswith("2004-01-19")  # StudyDate
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content?purpose=treatment", headers=api.auth("archivist")
    )
    assert content.content == CT
    assert content.headers["content-type"] == "application/dicom"
    # The same instances again: answered as stored, nothing new.
    before = api.footprint()
    again = stow(api, multipart(CT, MR))
    assert again.status_code == 200
    assert again.json()["00081199"]["Value"][0]["00081190"]["Value"][0] == url
    assert api.footprint().archives == before.archives


def test_refused_parts_are_listed(api: Api) -> None:
    mixed = stow(api, multipart(MR, b"not a dicom file at all" * 10))
    assert mixed.status_code == 202, mixed.text
    body = mixed.json()
    assert len(body["00081199"]["Value"]) == 1
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0x0122]
    none = stow(api, multipart(b"garbage", dicom_file("ExplVR_BigEndNoMeta.dcm")))
    assert none.status_code == 409
    assert len(none.json()["00081198"]["Value"]) == 2
    ct_study = pydicom.dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID
    wrong = stow(api, multipart(MR), path=f"/dicomweb/studies/{ct_study}")
    assert wrong.status_code == 409
    assert wrong.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    right = stow(api, multipart(CT), path=f"/dicomweb/studies/{ct_study}")
    assert right.status_code == 200
    with api.node.db.session() as session:
        assert session.query(Archive).count() == 2


def test_bad_requests(api: Api) -> None:
    before = api.footprint()
    ok = multipart(CT)
    assert stow(api, ok, who="").status_code == 401
    assert stow(api, ok, who="auditor").status_code == 403
    response = stow(api, ok, **{"Content-Type": "application/dicom"})
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    wrong_type = 'multipart/related; type="application/pdf"; boundary=x'
    assert stow(api, ok, **{"Content-Type": wrong_type}).status_code == 415
    response = stow(api, multipart(CT, part_type="text/plain"))
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    response = stow(api, ok[: len(ok) // 2])  # never closed
    assert (response.status_code, response.json()["code"]) == (400, "invalid_multipart")
    no_boundary = 'multipart/related; type="application/dicom"'
    assert stow(api, ok, **{"Content-Type": no_boundary}).status_code == 400
    huge = multipart(b"\x00" * (UPLOAD_LIMIT + 300 * 1024))
    assert stow(api, huge).status_code == 413
    assert stow(api, huge, who="").status_code in (401, 413)  # never read either way
    assert api.footprint() == before
