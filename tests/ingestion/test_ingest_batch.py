"""``POST /api/v1/ingest/documents/batch``: N files and a JSON array of N ``DocumentIn`` in one
transaction, through the ASGI app over both databases — the same answers as the single route,
duplicates, all-or-nothing refusals naming the refused item, count mismatches, too many items,
oversize bodies, hostile bodies before authentication, roles."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from api.routes.ingest import MAX_BATCH_DOCUMENTS
from tests.api.conftest import UPLOAD_LIMIT, Api

BATCH = "/api/v1/ingest/documents/batch"
SINGLE = "/api/v1/ingest/documents"
PATIENT = "MRN-BATCH-0007"
HINTS = ("住院", "LAB", "门诊", "IMAGING", "急诊")


def meta(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "patient_id": PATIENT,
        "source_system": "HIS",
        "message_id": f"DOC-{n}",
        "title": f"Document {n}",
        "class_hint": HINTS[n % len(HINTS)],
        **changes,
    }


def post_batch(
    api: Api,
    items: list[dict[str, Any]],
    contents: list[bytes] | None = None,
    who: str = "archivist",
    metadata: str | None = None,
) -> httpx.Response:
    contents = contents or [f"document {i} text".encode() for i in range(len(items))]
    files = [("file", (f"d{i}.txt", c, "text/plain")) for i, c in enumerate(contents)]
    return api.client.post(
        BATCH,
        files=files,
        data={"metadata": metadata if metadata is not None else json.dumps(items)},
        headers=api.auth(who),
    )


def test_batch_matches_single_ingest_and_answers_duplicates(api: Api) -> None:
    items = [meta(i) for i in range(5)]
    response = post_batch(api, items)
    assert response.status_code == 201, response.text
    documents = response.json()["documents"]
    assert len(documents) == 5
    assert not any(d["duplicate"] for d in documents)
    assert len({d["archive_id"] for d in documents}) == 5
    # The same documents under other message ids through the single route: same outcome.
    for i, batched in enumerate(documents):
        single = api.client.post(
            SINGLE,
            files={"file": (f"d{i}.txt", f"document {i} text".encode(), "text/plain")},
            data={"metadata": json.dumps(meta(i, message_id=f"ONE-{i}"))},
            headers=api.auth("archivist"),
        )
        assert single.status_code == 201, single.text
        for key in ("record_class", "sensitivity", "state"):
            assert single.json()[key] == batched[key], (i, key)
    assert [d["record_class"] for d in documents] == [
        "INPATIENT", "LAB", "OUTPATIENT", "IMAGING", "EMERGENCY"
    ]  # fmt: skip
    before = api.footprint()
    # Resent: every item a duplicate (200), nothing stored; a mixed batch answers 201.
    again = post_batch(api, items)
    assert again.status_code == 200, again.text
    assert again.json()["documents"] == [{**d, "duplicate": True} for d in documents]
    assert api.footprint() == before
    mixed = post_batch(api, [meta(0), meta(99), meta(99)])
    assert mixed.status_code == 201, mixed.text
    out = mixed.json()["documents"]
    assert [d["duplicate"] for d in out] == [True, False, True]
    assert out[0]["archive_id"] == documents[0]["archive_id"]
    assert out[1]["archive_id"] == out[2]["archive_id"]
    # A message id sent through the single route is a duplicate in a batch, and vice versa.
    single_dup = api.client.post(
        SINGLE,
        files={"file": ("x.txt", b"x", "text/plain")},
        data={"metadata": json.dumps(meta(3))},
        headers=api.auth("archivist"),
    )
    assert single_dup.status_code == 200
    assert single_dup.json()["archive_id"] == documents[3]["archive_id"]


def test_a_bad_item_refuses_the_whole_batch_and_names_it(api: Api) -> None:
    before = api.footprint()
    # A source code the schema refuses: the item's index is in loc.
    items = [meta(0), meta(1), meta(2, source_system="bad source!"), meta(3)]
    response = post_batch(api, items)
    assert response.status_code == 422, response.text
    assert response.json()["details"]["errors"][0]["loc"][:3] == ["body", "metadata", 2]
    # Refused by the schema: the item's index is in loc.
    items = [meta(0), meta(1, extra=1), meta(2)]
    response = post_batch(api, items)
    assert response.status_code == 422, response.text
    assert response.json()["details"]["errors"][0]["loc"][:3] == ["body", "metadata", 1]
    # Refused by the node service (a patient id blank once trimmed, a message id with a control
    # character): its code, and details.index the refused item.
    for index, bad in ((3, {"patient_id": "   "}), (1, {"message_id": "DOC\x01"})):
        items = [meta(i, **(bad if i == index else {})) for i in range(4)]
        response = post_batch(api, items)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["details"] == {"index": index}, body
        assert body["code"] == ("invalid_patient_id" if index == 3 else "invalid_message_id")
    assert PATIENT not in response.text
    assert api.footprint() == before
    # The good items were not taken: they go in afterwards as new archives.
    ok = post_batch(api, [meta(0), meta(1), meta(2)])
    assert ok.status_code == 201
    assert not any(d["duplicate"] for d in ok.json()["documents"])


def test_count_mismatch_too_many_and_oversize(api: Api) -> None:
    before = api.footprint()
    response = post_batch(api, [meta(0), meta(1)], contents=[b"only one"])
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "batch_count_mismatch"
    response = post_batch(api, [meta(0)], contents=[b"a", b"b"])
    assert response.json()["code"] == "batch_count_mismatch"
    response = post_batch(api, [], contents=[b"a"], metadata="{}")
    assert response.status_code == 422  # not an array
    too_many = MAX_BATCH_DOCUMENTS + 1
    response = post_batch(api, [meta(i) for i in range(too_many)], [b"x"] * too_many)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"
    # One file over the per-file limit: 413 naming it; all together over the limit: 413.
    big = b"x" * (UPLOAD_LIMIT + 1)
    response = post_batch(api, [meta(0), meta(1)], contents=[b"fine", big])
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    half = b"y" * (UPLOAD_LIMIT // 2 + 10)
    response = post_batch(api, [meta(i) for i in range(3)], contents=[half, half, half])
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    response = post_batch(api, [meta(0), meta(1)], contents=[half, half])
    assert response.status_code == 413, response.text
    assert response.json()["details"]["index"] == 1
    assert api.footprint() == before


@pytest.mark.parametrize("who", ["no key", "wrong key"])
def test_hostile_bodies_before_authentication(api: Api, who: str) -> None:
    auth = {} if who == "no key" else {"Authorization": "Bearer ak_not-a-real-key"}
    before = api.footprint()
    boundary = "b0undary"
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    deep = "[" * 60_000 + "]" * 60_000
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
            f"{deep}\r\n--{boundary}--\r\n".encode(),
            multipart,
        ),
        (b"--" + boundary.encode() + b"\r\n\xff\xfe\xc3 broken", multipart),
        (b"\xff\xfe not utf-8 at all", multipart),
        (b"no boundary here", {"Content-Type": "multipart/form-data"}),
        (b"x" * (UPLOAD_LIMIT * 4), multipart),
    ]
    for content, headers in bodies:
        response = api.client.post(BATCH, content=content, headers={**headers, **auth})
        assert response.status_code in (401, 413), response.text[:200]
        assert response.json()["code"]
    assert api.footprint() == before
    assert api.client.get("/healthz").status_code == 200


def test_hostile_bodies_with_a_key_and_roles(api: Api) -> None:
    before = api.footprint()
    deep = "[" * 60_000 + "]" * 60_000
    response = post_batch(api, [meta(0)], metadata=deep[: 60 * 1024])
    assert response.status_code == 422, response.text[:200]
    malformed = (
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nab\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        b'[{"patient_id": "\xff\xfe\xc3", "title": "\xed\xa0\x80"}]\r\n--zz--\r\n'
    )
    response = api.client.post(
        BATCH,
        content=malformed,
        headers={"Content-Type": "multipart/form-data; boundary=zz", **api.auth("archivist")},
    )
    assert response.status_code == 422, response.text[:300]  # decoded with replacement: judged
    assert PATIENT not in response.text
    assert 400 <= response.status_code < 500
    broken = api.client.post(
        BATCH,
        content=b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nab',
        headers={"Content-Type": "multipart/form-data; boundary=zz", **api.auth("archivist")},
    )
    assert 400 <= broken.status_code < 500, broken.text[:200]
    assert broken.json()["code"]
    not_multipart = api.client.post(BATCH, json=[meta(0)], headers=api.auth("archivist"))
    assert not_multipart.status_code == 415
    assert post_batch(api, [meta(0)], who="auditor").status_code == 403
    assert api.footprint() == before
    # A clinician files into their own department, as with the single route.
    response = post_batch(api, [meta(0, department="oncology")], who="cardiologist")
    assert response.status_code == 201, response.text
    assert api.client.get("/healthz").status_code == 200
