"""Destruction notices to grantees, between three real nodes over real HTTP on anvil: A shares a
record with C (who reads it) and with B (revoked before the end: a past grantee), then destroys
it. A's queued notices are refused by C while the chain does not yet show the destruction
(retried with backoff), then delivered once it does; each grantee logs DESTRUCTION_NOTICE in its
own log, chained to A's DESTROY, and the lifecycle accepts it after A's events. Notices that are
unsigned, forged, from a hospital that is not the custodian, for an unknown archive or with
another certificate hash are refused and change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from ulid import ULID

from anchoring import lifecycle, merkle, storage
from anchoring.chain import RpcChain
from anchoring.chainview import CustodyState
from anchoring.errors import LifecycleError
from anchoring.events import DestructionNoticeEvent, parse_event
from node.models import DestructionNotice
from node.peers import PEER_PREFIX, sign_headers
from node.principal import Role
from tests.federation.conftest import Hospital, listen, start_hospital, wait_for
from tests.federation.test_destruction_shares import _archive_long_ago
from tests.federation.test_flows import grant_share
from tests.fixtures.chain import Consortium


def _notices_in(hospital: Hospital, archive_id: str) -> list[storage.LogEntry]:
    with hospital.runtime.db.session() as session:
        return [
            entry
            for entry in storage.entries_for_archive(session, archive_id)
            if entry.event_type == "DESTRUCTION_NOTICE"
        ]


def _send(
    account: LocalAccount | None,
    to: Hospital,
    archive_id: str,
    document: dict[str, str],
    *,
    sent: bytes | None = None,
) -> httpx.Response:
    """POST a notice to ``to`` signed by ``account`` (unsigned if None); ``sent``: other bytes
    sent in place of the signed body (a forgery)."""
    target = f"{PEER_PREFIX}/archives/{archive_id}/destruction-notice"
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    if account is not None:
        headers |= sign_headers(account, "POST", target, body, to.address)
    content = body if sent is None else sent
    return httpx.post(to.url + target, content=content, headers=headers, timeout=30)


def _destroy(a: Hospital, archive_id: str) -> None:
    manager = a.runtime.keys.issue(Role.RECORDS_MANAGER, "A-manager").secret
    with a.client() as api:
        assert api.post("/retention/run").is_success
        proposal = api.post(
            "/retention/proposals", json={"archive_ids": [archive_id], "reason": "expired"}
        )
        assert proposal.status_code == 201, proposal.text
        proposal_id = proposal.json()["id"]
        approved = api.post(
            f"/retention/proposals/{proposal_id}/items/{archive_id}",
            headers={"Authorization": f"Bearer {manager}"},
            json={"approve": True, "reason": "reviewed"},
        )
        assert approved.is_success, approved.text
        destroyed = api.post(f"/retention/proposals/{proposal_id}/items/{archive_id}/destroy")
        assert destroyed.status_code == 200, destroyed.text


def _rows(a: Hospital, archive_id: str) -> dict[str, DestructionNotice]:
    with a.runtime.db.session() as session:
        rows = session.execute(
            select(DestructionNotice).where(DestructionNotice.archive_id == archive_id)
        ).scalars()
        return {row.grantee: row for row in rows}


def test_grantees_past_and_present_are_notified_and_log_it(
    hospitals: dict[str, Hospital],
    chain: RpcChain,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> None:
    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    scheduler = a.runtime._scheduler
    assert scheduler is not None
    scheduler.pause_job("destruction-notices")  # the test drives the job
    archive_id = _archive_long_ago(a)
    grant_share(a, archive_id, c)
    grant_share(a, archive_id, b)
    with a.client() as api:
        assert api.delete(f"/archives/{archive_id}/shares/{b.address}").status_code == 204
    with c.client() as api:
        read = api.get(f"/shared/{a.address}/{archive_id}/content", params={"purpose": "referral"})
        assert read.status_code == 200, read.text

    scheduler.pause_job("anchoring")  # the destroy stays unsent: the chain shows ARCHIVED
    _destroy(a, archive_id)
    rows = _rows(a, archive_id)
    assert set(rows) == {b.address, c.address}  # B's grant ended before: still told
    with a.runtime.db.session() as session:
        entries = storage.entries_for_archive(session, archive_id)
    destroy_leaf = merkle.leaf_hash(entries[-1].event).hex()
    assert entries[-1].event_type == "DESTROY"
    assert {row.destroy_event for row in rows.values()} == {destroy_leaf}
    certificate_hash = rows[c.address].certificate_hash

    # Before the chain shows the destruction each grantee refuses (409): retried, not ended.
    report = a.runtime.notices.deliver_due()
    assert (report.delivered, report.refused, report.retried) == (0, 0, 2)
    rows = _rows(a, archive_id)
    assert all(r.state == "pending" and r.attempts == 1 for r in rows.values())
    assert rows[c.address].last_error == "409 not_destroyed"
    assert rows[c.address].next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)
    assert a.runtime.notices.deliver_due().retried == 0  # backoff: not due yet
    assert _notices_in(c, archive_id) == []
    assert _notices_in(b, archive_id) == []

    scheduler.resume_job("anchoring")
    wait_for(
        lambda: chain.custody(archive_id).state is CustodyState.DESTROYED, 60, "destroy on chain"
    )

    # Refusals at the grantee: nothing is logged.
    good = {"certificate_hash": certificate_hash, "destroy_event": destroy_leaf}
    unsigned = _send(None, c, archive_id, good)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "peer_refused")
    forged = _send(
        hospital_a,
        c,
        archive_id,
        {**good, "certificate_hash": "ab" * 32},
        sent=json.dumps(good).encode(),
    )
    assert (forged.status_code, forged.json()["code"]) == (401, "peer_refused")
    other = _send(hospital_b, c, archive_id, good)  # an active hospital, not the custodian
    assert (other.status_code, other.json()["code"]) == (403, "not_custodian")
    unknown = _send(hospital_a, c, str(ULID()), good)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "archive_not_found")
    wrong = _send(hospital_a, c, archive_id, {**good, "certificate_hash": "ab" * 32})
    assert (wrong.status_code, wrong.json()["code"]) == (409, "certificate_mismatch")
    extra = _send(hospital_a, c, archive_id, {**good, "phi": "x"})
    assert (extra.status_code, extra.json()["code"]) == (400, "invalid_notice")
    deep = _send(hospital_a, c, archive_id, good, sent=b"[" * 5_000)
    assert (deep.status_code, deep.json()["code"]) == (400, "json_too_deep")
    assert _notices_in(c, archive_id) == []

    later = datetime.now(UTC) + timedelta(hours=1)
    report = a.runtime.notices.deliver_due(later)
    assert (report.delivered, report.refused, report.retried) == (2, 0, 0)
    rows = _rows(a, archive_id)
    assert all(r.state == "delivered" and r.delivered_at is not None for r in rows.values())

    for grantee in (b, c):
        (entry,) = _notices_in(grantee, archive_id)
        event = parse_event(entry.event)
        assert isinstance(event, DestructionNoticeEvent)
        assert event.hospital == grantee.address
        assert event.actor == a.address
        assert event.prev == destroy_leaf
        assert event.data.certificate_hash == certificate_hash
        assert event.data.reason == "custodian_destroyed"

    # A repeated notice (a lost answer) records nothing new.
    again = _send(hospital_a, c, archive_id, good)
    assert again.status_code == 200, again.text
    assert again.json()["recorded"] is False
    assert len(_notices_in(c, archive_id)) == 1

    # The lifecycle accepts C's notice after A's events, and refuses one chained elsewhere.
    state = lifecycle.replay(parse_event(e.event) for e in entries)
    (entry,) = _notices_in(c, archive_id)
    notice = parse_event(entry.event)
    assert lifecycle.apply(state, notice).event_count == state.event_count + 1
    elsewhere = notice.model_copy(update={"prev": merkle.leaf_hash(entries[-2].event).hex()})
    with pytest.raises(LifecycleError):
        lifecycle.apply(state, elsewhere)
    custodian_logged = notice.model_copy(update={"hospital": a.address})
    with pytest.raises(LifecycleError):
        lifecycle.apply(state, custodian_logged)


def _grant_and_destroy(a: Hospital, c: Hospital, chain: RpcChain) -> str:
    """An archive of A shared with C, destroyed at A and shown DESTROYED on chain, its notice
    to C queued and not yet sent (the test drives the notice job)."""
    scheduler = a.runtime._scheduler
    assert scheduler is not None
    scheduler.pause_job("destruction-notices")
    archive_id = _archive_long_ago(a)
    grant_share(a, archive_id, c)
    _destroy(a, archive_id)
    wait_for(
        lambda: chain.custody(archive_id).state is CustodyState.DESTROYED, 60, "destroy on chain"
    )
    assert _rows(a, archive_id)[c.address].state == "pending"
    return archive_id


def test_a_refused_notice_raises_an_alert_is_listed_and_can_be_sent_again(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    archive_id = _grant_and_destroy(a, c, chain)
    # A misconfigured peer URL: A's notice for C reaches B, which refuses a request signed for
    # another node (401): a lasting refusal, the row ends ``refused`` and an alert is raised.
    peers = a.runtime.settings.peers
    good_url = peers[c.address]
    peers[c.address] = b.url
    report = a.runtime.notices.deliver_due()
    assert (report.delivered, report.refused, report.retried) == (0, 1, 0)
    row = _rows(a, archive_id)[c.address]
    assert row.state == "refused"
    assert row.last_error is not None
    assert row.last_error.startswith("401")
    assert a.runtime.notices.deliver_due().refused == 0  # refused rows are not sent again
    with a.client("admin") as admin:
        alerts = admin.get("/alerts", params={"kind": "destruction_notice_refused"})
        assert alerts.status_code == 200, alerts.text
        (alert,) = alerts.json()["items"]
        assert alert["subject"] == f"{archive_id}:{c.address}"
        assert alert["severity"] == "warning"
        assert alert["detail"]["notice"] == row.id

    manager = a.runtime.keys.issue(Role.RECORDS_MANAGER, "A-notices-manager").secret
    as_manager = {"Authorization": f"Bearer {manager}"}
    with a.client() as api:
        listed = api.get("/retention/notices", params={"state": "refused"})
        assert listed.status_code == 200, listed.text
        assert [(n["id"], n["archive_id"], n["grantee"]) for n in listed.json()] == [
            (row.id, archive_id, c.address)
        ]
        assert api.get("/retention/notices", params={"state": "delivered"}).json() == []
        everything = api.get("/retention/notices", headers=as_manager).json()
        assert row.id in {n["id"] for n in everything}
        # Strict query model: unknown parameters, unknown states and bad limits are refused.
        for params in ({"state": "lost"}, {"limit": 0}, {"limit": 1001}, {"phi": "x"}):
            bad = api.get("/retention/notices", params=params)
            assert bad.status_code == 422, (params, bad.text)
        # Authorisation: listing is for archivists, records managers and admins only; sending
        # again for records managers and admins (not the archivist, not a clinician).
        with a.client("clinician") as clinician:
            assert clinician.get("/retention/notices").status_code == 403
            forbidden = clinician.post(f"/retention/notices/{row.id}/resend")
            assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
        with a.client("auditor") as auditor:
            assert auditor.post(f"/retention/notices/{row.id}/resend").status_code == 403
        assert api.post(f"/retention/notices/{row.id}/resend").status_code == 403
        anonymous = httpx.post(f"{a.url}/api/v1/retention/notices/{row.id}/resend", timeout=30)
        assert anonymous.status_code == 401
        # Hostile input: a body nobody should send, anonymous or deep; bad ids.
        hostile = httpx.post(
            f"{a.url}/api/v1/retention/notices/{row.id}/resend",
            content=b"[" * 5_000,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert hostile.status_code == 401  # authenticated before a byte of the body is read
        deep = api.post(
            f"/retention/notices/{row.id}/resend",
            content=b"[" * 5_000,
            headers={**as_manager, "Content-Type": "application/json"},
        )
        assert (deep.status_code, deep.json()["code"]) == (400, "json_too_deep")
        for bad_id in ("0", "-1", "abc", str(2**63), "1.5"):
            answer = api.post(f"/retention/notices/{bad_id}/resend", headers=as_manager)
            assert answer.status_code == 422, (bad_id, answer.text)
            assert answer.json()["code"]
        unknown = api.post("/retention/notices/999999/resend", headers=as_manager)
        assert (unknown.status_code, unknown.json()["code"]) == (404, "notice_not_found")
        assert _rows(a, archive_id)[c.address].state == "refused"  # nothing changed so far

        # The URL is fixed; a records manager sends the notice again: pending, due now.
        peers[c.address] = good_url
        resent = api.post(f"/retention/notices/{row.id}/resend", headers=as_manager)
        assert resent.status_code == 200, resent.text
        assert resent.json()["state"] == "pending"
        again = api.post(f"/retention/notices/{row.id}/resend", headers=as_manager)
        assert (again.status_code, again.json()["code"]) == (409, "notice_not_refused")
    report = a.runtime.notices.deliver_due()
    assert (report.delivered, report.refused, report.retried) == (1, 0, 0)
    assert _rows(a, archive_id)[c.address].state == "delivered"
    (entry,) = _notices_in(c, archive_id)
    assert parse_event(entry.event).actor == a.address
    with a.client("admin") as admin:  # an admin may resend too, but only refused notices
        delivered = admin.post(f"/retention/notices/{row.id}/resend")
        assert (delivered.status_code, delivered.json()["code"]) == (409, "notice_not_refused")


def test_pending_notices_survive_a_restart_and_are_delivered_after_it(
    hospitals: dict[str, Hospital],
    chain: RpcChain,
    consortium: Consortium,
    hospital_a: LocalAccount,
) -> None:
    a, c = hospitals["A"], hospitals["C"]
    archive_id = _grant_and_destroy(a, c, chain)
    data_dir = a.runtime.settings.data_dir
    port, database_url = a.port, a.runtime.settings.database_url
    peers = dict(a.runtime.settings.peers)
    a.stop()  # the notice was never sent: it lives only in A's database
    assert _notices_in(c, archive_id) == []

    restarted = start_hospital(
        "A",
        consortium,
        hospital_a,
        data_dir,
        listen(port),
        peers,
        replica_tick=3600.0,
        database_url=database_url,
    )
    hospitals["A"] = restarted  # the fixture stops this one
    row = _rows(restarted, archive_id)[c.address]
    assert row.state in ("pending", "delivered")
    # The restarted node's own scheduler (the notice job runs every 30 s) delivers it.
    wait_for(
        lambda: _rows(restarted, archive_id)[c.address].state == "delivered",
        120,
        "the notice delivered after the restart",
    )
    (entry,) = _notices_in(c, archive_id)
    event = parse_event(entry.event)
    assert isinstance(event, DestructionNoticeEvent)
    assert event.actor == a.address
    assert event.data.certificate_hash == row.certificate_hash
