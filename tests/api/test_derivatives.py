"""De-identified derivatives with real files on a real node and chain: pydicom's bundled DICOM
test files, a FHIR R4 bundle and an HL7 v2 message. Every attribute of the profile's remove list is
absent from the derivatives, identifying values are gone, UIDs are remapped consistently per study
and recipient, the DERIVE event links original → derivative, the derivative's bundle verifies and
shows its lineage, and a format without a profile is refused with nothing created."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from api.main import create_app
from node.deid import (
    DICOM_EMPTIED,
    DICOM_REMAPPED,
    DICOM_REMOVED,
    FHIR_REMOVED,
    HL7_DROPPED,
    HL7_SCRUBBED,
)
from tests.api.conftest import CHUNK_SIZE, Api, archive_metadata, issue_keys, serve
from tests.fixtures.node import MakeNode

LIMIT = 1024 * 1024
DICOM_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "rtstruct.dcm",
               "JPEG2000.dcm", "image_dfl.dcm", "ExplVR_BigEnd.dcm"]  # fmt: skip

FHIR_BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "fullUrl": "urn:uuid:1c8a3a8e-4f7a-4b1e-9a53-2f6f4b2b9e01",
            "resource": {
                "resourceType": "Patient",
                "id": "MRN-778899",
                "text": {"status": "generated", "div": "<div>Zhang Wei, 1974-12-25</div>"},
                "identifier": [{"system": "urn:hosp:mrn", "value": "MRN-778899"}],
                "name": [{"family": "Zhang", "given": ["Wei"]}],
                "telecom": [{"system": "phone", "value": "+86-10-5555-0101"}],
                "address": [{"line": ["12 Chaoyang Road"], "city": "Beijing"}],
                "gender": "male",
                "birthDate": "1974-12-25",
                "contact": [{"name": {"family": "Li"}, "telecom": [{"value": "555-0199"}]}],
            },
        },
        {
            "fullUrl": "urn:uuid:5d0b6a0e-9d1c-4c77-8a0e-8b7f2d7e2c02",
            "resource": {
                "resourceType": "Encounter",
                "id": "ENC-4411",
                "identifier": [{"value": "V-4411"}],
                "status": "finished",
                "class": {"code": "IMP"},
                "subject": {"reference": "Patient/MRN-778899", "display": "Zhang Wei"},
                "period": {"start": "2024-04-20T08:00:00+08:00", "end": "2024-05-02"},
            },
        },
        {
            "resource": {
                "resourceType": "Observation",
                "id": "OBS-1",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "Patient/MRN-778899"},
                "effectiveDateTime": "2024-04-21T09:30:00Z",
                "valueQuantity": {"value": 13.5, "unit": "g/dL"},
            },
        },
    ],
}
FHIR_PHI = ["MRN-778899", "Zhang", "Wei", "5555-0101", "Chaoyang", "Beijing", "1974-12-25",
            "555-0199", "V-4411", "ENC-4411", "1c8a3a8e"]  # fmt: skip

HL7 = (
    "MSH|^~\\&|HIS|HOSP|ARCHIVE|HOSP|20240502101500||ADT^A03|MSG-1|P|2.5.1\r"
    "PID|1|EXT-55|MRN-778899^^^HOSP^MR||ZHANG^WEI||19741225|M|ALIAS^X||12 CHAOYANG RD^^BEIJING"
    "||+86-10-5555-0101|+86-10-5555-0102||||ACC-9|110101197412250011|DL-77\r"
    "NK1|1|LI^NA|SPO^Spouse|1 ROAD^^BEIJING|555-0199\r"
    "PV1|1|I|5B^12^1||||DOC1^HOUSE^GREG|DOC2^WILSON^JAMES|DOC3^CUDDY^LISA|cardiology"
    "|||||||DOC4^FOREMAN^ERIC||V-1001|||||||||||||||||||||||||20240420080000|20240502100000\r"
    "IN1|1|PLAN-1|INS-CO|ACME INSURANCE||||||||||||ZHANG^WEI\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL\r"
)
HL7_PHI = ["EXT-55", "MRN-778899", "ZHANG", "19741225", "CHAOYANG", "5555-0101", "5555-0102",
           "ACC-9", "110101197412250011", "DL-77", "LI^NA", "555-0199", "HOUSE", "WILSON",
           "CUDDY", "FOREMAN", "V-1001", "ACME"]  # fmt: skip


@pytest.fixture
def dapi(make_node: MakeNode, database_url: str) -> Iterator[Api]:
    node = make_node(database_url=database_url, max_upload_bytes=LIMIT, chunk_size=CHUNK_SIZE)
    app = create_app(node)
    with serve(app) as client:
        yield Api(node=node, app=app, client=client, keys=issue_keys(node))


def _upload(api: Api, content: bytes, media_type: str, record_class: str = "IMAGING") -> str:
    response = api.upload(
        content=content,
        media_type=media_type,
        filename="record",
        metadata=archive_metadata(record_class=record_class),
    )
    assert response.status_code == 201, response.text
    archive_id: str = response.json()["id"]
    return archive_id


def _derive(
    api: Api,
    archive_id: str,
    profile: str,
    recipient: str = "research-unit",
    who: str = "archivist",
) -> Any:
    return api.client.post(
        f"/api/v1/archives/{archive_id}/derivatives",
        json={"profile": profile, "purpose": "research", "recipient": recipient},
        headers=api.auth(who),
    )


def _content(api: Api, archive_id: str) -> bytes:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "research"},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 200, response.text
    return response.content


def _elements(ds: Dataset) -> Iterator[Any]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _elements(item)


def _uids(ds: Dataset) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for elem in _elements(ds):
        if elem.keyword in DICOM_REMAPPED and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            found.setdefault(elem.keyword, set()).update(str(v) for v in values)
    return found


@pytest.fixture
def sqlite_api(make_node: MakeNode) -> Iterator[Api]:
    """One database is enough for the file-format checks (the unit of work is shared code)."""
    node = make_node(max_upload_bytes=LIMIT, chunk_size=CHUNK_SIZE)
    app = create_app(node)
    with serve(app) as client:
        yield Api(node=node, app=app, client=client, keys=issue_keys(node))


@pytest.mark.parametrize("name", DICOM_FILES)
def test_dicom_basic_profile_on_pydicom_test_files(
    sqlite_api: Api, chain: RpcChain, name: str
) -> None:
    dapi = sqlite_api
    path = get_testdata_file(name)
    assert path is not None, name
    raw = open(path, "rb").read()  # noqa: SIM115
    original = pydicom.dcmread(io.BytesIO(raw), force=True)
    archive_id = _upload(dapi, raw, "application/dicom")
    response = _derive(dapi, archive_id, "dicom-basic")
    assert response.status_code == 201, response.text
    derivative = response.json()
    assert derivative["id"] != archive_id
    assert derivative["metadata"]["derived_from"] == archive_id
    ds = pydicom.dcmread(io.BytesIO(_content(dapi, derivative["id"])), force=True)

    for elem in _elements(ds):
        assert elem.keyword not in DICOM_REMOVED, (name, elem.keyword)
        assert not elem.tag.is_private, (name, elem.tag)
        if elem.keyword in DICOM_EMPTIED:
            assert elem.value in ("", None, b"") or len(elem.value) == 0, (name, elem.keyword)
    assert ds.PatientIdentityRemoved == "YES"
    before, after = _uids(original), _uids(ds)
    assert set(before) <= set(after) | {"MediaStorageSOPInstanceUID"}
    for keyword, values in before.items():
        if keyword in after:
            assert not values & after[keyword], (name, keyword)  # every UID replaced
    if "PixelData" in original:
        assert ds.PixelData == original.PixelData  # the image itself is kept


def test_dicom_uids_are_consistent_per_study_and_recipient(
    sqlite_api: Api, chain: RpcChain
) -> None:
    dapi = sqlite_api
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    raw = open(path, "rb").read()  # noqa: SIM115
    original = pydicom.dcmread(io.BytesIO(raw))
    archive_id = _upload(dapi, raw, "application/dicom")
    first = _derive(dapi, archive_id, "dicom-basic").json()
    ds = pydicom.dcmread(io.BytesIO(_content(dapi, first["id"])))
    # Consistent per study and recipient; another recipient gets other UIDs.
    again = _derive(dapi, archive_id, "dicom-basic").json()
    other = _derive(dapi, archive_id, "dicom-basic", recipient="insurer-x").json()
    ds_again = pydicom.dcmread(io.BytesIO(_content(dapi, again["id"])), force=True)
    ds_other = pydicom.dcmread(io.BytesIO(_content(dapi, other["id"])), force=True)
    assert ds.StudyInstanceUID != original.StudyInstanceUID
    assert ds_again.StudyInstanceUID == ds.StudyInstanceUID
    assert ds_again.SOPInstanceUID == ds.SOPInstanceUID
    assert ds_other.StudyInstanceUID != ds.StudyInstanceUID
    # A second instance of the same study (another SOP instance, same series): same new study and
    # series UIDs, its own new instance UID.
    sibling = pydicom.dcmread(io.BytesIO(raw))
    sibling.SOPInstanceUID = original.SOPInstanceUID + ".2"
    sibling.file_meta.MediaStorageSOPInstanceUID = sibling.SOPInstanceUID
    buffer = io.BytesIO()
    sibling.save_as(buffer)
    sibling_id = _upload(dapi, buffer.getvalue(), "application/dicom")
    derived_sibling = _derive(dapi, sibling_id, "dicom-basic").json()
    ds_sibling = pydicom.dcmread(io.BytesIO(_content(dapi, derived_sibling["id"])))
    assert ds_sibling.StudyInstanceUID == ds.StudyInstanceUID
    assert ds_sibling.SeriesInstanceUID == ds.SeriesInstanceUID
    assert ds_sibling.SOPInstanceUID != ds.SOPInstanceUID


def test_fhir_profile_removes_identifiers_and_shifts_dates(dapi: Api, chain: RpcChain) -> None:
    raw = json.dumps(FHIR_BUNDLE).encode()
    archive_id = _upload(dapi, raw, "application/fhir+json", record_class="INPATIENT")
    response = _derive(dapi, archive_id, "fhir-r4-deid")
    assert response.status_code == 201, response.text
    data = _content(dapi, response.json()["id"])
    text = data.decode()
    for value in FHIR_PHI:
        assert value not in text, value
    bundle = json.loads(data)

    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    assert not set(keys(bundle)) & FHIR_REMOVED
    patient, encounter, observation = (e["resource"] for e in bundle["entry"])
    assert patient["birthDate"] == "1974"
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert observation["subject"]["reference"] == encounter["subject"]["reference"]
    # One shift for the patient: the encounter end and the observation moved by the same days.
    from datetime import date

    end = date.fromisoformat(encounter["period"]["end"])
    seen = date.fromisoformat(observation["effectiveDateTime"][:10])
    shift = (date(2024, 5, 2) - end).days
    assert 1 <= shift <= 365
    assert (date(2024, 4, 21) - seen).days == shift
    assert observation["effectiveDateTime"][10:] == "T09:30:00Z"
    assert observation["valueQuantity"] == {"value": 13.5, "unit": "g/dL"}


def test_hl7_profile_scrubs_pid_nk1_pv1(dapi: Api, chain: RpcChain) -> None:
    archive_id = _upload(dapi, HL7.encode(), "application/hl7-v2", record_class="INPATIENT")
    response = _derive(dapi, archive_id, "hl7v2-deid")
    assert response.status_code == 201, response.text
    text = _content(dapi, response.json()["id"]).decode()
    for value in HL7_PHI:
        assert value not in text, value
    segments = {s.split("|")[0]: s.split("|") for s in text.split("\r") if s}
    assert not set(segments) & HL7_DROPPED
    for name, scrubbed in HL7_SCRUBBED.items():
        for index in scrubbed:
            if index < len(segments[name]):
                assert segments[name][index] == "", (name, index)
    assert segments["PID"][7] == "1974"
    assert segments["PID"][8] == "M"
    assert segments["NK1"][3] == "SPO^Spouse"
    assert [f for i, f in enumerate(segments["NK1"]) if i not in (0, 1, 3)] == [""] * (
        len(segments["NK1"]) - 3
    )
    assert segments["PV1"][44] != "20240420080000"
    assert segments["PV1"][44].endswith("080000")
    assert segments["OBX"][5] == "13.5"


def test_lineage_is_evidence_and_the_derivative_verifies(dapi: Api, chain: RpcChain) -> None:
    raw = json.dumps(FHIR_BUNDLE).encode()
    original = _upload(dapi, raw, "application/fhir+json", record_class="INPATIENT")
    derivative = _derive(dapi, original, "fhir-r4-deid").json()
    events = dapi.client.get(
        f"/api/v1/archives/{derivative['id']}/events", headers=dapi.auth("archivist")
    ).json()
    types = [e["type"] for e in events]
    assert types[:2] == ["CREATE", "DERIVE"]
    create, derive = events[0], events[1]
    original_events = dapi.client.get(
        f"/api/v1/archives/{original}/events", headers=dapi.auth("archivist")
    ).json()
    source_commitment = original_events[0]["event"]["data"]["commitment"]
    assert derive["event"]["data"] == {
        "source_archive": original,
        "source_commitment": source_commitment,
        "commitment": create["event"]["data"]["commitment"],
        "profile": "fhir-r4-deid",
        "purpose": "research",
        "recipient": "research-unit",
    }
    assert create["event"]["data"]["patient"] != original_events[0]["event"]["data"]["patient"]
    reads = [e for e in original_events if e["type"] == "ACCESS"]
    assert any(
        e["event"]["data"]["scope"] == "content" and e["event"]["data"]["purpose"] == "research"
        for e in reads
    )

    dapi.node.worker.run_until_anchored(timeout=30)
    proof = dapi.client.get(
        f"/api/v1/archives/{derivative['id']}/proof", headers=dapi.auth("archivist")
    )
    assert proof.status_code == 200, proof.text
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()
    assert [e.event_type for e in report.entries][:2] == ["CREATE", "DERIVE"]


def test_a_format_without_a_profile_is_refused_and_nothing_is_created(
    dapi: Api, chain: RpcChain
) -> None:
    pdf = _upload(dapi, b"%PDF-1.7 discharge summary\n", "application/pdf", "INPATIENT")
    fhir = _upload(dapi, json.dumps(FHIR_BUNDLE).encode(), "application/fhir+json", "INPATIENT")
    before = dapi.footprint()
    refused = _derive(dapi, pdf, "fhir-r4-deid")
    assert refused.status_code == 400
    assert refused.json()["code"] == "no_deid_profile"
    mismatch = _derive(dapi, fhir, "dicom-basic")
    assert mismatch.status_code == 400
    assert mismatch.json()["code"] == "profile_mismatch"
    unknown = _derive(dapi, fhir, "safe-harbor")
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_profile"
    bad_recipient = _derive(dapi, fhir, "fhir-r4-deid", recipient="0x1234")
    assert bad_recipient.status_code in (400, 422)
    assert _derive(dapi, fhir, "fhir-r4-deid", who="auditor").status_code == 403
    assert _derive(dapi, fhir, "fhir-r4-deid", who="oncologist").status_code == 403
    assert dapi.footprint() == before  # no archive, blob or event of any refusal
    broken = _upload(dapi, b"not dicom at all", "application/dicom")
    before = dapi.footprint()
    failed = _derive(dapi, broken, "dicom-basic")
    assert failed.status_code == 400
    assert failed.json()["code"] == "deidentification_failed"
    after = dapi.footprint()
    assert (after.archives, after.blobs) == (before.archives, before.blobs)


FHIR_EXAMPLE = Path(__file__).parents[1] / "data" / "fhir" / "patient-example.json"
OBSERVATION_WITH_NOTES: dict[str, Any] = {  # R4 Observation: Annotation notes, extensions
    "resourceType": "Observation",
    "id": "f001",
    "text": {"status": "generated", "div": "<div>Glucose 6.3 mmol/l for P. van de Heuvel</div>"},
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/observation-bodyPosition",
            "valueCodeableConcept": {"text": "sitting, in Dr Smit's room"},
        }
    ],
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
    "subject": {"reference": "Patient/f001", "display": "P. van de Heuvel"},
    "effectiveDateTime": "2013-04-02T09:30:10+01:00",
    "valueQuantity": {"value": 6.3, "unit": "mmol/l"},
    "note": [
        {
            "authorString": "Dr. A. Smit",
            "time": "2013-04-02T10:00:00+01:00",
            "text": "Patient (Pieter) fasted since the wedding of his daughter Marieke",
        }
    ],
}


def test_fhir_profile_drops_extensions_notes_and_narrative(dapi: Api, chain: RpcChain) -> None:
    """The FHIR specification's own Patient example and an Observation with notes: no narrative,
    no extension (also on primitives: the birth time), no Annotation note in the derivative."""
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": json.loads(FHIR_EXAMPLE.read_text(encoding="utf-8"))},
            {"resource": OBSERVATION_WITH_NOTES},
        ],
    }
    archive_id = _upload(dapi, json.dumps(bundle).encode(), "application/fhir+json", "INPATIENT")
    response = _derive(dapi, archive_id, "fhir-r4-deid")
    assert response.status_code == 201, response.text
    text = _content(dapi, response.json()["id"]).decode()
    for secret in ("Chalmers", "Peter", "Erewhon", "5555 6473", "14:35:45", "Marché",
                   "Bénédicte", "Smit", "Pieter", "Marieke", "Heuvel", "iso21090",
                   "birthTime", "bodyPosition", "<div"):  # fmt: skip
        assert secret not in text, secret
    # the example's identifier value, not inside the random hex ids the profile writes
    assert re.search(r"(?<![0-9a-f])12345(?![0-9a-f])", text) is None
    derived = json.loads(text)
    patient, observation = (entry["resource"] for entry in derived["entry"])
    assert "_birthDate" not in patient or patient["_birthDate"] == {}
    assert patient["birthDate"] == "1974"
    assert not {"text", "extension", "note"} & set(observation)
    assert observation["valueQuantity"] == {"value": 6.3, "unit": "mmol/l"}


def test_a_fhir_modifier_extension_is_refused(dapi: Api, chain: RpcChain) -> None:
    resource = {
        **OBSERVATION_WITH_NOTES,
        "component": [
            {
                "modifierExtension": [
                    {"url": "http://example.org/not-performed", "valueBoolean": True}
                ],
                "code": {"text": "insulin"},
            }
        ],
    }
    archive_id = _upload(dapi, json.dumps(resource).encode(), "application/fhir+json", "INPATIENT")
    before = dapi.footprint()
    refused = _derive(dapi, archive_id, "fhir-r4-deid")
    assert (refused.status_code, refused.json()["code"]) == (400, "modifier_extension")
    after = dapi.footprint()
    assert (after.archives, after.blobs) == (before.archives, before.blobs)


HL7_ORU = (  # an ORU^R01 result message with free text in OBX and NTE
    "MSH|^~\\&|LAB|HOSP|ARCHIVE|HOSP|20240421101500||ORU^R01^ORU_R01|MSG-2|P|2.5.1\r"
    "PID|1||MRN-778899^^^HOSP^MR||ZHANG^WEI||19741225|M\r"
    "OBR|1|ORD-1|FIL-1|24323-8^Comprehensive metabolic panel^LN|||20240421093000\r"
    "NTE|1|L|Specimen drawn by nurse Wang Fang at the patient's home, 12 Chaoyang Road\r"
    "OBX|1|NM|2345-7^Glucose^LN||6.3|mmol/L|3.9-6.1|H|||F\r"
    "OBX|2|TX|18776-5^Plan of care^LN||Discuss results with Mr Zhang and his wife Li Na||||||F\r"
    "OBX|3|FT|11526-1^Pathology study^LN||Seen by Dr House\\.br\\Biopsy of left kidney||||||F\r"
    "OBX|4|ST|8251-1^Service comment^LN||Call daughter Zhang Min on 555-0177||||||F\r"
    "OBX|5|CE|11529-5^Surgical pathology^LN||C34.1^Neoplasm of upper lobe, per Dr Wilson^I10"
    "~D-1^Mr Zhang's second lesion^L||||||F\r"
    "OBX|6|CWE|8302-2^Height^LN||H1^Tall like his father Zhang San^L^^^^^^Zhang's note||||||F\r"
    "NTE|1|L|Result phoned to Dr Cuddy at 10:02\r"
)


def test_hl7_profile_scrubs_obx_free_text_and_drops_nte(dapi: Api, chain: RpcChain) -> None:
    archive_id = _upload(dapi, HL7_ORU.encode(), "application/hl7-v2", record_class="INPATIENT")
    response = _derive(dapi, archive_id, "hl7v2-deid")
    assert response.status_code == 201, response.text
    text = _content(dapi, response.json()["id"]).decode()
    for secret in ("Wang Fang", "Chaoyang", "Zhang", "Li Na", "House", "kidney", "555-0177",
                   "per Dr Wilson", "lesion", "father", "Cuddy", "MRN-778899"):  # fmt: skip
        assert secret not in text, secret
    segments = [s.split("|") for s in text.split("\r") if s]
    assert "NTE" not in {s[0] for s in segments}
    obx = {s[1]: s for s in segments if s[0] == "OBX"}
    assert obx["1"][5] == "6.3"  # a number stays
    assert (obx["2"][5], obx["3"][5], obx["4"][5]) == ("", "", "")
    assert obx["5"][5] == "C34.1^^I10~D-1^^L"  # codes stay, texts go
    assert obx["6"][5] == "H1^^L^^^^^^"
    assert obx["2"][3] == "18776-5^Plan of care^LN"  # the observation identifier stays
