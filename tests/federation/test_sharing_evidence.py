"""Regressions of issue 8 found by testing a running network from outside: the sender's catalogue
after a transfer (item 3), a grantee's bundle in time order (item 2), department scope on shared
records (item 5), the custodian's own evidence of every disclosure to a grantee (item 6), and
bundles only for members entitled to them (item 7). Three real nodes over real HTTP, on anvil."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.events import AccessEvent, parse_event
from anchoring.verifier import verify_bundle
from node.models import Transfer
from node.peers import PEER_PREFIX, sign_headers
from node.principal import Role
from tests.federation.conftest import Hospital, wait_for
from tests.federation.test_flows import CONTENT, transfer_state, upload_and_archive


def _share(custodian: Hospital, archive_id: str, grantee: Hospital, purpose: str) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with custodian.client() as api:
        granted = api.post(
            f"/archives/{archive_id}/shares",
            json={"to": grantee.address, "purpose": purpose, "expires_at": expires},
        )
        assert granted.status_code == 201, granted.text


def _key(hospital: Hospital, role: Role, department: str | None = None) -> httpx.Client:
    secret = hospital.runtime.keys.issue(role, f"{role.value}-{department}", department).secret
    return httpx.Client(
        base_url=hospital.url + "/api/v1",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def _peer_get(caller: Hospital, custodian: Hospital, path: str) -> httpx.Response:
    target = PEER_PREFIX + path
    headers = sign_headers(caller.runtime.keystore.account(), "GET", target, b"", custodian.address)
    return httpx.get(custodian.url + target, headers=headers, timeout=30)


def _events(hospital: Hospital, archive_id: str) -> list[dict[str, object]]:
    with hospital.client() as api:
        events: list[dict[str, object]] = api.get(f"/archives/{archive_id}/events").json()
    return events


def test_shared_reads_are_scoped_logged_by_the_custodian_and_prove_in_time_order(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    archive_id = upload_and_archive(a)  # department cardiology
    _share(a, archive_id, c, "referral")
    path = f"/shared/{a.address}/{archive_id}/content"

    # Item 5: C's clinicians see a shared record only within their department, as locally.
    with _key(c, Role.CLINICIAN, "oncology") as oncologist:
        refused = oncologist.get(path, params={"purpose": "referral"})
        assert refused.status_code == 404, refused.text
        assert refused.json()["code"] == "archive_not_found"
    with _key(c, Role.CLINICIAN, "cardiology") as cardiologist:
        read = cardiologist.get(path, params={"purpose": "referral"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
    # The refused read disclosed nothing: A logged exactly one disclosure, for the read that ran.
    disclosures = [
        e
        for e in _events(a, archive_id)
        if e["type"] == "ACCESS" and e["event"]["data"]["grant"]  # type: ignore[index]
    ]
    assert len(disclosures) == 1
    disclosure = disclosures[0]["event"]
    assert disclosure["actor"] == c.address  # type: ignore[index]
    assert disclosure["data"]["purpose"] == "referral"  # type: ignore[index]
    assert disclosure["data"]["scope"] == "content"  # type: ignore[index]

    # Item 6: a grantee fetching through the peer API on its own gets no key without a logged
    # disclosure: the share descriptor carries no key, and the disclosure is logged first.
    descriptor = _peer_get(c, a, f"/archives/{archive_id}/share")
    assert descriptor.status_code == 200, descriptor.text
    assert "wrapped_key" not in descriptor.json()
    assert descriptor.json()["department"] == "cardiology"
    logged_before = len(_events(a, archive_id))
    raw = _peer_get(c, a, f"/archives/{archive_id}/shared/versions/1?purpose=referral")
    assert raw.status_code == 200
    assert raw.headers["x-archivechain-wrapped-key"]
    after = _events(a, archive_id)
    assert len(after) == logged_before + 1
    assert after[-1]["event"]["actor"] == c.address  # type: ignore[index]
    wrong_purpose = _peer_get(c, a, f"/archives/{archive_id}/shared/versions/1?purpose=research")
    assert wrong_purpose.status_code == 409
    assert len(_events(a, archive_id)) == logged_before + 1  # a refusal logs nothing
    # The transfer path is not a back door for a grantee.
    assert _peer_get(c, a, f"/archives/{archive_id}/versions/1/ciphertext").status_code == 404

    # Item 7: B holds no grant: no bundle, no share descriptor, no content.
    for refused_path in (
        f"/archives/{archive_id}/bundle",
        f"/archives/{archive_id}/share",
        f"/archives/{archive_id}/shared/versions/1?purpose=referral",
    ):
        answer = _peer_get(b, a, refused_path)
        assert answer.status_code == 404, (refused_path, answer.text)
    with b.client("auditor") as api:
        assert api.get(f"/shared/{a.address}/{archive_id}/proof").status_code == 404

    # Item 2: custodian reads between grantee reads; the grantee's bundle is in time order.
    with a.client() as api:
        assert api.get(
            f"/archives/{archive_id}/content", params={"purpose": "treatment"}
        ).is_success
    with _key(c, Role.CLINICIAN, "cardiology") as cardiologist:
        assert cardiologist.get(path, params={"purpose": "referral"}).status_code == 200
    a.runtime.worker.run_until_anchored(timeout=30)
    c.runtime.worker.run_until_anchored(timeout=30)
    with c.client("auditor") as api:
        document = api.get(f"/shared/{a.address}/{archive_id}/proof")
        assert document.status_code == 200, document.text
    bundle = parse_bundle(document.content)
    report = verify_bundle(bundle, chain)
    assert report.ok, report.to_text()
    times = [parse_event(e.event).time for e in bundle.entries]
    assert times == sorted(times)
    hospitals_in_order = [e.hospital for e in bundle.entries]
    assert hospitals_in_order.count(c.address) == 2  # C's two reads (side chain)
    assert hospitals_in_order[-1] == c.address
    assert c.address in hospitals_in_order[:-1]  # interleaved, not appended after A's entries
    # The bundle fetch itself was disclosed to C in A's log (scope proof).
    kinds = [
        (e["event"]["actor"], e["event"]["data"]["scope"])  # type: ignore[index]
        for e in _events(a, archive_id)
        if e["type"] == "ACCESS" and e["event"]["data"]["grant"]  # type: ignore[index]
    ]
    assert (c.address, "proof") in kinds
    # And every ACCESS naming the grant in A's log is by C.
    events = [
        parse_event(base64.b64decode(e["event"]))  # type: ignore[arg-type]
        for e in json.loads(document.content)["entries"]
    ]
    assert all(
        ev.actor == c.address
        for ev in events
        if isinstance(ev, AccessEvent) and ev.data.grant and ev.hospital == a.address
    )


def test_the_sender_still_lists_a_transferred_archive_and_the_recipient_never_fails_a_search(
    hospitals: dict[str, Hospital],
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    failures: list[str] = []
    stop = threading.Event()

    def poll_b() -> None:  # searches at B while the archive arrives (INCOMING, then ARCHIVED)
        with b.client() as api:
            while not stop.is_set():
                for params in ({}, {"q": "Referral"}, {"state": "INCOMING"}):
                    answer = api.get("/archives", params=params)
                    if answer.status_code != 200:
                        failures.append(f"{params}: {answer.status_code} {answer.text}")
                if archive_id in {i["id"] for i in api.get("/archives").json()["items"]}:
                    detail = api.get(f"/archives/{archive_id}")
                    if detail.status_code != 200:
                        failures.append(f"detail: {detail.status_code} {detail.text}")

    poller = threading.Thread(target=poll_b)
    poller.start()
    try:
        with a.client() as api:
            offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
            assert offered.status_code == 202, offered.text
        wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "B to accept")
        wait_for(lambda: transfer_state(a, archive_id, "out") == "accepted", 30, "A to see it")
    finally:
        stop.set()
        poller.join(30)
    assert failures == []
    with b.runtime.db.session() as session:
        assert (
            session.execute(
                select(Transfer.state).where(Transfer.archive_id == archive_id)
            ).scalar_one()
            == "accepted"
        )

    # Item 3: at A every role that may see the archive gets its catalogue entry (TRANSFERRED).
    for api in (a.client(), a.client("auditor"), _key(a, Role.CLINICIAN, "cardiology")):
        with api:
            detail = api.get(f"/archives/{archive_id}")
            assert detail.status_code == 200, detail.text
            assert detail.json()["state"] == "TRANSFERRED"
            assert detail.json()["custodian"] == b.address
            listed = api.get("/archives", params={"q": "Referral"})
            assert listed.status_code == 200, listed.text
            assert archive_id in [i["id"] for i in listed.json()["items"]]
            only = api.get("/archives", params={"state": "TRANSFERRED"})
            assert [i["id"] for i in only.json()["items"]] == [archive_id]
