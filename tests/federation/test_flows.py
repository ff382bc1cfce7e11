"""Transfers and shares between three real nodes over real HTTP (in this process), on anvil."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from anchoring.bundle import parse_bundle
from anchoring.chain import (
    ContractRevertError,
    ContractWriter,
    NonceTooLowError,
    RpcChain,
    RpcError,
    TxReceipt,
)
from anchoring.chainview import CustodyState
from anchoring.ids import archive_key
from anchoring.verifier import verify_bundle
from node.backup import verify_node_data
from node.models import Archive, ArchiveTier, ArchiveVersion, SearchTerm, Transfer
from tests.federation.conftest import Hospital, wait_for

CONTENT = b"Referral letter: transfer of care to the receiving hospital. " * 200


def upload_and_archive(
    hospital: Hospital, content: bytes = CONTENT, amendments: Sequence[bytes] = ()
) -> str:
    """Upload ``content`` at ``hospital``, add each of ``amendments`` as a new version, archive
    it and wait for its registration on chain; its id."""
    with hospital.client() as api:
        metadata = {
            "record_class": "INPATIENT",
            "department": "cardiology",
            "title": "Referral letter",
            "source_system": "HIS",
            "patient_id": "MRN-4242",
        }
        response = api.post(
            "/archives",
            files={"file": ("letter.txt", content, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        assert response.status_code == 201, response.text
        archive_id = str(response.json()["id"])
        for amendment in amendments:
            amended = api.post(
                f"/archives/{archive_id}/amend",
                files={"file": ("next.txt", amendment, "text/plain")},
            )
            assert amended.status_code == 200, amended.text
        assert api.post(f"/archives/{archive_id}/archive").status_code == 200
        wait_registered(api, archive_id)
    return archive_id


def wait_registered(api: httpx.Client, archive_id: str) -> None:
    """Wait until the node reports the archive registered on chain."""
    wait_for(
        lambda: api.get(f"/archives/{archive_id}").json()["chain_status"] == "registered",
        30,
        "registration on chain",
    )


def grant_share(custodian: Hospital, archive_id: str, grantee: Hospital) -> None:
    """``custodian`` shares ``archive_id`` with ``grantee`` (purpose referral, one hour)."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with custodian.client() as api:
        granted = api.post(
            f"/archives/{archive_id}/shares",
            json={"to": grantee.address, "purpose": "referral", "expires_at": expires},
        )
        assert granted.status_code == 201, granted.text


def last_access(hospital: Hospital, archive_id: str) -> datetime | None:
    """The archive's last content access as ``hospital`` keeps it (for the tier policy)."""
    with hospital.runtime.db.session() as session:
        row = session.get(ArchiveTier, archive_id)
        return row.last_access_at if row is not None else None


def stored_transfer_state(hospital: Hospital, archive_id: str) -> str | None:
    """The incoming transfer's state straight from the node's database."""
    with hospital.runtime.db.session() as session:
        row = session.execute(
            select(Transfer).where(Transfer.archive_id == archive_id, Transfer.direction == "in")
        ).scalar_one_or_none()
        return row.state if row is not None else None


def transfer_state(hospital: Hospital, archive_id: str, direction: str) -> str | None:
    with hospital.client() as api:
        for row in api.get("/transfers").json():
            if row["archive_id"] == archive_id and row["direction"] == direction:
                return str(row["state"])
    return None


def test_transfer_a_to_b_rekeys_and_spans_both_logs(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    with a.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
        assert offered.status_code == 202, offered.text
    wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "B to accept")
    wait_for(lambda: transfer_state(a, archive_id, "out") == "accepted", 30, "A to see it")

    custody = chain.custody(archive_id)
    assert custody.state is CustodyState.ARCHIVED
    assert custody.custodian == b.address
    with b.client() as api:
        read = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
        assert api.get(f"/archives/{archive_id}").json()["custodian"] == b.address
        found = api.get("/archives", params={"q": "Referral"}).json()  # catalogued at B too
        assert [item["id"] for item in found["items"]] == [archive_id]
        # Keyword search finds it at B by its title and by words of its content alone.
        for words in ("referral letter", "receiving hospital", "care"):
            found = api.get("/archives", params={"text": words}).json()
            assert [item["id"] for item in found["items"]] == [archive_id], words
        assert api.get("/archives", params={"text": "discharge"}).json()["items"] == []
    with a.client() as api:  # A kept its evidence, not the key
        refused = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert refused.status_code == 409
        assert refused.json()["code"] == "not_custodian"
    # Nor the ciphertext, and it records that: A's data verifies as a restore checks it (a
    # version still marked present was a missing blob, and restore refused A's backups).
    with a.runtime.db.session() as session:
        versions = session.query(ArchiveVersion).filter_by(archive_id=archive_id).all()
        cids = [v.cid for v in versions]
        assert versions
        assert all(v.blob_deleted_at is not None for v in versions)
    wait_for(lambda: not any(a.runtime.blobs.exists(cid) for cid in cids), 10, "A to delete")
    verify_node_data(a.runtime.settings)

    # The bundle at B spans A's log and B's log and verifies end to end (custodian = B).
    b.runtime.worker.run_until_anchored(timeout=30)
    with b.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    bundle = parse_bundle(document)
    assert {e.hospital for e in bundle.entries} == {a.address, b.address}
    report = verify_bundle(bundle, chain)
    assert report.ok, report.to_text()
    kinds = [e.event_type for e in report.entries]
    custody_kinds = [kind for kind in kinds if kind != "ACCESS"]  # reads are logged too
    assert custody_kinds[:3] == ["CREATE", "ARCHIVE", "TRANSFER_OFFER"]
    assert "TRANSFER_ACCEPT" in kinds
    assert report.final_state is not None
    assert report.final_state.custodian == b.address

    # Altering an event from either log breaks verification.
    for hospital in (a.address, b.address):
        raw = json.loads(document)
        entry = next(e for e in raw["entries"] if e["hospital"] == hospital)
        event = bytearray(base64.b64decode(entry["event"]))
        event[-3] ^= 0x01
        entry["event"] = base64.b64encode(bytes(event)).decode()
        assert not verify_bundle(parse_bundle(json.dumps(raw)), chain).ok


def entry_events(document: bytes) -> list[tuple[str, str]]:
    """``(hospital, type)`` of each entry of a bundle, in bundle order."""
    return [
        (entry.hospital, json.loads(entry.event)["type"])
        for entry in parse_bundle(document).entries
    ]


def transfer_and_verify(
    sender: Hospital, recipient: Hospital, archive_id: str, chain: RpcChain
) -> list[tuple[str, str]]:
    """``sender`` offers the archive to ``recipient``, which accepts it; the recipient's bundle,
    once anchored, verifies: its ``(hospital, type)`` entries in bundle order."""
    with sender.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": recipient.address})
        assert offered.status_code == 202, offered.text
    wait_for(
        lambda: transfer_state(recipient, archive_id, "in") == "accepted", 60, "the acceptance"
    )
    recipient.runtime.worker.run_until_anchored(timeout=30)
    with recipient.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
    return entry_events(document)


def test_a_grantee_that_receives_the_archive_keeps_its_earlier_reads_in_chain_order(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    """B reads A's archive under a grant, A reads it after, then A transfers it to B, and B
    on to C. B's reads from before the transfer are older than A's last events: both bundles
    (B's and C's) place them among A's events, not after them, and verify (a concatenation of the logs failed with ``time_order``)."""
    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    archive_id = upload_and_archive(a)
    grant_share(a, archive_id, b)
    with b.client() as api:
        read = api.get(f"/shared/{a.address}/{archive_id}/content", params={"purpose": "referral"})
        assert read.status_code == 200, read.text
    with a.client() as api:  # a custodian event after B's read
        assert (
            api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"}).status_code
            == 200
        )
    order = transfer_and_verify(a, b, archive_id, chain)
    b_read = order.index((b.address, "ACCESS"))
    assert (
        order.index((a.address, "SHARE_GRANT"))
        < b_read
        < order.index((a.address, "TRANSFER_OFFER"))
    )
    assert order[-1] == (b.address, "TRANSFER_ACCEPT")

    order = transfer_and_verify(b, c, archive_id, chain)
    assert order.index((b.address, "ACCESS")) < order.index((a.address, "TRANSFER_OFFER"))
    assert order[-1] == (c.address, "TRANSFER_ACCEPT")


def test_share_with_c_until_revoked(hospitals: dict[str, Hospital], chain: RpcChain) -> None:
    a, c = hospitals["A"], hospitals["C"]
    archive_id = upload_and_archive(a)
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with a.client() as api:
        granted = api.post(
            f"/archives/{archive_id}/shares",
            json={"to": c.address, "purpose": "referral", "expires_at": expires},
        )
        assert granted.status_code == 201, granted.text
    path = f"/shared/{a.address}/{archive_id}/content"
    before = datetime.now(UTC)
    with c.client() as api:
        wrong = api.get(path, params={"purpose": "research"})
        assert wrong.status_code == 409
        assert last_access(a, archive_id) is None  # a refused read is no access
        read = api.get(path, params={"purpose": "referral"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
    # The grantee's read is an access at the custodian too: the idle-time tier policy keeps it.
    accessed = last_access(a, archive_id)
    assert accessed is not None
    assert accessed.replace(tzinfo=UTC) >= before
    # C's read is in C's log, chained to the grant; the combined bundle verifies.
    c.runtime.worker.run_until_anchored(timeout=30)
    a.runtime.worker.run_until_anchored(timeout=30)
    with c.client("auditor") as api:
        document = api.get(f"/shared/{a.address}/{archive_id}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
    assert [e.hospital for e in report.entries][-1] == c.address
    # Revocation: C can no longer fetch.
    with a.client() as api:
        assert api.delete(f"/archives/{archive_id}/shares/{c.address}").status_code == 204
    with c.client() as api:
        refused = api.get(path, params={"purpose": "referral"})
        assert refused.status_code == 404
        assert refused.json()["code"] == "no_access"


def test_expired_share_is_refused(hospitals: dict[str, Hospital]) -> None:
    a, c = hospitals["A"], hospitals["C"]
    archive_id = upload_and_archive(a)
    # Long enough for the first read to land before expiry on a loaded 2-core machine.
    expires = (datetime.now(UTC) + timedelta(seconds=8)).isoformat()
    with a.client() as api:
        assert (
            api.post(
                f"/archives/{archive_id}/shares",
                json={"to": c.address, "purpose": "treatment", "expires_at": expires},
            ).status_code
            == 201
        )
    path = f"/shared/{a.address}/{archive_id}/content"
    with c.client() as api:
        assert api.get(path, params={"purpose": "treatment"}).status_code == 200
        wait_for(
            lambda: api.get(path, params={"purpose": "treatment"}).status_code == 404,
            30,
            "the grant to expire",
        )
    a.runtime.shares.expire()
    with a.client() as api:
        events = api.get(f"/archives/{archive_id}/events").json()
    assert events[-1]["type"] == "SHARE_REVOKE"
    assert events[-1]["event"]["data"]["reason"] == "expired"


def test_refusals_at_the_api_and_again_on_chain(
    hospitals: dict[str, Hospital],
    chain: RpcChain,
    regulator: LocalAccount,
    outsider: LocalAccount,
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    with a.client() as api:
        # A non-member recipient is refused by the API ...
        refused = api.post(f"/archives/{archive_id}/transfers", json={"to": outsider.address})
        assert refused.status_code == 409
        assert refused.json()["code"] == "not_active_hospital"
    # ... and by the contract.
    with pytest.raises(ContractRevertError) as refused_on_chain:
        ContractWriter(chain, a.runtime.keystore.account()).transact(
            "offerTransfer", [archive_key(archive_id), outsider.address]
        )
    assert refused_on_chain.value.error_name == "NotaryInvalidRecipient"
    # A non-custodian (B) cannot offer A's archive, on chain either.
    with pytest.raises(ContractRevertError) as not_custodian:
        ContractWriter(chain, b.runtime.keystore.account()).transact(
            "offerTransfer", [archive_key(archive_id), b.address]
        )
    assert not_custodian.value.error_name == "NotaryNotCustodian"
    with b.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": a.address}).status_code == 404
        )
    # A regulator places a hold on chain; A's watcher logs it; transfers are refused.
    ContractWriter(chain, regulator).transact("placeHold", [archive_key(archive_id), bytes(32)])
    with a.client() as api:
        wait_for(lambda: api.get(f"/archives/{archive_id}").json()["on_hold"], 20, "the hold")
        held = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
        assert held.status_code == 409
        release = api.request(
            "DELETE", f"/archives/{archive_id}/hold", params={"reason": "custodian tries"}
        )
        assert release.status_code == 409  # only a regulator releases a regulator's hold
        events = api.get(f"/archives/{archive_id}/events").json()
    hold = events[-1]
    assert hold["type"] == "HOLD_PLACE"
    assert hold["event"]["actor"] == regulator.address
    assert hold["event"]["data"]["by_regulator"] is True
    with pytest.raises(ContractRevertError) as on_hold:
        ContractWriter(chain, a.runtime.keystore.account()).transact(
            "offerTransfer", [archive_key(archive_id), b.address]
        )
    assert on_hold.value.error_name == "NotaryOnHold"


def test_double_accept_is_refused_on_chain(hospitals: dict[str, Hospital], chain: RpcChain) -> None:
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
    wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "B to accept")
    with pytest.raises(ContractRevertError) as double:
        ContractWriter(chain, b.runtime.keystore.account()).transact(
            "acceptTransfer", [archive_key(archive_id)]
        )
    assert double.value.error_name == "NotaryUnexpectedState"


def test_forged_and_replayed_peer_requests_are_refused(hospitals: dict[str, Hospital]) -> None:
    from node.peers import PEER_PREFIX, SIGNATURE, sign_headers

    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    grant_share(a, archive_id, b)  # the bundle is served to grantees only
    target = f"{PEER_PREFIX}/archives/{archive_id}/bundle"
    headers = sign_headers(b.runtime.keystore.account(), "GET", target, b"", a.address)
    with httpx.Client(base_url=a.url) as http:
        assert http.get(target, headers=headers).status_code == 200
        replay = http.get(target, headers=headers)
        assert replay.status_code == 401
        assert replay.json()["code"] == "peer_refused"
        forged = dict(sign_headers(b.runtime.keystore.account(), "GET", target, b"", a.address))
        forged[SIGNATURE] = forged[SIGNATURE][:-4] + "0000"
        assert http.get(target, headers=forged).status_code == 401
        stale = sign_headers(
            b.runtime.keystore.account(), "GET", target, b"", a.address, now=1_000_000
        )
        assert http.get(target, headers=stale).status_code == 401
        elsewhere = sign_headers(b.runtime.keystore.account(), "GET", target, b"", b.address)
        assert http.get(target, headers=elsewhere).status_code == 401
        assert http.get(target).status_code == 401


def _nonce_taken(error: RpcError) -> bool:
    """The node's worker took the nonce first: mined (``NonceTooLowError``) or still pending with
    the same fee (anvil: "replacement transaction underpriced", code -32003)."""
    return isinstance(error, NonceTooLowError) or "replacement transaction underpriced" in (
        error.rpc_message.lower()
    )


def _governance(writer: ContractWriter, function: str, args: list[Any]) -> TxReceipt:
    """A registry call from a hospital's key while that hospital's node runs: its anchoring worker
    signs with the same key, so a nonce read just before the worker's transaction is taken under
    us — mined, or pending in the mempool; the call is then signed again with the next nonce."""
    for _ in range(5):
        try:
            return writer.transact(function, args, contract="ConsortiumRegistry")
        except RpcError as exc:
            if not _nonce_taken(exc):
                raise
            time.sleep(0.5)
    return writer.transact(function, args, contract="ConsortiumRegistry")


def _suspend(chain: RpcChain, proposer: LocalAccount, approver: LocalAccount, target: str) -> None:
    """Suspend ``target`` through governance (propose → approve → execute)."""
    proposing = ContractWriter(chain, proposer)
    receipt = _governance(proposing, "proposeSuspension", [target])
    proposal = int(receipt.event("ProposalCreated").args["id"])
    _governance(ContractWriter(chain, approver), "approve", [proposal])
    _governance(proposing, "execute", [proposal])


def test_suspended_member_requests_are_refused(
    hospitals: dict[str, Hospital],
    chain: RpcChain,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> None:
    from node.peers import PEER_PREFIX, sign_headers

    a, c = hospitals["A"], hospitals["C"]
    archive_id = upload_and_archive(a)
    grant_share(a, archive_id, c)
    target = f"{PEER_PREFIX}/archives/{archive_id}/bundle"
    with httpx.Client(base_url=a.url) as http:
        ok = http.get(
            target,
            headers=sign_headers(c.runtime.keystore.account(), "GET", target, b"", a.address),
        )
        assert ok.status_code == 200
        _suspend(chain, hospital_a, hospital_b, c.address)
        # A's watcher drops its cached membership on MemberSuspended; the registry says no.
        wait_for(
            lambda: (
                http.get(
                    target,
                    headers=sign_headers(
                        c.runtime.keystore.account(), "GET", target, b"", a.address
                    ),
                ).status_code
                == 401
            ),
            15,
            "the suspension to take effect",
        )
    with a.client() as api:  # and A no longer transfers to it
        refused = api.post(f"/archives/{archive_id}/transfers", json={"to": c.address})
        assert refused.status_code == 409
        assert refused.json()["code"] == "not_active_hospital"


def test_cancelled_offer_returns_to_archived_and_the_recipient_gets_nothing(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    b.pause_incoming()  # B sees the offer on chain but does not collect it
    archive_id = upload_and_archive(a)
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
        wait_for(
            lambda: chain.custody(archive_id).state is CustodyState.TRANSFER_PENDING, 20, "offer"
        )
        cancelled = api.post(f"/archives/{archive_id}/transfers/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        wait_for(lambda: chain.custody(archive_id).state is CustodyState.ARCHIVED, 20, "cancel")
        again = api.post(f"/archives/{archive_id}/transfers/cancel")
        assert again.status_code == 409
        events = api.get(f"/archives/{archive_id}/events").json()
        assert [e["type"] for e in events][-2:] == ["TRANSFER_OFFER", "TRANSFER_CANCEL"]
        read = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert read.status_code == 200  # A still holds and reads it
    # B still follows the chain: its record of the offer ends cancelled.
    wait_for(lambda: stored_transfer_state(b, archive_id) == "cancelled", 20, "B to see it")
    with b.runtime.db.session() as session:
        assert session.get(Archive, archive_id) is None  # B never stored anything


def test_recipient_rejects_a_package_whose_ciphertext_was_altered(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(a)
    with a.runtime.db.session() as session:
        cid = session.query(ArchiveVersion).filter_by(archive_id=archive_id).one().cid
    stored = a.runtime.blobs.path_of(cid)  # type: ignore[attr-defined]  # local store only
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[100] ^= 0x01  # silent corruption at A
    stored.write_bytes(bytes(data))
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
    wait_for(lambda: transfer_state(b, archive_id, "in") == "rejected", 60, "B to reject")
    wait_for(lambda: transfer_state(a, archive_id, "out") == "rejected", 30, "A to see it")
    custody = chain.custody(archive_id)
    assert (custody.state, custody.custodian) == (CustodyState.ARCHIVED, a.address)
    with a.client() as api:
        events = api.get(f"/archives/{archive_id}/events").json()
    reject = events[-1]
    assert reject["type"] == "TRANSFER_REJECT"
    assert reject["event"]["data"]["by"] == b.address
    with b.client() as api:
        rows = [r for r in api.get("/transfers").json() if r["archive_id"] == archive_id]
    assert "ciphertext hash differs" in rows[0]["error"]
    assert list(b.runtime.blobs.iter_cids()) == []  # nothing of it stayed at B


def _pause_expiry(hospital: Hospital) -> None:
    """Stop ``hospital``'s expiry job (every 30 s from its start): on a loaded host a test can
    run past that mark while an offer it made expire is waiting, and the job would cancel it."""
    scheduler = hospital.runtime._scheduler
    assert scheduler is not None
    scheduler.pause_job("expiry")


def test_expired_offer_is_cancelled_by_the_custodian(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    b.pause_incoming()  # the recipient never collects the offer
    _pause_expiry(a)  # the test expires the offer itself
    archive_id = upload_and_archive(a)
    a.runtime.settings.transfer_offer_ttl = 1.0
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
    wait_for(lambda: chain.custody(archive_id).state is CustodyState.TRANSFER_PENDING, 20, "offer")
    wait_for(lambda: a.runtime.transfers.expire_offers() == 1, 10, "the offer to expire")
    wait_for(
        lambda: chain.custody(archive_id).state is CustodyState.ARCHIVED, 20, "cancel on chain"
    )
    with a.client() as api:
        events = api.get(f"/archives/{archive_id}/events").json()
    assert events[-1]["type"] == "TRANSFER_CANCEL"
    assert events[-1]["event"]["data"]["reason"] == "expired"
    assert transfer_state(a, archive_id, "out") == "expired"


def test_recipient_declines_an_offer_that_expired_before_it_collected_it(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    b.pause_incoming()
    _pause_expiry(a)  # A does not cancel the expired offer before B declines it
    archive_id = upload_and_archive(a)
    a.runtime.settings.transfer_offer_ttl = 1.0
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
    wait_for(lambda: stored_transfer_state(b, archive_id) == "seen", 20, "B to see the offer")
    time.sleep(1.2)
    b.resume_incoming()
    wait_for(lambda: stored_transfer_state(b, archive_id) == "rejected", 30, "B to decline")
    wait_for(lambda: transfer_state(a, archive_id, "out") == "rejected", 30, "A to see it")
    custody = chain.custody(archive_id)
    assert (custody.state, custody.custodian) == (CustodyState.ARCHIVED, a.address)


def search_terms(hospital: Hospital, archive_id: str) -> set[str]:
    """The keyword-index terms ``hospital`` holds for ``archive_id``."""
    with hospital.runtime.db.session() as session:
        return set(
            session.execute(
                select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
            ).scalars()
        )


def test_a_staged_archive_whose_accept_reverts_is_deleted_with_its_search_terms(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    scheduler = b.runtime._scheduler
    assert scheduler is not None
    scheduler.pause_job("anchoring")  # B stages the archive but does not send acceptTransfer yet
    archive_id = upload_and_archive(a)
    with a.client() as api:
        assert (
            api.post(f"/archives/{archive_id}/transfers", json={"to": b.address}).status_code == 202
        )
    wait_for(lambda: stored_transfer_state(b, archive_id) == "accepting", 60, "B to stage it")
    assert {"receiving", "hospital", "referral"} <= search_terms(b, archive_id)
    with b.client() as api:  # staged, listed as incoming (not B's yet)
        found = api.get("/archives", params={"text": "receiving"}).json()["items"]
        assert [(item["id"], item["state"]) for item in found] == [(archive_id, "INCOMING")]
    with a.client() as api:  # A withdraws the offer first: B's acceptTransfer will revert
        assert api.post(f"/archives/{archive_id}/transfers/cancel").status_code == 200
    wait_for(lambda: chain.custody(archive_id).state is CustodyState.ARCHIVED, 20, "cancel")
    scheduler.resume_job("anchoring")
    wait_for(lambda: stored_transfer_state(b, archive_id) == "failed", 60, "B to abandon it")
    with b.runtime.db.session() as session:
        assert session.get(Archive, archive_id) is None
    assert search_terms(b, archive_id) == set()
    with b.client() as api:
        assert api.get("/archives", params={"text": "receiving"}).json()["items"] == []
    assert "receiving" in search_terms(a, archive_id)  # A keeps its own index


def test_an_unexpected_failure_of_one_incoming_transfer_does_not_hold_up_the_others(
    hospitals: dict[str, Hospital], chain: RpcChain, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    b.pause_incoming()  # B records both offers; this test runs its collection itself
    archive_ids = [upload_and_archive(a), upload_and_archive(a)]
    with a.client() as api:
        for archive_id in archive_ids:
            offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
            assert offered.status_code == 202, offered.text
    for archive_id in archive_ids:
        wait_for(lambda i=archive_id: stored_transfer_state(b, i) == "seen", 30, "B to see it")
    a.runtime.worker.run_until_anchored(timeout=30)  # both packages can be collected now
    with b.runtime.db.session() as session:
        incoming = session.execute(
            select(Transfer.id, Transfer.archive_id)
            .where(Transfer.direction == "in", Transfer.archive_id.in_(archive_ids))
            .order_by(Transfer.id)
        ).all()
    (failing_id, failing), (_, other) = incoming  # the run takes the failing one first

    service = b.runtime.transfers
    fetch = service._fetch_version
    secret = "MRN-4242 Zhang San"  # an error message may hold PHI: it must not be logged

    def faulty(sender: str, received: Any, version: Any) -> Any:
        if received.archive_id == failing:
            raise RuntimeError(f"disk error while writing {secret}")
        return fetch(sender, received, version)

    monkeypatch.setattr(service, "_fetch_version", faulty)
    with caplog.at_level("ERROR", logger="node.services.transfers"):
        assert service.process_incoming() >= 2  # does not raise
    assert stored_transfer_state(b, other) == "accepting"  # received in the same run
    assert stored_transfer_state(b, failing) == "seen"  # left for the next run
    with b.runtime.db.session() as session:
        row = session.get_one(Transfer, failing_id)
        assert (row.error, row.attempts) == ("unexpected error: RuntimeError", 1)
        assert session.get(Archive, failing) is None
    assert f"incoming transfer {failing_id}" in caplog.text
    assert "RuntimeError" in caplog.text
    assert secret not in caplog.text

    monkeypatch.setattr(service, "_fetch_version", fetch)  # the fault is gone
    b.resume_incoming()
    for archive_id in archive_ids:
        wait_for(lambda i=archive_id: transfer_state(b, i, "in") == "accepted", 60, "B accepts")
    with b.client() as api:
        read = api.get(f"/archives/{failing}/content", params={"purpose": "treatment"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT


def test_a_transferred_amended_archive_keeps_the_senders_search_terms(
    hospitals: dict[str, Hospital], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Amendments and a transfer's recipient follow one rule (``node.textindex``): title and
    metadata, then each version's words in order, at most MAX_TERMS_PER_ARCHIVE in all — so the
    recipient holds exactly the terms the former custodian held, later versions' words too."""
    from node import textindex

    monkeypatch.setattr(textindex, "MAX_TERMS_PER_ARCHIVE", 11)
    a, b = hospitals["A"], hospitals["B"]
    archive_id = upload_and_archive(
        a,
        b"angina stable since march",
        amendments=(b"echocardiogram normal stable", b"troponin negative discharge zebra"),
    )
    held = search_terms(a, archive_id)
    assert len(held) == 11
    assert {"echocardiogram", "normal", "troponin", "negative"} <= held  # later versions' words
    assert "zebra" not in held  # over the cap
    with a.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
        assert offered.status_code == 202, offered.text
    wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "B to accept")
    assert search_terms(b, archive_id) == held
    with b.client() as api:
        for words in ("troponin negative", "echocardiogram", "angina"):
            found = api.get("/archives", params={"text": words}).json()
            assert [item["id"] for item in found["items"]] == [archive_id], words
        assert api.get("/archives", params={"text": "zebra"}).json()["items"] == []


NARRATIVE_WORDS = ("心肌梗死", "pericarditis")


def ingest_composition(hospital: Hospital) -> str:
    """A FHIR Composition pushed to ``hospital``, archived and registered on chain: its section's
    narrative is text extracted at ingestion, in no title, metadata or text content."""
    composition = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
        "subject": {"reference": "Patient/P-2"},
        "date": "2024-05-02T08:00:00Z",
        "author": [{"display": "Dr. Example"}],
        "title": "Discharge summary",
        "section": [
            {
                "title": "诊断",
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>急性心肌梗死, '
                    "pericarditis</p></div>",
                },
            }
        ],
    }
    response = httpx.post(
        f"{hospital.url}/fhir/r4/Composition",
        content=json.dumps(composition),
        headers={
            "Authorization": f"Bearer {hospital.keys['archivist']}",
            "Content-Type": "application/fhir+json",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    with hospital.client() as api:
        archive_id = response.headers["location"].rsplit("/", 1)[-1]
        if api.get(f"/archives/{archive_id}").json()["state"] != "ARCHIVED":
            assert api.post(f"/archives/{archive_id}/archive").status_code == 200
        wait_registered(api, archive_id)
    return archive_id


def found_by(hospital: Hospital, words: str) -> list[str]:
    with hospital.client() as api:
        response = api.get("/archives", params={"text": words})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


def transfer_and_wait(custodian: Hospital, recipient: Hospital, archive_id: str) -> None:
    with custodian.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": recipient.address})
        assert offered.status_code == 202, offered.text
    wait_for(lambda: transfer_state(recipient, archive_id, "in") == "accepted", 60, "acceptance")


def test_a_transfer_carries_the_words_of_text_extracted_at_ingestion(
    hospitals: dict[str, Hospital],
) -> None:
    """The custodian's terms travel sealed to the recipient (``GET …/transfer/terms``): a FHIR
    narrative's words, which the recipient cannot cut from the content, find the record there."""
    from node import crypto
    from node.peers import PEER_PREFIX, sign_headers
    from node.protocol import SealedTerms, TransferTerms

    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    archive_id = ingest_composition(a)
    held = search_terms(a, archive_id)
    assert {"心肌", "梗死", "pericarditis"} <= held
    target = f"{PEER_PREFIX}/archives/{archive_id}/transfer/terms"

    def ask(asker: Hospital) -> httpx.Response:
        signed = sign_headers(asker.runtime.keystore.account(), "GET", target, b"", a.address)
        return httpx.get(a.url + target, headers=signed, timeout=30)

    b.pause_incoming()  # the offer stays pending while the route is asked
    with a.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
        assert offered.status_code == 202, offered.text
    refused = ask(c)  # another member: as for no transfer at all
    assert (refused.status_code, refused.json()["code"]) == (404, "no_such_transfer")
    assert httpx.get(a.url + target, timeout=30).status_code == 401  # unsigned
    answer = TransferTerms.model_validate(ask(b).json())
    assert (answer.archive_id, answer.custodian, answer.recipient) == (
        archive_id,
        a.address,
        b.address,
    )
    opened = SealedTerms.model_validate_json(
        b.runtime.keyring.open_sealed(
            answer.sealed_terms,
            crypto.encode_aad("archivechain/transfer-terms/v1", archive_id, b.address),
        )
    )
    assert opened.terms == sorted(held)
    with pytest.raises(crypto.CryptoError):  # sealed to B: C's key does not open it
        c.runtime.keyring.open_sealed(
            answer.sealed_terms,
            crypto.encode_aad("archivechain/transfer-terms/v1", archive_id, c.address),
        )
    b.resume_incoming()
    wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "acceptance")
    assert search_terms(b, archive_id) == held
    # A clears the offer when its own watcher sees the acceptance, which may follow B's
    wait_for(lambda: transfer_state(a, archive_id, "out") == "accepted", 30, "A to see it")
    gone = ask(b)
    assert (gone.status_code, gone.json()["code"]) == (404, "no_such_transfer")
    for words in NARRATIVE_WORDS:
        assert found_by(b, words) == [archive_id], words


def test_a_recipient_indexes_its_own_terms_when_the_custodian_serves_none_or_bad_ones(
    hospitals: dict[str, Hospital], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A custodian that predates the terms route (its answer is made the one an unknown route
    gets, 404 ``not_found``), serves terms that do not open or fails to serve them (500): the
    transfer completes, and the recipient holds the terms it cut itself (title, metadata; the
    content is FHIR JSON, not read); of doctored terms it keeps only those that are terms."""
    from starlette.exceptions import HTTPException

    from node import crypto
    from node.protocol import SealedTerms, TransferTerms
    from node.textindex import archive_texts, index_terms

    a, b = hospitals["A"], hospitals["B"]
    older, garbled, doctored, broken = (ingest_composition(a) for _ in range(4))
    own = {"discharge", "summary"}

    def cut_by_recipient(archive_id: str) -> set[str]:
        """What the recipient cuts itself: title and metadata (it does not read FHIR JSON)."""
        with a.runtime.db.session() as session:
            row = session.get_one(Archive, archive_id)
            return index_terms(*archive_texts(row.title, row.metadata_json))

    def no_such_route(sender: str, archive_id: str) -> TransferTerms:
        raise HTTPException(404)  # rendered as an unknown route is: 404 not_found

    monkeypatch.setattr(a.runtime.transfers, "transfer_terms", no_such_route)
    with caplog.at_level("INFO", logger="node.services.transfers"):
        transfer_and_wait(a, b, older)
    assert "serves no search terms" in caplog.text
    monkeypatch.undo()
    served = a.runtime.transfers.transfer_terms

    def garbled_terms(sender: str, archive_id: str) -> TransferTerms:
        good = served(sender, archive_id)
        flipped = bytes([good.sealed_terms[0] ^ 1]) + good.sealed_terms[1:]
        return good.model_copy(update={"sealed_terms": flipped})

    monkeypatch.setattr(a.runtime.transfers, "transfer_terms", garbled_terms)
    with caplog.at_level("WARNING", logger="node.services.transfers"):
        transfer_and_wait(a, b, garbled)
    assert "search terms are unusable" in caplog.text

    def doctored_terms(sender: str, archive_id: str) -> TransferTerms:
        """Terms sealed properly, but only one of them a term: the others are dropped."""
        sealed = crypto.ecies_encrypt(
            a.runtime.members.public_key(sender),
            SealedTerms(terms=["zzyzx", "INJECTED", "出院小结", "two words"])
            .model_dump_json()
            .encode(),
            crypto.encode_aad("archivechain/transfer-terms/v1", archive_id, sender),
        )
        return served(sender, archive_id).model_copy(update={"sealed_terms": sealed})

    monkeypatch.setattr(a.runtime.transfers, "transfer_terms", doctored_terms)
    transfer_and_wait(a, b, doctored)
    assert search_terms(b, doctored) == cut_by_recipient(doctored) | {"zzyzx"}

    def failing_terms(sender: str, archive_id: str) -> TransferTerms:
        raise RuntimeError("a custodian's bug")  # answered 500 internal_error

    monkeypatch.setattr(a.runtime.transfers, "transfer_terms", failing_terms)
    with caplog.at_level("WARNING", logger="node.services.transfers"):
        transfer_and_wait(a, b, broken)
    assert "answered 500 for its search terms" in caplog.text
    for archive_id in (older, garbled, broken):
        terms = search_terms(b, archive_id)
        assert own <= terms, archive_id
        assert not {"心肌", "pericarditis"} & terms, archive_id
        assert terms == cut_by_recipient(archive_id), archive_id
    assert found_by(b, "pericarditis") == []
    assert sorted(found_by(b, "discharge summary")) == sorted([older, garbled, doctored, broken])


def test_terms_are_retried_when_the_custodian_cannot_serve_them_and_capped_when_it_holds_more(
    hospitals: dict[str, Hospital], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terms route unavailable once (503) or refusing for want of an offer (404
    ``no_such_transfer``): the recipient tries again rather than going on without the terms. A
    custodian holding more terms than the cap (an archive amended before amendments kept to it)
    serves the cap's worth, in code point order, instead of failing (a 500 would hold the
    transfer up until the offer expired)."""
    from node.errors import NotFoundError, UnavailableError
    from node.services.archives import insert_terms
    from node.textindex import MAX_TERMS_PER_ARCHIVE

    a, b = hospitals["A"], hospitals["B"]
    archive_id = ingest_composition(a)
    held = search_terms(a, archive_id)
    # Hangul bigrams sort after every term the record has (Latin, then CJK ideographs).
    legacy = [chr(0xAC00 + i // 100) + chr(0xAC00 + i % 100) for i in range(MAX_TERMS_PER_ARCHIVE)]
    with a.runtime.db.transaction() as session:
        department = session.get_one(Archive, archive_id).department
        insert_terms(session.connection(), [(term, archive_id, department) for term in legacy])
    served = a.runtime.transfers.transfer_terms
    failures: list[Exception] = [
        UnavailableError("database unavailable"),
        NotFoundError("not yet", code="no_such_transfer"),
    ]

    def flaky(sender: str, archive_id: str) -> Any:
        if failures:
            raise failures.pop(0)
        return served(sender, archive_id)

    monkeypatch.setattr(a.runtime.transfers, "transfer_terms", flaky)
    transfer_and_wait(a, b, archive_id)
    assert not failures
    terms = search_terms(b, archive_id)
    assert held <= terms
    assert len(terms) == MAX_TERMS_PER_ARCHIVE
    assert terms - held == set(legacy[: MAX_TERMS_PER_ARCHIVE - len(held)])
    for words in NARRATIVE_WORDS:
        assert found_by(b, words) == [archive_id], words
