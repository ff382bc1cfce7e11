"""``GET /archives/{id}/proof?wait=N``: the answer waits until every event of the archive that
existed when the request arrived is anchored, so one request gives the complete bundle; a wait that
runs out answers ``409 proof_pending``; bad ``wait`` values are refused. Real node, real anvil,
both databases; anchoring is driven by the test (the fixture node runs no scheduler), so what the
request waits for happens only when the test says so."""

from __future__ import annotations

import json

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from tests.api.conftest import Api


def _three_events(api: Api) -> str:
    """An archive with CREATE, ARCHIVE and ACCESS events, none anchored."""
    archivist = api.auth("archivist")
    archive_id: str = api.create()["id"]
    assert api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist).is_success
    read = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params={"purpose": "treatment"}, headers=archivist
    )
    assert read.status_code == 200
    return archive_id


def test_wait_answers_the_complete_bundle_once_anchored(api: Api, chain: RpcChain) -> None:
    archive_id = _three_events(api)
    url = f"/api/v1/archives/{archive_id}/proof"
    waiting = api.client.start("GET", url, params={"wait": 30}, headers=api.auth("auditor"))

    # the node keeps answering meanwhile, and the waiting request has not answered: nothing is
    # anchored, so only the end of the wait or anchoring can end it
    pending = api.client.get(url, headers=api.auth("archivist"))
    assert pending.status_code == 409
    assert pending.json()["code"] == "proof_pending"
    assert not waiting.done()

    api.node.worker.run_until_anchored(timeout=30)
    proof = waiting.result(timeout=30)
    assert proof.status_code == 200, proof.text
    assert proof.headers["x-unanchored-events"] == "0"
    document = json.loads(proof.content)
    assert [entry["log_index"] for entry in document["entries"]] == [0, 1, 2]
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()
    assert [entry.event_type for entry in report.entries] == ["CREATE", "ARCHIVE", "ACCESS"]


def test_wait_is_for_every_event_not_just_the_first(api: Api) -> None:
    archive_id = _three_events(api)
    api.node.worker.run_until_anchored(timeout=30)
    archivist = api.auth("archivist")
    again = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params={"purpose": "audit"}, headers=archivist
    )
    assert again.status_code == 200
    url = f"/api/v1/archives/{archive_id}/proof"

    # without wait: what is anchored now, the newer read counted as left out
    partial = api.client.get(url, headers=archivist)
    assert partial.status_code == 200
    assert partial.headers["x-unanchored-events"] == "1"

    # with wait: the newer read must be anchored too, and nothing anchors it here
    timed_out = api.client.get(url, params={"wait": 1}, headers=archivist)
    assert timed_out.status_code == 409, timed_out.text
    body = timed_out.json()
    assert body["code"] == "proof_pending"
    assert "after 1 s" in body["message"]

    api.node.worker.run_until_anchored(timeout=30)
    complete = api.client.get(url, params={"wait": 1}, headers=archivist)
    assert complete.status_code == 200, complete.text
    assert complete.headers["x-unanchored-events"] == "0"
    assert len(json.loads(complete.content)["entries"]) == 4


def test_wait_that_runs_out_is_proof_pending(api: Api) -> None:
    archive_id = api.create()["id"]
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/proof", params={"wait": 1}, headers=api.auth("auditor")
    )
    assert response.status_code == 409
    assert response.json()["code"] == "proof_pending"


def test_bad_wait_values_are_refused(api: Api) -> None:
    archive_id = api.create()["id"]
    url = f"/api/v1/archives/{archive_id}/proof"
    for value in ("31", "-1", "soon", "1.5"):
        response = api.client.get(url, params={"wait": value}, headers=api.auth("auditor"))
        assert response.status_code == 422, (value, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert "wait" in body["message"]
    misspelt = api.client.get(url, params={"wiat": "30"}, headers=api.auth("auditor"))
    assert misspelt.status_code == 422, misspelt.text
    assert "wiat" in misspelt.json()["message"]


def test_wait_refuses_what_proof_refuses_at_once(api: Api) -> None:
    archive_id = api.create()["id"]
    url = f"/api/v1/archives/{archive_id}/proof"
    wait = {"wait": 30}
    clinician = api.client.get(url, params=wait, headers=api.auth("cardiologist"))
    assert clinician.status_code == 403, clinician.text
    unknown = api.client.get(
        "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/proof",
        params=wait,
        headers=api.auth("auditor"),
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "archive_not_found"
    assert api.client.get(url, params=wait).status_code == 401
