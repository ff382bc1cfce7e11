"""Disposition review with four eyes, driven through the API on a node whose clock the test moves
(and anvil's with it: ``evm_setNextBlockTimestamp``), both databases.

Archive outpatient records, move 15 years and a day: the job moves the due record to
DISPOSITION_REVIEW, never one on hold or in transfer; an archivist proposes a disposition list, a
records manager who is not the proposer approves (a hold blocks it) or rejects (the deadline moves
later); approvals expire. Reminders are raised at the configured horizons. Every bundle still
verifies against the chain."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from anchoring import merkle
from anchoring.bundle import CertificateClaim, dump_bundle, parse_bundle
from anchoring.certificate import CERTIFICATE_FORMAT, signer, typed_message
from anchoring.chain import ContractWriter, JsonRpc, RpcChain
from anchoring.chainview import CustodyState
from anchoring.events import jcs
from anchoring.ids import archive_key
from anchoring.storage import LogEntry
from anchoring.verifier import verify_bundle
from api.main import create_app
from node.alerts import AlertNotice
from node.models import Archive, ChainCursor, RetentionChange, SearchTerm, WrappedKey
from node.principal import Role
from node.retention import add_years
from node.siwe import format_time
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api, issue_keys, serve
from tests.api.members import bearer, message_for, submit
from tests.fixtures.chain import Consortium
from tests.fixtures.db import _postgres_schema_url as _schema_url
from tests.fixtures.node import MakeNode, build_node
from tests.support import postgres_url


class SteppedClock:
    """The node's clock: real time, moved forward by the test (and running on from there)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @property
    def now(self) -> datetime:
        return self()


class CollectedAlerts:
    """An ``AlertSink`` that keeps what it is given."""

    def __init__(self) -> None:
        self.notices: list[AlertNotice] = []

    def raise_alert(self, notice: AlertNotice) -> None:
        self.notices.append(notice)


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def dapi(make_node: MakeNode, database_url: str, clock: SteppedClock) -> Iterator[Api]:
    node = make_node(
        database_url=database_url,
        max_upload_bytes=UPLOAD_LIMIT,
        chunk_size=CHUNK_SIZE,
        clock=clock,
    )
    app = create_app(node)
    with serve(app) as client:
        keys = issue_keys(node)
        keys["manager"] = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
        # The archivist's own name on a records manager key: the same person (same actor).
        keys["archivist_as_manager"] = node.keys.issue(Role.RECORDS_MANAGER, "archivist-1").secret
        yield Api(node=node, app=app, client=client, keys=keys)


def _archive(api: Api, trigger: date, record_class: str = "OUTPATIENT") -> str:
    archive_id: str = api.create(record_class=record_class, trigger_date=trigger.isoformat())["id"]
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    return archive_id


def _state(api: Api, archive_id: str) -> str:
    with api.node.db.session() as session:
        return session.get_one(Archive, archive_id).state


def _travel(clock: SteppedClock, rpc: JsonRpc, to: datetime) -> None:
    """Move the node's clock and the chain's to ``to``."""
    clock.offset = to - datetime.now(UTC)
    rpc.request("evm_setNextBlockTimestamp", [int(to.timestamp())])
    rpc.request("evm_mine")


def _due(api: Api, within: str, who: str = "manager") -> Any:
    return api.client.get("/api/v1/retention/due", headers=api.auth(who), params={"within": within})


def _decide(api: Api, who: str, proposal: str, archive_id: str, **body: Any) -> Any:
    return api.client.post(
        f"/api/v1/retention/proposals/{proposal}/items/{archive_id}",
        headers=api.auth(who),
        json={"reason": "reviewed", **body},
    )


def _destroy(api: Api, who: str, proposal: str, archive_id: str) -> Any:
    return api.client.post(
        f"/api/v1/retention/proposals/{proposal}/items/{archive_id}/destroy",
        headers=api.auth(who),
    )


def _blob_files(api: Api) -> set[Path]:
    return {p for p in api.node.settings.blob_dir.rglob("*") if p.is_file()}


def _check_destroyed(api: Api, archive_id: str, digest: str) -> None:
    """Content 410, metadata erased, every key copy gone, the certificate hashed and signed."""
    archivist = api.auth("archivist")
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        headers=archivist,
        params={"purpose": "operations"},
    )
    assert (content.status_code, content.json()["code"]) == (410, "destroyed")
    meta = api.client.get(f"/api/v1/archives/{archive_id}", headers=archivist).json()
    assert meta["state"] == "DESTROYED"
    assert (meta["title"], meta["metadata"]) == ("", {})
    assert all(v["filename"] is None for v in meta["versions"])
    with api.node.db.session() as session:
        keys = session.execute(
            select(WrappedKey).where(WrappedKey.archive_id == archive_id)
        ).scalars()
        assert all(k.blob is None and k.destroyed_at is not None for k in keys)
        terms = session.execute(
            select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
        ).all()
        assert terms == []  # the keyword index held fragments of the title
        row = session.get_one(Archive, archive_id)  # the row as written, not the API's view
        entries = session.execute(
            select(LogEntry.event).where(LogEntry.archive_id == archive_id).order_by(LogEntry.index)
        ).scalars()
        leaves = [merkle.leaf_hash(raw) for raw in entries]
        assert (row.state, row.title, row.search_text, row.metadata_json) == (
            "DESTROYED",
            "",
            "",
            {},
        )
        assert (row.event_count, row.last_event_hash) == (len(leaves), leaves[-1])
    events = api.client.get(f"/api/v1/archives/{archive_id}/events", headers=archivist).json()
    (destroy,) = [e for e in events if e["type"] == "DESTROY"]
    assert destroy["event"]["data"]["certificate_hash"] == digest
    for who in ("archivist", "auditor", "manager"):
        response = api.client.get(
            f"/api/v1/archives/{archive_id}/certificate", headers=api.auth(who)
        )
        assert response.status_code == 200, response.text
    body = response.json()
    document = body["certificate"]
    assert hashlib.sha256(jcs(document)).hexdigest() == digest == body["certificate_hash"]
    assert document["format"] == CERTIFICATE_FORMAT
    assert document["archive_id"] == archive_id
    assert document["method"]["key_copies_destroyed"] == 1
    assert document["checks"] == {"key_copies_remaining": 0, "own_key_lookup": "no_key"}
    assert document["proposal"]["proposed_by"] != document["approval"]["approved_by"]
    deployment = api.node.deployment
    assert body["signer"] == api.node.hospital
    assert (
        signer(
            chain_id=deployment.chain_id,
            notary=deployment.notary.address,
            archive_id=archive_id,
            digest=bytes.fromhex(digest),
            custodian=api.node.hospital,
            signature=body["signature"],
        )
        == api.node.hospital
    )
    no_certificate = api.client.get(
        f"/api/v1/archives/{archive_id}/certificate", headers=api.auth("cardiologist")
    )
    assert no_certificate.status_code == 403


def _verifies(api: Api, chain: RpcChain, archive_id: str) -> None:
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist"))
    assert proof.status_code == 200, proof.text
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()


def test_fifteen_years_and_a_day_later_review_with_four_eyes(
    dapi: Api,
    clock: SteppedClock,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    hospital_b: LocalAccount,
) -> None:
    api, archivist = dapi, dapi.auth("archivist")
    today = clock.now.date()
    due = _archive(api, today)
    held = _archive(api, today)
    leaving = _archive(api, today)
    kept = _archive(api, today, "INPATIENT")
    assert api.client.post(
        f"/api/v1/archives/{held}/hold", headers=archivist, json={"reason": "litigation"}
    ).is_success
    offered = api.client.post(
        f"/api/v1/archives/{leaving}/transfers", headers=archivist, json={"to": hospital_b.address}
    )
    assert offered.status_code == 202, offered.text
    api.node.worker.run_until_anchored(timeout=30)

    # Nothing is due yet.
    assert _due(api, "P30D").json() == []
    early = api.client.post("/api/v1/retention/run", headers=archivist)
    assert early.json() == {"moved_to_review": 0, "overdue_alerted": 0}
    assert _state(api, due) == "ARCHIVED"

    deadline = datetime.combine(add_years(today, 15), time(), UTC)
    _travel(clock, chain_rpc, deadline + timedelta(days=1))

    listed = _due(api, "P0D")
    assert listed.status_code == 200, listed.text
    assert {(i["archive_id"], i["on_hold"]) for i in listed.json()} == {
        (due, False),
        (held, True),
    }  # not the inpatient record (30 years), not the one in transfer
    assert _due(api, "P0D", "cardiologist").status_code == 403
    assert _due(api, "P0D", "auditor").status_code == 403
    assert _due(api, "P99999D").status_code in (400, 422)
    assert _due(api, "soon").status_code == 422

    run = api.client.post("/api/v1/retention/run", headers=api.auth("manager"))
    assert run.json() == {"moved_to_review": 1, "overdue_alerted": 0}  # within the grace
    assert api.client.post("/api/v1/retention/run", headers=api.auth("auditor")).status_code == 403
    assert (_state(api, due), _state(api, held), _state(api, leaving), _state(api, kept)) == (
        "DISPOSITION_REVIEW",
        "ARCHIVED",
        "TRANSFER_PENDING",
        "ARCHIVED",
    )
    events = api.client.get(f"/api/v1/archives/{due}/events", headers=archivist).json()
    assert events[-1]["type"] == "DISPOSITION_START"

    # Proposals: archivists only, only archives in review and not on hold.
    proposals = "/api/v1/retention/proposals"
    body = {"archive_ids": [due], "reason": "retention expired"}
    assert api.client.post(proposals, headers=api.auth("manager"), json=body).status_code == 403
    refused = api.client.post(
        proposals, headers=archivist, json={"archive_ids": [held], "reason": "x"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "on_hold")
    refused = api.client.post(
        proposals, headers=archivist, json={"archive_ids": [kept], "reason": "x"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_in_review")
    created = api.client.post(proposals, headers=archivist, json=body)
    assert created.status_code == 201, created.text
    proposal = created.json()["id"]
    assert [(i["archive_id"], i["decision"]) for i in created.json()["items"]] == [(due, "pending")]
    again = api.client.post(proposals, headers=archivist, json=body)
    assert (again.status_code, again.json()["code"]) == (409, "already_proposed")

    # Approval: a records manager, not the proposer; a hold blocks it.
    assert _decide(api, "archivist", proposal, due, approve=True).status_code == 403
    same_person = _decide(api, "archivist_as_manager", proposal, due, approve=True)
    assert (same_person.status_code, same_person.json()["code"]) == (403, "four_eyes")
    assert api.client.post(
        f"/api/v1/archives/{due}/hold", headers=archivist, json={"reason": "regulator asked"}
    ).is_success
    blocked = _decide(api, "manager", proposal, due, approve=True)
    assert (blocked.status_code, blocked.json()["code"]) == (409, "on_hold")
    assert api.client.request(
        "DELETE", f"/api/v1/archives/{due}/hold", headers=archivist, params={"reason": "done"}
    ).is_success
    early = _destroy(api, "archivist", proposal, due)
    assert (early.status_code, early.json()["code"]) == (409, "not_approved")
    approved = _decide(api, "manager", proposal, due, approve=True)
    assert approved.status_code == 200, approved.text
    assert approved.json()["decision"] == "approved"
    expires = datetime.fromisoformat(approved.json()["expires_at"])
    assert abs(expires - (clock.now + timedelta(days=30))) < timedelta(minutes=1)
    twice = _decide(api, "manager", proposal, due, approve=False, new_deadline="2099-01-01")
    assert (twice.status_code, twice.json()["code"]) == (409, "already_decided")

    # Destruction: crypto-shredding with a signed certificate.
    blob_files = _blob_files(api)
    assert _destroy(api, "manager", proposal, due).status_code == 403
    destroyed = _destroy(api, "archivist", proposal, due)
    assert destroyed.status_code == 200, destroyed.text
    outcome = destroyed.json()
    assert outcome["key_copies_destroyed"] == 1
    assert outcome["blobs_deleted"] == 1
    assert len(_blob_files(api)) == len(blob_files) - 1
    again = _destroy(api, "archivist", proposal, due)
    assert (again.status_code, again.json()["code"]) == (409, "not_approved")
    _check_destroyed(api, due, outcome["certificate_hash"])

    # An approval not executed within its window expires (and the daily job says so).
    assert api.client.request(
        "DELETE", f"/api/v1/archives/{held}/hold", headers=archivist, params={"reason": "done"}
    ).is_success
    assert api.client.post("/api/v1/retention/run", headers=archivist).json() == {
        "moved_to_review": 1,
        "overdue_alerted": 0,
    }
    late = api.client.post(
        proposals, headers=archivist, json={"archive_ids": [held], "reason": "expired"}
    ).json()["id"]
    assert _decide(api, "manager", late, held, approve=True).status_code == 200
    _travel(clock, chain_rpc, clock.now + timedelta(days=31))
    stale = _destroy(api, "archivist", late, held)
    assert (stale.status_code, stale.json()["code"]) == (409, "approval_expired")
    api.node.retention.run_schedule()
    shown = api.client.get(f"{proposals}/{late}", headers=api.auth("manager")).json()
    assert [i["decision"] for i in shown["items"]] == ["expired"]
    assert _state(api, held) == "DISPOSITION_REVIEW"

    # Rejection keeps the archive: the deadline moves later and the review ends.
    second = api.client.post(
        proposals, headers=archivist, json={"archive_ids": [held], "reason": "expired"}
    ).json()["id"]
    missing = _decide(api, "manager", second, held, approve=False)
    assert (missing.status_code, missing.json()["code"]) == (400, "new_deadline_required")
    short = _decide(api, "manager", second, held, approve=False, new_deadline=str(today))
    assert (short.status_code, short.json()["code"]) == (409, "retention_shortened")
    keep_until = add_years(clock.now.date(), 5)
    rejected = _decide(api, "manager", second, held, approve=False, new_deadline=str(keep_until))
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["decision"] == "rejected"
    assert _state(api, held) == "ARCHIVED"
    with api.node.db.session() as session:
        change = session.execute(
            select(RetentionChange).where(RetentionChange.archive_id == held)
        ).scalar_one()
        assert (change.cause, change.new_deadline.date()) == ("disposition", keep_until)

    api.node.worker.run_until_anchored(timeout=30)
    assert chain.custody(held).retention_deadline == int(
        datetime.combine(keep_until, time(), UTC).timestamp()
    )
    custody = chain.custody(due)
    assert custody.state is CustodyState.DESTROYED
    assert custody.certificate_hash.hex() == outcome["certificate_hash"]
    for archive_id in (due, held, kept):
        _verifies(api, chain, archive_id)
    _tampered_certificates_fail(api, chain, due)


def _tampered_certificates_fail(api: Api, chain: RpcChain, archive_id: str) -> None:
    """The verifier checks the certificate: present, hashing to the DESTROY event's (and the
    chain's) hash, naming this archive, and signed by the custodian."""
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist"))
    bundle = parse_bundle(proof.content)
    assert bundle.certificate is not None
    claim = bundle.certificate

    def codes(certificate: CertificateClaim | None) -> set[str]:
        report = verify_bundle(replace(bundle, certificate=certificate), chain)
        assert not report.ok
        return {f.code.value for f in report.failures}

    assert codes(None) == {"certificate_missing"}
    altered = claim.document.replace(b'"crypto_erasure"', b'"shredded_paper"')
    assert codes(replace(claim, document=altered)) == {"certificate_mismatch"}
    stranger = Account.create()
    deployment = api.node.deployment
    forged = stranger.sign_message(
        typed_message(
            chain_id=deployment.chain_id,
            notary=deployment.notary.address,
            archive_id=archive_id,
            digest=hashlib.sha256(claim.document).digest(),
            custodian=api.node.hospital,
        )
    )
    signature = "0x" + bytes(forged.signature).hex()
    assert codes(replace(claim, signature=signature)) == {"certificate_signature_invalid"}
    # The bundle document round-trips with its certificate.
    assert parse_bundle(dump_bundle(bundle)) == bundle


def test_reminders_at_the_configured_horizons(dapi: Api, clock: SteppedClock) -> None:
    api = dapi
    alerts = CollectedAlerts()
    api.node.retention.alerts = alerts
    today = clock.now.date()
    soon = _archive(api, add_years(today, -15) + timedelta(days=20))
    later = _archive(api, add_years(today, -15) + timedelta(days=100))
    _archive(api, add_years(today, -15) + timedelta(days=400))  # beyond every horizon
    assert api.node.retention.remind() == 2
    by_subject = {n.subject: n for n in alerts.notices}
    assert set(by_subject) == {soon, later}
    assert by_subject[soon].kind == "retention_due"
    assert by_subject[soon].detail["horizon_days"] == 30
    assert by_subject[later].detail["horizon_days"] == 180
    for notice in alerts.notices:  # codes and counts only: no title, no patient
        assert set(notice.detail) == {"horizon_days", "days_left", "on_hold"}


def test_a_restored_backup_cannot_resurrect_a_destroyed_key(
    make_node: MakeNode,
    consortium: Consortium,
    hospital_a: LocalAccount,
    clock: SteppedClock,
    chain_rpc: JsonRpc,
) -> None:
    """Back up the database (SQLite online backup), destroy, restore the backup: the start
    replays the tombstone ledger, so the key is gone again and content answers 410."""
    node = make_node(clock=clock)  # SQLite in its data directory
    data_dir = node.settings.data_dir
    database = data_dir / "node.db"
    with serve(create_app(node)) as client:
        keys = issue_keys(node)
        keys["manager"] = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
        api = Api(node=node, app=create_app(node), client=client, keys=keys)
        archive_id = _archive(api, clock.now.date())
        api.node.worker.run_until_anchored(timeout=30)
        deadline = datetime.combine(add_years(clock.now.date(), 15), time(), UTC)
        _travel(clock, chain_rpc, deadline + timedelta(days=1))
        assert api.client.post("/api/v1/retention/run", headers=api.auth("archivist")).is_success
        proposal = api.client.post(
            "/api/v1/retention/proposals",
            headers=api.auth("archivist"),
            json={"archive_ids": [archive_id], "reason": "expired"},
        ).json()["id"]
        assert _decide(api, "manager", proposal, archive_id, approve=True).is_success

        backup = data_dir / "backup.db"
        source = sqlite3.connect(database)
        target = sqlite3.connect(backup)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()

        assert _destroy(api, "archivist", proposal, archive_id).status_code == 200
        blobs_after = _blob_files(api)
    node.close()

    tombstones = (data_dir / "tombstones.jsonl").read_text().splitlines()
    assert [json.loads(line)["archive_id"] for line in tombstones] == [archive_id]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)
    with sqlite3.connect(database) as restored:  # the backup still holds the live key
        live = restored.execute(
            "SELECT count(*) FROM wrapped_keys WHERE archive_id = ? AND blob IS NOT NULL",
            (archive_id,),
        ).fetchone()[0]
        terms = restored.execute(
            "SELECT count(*) FROM search_terms WHERE archive_id = ?", (archive_id,)
        ).fetchone()[0]
    assert live == 1
    assert terms > 0  # and its keyword index (PHI fragments)

    reopened = build_node(consortium, hospital_a, data_dir, clock=clock)
    try:
        with reopened.db.session() as session:
            copies = list(
                session.execute(
                    select(WrappedKey).where(WrappedKey.archive_id == archive_id)
                ).scalars()
            )
            assert copies
            assert all(k.blob is None and k.destroyed_at is not None for k in copies)
            row = session.get_one(Archive, archive_id)
            assert (row.state, row.title, row.search_text, row.metadata_json) == (
                "DESTROYED",
                "",
                "",
                {},
            )
            assert not session.execute(
                select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
            ).first()
        with serve(create_app(reopened)) as client:
            api = Api(node=reopened, app=create_app(reopened), client=client, keys=keys)
            content = api.client.get(
                f"/api/v1/archives/{archive_id}/content",
                headers=api.auth("archivist"),
                params={"purpose": "operations"},
            )
            assert (content.status_code, content.json()["code"]) == (410, "destroyed")
            again = _destroy(api, "archivist", proposal, archive_id)
            assert (again.status_code, again.json()["code"]) == (409, "destroyed")
            assert _blob_files(api) == blobs_after  # the ciphertext did not come back
    finally:
        reopened.close()


def test_a_list_is_executed_in_one_call_skipping_what_cannot_go(
    dapi: Api, clock: SteppedClock, chain: RpcChain, chain_rpc: JsonRpc
) -> None:
    api, archivist = dapi, dapi.auth("archivist")
    today = clock.now.date()
    go, held, undecided = (_archive(api, today) for _ in range(3))
    api.node.worker.run_until_anchored(timeout=30)
    _travel(clock, chain_rpc, datetime.combine(add_years(today, 15), time(), UTC) + timedelta(1))
    assert api.client.post("/api/v1/retention/run", headers=archivist).json() == {
        "moved_to_review": 3,
        "overdue_alerted": 0,
    }
    proposal = api.client.post(
        "/api/v1/retention/proposals",
        headers=archivist,
        json={"archive_ids": [go, held, undecided], "reason": "expired"},
    ).json()["id"]
    for archive_id in (go, held):
        assert _decide(api, "manager", proposal, archive_id, approve=True).is_success
    assert api.client.post(
        f"/api/v1/archives/{held}/hold", headers=archivist, json={"reason": "late claim"}
    ).is_success
    url = f"/api/v1/retention/proposals/{proposal}/destroy"
    assert api.client.post(url, headers=api.auth("manager")).status_code == 403
    response = api.client.post(url, headers=archivist)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["archive_id"] for d in body["destroyed"]] == [go]
    assert body["destroyed"][0]["blobs_deleted"] == 1
    assert sorted((r["archive_id"], r["code"]) for r in body["refused"]) == sorted(
        [(held, "on_hold"), (undecided, "not_approved")]
    )
    assert (_state(api, go), _state(api, held), _state(api, undecided)) == (
        "DESTROYED",
        "DISPOSITION_REVIEW",
        "DISPOSITION_REVIEW",
    )
    _check_destroyed(api, go, body["destroyed"][0]["certificate_hash"])
    again = api.client.post(url, headers=archivist).json()
    assert again["destroyed"] == []
    missing = api.client.post(
        "/api/v1/retention/proposals/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/destroy", headers=archivist
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "proposal_not_found")
    api.node.worker.run_until_anchored(timeout=30)
    for archive_id in (go, held, undecided):
        _verifies(api, chain, archive_id)


def test_a_regulator_hold_placed_on_chain_after_approval_blocks_destruction(
    dapi: Api,
    clock: SteppedClock,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    regulator: LocalAccount,
) -> None:
    api, archivist = dapi, dapi.auth("archivist")
    today = clock.now.date()
    archive_id = _archive(api, today)
    api.node.worker.run_until_anchored(timeout=30)
    _travel(clock, chain_rpc, datetime.combine(add_years(today, 15), time(), UTC) + timedelta(1))
    assert api.client.post("/api/v1/retention/run", headers=archivist).is_success
    proposal = api.client.post(
        "/api/v1/retention/proposals",
        headers=archivist,
        json={"archive_ids": [archive_id], "reason": "expired"},
    ).json()["id"]
    assert _decide(api, "manager", proposal, archive_id, approve=True).is_success

    ContractWriter(chain, regulator).transact("placeHold", [archive_key(archive_id), bytes(32)])
    for _ in range(20):  # the watcher logs it (HOLD_PLACE by the regulator) once confirmed
        chain_rpc.request("evm_mine")
        api.node.watcher.tick()
        with api.node.db.session() as session:
            if session.get_one(Archive, archive_id).on_hold:
                break
    blocked = _destroy(api, "archivist", proposal, archive_id)
    assert (blocked.status_code, blocked.json()["code"]) == (409, "on_hold")
    listed = api.client.post(f"/api/v1/retention/proposals/{proposal}/destroy", headers=archivist)
    assert listed.json()["refused"] == [{"archive_id": archive_id, "code": "on_hold"}]
    assert _state(api, archive_id) == "DISPOSITION_REVIEW"
    api.node.worker.run_until_anchored(timeout=30)
    _verifies(api, chain, archive_id)


def test_a_regulator_hold_on_chain_not_yet_mirrored_blocks_destruction_and_transfer(
    dapi: Api,
    clock: SteppedClock,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    regulator: LocalAccount,
    hospital_b: LocalAccount,
) -> None:
    """A regulator's hold mined on chain but not yet seen by the node's watcher (no tick here):
    the node reads the archive's custody record before destroying a key or wrapping one for a
    transfer (``node.custodyguard``), so the destruction is refused with 409 ``on_hold`` and its
    key, ciphertext and log stay as they were; in a list the held archive is skipped and the
    other destroyed; an offer of another held archive is refused before anything is logged.
    (Before, the node destroyed the key and ciphertext and its ``destroy`` call then reverted:
    content gone, the chain still showing the archive held, the bundle invalid for good.)"""
    api, archivist = dapi, dapi.auth("archivist")
    today = clock.now.date()
    held, free = _archive(api, today), _archive(api, today)
    api.node.worker.run_until_anchored(timeout=30)
    _travel(clock, chain_rpc, datetime.combine(add_years(today, 15), time(), UTC) + timedelta(1))
    assert api.client.post("/api/v1/retention/run", headers=archivist).is_success
    offered = _archive(api, clock.now.date())  # archived now: not due, free to transfer
    api.node.worker.run_until_anchored(timeout=30)
    with api.node.db.session() as session:
        assert session.get_one(Archive, offered).chain_status == "registered"
    proposal = api.client.post(
        "/api/v1/retention/proposals",
        headers=archivist,
        json={"archive_ids": [held, free], "reason": "expired"},
    ).json()["id"]
    for archive_id in (held, free):
        assert _decide(api, "manager", proposal, archive_id, approve=True).is_success
    writer = ContractWriter(chain, regulator)
    for archive_id in (held, offered):
        writer.transact("placeHold", [archive_key(archive_id), bytes(32)])
    files = _blob_files(api)

    blocked = _destroy(api, "archivist", proposal, held)
    assert (blocked.status_code, blocked.json()["code"]) == (409, "on_hold")
    assert "on hold on chain" in blocked.json()["message"]
    listed = api.client.post(f"/api/v1/retention/proposals/{proposal}/destroy", headers=archivist)
    assert listed.status_code == 200, listed.text
    assert listed.json()["refused"] == [{"archive_id": held, "code": "on_hold"}]
    assert [d["archive_id"] for d in listed.json()["destroyed"]] == [free]
    assert _state(api, held) == "DISPOSITION_REVIEW"
    with api.node.db.session() as session:
        live = (
            session.execute(
                select(WrappedKey).where(
                    WrappedKey.archive_id == held, WrappedKey.destroyed_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
    assert live  # the held archive's key is intact
    assert len(_blob_files(api)) == len(files) - 1  # only the free archive's ciphertext went

    transfer = api.client.post(
        f"/api/v1/archives/{offered}/transfers", headers=archivist, json={"to": hospital_b.address}
    )
    assert (transfer.status_code, transfer.json()["code"]) == (409, "on_hold")
    events = api.client.get(f"/api/v1/archives/{offered}/events", headers=archivist).json()
    assert "TRANSFER_OFFER" not in [e["type"] for e in events]
    with api.node.db.session() as session:
        holders = (
            session.execute(select(WrappedKey.holder).where(WrappedKey.archive_id == offered))
            .scalars()
            .all()
        )
    assert not [h for h in holders if h.startswith("member:")]

    for _ in range(20):  # the watcher then mirrors both holds; every bundle verifies
        chain_rpc.request("evm_mine")
        api.node.watcher.tick()
        with api.node.db.session() as session:
            if all(session.get_one(Archive, a).on_hold for a in (held, offered)):
                break
    api.node.worker.run_until_anchored(timeout=30)
    for archive_id in (held, free, offered):
        _verifies(api, chain, archive_id)


def test_a_regulator_hold_on_an_archive_destroyed_here_is_an_alert_not_a_frozen_watcher(
    dapi: Api,
    clock: SteppedClock,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    regulator: LocalAccount,
) -> None:
    """The archive is destroyed here while its DESTROY still waits in the outbox (the chain has
    it live), and a regulator's placeHold lands on chain meanwhile: this node cannot log the hold
    (the lifecycle refuses HOLD_PLACE after DESTROY). The watcher raises a critical
    ``chain_event_unapplied`` alert on the archive and goes on: its cursor moves past the event,
    and a later regulator hold on another archive is mirrored. (It used to stop at that event
    for good, failing every tick, with ``/healthz`` ok.)"""
    api, archivist = dapi, dapi.auth("archivist")
    today = clock.now.date()
    gone = _archive(api, today)
    kept = _archive(api, today, "INPATIENT")  # 30 years: still ARCHIVED after the journey
    api.node.worker.run_until_anchored(timeout=30)
    _travel(clock, chain_rpc, datetime.combine(add_years(today, 15), time(), UTC) + timedelta(1))
    assert api.client.post("/api/v1/retention/run", headers=archivist).is_success
    proposal = api.client.post(
        "/api/v1/retention/proposals",
        headers=archivist,
        json={"archive_ids": [gone], "reason": "expired"},
    ).json()["id"]
    assert _decide(api, "manager", proposal, gone, approve=True).is_success
    destroyed = _destroy(api, "archivist", proposal, gone)
    assert destroyed.status_code == 200, destroyed.text
    assert _state(api, gone) == "DESTROYED"
    assert chain.custody(gone).state is not CustodyState.DESTROYED  # not sent yet

    regulator_writer = ContractWriter(chain, regulator)
    signed = regulator_writer.sign_call(
        "placeHold", [archive_key(gone), bytes(32)], regulator_writer.pending_nonce()
    )
    relayed = api.client.post(  # the node relays no hold on an archive it destroyed …
        f"/api/v1/regulator/holds/{gone}",
        json={"signed_transaction": "0x" + signed.raw.hex()},
        headers=bearer(_regulator_token(api, clock, regulator)),
    )
    assert (relayed.status_code, relayed.json()["code"]) == (409, "destroyed")
    first = regulator_writer.transact("placeHold", [archive_key(gone), bytes(32)])  # … directly
    later = regulator_writer.transact("placeHold", [archive_key(kept), b"\x01" * 32])
    assert later.block_number > first.block_number
    for _ in range(20):  # confirmed after one more block (watcher_confirmations = 1)
        chain_rpc.request("evm_mine")
        api.node.watcher.tick()
        if _on_hold(api, kept):
            break
    assert _on_hold(api, kept), api.node.watcher.status.last_error  # mirrored all the same
    with api.node.db.session() as session:
        assert session.get_one(ChainCursor, "contracts").block >= later.block_number
        kept_row = session.get_one(Archive, kept)
        assert kept_row.hold_by_regulator is True
        assert (session.get_one(Archive, gone).state, session.get_one(Archive, gone).on_hold) == (
            "DESTROYED",
            False,
        )
    events = api.client.get(f"/api/v1/archives/{kept}/events", headers=archivist).json()
    assert (events[-1]["type"], events[-1]["event"]["actor"]) == ("HOLD_PLACE", regulator.address)
    assert api.node.watcher.status.last_error is None
    assert api.node.watcher.status.events_unapplied == 1
    assert not api.node.watcher.stalled()

    alerts = api.node.alert_store.open_for(["chain_event_unapplied"])
    assert [(a.subject, a.severity.value, a.count) for a in alerts] == [(gone, "critical", 1)]
    assert alerts[0].detail == {
        "event": "HoldPlaced",
        "block": first.block_number,
        "log_index": first.events[0].log_index,
        "reason": "archive_destroyed",
    }
    chain_rpc.request("evm_mine")
    api.node.watcher.tick()  # the event is behind the cursor: not seen, not alerted again
    assert [a.count for a in api.node.alert_store.open_for(["chain_event_unapplied"])] == [1]
    health = api.client.get("/healthz").json()
    assert "watcher_stalled" not in health["problems"]
    assert health["watcher"]["cursor"] >= later.block_number

    # The regulator releases; the queued DESTROY then lands on chain. From then on the chain
    # agrees: the release, and the whole history replayed from the start, raise nothing more.
    regulator_writer.transact("releaseHold", [archive_key(gone), bytes(32)])
    api.node.worker.run_until_anchored(timeout=30)
    assert chain.custody(gone).state is CustodyState.DESTROYED
    chain_rpc.request("evm_mine")
    api.node.watcher.tick()
    with api.node.db.transaction() as session:
        session.get_one(ChainCursor, "contracts").block = first.block_number - 1
    api.node.watcher.status.cursor = None
    chain_rpc.request("evm_mine")
    api.node.watcher.tick()
    assert api.node.watcher.status.cursor is not None
    assert api.node.watcher.status.cursor > later.block_number
    assert [a.count for a in api.node.alert_store.open_for(["chain_event_unapplied"])] == [1]
    assert _on_hold(api, kept)


def _regulator_token(api: Api, clock: SteppedClock, regulator: LocalAccount) -> str:
    """A regulator's sign-in on the node's (travelled) clock."""
    now = clock.now
    message = message_for(
        api,
        regulator,
        issued_at=format_time(now),
        expiration_time=format_time(now + timedelta(minutes=5)),
    )
    response = submit(api, message, regulator)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _on_hold(api: Api, archive_id: str) -> bool:
    with api.node.db.session() as session:
        return bool(session.get_one(Archive, archive_id).on_hold)


def test_a_restored_pg_dump_cannot_resurrect_a_destroyed_key(
    make_node: MakeNode,
    consortium: Consortium,
    hospital_a: LocalAccount,
    clock: SteppedClock,
    chain_rpc: JsonRpc,
    tmp_path: Path,
) -> None:
    """The PostgreSQL form of the test above: ``pg_dump`` of the node's schema taken after
    approval, destroy, drop the schema and ``pg_restore`` the dump (its key copy is live again in
    the database): the start replays the tombstone ledger, the key is gone, content answers 410."""
    base = postgres_url()
    if base is None:
        pytest.skip("ARCHIVECHAIN_TEST_POSTGRES_URL is not set")
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    libpq = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    database_url = _schema_url(base, schema)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        node = make_node(database_url=database_url, clock=clock)
        data_dir = node.settings.data_dir
        dump = tmp_path / "node.dump"
        with serve(create_app(node)) as client:
            keys = issue_keys(node)
            keys["manager"] = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
            api = Api(node=node, app=create_app(node), client=client, keys=keys)
            archive_id = _archive(api, clock.now.date())
            api.node.worker.run_until_anchored(timeout=30)
            deadline = datetime.combine(add_years(clock.now.date(), 15), time(), UTC)
            _travel(clock, chain_rpc, deadline + timedelta(days=1))
            assert api.client.post(
                "/api/v1/retention/run", headers=api.auth("archivist")
            ).is_success
            proposal = api.client.post(
                "/api/v1/retention/proposals",
                headers=api.auth("archivist"),
                json={"archive_ids": [archive_id], "reason": "expired"},
            ).json()["id"]
            assert _decide(api, "manager", proposal, archive_id, approve=True).is_success
            subprocess.run(
                ["pg_dump", "--format=custom", f"--schema={schema}", f"--file={dump}", libpq],
                check=True,
                capture_output=True,
            )
            assert _destroy(api, "archivist", proposal, archive_id).status_code == 200
            blobs_after = _blob_files(api)
        node.close()

        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={libpq}", str(dump)],
            check=True,
            capture_output=True,
        )
        with admin.connect() as conn:  # the restored dump holds the live key copy again
            live = conn.execute(
                text(
                    f'SELECT count(*) FROM "{schema}".wrapped_keys '
                    "WHERE archive_id = :a AND blob IS NOT NULL"
                ),
                {"a": archive_id},
            ).scalar_one()
            state = conn.execute(
                text(f'SELECT state FROM "{schema}".archives WHERE id = :a'), {"a": archive_id}
            ).scalar_one()
        assert (live, state) == (1, "DISPOSITION_REVIEW")

        reopened = build_node(
            consortium, hospital_a, data_dir, database_url=database_url, clock=clock
        )
        try:
            with reopened.db.session() as session:
                copies = list(
                    session.execute(
                        select(WrappedKey).where(WrappedKey.archive_id == archive_id)
                    ).scalars()
                )
                assert copies
                assert all(k.blob is None and k.destroyed_at is not None for k in copies)
                row = session.get_one(Archive, archive_id)
                assert (row.state, row.title, row.search_text, row.metadata_json) == (
                    "DESTROYED",
                    "",
                    "",
                    {},
                )
            with serve(create_app(reopened)) as client:
                api = Api(node=reopened, app=create_app(reopened), client=client, keys=keys)
                content = api.client.get(
                    f"/api/v1/archives/{archive_id}/content",
                    headers=api.auth("archivist"),
                    params={"purpose": "operations"},
                )
                assert (content.status_code, content.json()["code"]) == (410, "destroyed")
                again = _destroy(api, "archivist", proposal, archive_id)
                assert (again.status_code, again.json()["code"]) == (409, "destroyed")
                assert _blob_files(api) == blobs_after
        finally:
            reopened.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
