"""``POST /api/v1/access-events`` on a real node and chain (both databases): a batch of reported
reads becomes ACCESS events with the reports' purposes, scopes and pseudonymised staff actors; the
events are anchored and provable. Refusals are all or nothing: an unknown archive anywhere in the
batch, an archive in transit, a role that may not record accesses, a malformed or oversize batch —
each leaves the log exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from anchoring import storage
from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.events import canonical_bytes, parse_event
from anchoring.verifier import verify_bundle
from api.limits import ACCESS_EVENTS_BODY_BYTES
from node import crypto
from node.services.archives import MAX_ACCESS_BATCH
from tests.api.conftest import Api

URL = "/api/v1/access-events"
UNKNOWN_ARCHIVE = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"


def _report(archive_id: str, purpose: str = "treatment", **fields: Any) -> dict[str, Any]:
    return {"archive_id": archive_id, "purpose": purpose, **fields}


def _post(api: Api, reports: list[dict[str, Any]], who: str = "archivist") -> Any:
    return api.client.post(URL, headers=api.auth(who), json={"reports": reports})


def _events(api: Api, archive_id: str) -> list[dict[str, Any]]:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def _staff(api: Api, staff_id: str) -> str:
    return crypto.pseudonym(api.node.keystore.pseudonym_secret, "staff", staff_id)


def _all_logged_bytes(api: Api) -> list[bytes]:
    with api.node.db.session() as session:
        return list(session.execute(select(storage.LogEntry.event)).scalars())


def test_batch_becomes_pseudonymised_access_events_that_are_anchored_and_provable(
    api: Api, chain: RpcChain
) -> None:
    first = api.create()["id"]
    second = api.create(department="oncology")["id"]
    before = api.footprint().log_size
    reports = [
        _report(first, "treatment", scope="content", staff_id="pacs-user-0042"),
        _report(second, "research", scope="proof", staff_id="his-7"),
        _report(first, "quality", scope="metadata"),
        _report(second, "treatment", staff_id="  his-7 "),
    ]

    response = _post(api, reports)

    assert response.status_code == 201, response.text
    assert response.json() == {"recorded": 4}
    assert api.footprint().log_size == before + 4
    caller = api.node.keys.authenticate(api.keys["archivist"]).actor
    first_access = [e["event"] for e in _events(api, first) if e["type"] == "ACCESS"]
    second_access = [e["event"] for e in _events(api, second) if e["type"] == "ACCESS"]
    assert [(e["data"]["purpose"], e["data"]["scope"], e["actor"]) for e in first_access] == [
        ("treatment", "content", _staff(api, "pacs-user-0042")),
        ("quality", "metadata", caller),
    ]
    assert [(e["data"]["purpose"], e["data"]["scope"], e["actor"]) for e in second_access] == [
        ("research", "proof", _staff(api, "his-7")),
        ("treatment", "content", _staff(api, "his-7")),  # the same reader, however padded
    ]
    assert all(e["data"]["break_glass"] is False for e in first_access + second_access)
    assert _staff(api, "his-7") != _staff(api, "pacs-user-0042") != caller
    # Every logged event is exactly its canonical encoding, and the staff ids themselves are
    # nowhere in the log.
    logged = _all_logged_bytes(api)
    assert all(canonical_bytes(parse_event(raw)) == raw for raw in logged)
    assert not any(b"pacs-user-0042" in raw or b"his-7" in raw for raw in logged)

    api.node.worker.run_until_anchored(timeout=30)
    assert all(e["anchored"] for e in _events(api, first))
    proof = api.client.get(f"/api/v1/archives/{first}/proof", headers=api.auth("auditor"))
    assert proof.status_code == 200, proof.text
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()
    assert [e.event_type for e in report.entries] == ["CREATE", "ACCESS", "ACCESS"]


def test_a_full_batch_of_10000_reports_fits_the_body_limit_and_is_recorded(api: Api) -> None:
    archives = [api.create()["id"] for _ in range(4)]
    reports = [
        _report(archives[i % 4], "audit", scope="metadata", staff_id=f"staff-{i:058d}")
        for i in range(MAX_ACCESS_BATCH)
    ]
    body = json.dumps({"reports": reports}).encode()
    assert len(body) > 1_000_000  # far above the 64 KiB limit of other JSON bodies
    before = api.footprint().log_size

    response = api.client.post(
        URL,
        headers={**api.auth("archivist"), "Content-Type": "application/json"},
        content=body,
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"recorded": MAX_ACCESS_BATCH}
    assert api.footprint().log_size == before + MAX_ACCESS_BATCH
    counts = [
        api.client.get(f"/api/v1/archives/{a}", headers=api.auth("auditor")).json()["event_count"]
        for a in archives
    ]
    assert counts == [2 + MAX_ACCESS_BATCH // 4] * 4  # CREATE, the reports, this metadata read


@pytest.mark.parametrize("position", [0, 2])
def test_an_unknown_archive_anywhere_refuses_the_whole_batch(api: Api, position: int) -> None:
    known = api.create()["id"]
    reports = [_report(known), _report(known, "quality"), _report(known, "audit")]
    reports.insert(position, _report(UNKNOWN_ARCHIVE))
    before = api.footprint()

    response = _post(api, reports)

    assert response.status_code == 404, response.text
    assert response.json()["code"] == "archive_not_found"
    assert f"reports[{position}]" in response.json()["message"]
    assert api.footprint() == before
    assert [e["type"] for e in _events(api, known)] == ["CREATE"]


def test_an_archive_in_transit_refuses_the_batch_and_the_others_stay_consistent(
    api: Api, chain: RpcChain, hospital_b: LocalAccount
) -> None:
    staying = api.create()["id"]
    leaving = api.create()["id"]
    archivist = api.auth("archivist")
    assert (
        api.client.post(f"/api/v1/archives/{leaving}/archive", headers=archivist).status_code == 200
    )
    offered = api.client.post(
        f"/api/v1/archives/{leaving}/transfers", headers=archivist, json={"to": hospital_b.address}
    )
    assert offered.status_code == 202, offered.text
    assert api.client.get(f"/api/v1/archives/{leaving}", headers=archivist).json()["state"] == (
        "TRANSFER_PENDING"
    )
    before = api.footprint()

    refused = _post(api, [_report(staying), _report(staying, "quality"), _report(leaving)])

    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "illegal_transition"
    assert api.footprint() == before
    assert [e["type"] for e in _events(api, staying)] == ["CREATE"]

    # The refused batch left nothing behind in the node's state either: the next batch chains
    # onto the real head, and the archive's proof verifies.
    accepted = _post(api, [_report(staying, "referral")])
    assert accepted.status_code == 201, accepted.text
    api.node.worker.run_until_anchored(timeout=30)
    proof = api.client.get(f"/api/v1/archives/{staying}/proof", headers=archivist)
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()
    assert [e.event_type for e in report.entries] == ["CREATE", "ACCESS"]


@pytest.mark.parametrize("who", ["cardiologist", "auditor", "admin"])
def test_only_archivists_record_accesses(api: Api, who: str) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()

    response = _post(api, [_report(archive_id)], who=who)

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert api.footprint() == before


def test_without_a_key_it_is_401(api: Api) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    response = api.client.post(URL, json={"reports": [_report(archive_id)]})
    assert response.status_code == 401
    assert response.json()["code"] == "missing_api_key"
    assert api.footprint() == before


def test_malformed_batches_are_422_and_record_nothing(api: Api) -> None:
    archive_id = api.create()["id"]
    good = _report(archive_id)
    cases: dict[str, Any] = {
        "empty batch": {"reports": []},
        "too many reports": {"reports": [good] * (MAX_ACCESS_BATCH + 1)},
        "no reports field": {},
        "unknown top-level field": {"reports": [good], "source": "PACS"},
        "unknown report field": {"reports": [{**good, "patient_id": "MRN-1"}]},
        "missing purpose": {"reports": [{"archive_id": archive_id}]},
        "unknown purpose": {"reports": [{**good, "purpose": "curiosity"}]},
        "unknown scope": {"reports": [{**good, "scope": "everything"}]},
        "lower-case id": {"reports": [{**good, "archive_id": archive_id.lower()}]},
        "short id": {"reports": [{**good, "archive_id": archive_id[:-1]}]},
        "empty staff id": {"reports": [{**good, "staff_id": "   "}]},
        "control character in staff id": {"reports": [{**good, "staff_id": "nurse\x01"}]},
        "staff id too long": {"reports": [{**good, "staff_id": "s" * 65}]},
        "reports not a list": {"reports": good},
    }
    before = api.footprint()
    for label, body in cases.items():
        response = api.client.post(URL, headers=api.auth("archivist"), json=body)
        assert response.status_code == 422, (label, response.text)
        assert response.json()["code"] == "validation_error", label
        assert "MRN-1" not in response.text, label  # the input is never echoed
    nul = api.client.post(  # a NUL is refused with the body, before the route (api.jsonbody)
        URL, headers=api.auth("archivist"), json={"reports": [{**good, "staff_id": "nurse\x00"}]}
    )
    assert nul.status_code == 400, nul.text
    assert nul.json()["code"] == "invalid_encoding"
    unparsable = api.client.post(
        URL,
        headers={**api.auth("archivist"), "Content-Type": "application/json"},
        content=b'{"reports": [',
    )
    assert unparsable.status_code == 422, unparsable.text
    assert api.footprint() == before


def test_a_body_above_the_route_limit_is_413(api: Api) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    padding = b" " * (ACCESS_EVENTS_BODY_BYTES + 1 - 64)
    body = b'{"reports": [' + json.dumps(_report(archive_id)).encode() + b"]" + padding + b"}"
    assert len(body) > ACCESS_EVENTS_BODY_BYTES

    response = api.client.post(
        URL, headers={**api.auth("archivist"), "Content-Type": "application/json"}, content=body
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert api.footprint() == before


def test_other_json_bodies_keep_the_small_limit(api: Api) -> None:
    """The batch limit belongs to this route only: the hold body still stops at 64 KiB."""
    archive_id = api.create()["id"]
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/hold",
        headers={**api.auth("archivist"), "Content-Type": "application/json"},
        content=b'{"reason": "x"}' + b" " * 70_000,
    )
    assert response.status_code == 413
