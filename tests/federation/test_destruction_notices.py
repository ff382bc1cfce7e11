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
from tests.federation.conftest import Hospital, wait_for
from tests.federation.test_destruction_shares import _archive_long_ago
from tests.federation.test_flows import grant_share


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
