"""Bad input is refused with the right 4xx and leaves nothing behind: no new file under the blob
directory (not even a temporary one), no archive, version or key row, no log entry. Both databases.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import PDF, UPLOAD_LIMIT, Api, archive_metadata

BOUNDARY = "archivechain-test-boundary"


def _multipart(metadata: dict[str, Any], content: bytes, media_type: str) -> bytes:
    """A multipart/form-data body with the metadata field and one file part."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n\r\n'
            f"{json.dumps(metadata)}\r\n"
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            f"Content-Type: {media_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


UPLOAD_REFUSALS: dict[str, tuple[dict[str, Any], int, str]] = {
    # name: (upload() keyword arguments, status, code)
    "oversize": ({"content": b"x" * (UPLOAD_LIMIT + 1)}, 413, "payload_too_large"),
    "oversize body": ({"content": b"x" * (UPLOAD_LIMIT + 512 * 1024)}, 413, "payload_too_large"),
    "empty file": ({"content": b""}, 400, "empty_content"),
    "unaccepted media type": (
        {"media_type": "application/x-msdownload"},
        415,
        "unsupported_media_type",
    ),
    "malformed metadata JSON": ({"metadata": '{"record_class": '}, 422, "validation_error"),
    "metadata not an object": ({"metadata": "[1, 2]"}, 422, "validation_error"),
    "unknown metadata field": (
        {"metadata": archive_metadata(colour="blue")},
        422,
        "validation_error",
    ),
    "missing required metadata": (
        {"metadata": {k: v for k, v in archive_metadata().items() if k != "patient_id"}},
        422,
        "validation_error",
    ),
    "unknown record class": (
        {"metadata": archive_metadata(record_class="DENTAL")},
        422,
        "validation_error",
    ),
    "NUL in title": ({"metadata": archive_metadata(title="a\u0000b")}, 422, "validation_error"),
    "control character in patient id": (
        {"metadata": archive_metadata(patient_id="MRN\n1")},
        422,
        "validation_error",
    ),
    "department not a code": (
        {"metadata": archive_metadata(department="cardio logy")},
        422,
        "validation_error",
    ),
    "title too long": ({"metadata": archive_metadata(title="t" * 257)}, 422, "validation_error"),
    "trigger date out of range": (
        {"metadata": archive_metadata(trigger_date="1800-01-01")},
        422,
        "validation_error",
    ),
    "trigger date a number": (  # pydantic alone reads numbers as unix times
        {"metadata": archive_metadata(trigger_date=-3.0176582493304245e-63)},
        422,
        "validation_error",
    ),
    "trigger date with a time": (
        {"metadata": archive_metadata(trigger_date="2024-05-02T00:00:00")},
        422,
        "validation_error",
    ),
    "nested metadata": (
        {"metadata": archive_metadata(metadata={"a": {"b": 1}})},
        422,
        "validation_error",
    ),
    "too many metadata entries": (
        {"metadata": archive_metadata(metadata={f"k{i}": i for i in range(33)})},
        422,
        "validation_error",
    ),
    "boolean metadata value": (
        {"metadata": archive_metadata(metadata={"flag": True})},
        422,
        "validation_error",
    ),
}


@pytest.mark.parametrize("case", sorted(UPLOAD_REFUSALS))
def test_refused_upload_leaves_nothing_behind(api: Api, case: str) -> None:
    kwargs, status, code = UPLOAD_REFUSALS[case]
    api.create()  # something already stored, so "nothing new" is a real comparison
    before = api.footprint()
    response = api.upload(**kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    assert api.footprint() == before


def test_validation_errors_name_the_field_without_echoing_it(api: Api) -> None:
    response = api.upload(metadata=archive_metadata(patient_id="MRN\u00001", colour="blue"))
    assert response.status_code == 422
    body = response.json()
    locations = [tuple(error["loc"]) for error in body["details"]["errors"]]
    assert ("body", "metadata", "patient_id") in locations
    assert ("body", "metadata", "colour") in locations
    assert "body.metadata.colour" in body["message"]
    assert "MRN" not in response.text  # the input (possibly PHI) is never echoed


def test_a_long_unknown_parameter_name_is_named_short(api: Api) -> None:
    """Names of unknown query parameters come from the client: a 70,000-character one was
    echoed in full twice (140 kB). At most 64 characters of a name are named (20,000 here:
    httpx refuses longer URLs)."""
    name = "PATIENT-ZHANG-SAN-" + "a" * 20_000
    response = api.client.get("/api/v1/archives", params={name: "1"}, headers=api.auth("archivist"))
    assert response.status_code == 422
    assert len(response.content) < 2_000
    [error] = response.json()["details"]["errors"]
    shown = error["loc"][-1]
    assert len(shown) == 64
    assert shown == name[:63] + "…"
    assert shown in response.json()["message"]
    short = api.client.get(
        "/api/v1/archives", params={"colour": "1"}, headers=api.auth("archivist")
    )
    assert short.json()["details"]["errors"][0]["loc"][-1] == "colour"  # short names whole


def test_missing_parts_and_non_multipart_requests(api: Api) -> None:
    before = api.footprint()
    archivist = api.auth("archivist")
    no_file = api.client.post(
        "/api/v1/archives",
        headers=archivist,
        files={"other": ("a.pdf", PDF, "application/pdf")},
        data={"metadata": json.dumps(archive_metadata())},
    )
    assert no_file.status_code == 422
    assert ["body", "file"] in [e["loc"] for e in no_file.json()["details"]["errors"]]
    no_metadata = api.client.post(
        "/api/v1/archives", headers=archivist, files={"file": ("a.pdf", PDF, "application/pdf")}
    )
    assert no_metadata.status_code == 422
    as_json = api.client.post("/api/v1/archives", headers=archivist, json=archive_metadata())
    assert as_json.status_code == 415
    assert as_json.json()["code"] == "unsupported_media_type"
    two_files = api.client.post(
        "/api/v1/archives",
        headers=archivist,
        files=[
            ("file", ("a.pdf", PDF, "application/pdf")),
            ("file", ("b.pdf", PDF, "application/pdf")),
        ],
        data={"metadata": json.dumps(archive_metadata())},
    )
    assert two_files.status_code == 400
    assert api.footprint() == before


def test_streamed_body_over_the_limit_is_cut_off(api: Api) -> None:
    """No Content-Length (chunked): the body is counted as it arrives and refused mid-stream."""
    before = api.footprint()
    body = _multipart(archive_metadata(), b"y" * (UPLOAD_LIMIT + 400 * 1024), "application/pdf")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    response = api.client.post(
        "/api/v1/archives",
        headers={
            **api.auth("archivist"),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
        content=chunks(),
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert api.footprint() == before


def test_streamed_body_within_the_limit_is_accepted(api: Api) -> None:
    content = b"z" * (UPLOAD_LIMIT - 10)
    body = _multipart(archive_metadata(), content, "application/pdf")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 5000):
            yield body[start : start + 5000]

    response = api.client.post(
        "/api/v1/archives",
        headers={
            **api.auth("archivist"),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
        content=chunks(),
    )
    assert response.status_code == 201, response.text
    assert response.json()["versions"][0]["size"] == len(content)


def test_fields_at_their_longest_accepted_length_are_archived(api: Api) -> None:
    """Codes of 64 characters, a 256-character title and a 255-character file name are stored
    as given on both databases (PostgreSQL refused a source system code over 32: a 500)."""
    source, department = "LIS." + "s" * 60, "ward-" + "d" * 59
    metadata = archive_metadata(
        source_system=source, department=department, title="题" * 256, filename="f" * 251 + ".pdf"
    )
    response = api.upload(metadata=metadata)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["source_system"], body["department"]) == (source, department)
    assert body["title"] == "题" * 256
    assert body["versions"][0]["filename"] == "f" * 251 + ".pdf"


AMEND_REFUSALS: dict[str, tuple[tuple[str, bytes, str], int, str]] = {
    "empty": (("v2.pdf", b"", "application/pdf"), 400, "empty_content"),
    "oversize": (
        ("v2.pdf", b"x" * (UPLOAD_LIMIT + 1), "application/pdf"),
        413,
        "payload_too_large",
    ),
    "unaccepted media type": (
        ("v2.exe", b"MZ", "application/x-msdownload"),
        415,
        "unsupported_media_type",
    ),
}


@pytest.mark.parametrize("case", sorted(AMEND_REFUSALS))
def test_refused_amendment_leaves_nothing_behind(api: Api, case: str) -> None:
    upload, status, code = AMEND_REFUSALS[case]
    archive_id = api.create()["id"]
    before = api.footprint()
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        headers=api.auth("archivist"),
        files={"file": upload},
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert api.footprint() == before
    current = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    assert current.json()["current_version"] == 1


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({}, ["query", "purpose"]),
        ({"purpose": "curiosity"}, ["query", "purpose"]),
        ({"purpose": "treatment", "version": 0}, ["query", "version"]),
        ({"purpose": "treatment", "verison": 2}, ["query", "verison"]),
    ],
)
def test_bad_purpose_or_version_reads_nothing_and_logs_nothing(
    api: Api, params: dict[str, Any], loc: list[str]
) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params=params, headers=api.auth("archivist")
    )
    assert response.status_code == 422
    assert loc in [e["loc"] for e in response.json()["details"]["errors"]]
    assert PDF not in response.content
    assert api.footprint() == before  # no ACCESS event for a refused read


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"offset": -1},
        {"state": "LOST"},
        {"patientid": "MRN-0001"},  # a misspelt filter must not silently widen the search
        {"q": "a\u0000"},
        {"created_from": "yesterday"},
        {"created_to": "1622"},  # not a unix time: RFC 3339 only
        {"created_to": "2024-01-01T00:00:00"},  # an offset is required
        {"limit": ["1", "200"]},  # repeated parameters are ambiguous
    ],
)
def test_bad_search_parameters_are_422(api: Api, params: dict[str, Any]) -> None:
    response = api.client.get("/api/v1/archives", params=params, headers=api.auth("archivist"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "body",
    [
        {"trigger_date": "2024-13-01"},
        {"trigger_date": "1066-10-14"},
        {"trigger_date": 1714608000},
        {"trigger": "2024-01-01"},
        [],
    ],
)
def test_bad_archive_request_changes_nothing(api: Api, body: Any) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist"), json=body
    )
    assert response.status_code == 422, response.text
    assert api.footprint() == before
    state = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    assert state.json()["state"] == "CREATED"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/archives/not-an-id", {}),
        ("GET", "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A%00", {}),
        ("GET", "/api/v1/archives/01j0z8q6j8zk3w6y9v5t3n2m1a", {}),  # ids are canonical
        ("GET", "/api/v1/archives/8ZZZZZZZZZZZZZZZZZZZZZZZZZ", {}),  # beyond 128 bits
        ("GET", "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2MIL", {}),  # not Crockford
        ("DELETE", "/api/v1/keys/0", {}),
        ("POST", "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/hold", {"json": {}}),
    ],
)
def test_malformed_identifiers_and_bodies_are_422(
    api: Api, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    who = "admin" if "/keys" in path else "archivist"
    response = api.client.request(method, path, headers=api.auth(who), **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


def test_oversize_json_bodies_are_413(api: Api) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    hold = api.client.post(
        f"/api/v1/archives/{archive_id}/hold",
        headers=api.auth("archivist"),
        json={"reason": "r" * (100 * 1024)},
    )
    assert hold.status_code == 413
    assert hold.json()["code"] == "payload_too_large"
    key = api.client.post(
        "/api/v1/keys",
        headers=api.auth("admin"),
        json={"name": "k", "role": "auditor", "padding": "p" * (100 * 1024)},
    )
    assert key.status_code == 413
    assert api.footprint() == before


@pytest.mark.parametrize(
    ("path", "who"),
    [("/healthz", None), ("/api/v1/keys", "admin"), ("/api/v1/checkpoints", "auditor")],
)
def test_repeated_query_parameters_are_refused_everywhere(
    api: Api, path: str, who: str | None
) -> None:
    headers = api.auth(who) if who else {}
    response = api.client.get(f"{path}?limit=1&limit=2", headers=headers)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["loc"] == ["query", "limit"]
