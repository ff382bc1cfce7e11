"""End to end through HTTP on a real node and a real chain: upload → archive → anchored → proof →
verify (``POST /verify`` and ``anchoring.verifier.verify_bundle`` directly) → a tampered bundle
fails. Both databases."""

from __future__ import annotations

import base64
import json
from typing import Any

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from tests.api.conftest import PDF, Api, archive_metadata


def _anchor(api: Api) -> None:
    api.node.worker.run_until_anchored(timeout=30)


def _flip_event_byte(document: dict[str, Any], entry: int, position: int) -> dict[str, Any]:
    """A copy of the bundle with one byte of one event's canonical bytes changed."""
    tampered = json.loads(json.dumps(document))
    event = bytearray(base64.b64decode(tampered["entries"][entry]["event"]))
    event[position] ^= 0x01
    tampered["entries"][entry]["event"] = base64.b64encode(bytes(event)).decode("ascii")
    return tampered


def test_upload_archive_prove_verify_and_detect_tampering(api: Api, chain: RpcChain) -> None:
    archivist = api.auth("archivist")
    created = api.create()
    archive_id = created["id"]
    assert created["state"] == "CREATED"
    assert created["versions"][0]["size"] == len(PDF)
    assert created["versions"][0]["media_type"] == "application/pdf"
    assert created["versions"][0]["filename"] == "summary.pdf"

    archived = api.client.post(
        f"/api/v1/archives/{archive_id}/archive",
        headers=archivist,
        json={"trigger_date": "2024-06-30"},
    )
    assert archived.status_code == 200, archived.text
    body = archived.json()
    assert body["state"] == "ARCHIVED"
    assert body["retention_policy"] == "inpatient-30y"
    assert body["retention_deadline"].startswith("2054-06-30")
    assert body["chain_status"] == "pending"

    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "treatment"},
        headers=archivist,
    )
    assert content.status_code == 200
    assert content.content == PDF
    assert content.headers["content-type"] == "application/pdf"
    assert content.headers["x-archive-version"] == "1"

    _anchor(api)
    assert (
        api.client.get(f"/api/v1/archives/{archive_id}", headers=archivist).json()["chain_status"]
        == "registered"
    )
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert proof.headers["x-unanchored-events"] == "1"  # the metadata read just logged
    _anchor(api)

    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert proof.status_code == 200, proof.text
    assert proof.headers["content-type"] == "application/json"
    assert proof.headers["x-unanchored-events"] == "0"
    document = proof.json()
    assert document["format"] == "archivechain.proof/v1"
    assert document["notary"] == api.node.deployment.notary.address
    assert [e["log_index"] for e in document["entries"]] == [0, 1, 2, 3]

    # Through the API …
    verified = api.client.post("/api/v1/verify", headers=api.auth("auditor"), content=proof.content)
    assert verified.status_code == 200, verified.text
    report = verified.json()
    assert report["status"] == "valid"
    assert report["ok"] is True
    assert report["custody_checked"] is True
    assert [e["type"] for e in report["entries"]] == ["CREATE", "ARCHIVE", "ACCESS", "ACCESS"]
    assert all(e["verdict"] == "ok" for e in report["entries"])
    assert report["final_state"]["status"] == "ARCHIVED"

    # … and independently of the node, with only the bundle and the chain.
    direct = verify_bundle(parse_bundle(proof.content), chain)
    assert direct.ok, direct.to_text()

    # One flipped bit in the archive event: both verifications refuse it, naming the entry.
    tampered = _flip_event_byte(document, entry=1, position=40)
    refused = api.client.post("/api/v1/verify", headers=api.auth("auditor"), json=tampered)
    assert refused.status_code == 200
    failed = refused.json()
    assert failed["status"] == "invalid"
    assert failed["ok"] is False
    assert failed["failure"]["entry"] == 1
    assert failed["entries"][1]["verdict"] == "failed"
    direct_tampered = verify_bundle(parse_bundle(json.dumps(tampered)), chain)
    assert not direct_tampered.ok
    assert direct_tampered.failure is not None
    assert direct_tampered.failure.entry == 1


def test_bundle_of_another_deployment_is_invalid_here(api: Api) -> None:
    archive_id = api.create()["id"]
    _anchor(api)
    document = api.client.get(
        f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist")
    ).json()
    auditor = api.auth("auditor")

    other_notary = dict(document, notary=api.node.deployment.registry.address)
    notary_report = api.client.post("/api/v1/verify", headers=auditor, json=other_notary).json()
    assert notary_report["status"] == "invalid"
    assert notary_report["failure"]["code"] == "notary_mismatch"

    other_chain = dict(document, chain_id=document["chain_id"] + 1)
    chain_report = api.client.post("/api/v1/verify", headers=auditor, json=other_chain).json()
    assert chain_report["status"] == "invalid"
    assert chain_report["failure"]["code"] == "chain_id_mismatch"


def test_malformed_bundle_is_422_naming_the_field(api: Api) -> None:
    auditor = api.auth("auditor")
    archive_id = api.create()["id"]
    _anchor(api)
    document = api.client.get(
        f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist")
    ).json()

    bad_proof = json.loads(json.dumps(document))
    bad_proof["entries"][0]["checkpoint"]["root"] = "XYZ"
    response = api.client.post("/api/v1/verify", headers=auditor, json=bad_proof)
    assert response.status_code == 422
    assert response.json()["code"] == "bundle_invalid"
    assert response.json()["details"]["field"] == "entries[0].checkpoint.root"

    unknown = dict(document, extra=1)
    response = api.client.post("/api/v1/verify", headers=auditor, json=unknown)
    assert response.status_code == 422
    assert response.json()["details"]["field"] == "extra"

    response = api.client.post("/api/v1/verify", headers=auditor, content=b"{not json")
    assert response.status_code == 422
    assert response.json()["code"] == "bundle_invalid"


def test_proof_waits_for_anchoring_and_counts_newer_events(api: Api) -> None:
    archivist = api.auth("archivist")
    archive_id = api.create()["id"]
    pending = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert pending.status_code == 409
    assert pending.json()["code"] == "proof_pending"

    _anchor(api)
    read = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params={"purpose": "audit"}, headers=archivist
    )
    assert read.status_code == 200
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert proof.status_code == 200
    assert proof.headers["x-unanchored-events"] == "1"
    assert len(proof.json()["entries"]) == 1

    events = api.client.get(f"/api/v1/archives/{archive_id}/events", headers=archivist).json()
    assert [(e["type"], e["anchored"]) for e in events] == [("CREATE", True), ("ACCESS", False)]
    assert events[1]["event"]["data"]["purpose"] == "audit"


def test_amend_then_read_each_version_streamed(api: Api) -> None:
    archivist = api.auth("archivist")
    archive_id = api.create()["id"]
    second = b"version two " * 2000  # several encryption chunks
    amended = api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        headers=archivist,
        files={"file": ("v2.txt", second, "text/plain; charset=utf-8")},
    )
    assert amended.status_code == 200, amended.text
    body = amended.json()
    assert body["current_version"] == 2
    assert [v["media_type"] for v in body["versions"]] == ["application/pdf", "text/plain"]

    latest = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "treatment"},
        headers=archivist,
    )
    assert latest.content == second
    assert latest.headers["content-type"].startswith("text/plain")
    assert latest.headers["content-length"] == str(len(second))
    assert latest.headers["content-disposition"] == "attachment; filename*=UTF-8''v2.txt"
    first = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "treatment", "version": 1},
        headers=archivist,
    )
    assert first.content == PDF
    missing = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "treatment", "version": 3},
        headers=archivist,
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "version_not_found"


def test_search_filters_and_never_returns_the_patient_id(api: Api) -> None:
    archivist = api.auth("archivist")
    cardio = api.create(patient_id="MRN-4242", title="Echo report")
    lab = api.create(record_class="LAB", department="laboratory", title="Lipid panel")
    other = api.create(patient_id="MRN-9999", title="Other patient")

    by_patient = api.client.get(
        "/api/v1/archives", params={"patient_id": "MRN-4242"}, headers=archivist
    ).json()
    assert [a["id"] for a in by_patient["items"]] == [cardio["id"]]
    assert by_patient["total"] == 1
    assert "MRN-4242" not in json.dumps(by_patient)
    assert "patient_id" not in by_patient["items"][0]

    by_class = api.client.get(
        "/api/v1/archives", params={"record_class": "LAB"}, headers=archivist
    ).json()
    assert [a["id"] for a in by_class["items"]] == [lab["id"]]

    by_keyword = api.client.get("/api/v1/archives", params={"q": "ECHO"}, headers=archivist).json()
    assert [a["id"] for a in by_keyword["items"]] == [cardio["id"]]

    paged = api.client.get(
        "/api/v1/archives", params={"limit": 2, "offset": 0}, headers=archivist
    ).json()
    assert paged["total"] == 3
    assert len(paged["items"]) == 2
    rest = api.client.get(
        "/api/v1/archives", params={"limit": 2, "offset": 2}, headers=archivist
    ).json()
    assert len(rest["items"]) == 1
    assert [a["id"] for a in paged["items"] + rest["items"]] == [
        other["id"],
        lab["id"],
        cardio["id"],
    ]  # newest first

    archived = api.client.get(
        "/api/v1/archives", params={"state": "ARCHIVED"}, headers=archivist
    ).json()
    assert archived["total"] == 0

    future = api.client.get(
        "/api/v1/archives", params={"created_from": "2999-01-01T00:00:00Z"}, headers=archivist
    ).json()
    assert future["total"] == 0
    since = api.client.get(
        "/api/v1/archives", params={"created_from": "2000-01-01T00:00:00+08:00"}, headers=archivist
    ).json()
    assert since["total"] == 3

    events = api.client.get(f"/api/v1/archives/{cardio['id']}/events", headers=archivist)
    assert "MRN-4242" not in events.text
    assert archive_metadata()["patient_id"] not in events.text
