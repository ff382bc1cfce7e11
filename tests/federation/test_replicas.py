"""Encrypted replicas and log replication between three real nodes over real HTTP, on anvil
(docs/recovery.md): placement by rendezvous hashing, ciphertext only at the holder, challenges,
repair of a wiped blob directory, a corrupt replica caught and moved, refusals of the peer API,
and a log rebuilt from peers in which a lying peer is caught by the on-chain roots."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from sqlalchemy import delete, func, select, update

from anchoring import storage
from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from node import migrations
from node.db import Database
from node.errors import UnavailableError
from node.models import Alert, ArchiveVersion, HeldReplica, Replica, ShippedEntry, WrappedKey
from node.peers import CONTENT_SHA256, sign_headers, sign_headers_for
from node.recovery import rebuild_log
from node.services.audits import AuditScope
from node.services.replicas import ReplicaHolder, challenge_answer, rendezvous
from tests.federation.conftest import (
    Hospital,
    listen,
    own_databases,
    running_hospitals,
    start_hospital,
    wait_for,
)
from tests.fixtures.chain import Consortium

CONTENT = b"Discharge summary: replicated at a peer hospital, readable only here. " * 300
MANUAL = {"replica_tick": 3600.0, "log_ship_tick": 3600.0}


@pytest.fixture
def nodes(
    consortium: Consortium, chain: RpcChain, tmp_path: Path, hospital_a, hospital_b, hospital_c
) -> Iterator[dict[str, Hospital]]:
    """A, B and C with the replica and log-shipping jobs left to the test."""
    accounts = {"A": hospital_a, "B": hospital_b, "C": hospital_c}
    with running_hospitals(consortium, accounts, tmp_path, **MANUAL) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgres"])
def nodes_on_both(
    request: pytest.FixtureRequest,
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a,
    hospital_b,
    hospital_c,
) -> Iterator[dict[str, Hospital]]:
    """``nodes``, on SQLite or each on its own PostgreSQL schema."""
    accounts = {"A": hospital_a, "B": hospital_b, "C": hospital_c}
    with ExitStack() as stack:
        urls = own_databases(stack, request.param, accounts)
        yield stack.enter_context(running_hospitals(consortium, accounts, tmp_path, urls, **MANUAL))


def upload(hospital: Hospital, content: bytes = CONTENT) -> str:
    metadata = {
        "record_class": "INPATIENT",
        "department": "general",
        "title": "Discharge summary",
        "source_system": "HIS",
        "patient_id": "MRN-7",
    }
    with hospital.client() as api:
        response = api.post(
            "/archives",
            files={"file": ("summary.txt", content, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def events(hospital: Hospital, archive_id: str) -> list[dict[str, object]]:
    with hospital.runtime.db.session() as session:
        return [
            json.loads(entry.event) for entry in storage.entries_for_archive(session, archive_id)
        ]


def holder_of(nodes: dict[str, Hospital], archive_id: str) -> Hospital:
    a = nodes["A"]
    chosen = rendezvous(archive_id, [nodes["B"].address, nodes["C"].address], 1)[0]
    return next(h for h in nodes.values() if h.address == chosen and h is not a)


def placed_once(nodes: dict[str, Hospital]) -> tuple[Hospital, str, Hospital, Hospital]:
    """A uploads an archive and places its one replica: (A, archive id, holder, the other)."""
    a = nodes["A"]
    archive_id = upload(a)
    assert a.runtime.replicas.place().placed == 1
    holder = holder_of(nodes, archive_id)
    return a, archive_id, holder, next(h for h in nodes.values() if h not in (a, holder))


def replica_actions(hospital: Hospital, archive_id: str) -> list[str]:
    """The ``action`` of each REPLICA event of the archive in the hospital's log, in order."""
    return [e["data"]["action"] for e in events(hospital, archive_id) if e["type"] == "REPLICA"]  # type: ignore[index]


def held_bytes(holder: Hospital, custodian: str, archive_id: str) -> bytes:
    with holder.runtime.db.session() as session:
        row = session.execute(
            select(HeldReplica).where(
                HeldReplica.custodian == custodian,
                HeldReplica.archive_id == archive_id,
                HeldReplica.version == 1,
            )
        ).scalar_one()
        cid = row.cid
    return b"".join(holder.runtime.replica_holder.store.open_stream(cid))


def test_a_replica_is_ciphertext_at_the_rendezvous_peer_and_repairs_a_wiped_store(
    nodes: dict[str, Hospital], chain: RpcChain
) -> None:
    a = nodes["A"]
    archive_id = upload(a)
    report = a.runtime.replicas.place()
    assert report.placed == 1, report.problems
    holder = holder_of(nodes, archive_id)
    other = next(h for h in nodes.values() if h not in (a, holder))

    # The holder has the ciphertext (the hash the log recorded), never the key or the text.
    stored = held_bytes(holder, a.address, archive_id)
    created = events(a, archive_id)[0]
    assert hashlib.sha256(stored).hexdigest() == created["data"]["ciphertext_sha256"]  # type: ignore[index]
    assert CONTENT[:64] not in stored
    with holder.runtime.db.session() as session:
        assert not session.execute(
            select(WrappedKey).where(WrappedKey.archive_id == archive_id)
        ).first()
    with other.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()
    placed = events(a, archive_id)[-1]
    assert placed["type"] == "REPLICA"
    assert placed["data"] == {  # type: ignore[comparison-overlap]
        "action": "placed",
        "peer": holder.address,
        "version": 1,
        "ciphertext_sha256": created["data"]["ciphertext_sha256"],  # type: ignore[index]
    }
    assert a.runtime.replicas.place().placed == 0  # k = 1 is reached: nothing more

    # A challenge over a random range passes and is logged.
    assert a.runtime.replicas.challenge().verified == 1
    assert events(a, archive_id)[-1]["data"]["action"] == "verified"  # type: ignore[index]

    # The blob directory is wiped: the fixity audit sees it missing and repairs from the replica.
    shutil.rmtree(a.runtime.settings.blob_dir)
    audit = a.runtime.fixity.audit(None, AuditScope())
    assert [f.problem for f in audit.failures] == ["blob_missing"]
    kinds = [e["type"] for e in events(a, archive_id)]
    assert kinds[-2:] == ["FIXITY_CHECK", "REPAIR"]
    assert events(a, archive_id)[-1]["data"]["source"] == holder.address  # type: ignore[index]
    with a.client() as api:
        read = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
    audited = a.runtime.fixity.audit(None, AuditScope())
    assert (audited.passed, audited.replicas_verified, audited.replicas_failed) == (1, 1, 0)

    # Every event, the replica ones included, verifies against the chain.
    a.runtime.worker.run_until_anchored(timeout=30)
    with a.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    verified = verify_bundle(parse_bundle(document), chain)
    assert verified.ok, verified.to_text()


def _version_cid(hospital: Hospital, archive_id: str) -> str:
    with hospital.runtime.db.session() as session:
        return str(
            session.execute(
                select(ArchiveVersion.cid).where(ArchiveVersion.archive_id == archive_id)
            ).scalar_one()
        )


def _local_blob(hospital: Hospital, archive_id: str) -> Path:
    return hospital.runtime.blobs.path_of(_version_cid(hospital, archive_id))  # type: ignore[attr-defined,no-any-return]


def _read(hospital: Hospital, archive_id: str) -> httpx.Response:
    with hospital.client() as api:
        return api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})


def test_reads_of_a_wiped_or_corrupt_blob_wait_for_its_repair_from_the_replica(
    nodes: dict[str, Hospital],
) -> None:
    a = nodes["A"]
    wiped, corrupt, lost = (upload(a, CONTENT + bytes([n])) for n in range(3))
    assert a.runtime.replicas.place().placed == 3
    originals = {i: _local_blob(a, i).read_bytes() for i in (wiped, corrupt, lost)}

    # The blob directory is wiped; four readers at once all get the content, and the blob is
    # fetched and logged once (concurrent repairs of one version wait for each other).
    shutil.rmtree(a.runtime.settings.blob_dir)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _read(a, wiped), range(4)))
    assert [r.status_code for r in answers] == [200] * 4, answers[0].text
    assert all(r.content == CONTENT + b"\x00" for r in answers)
    kinds = [e["type"] for e in events(a, wiped)]
    assert kinds.count("REPAIR") == 1
    assert kinds.count("ACCESS") == 4
    assert _local_blob(a, wiped).read_bytes() == originals[wiped]

    # The disclosure and transfer paths open through the same reader: a missing blob comes back.
    assert not _local_blob(a, corrupt).exists()
    assert (
        b"".join(a.runtime.readback.ciphertext(corrupt, 1, _version_cid(a, corrupt)))
        == (originals[corrupt])
    )
    assert [e["type"] for e in events(a, corrupt)][-1] == "REPAIR"

    # A flipped byte in the first chunk fails authentication: the read repairs, then answers.
    blob = _local_blob(a, corrupt)
    data = bytearray(blob.read_bytes())
    data[200] ^= 0x01
    blob.write_bytes(bytes(data))
    read = _read(a, corrupt)
    assert read.status_code == 200, read.text
    assert read.content == CONTENT + b"\x01"
    assert [e["type"] for e in events(a, corrupt)][-2:] == ["ACCESS", "REPAIR"]
    assert blob.read_bytes() == originals[corrupt]

    # A replica that delivers other bytes repairs nothing: the read fails as before, without
    # details, and the replica is recorded as failed with a critical alert.
    holder = holder_of(nodes, lost)
    with holder.runtime.db.session() as session:
        held = session.execute(
            select(HeldReplica.cid).where(HeldReplica.archive_id == lost, HeldReplica.version == 1)
        ).scalar_one()
    held_path = holder.runtime.replica_holder.store.path_of(held)  # type: ignore[attr-defined]
    bad = bytearray(held_path.read_bytes())
    bad[-1] ^= 0x01
    held_path.write_bytes(bytes(bad))
    assert not _local_blob(a, lost).exists()  # wiped with the others, never read since
    refused = _read(a, lost)
    assert refused.status_code == 500
    assert refused.json()["code"] == "blob_not_found"
    assert "REPAIR" not in [e["type"] for e in events(a, lost)]
    assert replica_actions(a, lost) == ["placed", "failed"]
    with a.runtime.db.session() as session:
        alert = session.execute(select(Alert).where(Alert.kind == "replica_failed")).scalar_one()
        assert alert.subject == lost
    assert not _local_blob(a, lost).exists()  # the wrong bytes were not kept


def test_a_corrupt_replica_fails_its_challenge_and_moves_to_another_peer(
    nodes: dict[str, Hospital],
) -> None:
    a, archive_id, holder, other = placed_once(nodes)
    with holder.runtime.db.session() as session:
        cid = session.execute(select(HeldReplica.cid).where(HeldReplica.version == 1)).scalar_one()
    path = holder.runtime.replica_holder.store.path_of(cid)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 512):  # every challenge range meets a flipped byte
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))

    # The fixity audit (here through the API) checks the local blob and challenges the replica.
    with a.client() as api:
        answer = api.post("/audits/fixity", json={"scope": "all"})
    assert answer.status_code == 200, answer.text
    audited = answer.json()
    assert (audited["passed"], audited["failed"]) == (1, 0)
    assert (audited["replicas_verified"], audited["replicas_failed"]) == (0, 1)
    assert events(a, archive_id)[-1]["data"]["action"] == "failed"  # type: ignore[index]
    with a.runtime.db.session() as session:
        alert = session.execute(select(Alert).where(Alert.kind == "replica_failed")).scalar_one()
        assert alert.subject == archive_id

    # The replica moves: placed at the other peer, then the failed one is dropped at the holder.
    moved = a.runtime.replicas.place()
    assert moved.placed == 1
    assert held_bytes(other, a.address, archive_id)
    dropped = a.runtime.replicas.drop_unneeded()
    assert dropped.dropped == 1
    assert replica_actions(a, archive_id) == ["placed", "failed", "placed", "dropped"]
    with holder.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()
    with a.runtime.db.session() as session:
        states = dict(session.execute(select(Replica.peer, Replica.state)).all())
    assert states == {holder.address: "dropped", other.address: "active"}
    audited_again = a.runtime.fixity.audit(None, AuditScope())
    assert (audited_again.replicas_verified, audited_again.replicas_failed) == (1, 0)
    # Just verified by the audit: the replica job does not challenge it again for a day.
    assert a.runtime.replicas.challenge().verified == 0
    assert a.runtime.replicas.challenge(every=True).verified == 1


def test_a_peer_that_refuses_or_stops_answering_loses_the_replica(
    nodes: dict[str, Hospital],
) -> None:
    a, archive_id, holder, other = placed_once(nodes)

    def alert_reason() -> str:
        with a.runtime.db.session() as session:
            alert = session.execute(
                select(Alert).where(Alert.kind == "replica_failed")
            ).scalar_one()
            assert alert.subject == archive_id
            return str(alert.detail["reason"])

    # The holder forgets the replica behind the custodian's back and refuses (404): the next
    # fixity audit's challenge fails it at once, with an alert; the replica moves.
    with holder.runtime.db.session() as session:
        session.execute(delete(HeldReplica).where(HeldReplica.archive_id == archive_id))
        session.commit()
    audited = a.runtime.fixity.audit(None, AuditScope())
    assert (audited.passed, audited.replicas_verified, audited.replicas_failed) == (1, 0, 1)
    assert alert_reason() == "refused_404"
    assert a.runtime.replicas.place().placed == 1
    assert held_bytes(other, a.address, archive_id)
    assert a.runtime.replicas.drop_unneeded().dropped == 1
    assert replica_actions(a, archive_id) == ["placed", "failed", "placed", "dropped"]

    # The new holder goes down: unanswered challenges are not a failure while the peer may just
    # be down for a while (no event, no alert, the replica stays); once it has not answered
    # three challenges in a row and for an hour since the replica last answered, the next
    # unanswered challenge fails it, and the replica moves back to the first peer.
    other.server.should_exit = True
    other.thread.join(10)
    for attempt in (1, 2, 3):
        report = a.runtime.replicas.challenge()
        assert (report.verified, report.failed, report.unavailable) == (0, 0, 1)
        assert any("did not answer" in problem for problem in report.problems)
        with a.runtime.db.session() as session:
            row = session.execute(select(Replica).where(Replica.peer == other.address)).scalar_one()
            assert (row.state, row.failures) == ("active", attempt)
    assert replica_actions(a, archive_id) == ["placed", "failed", "placed", "dropped"]
    with a.runtime.db.session() as session:
        session.execute(
            update(Replica)
            .where(Replica.peer == other.address)
            .values(placed_at=datetime.now(UTC) - timedelta(hours=2))
        )
        session.commit()
    report = a.runtime.replicas.challenge()
    assert (report.failed, report.unavailable) == (1, 0)
    assert alert_reason() == "unreachable"
    assert a.runtime.replicas.place().placed == 1
    assert held_bytes(holder, a.address, archive_id)
    assert replica_actions(a, archive_id) == [
        "placed",
        "failed",
        "placed",
        "dropped",
        "failed",
        "placed",
    ]


def test_a_holder_that_cannot_answer_now_keeps_its_replica_without_alerts(
    nodes_on_both: dict[str, Hospital], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder whose chain is down answers every peer request 503 (``dependency_unavailable``:
    it cannot check the caller's membership). That says nothing about the replica: no REPLICA
    ``failed``, no ``replica_failed`` alert, the replica stays where it is and passes its next
    challenge once the holder's chain is back (an adversarial test found one critical alert per
    archive, ``refused_503``, that stayed open after the chain recovered)."""
    a, archive_id, holder, other = placed_once(nodes_on_both)

    def chain_down(address: str, role: object) -> bool:
        raise UnavailableError("cannot read the registry: connection refused")

    monkeypatch.setattr(holder.runtime.members, "is_active", chain_down)
    holder.runtime.peer_verifier.forget_membership()
    with a.client() as api:
        answer = api.post("/audits/fixity", json={"scope": "all"})
    assert answer.status_code == 200, answer.text
    audited = answer.json()
    assert audited["passed"] == 1
    assert (audited["replicas_verified"], audited["replicas_failed"]) == (0, 0)
    assert audited["replicas_unavailable"] == 1
    for _ in range(4):  # more than UNREACHABLE_LIMIT in a row: still only unavailable
        report = a.runtime.replicas.challenge()
        assert (report.verified, report.failed, report.unavailable) == (0, 0, 1)
        assert any("503" in problem for problem in report.problems), report.problems
    # The custodian's own blob is gone meanwhile: the fetch from the holder answers 503 too,
    # which does not fail the replica (it is the copy the repair needs once the holder is back).
    local = _local_blob(a, archive_id)
    local.unlink()
    report = a.runtime.replicas.challenge()
    assert (report.failed, report.repaired, report.unavailable) == (0, 0, 1)
    assert a.runtime.replicas.place().placed == 0  # nothing moves
    with a.runtime.db.session() as session:
        assert not session.execute(select(Alert).where(Alert.kind == "replica_failed")).first()
        rows = session.execute(select(Replica.peer, Replica.state, Replica.failures)).all()
    assert [tuple(r) for r in rows] == [(holder.address, "active", 6)]
    assert replica_actions(a, archive_id) == ["placed"]
    with other.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()

    # The holder's chain is back: the next challenge repairs the local blob from the replica,
    # the one after passes.
    monkeypatch.undo()
    holder.runtime.peer_verifier.forget_membership()
    report = a.runtime.replicas.challenge()
    assert (report.repaired, report.failed, report.unavailable) == (1, 0, 0), report.problems
    assert local.exists()
    report = a.runtime.replicas.challenge()
    assert (report.verified, report.failed, report.unavailable) == (1, 0, 0), report.problems
    with a.runtime.db.session() as session:
        row = session.execute(select(Replica)).scalar_one()
        assert (row.state, row.failures) == ("active", 0)
    assert replica_actions(a, archive_id) == ["placed", "verified"]


def _signed(
    hospital: Hospital, account: object, method: str, path: str, body: bytes = b""
) -> httpx.Response:
    target = "/peer/v1" + path
    headers = sign_headers(account, method, target, body, hospital.address)  # type: ignore[arg-type]
    headers[CONTENT_SHA256] = hashlib.sha256(body).hexdigest()  # read by streamed uploads only
    return httpx.request(method, hospital.url + target, headers=headers, content=body, timeout=30)


def _headers_only(
    hospital: Hospital, target: str, headers: dict[str, str], length: int
) -> tuple[int, bytes]:
    """Send a POST's headers announcing ``length`` bytes and one byte of body, then wait (at most
    20 s) for the answer: (status, body). A node that read the body first never answers."""
    url = httpx.URL(hospital.url)
    lines = [f"POST {target} HTTP/1.1", f"Host: {url.host}", f"Content-Length: {length}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    with socket.create_connection((url.host, url.port or 80), timeout=20) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"[")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            assert chunk, "the node closed the connection without answering"
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        size = int(re.search(rb"(?i)content-length: *([0-9]+)", head)[1])  # type: ignore[index]
        while len(rest) < size:
            chunk = connection.recv(65536)
            assert chunk, "the node closed the connection mid-answer"
            rest += chunk
    return int(head.split(b" ")[1]), rest[:size]


def test_the_peer_api_refuses_strangers_other_custodians_and_bad_challenges(
    nodes: dict[str, Hospital], hospital_a, hospital_b, hospital_c
) -> None:
    a, b, c = nodes["A"], nodes["B"], nodes["C"]
    archive_id = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
    path = f"/replicas/{archive_id}/versions/1"
    stored = _signed(b, hospital_a, "PUT", path, b"ciphertext bytes")
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "sha256": hashlib.sha256(b"ciphertext bytes").hexdigest(),
        "size": 16,
    }

    # Not signed, or signed by a key that is not a member: refused before anything is stored.
    unsigned = httpx.put(b.url + "/peer/v1" + path, content=b"x")
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "peer_refused")
    stranger = Account.create()
    refused = _signed(b, stranger, "PUT", f"/replicas/{archive_id}/versions/2", b"x")
    assert (refused.status_code, refused.json()["code"]) == (401, "peer_refused")
    # Another hospital may neither fetch, challenge nor delete A's replica.
    deleted = _signed(b, hospital_c, "DELETE", path)  # names only C's own replicas: none
    assert deleted.json() == {"deleted": False}
    for method, suffix, body in (
        ("GET", "", b""),
        ("POST", "/challenge", json.dumps({"nonce": "00" * 32, "offset": 0, "length": 4}).encode()),
    ):
        answer = _signed(b, hospital_c, method, path + suffix, body)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["code"] == "replica_not_found", (method, answer.text)
    # Other bytes under the same name are refused; the same bytes are idempotent.
    conflict = _signed(b, hospital_a, "PUT", path, b"other bytes")
    assert (conflict.status_code, conflict.json()["code"]) == (409, "replica_conflict")
    assert _signed(b, hospital_a, "PUT", path, b"ciphertext bytes").status_code == 200

    # The custodian's challenge is answered over the range; bad challenges are 400.
    nonce = secrets.token_bytes(32)
    body = json.dumps({"nonce": nonce.hex(), "offset": 3, "length": 5}).encode()
    answer = _signed(b, hospital_a, "POST", path + "/challenge", body)
    assert answer.json() == {"sha256": challenge_answer(nonce, b"ciphertext bytes"[3:8])}
    for bad, code in (
        (b'{"nonce": "zz", "offset": 0, "length": 1}', "invalid_challenge"),
        (json.dumps({"nonce": "00" * 32, "offset": 10, "length": 7}).encode(), "invalid_challenge"),
        (json.dumps({"nonce": "00" * 32, "offset": -1, "length": 1}).encode(), "invalid_challenge"),
        (
            b'{"nonce": "' + b"00" * 32 + b'", "offset": 0, "length": 1, "x": 1}',
            "invalid_challenge",
        ),
        (b"[" * 5000 + b"]" * 5000, "json_too_deep"),
        (b"\xff\xfe not utf-8", "invalid_encoding"),
        (b'{"nonce": ', "invalid_challenge"),
    ):
        refused = _signed(b, hospital_a, "POST", path + "/challenge", bad)
        assert (refused.status_code, refused.json()["code"]) == (400, code), refused.text
    huge = _signed(b, hospital_a, "POST", "/log/entries", b" " * (17 * 1024 * 1024))
    assert (huge.status_code, huge.json()["code"]) == (413, "payload_too_large")
    # A log shipment (up to 16 MiB) is authenticated before a byte of its body is read: whoever
    # announces 16 MiB unsigned, signed by a stranger, or signed without announcing the digest
    # the signature covers, gets 401 while the body is still unsent (before, the node read and
    # held the 16 MiB first, per connection).
    target, length = "/peer/v1/log/entries", 16 * 1024 * 1024
    digest = hashlib.sha256(b"x" * length).hexdigest()
    signed = sign_headers_for(hospital_a, "POST", target, digest, b.address)
    for name, headers in {
        "unsigned": {CONTENT_SHA256: digest},
        "stranger": {**sign_headers_for(stranger, "POST", target, digest, b.address),
                     CONTENT_SHA256: digest},
        "no digest": sign_headers(hospital_a, "POST", target, b"x" * length, b.address),
        "another digest": {**signed, CONTENT_SHA256: hashlib.sha256(b"y").hexdigest()},
    }.items():  # fmt: skip
        status, reply = _headers_only(b, target, headers, length)
        assert (status, json.loads(reply)["code"]) == (401, "peer_refused"), name
    # Signed over its digest, the body is read; bytes that do not hash to it are refused.
    body = b'{"start": 0, "entries": []}'
    forged = httpx.post(
        b.url + target,
        headers={**sign_headers_for(hospital_a, "POST", target, digest, b.address),
                 CONTENT_SHA256: digest, "Content-Type": "application/json"},
        content=body,
        timeout=30,
    )  # fmt: skip
    assert (forged.status_code, forged.json()["code"]) == (401, "peer_refused"), forged.text
    assert "does not hash" in forged.json()["message"]
    # A log shipment that is not one is refused whole.
    for bad in (b'{"start": 0}', b'{"start": -1, "entries": []}', b'{"start": 0, "entries": [1]}'):
        refused = _signed(b, hospital_a, "POST", "/log/entries", bad)
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_shipment")
    gap = _signed(b, hospital_a, "POST", "/log/entries", b'{"start": 5, "entries": []}')
    assert (gap.status_code, gap.json()["code"]) == (409, "log_gap")

    # The quota per sender: a holder with a small quota refuses the replica that passes it.
    small = ReplicaHolder(
        settings=b.runtime.settings.model_copy(update={"replica_quota_bytes": 20}),
        db=b.runtime.db,
        units=b.runtime.committer,
        store=b.runtime.replica_holder.store,
        hospital=b.address,
    )
    with pytest.raises(Exception) as caught:
        small.accept(hospital_a.address, "01HZY3Z4Q8Q1V6S9N0M5K2J3H5", 1, b"0123456789")
    assert getattr(caught.value, "code", None) == "replica_quota_exceeded"
    assert small.held_for(hospital_a.address) == (1, 16)
    assert small.accept(c.address, "01HZY3Z4Q8Q1V6S9N0M5K2J3H5", 1, b"0123456789")["size"] == 10
    assert a.runtime.replica_holder.held_for(b.address) == (0, 0)


def test_a_log_rebuilt_from_peers_verifies_and_a_lying_peer_is_caught(
    nodes: dict[str, Hospital], chain: RpcChain, tmp_path: Path
) -> None:
    a, b, c = nodes["A"], nodes["B"], nodes["C"]
    for _ in range(3):
        upload(a)
    a.runtime.worker.run_until_anchored(timeout=30)
    shipped = a.runtime.log_shipping.ship()
    with a.runtime.db.session() as session:
        size = storage.current_size(session)
    assert shipped.shipped == {b.address: size, c.address: size}, shipped.problems
    assert a.runtime.log_shipping.ship().entries_sent == 0  # nothing new: nothing sent

    # B alters one entry it holds (still a well-formed event, other bytes).
    with b.runtime.db.transaction() as session:
        row = session.execute(
            select(ShippedEntry).where(ShippedEntry.custodian == a.address, ShippedEntry.index == 1)
        ).scalar_one()
        event = json.loads(row.event)
        event["time"] = "2020-01-01T00:00:00Z"
        session.execute(
            update(ShippedEntry)
            .where(ShippedEntry.custodian == a.address, ShippedEntry.index == 1)
            .values(event=json.dumps(event, separators=(",", ":"), sort_keys=True).encode())
        )

    # A fresh database (the node lost its own) is rebuilt from B then C.
    url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    migrations.upgrade(url)
    fresh = Database.connect(url)
    count = chain.checkpoint_count(a.address)
    checkpoints = [chain.checkpoint_at(a.address, i) for i in range(count)]

    def fetch(peer: str, start: int, limit: int) -> dict[str, object]:
        return a.runtime.remote.get_json(peer, f"/log/entries?start={start}&limit={limit}")

    try:
        report = rebuild_log(fresh, a.address, checkpoints, [b.address, c.address], fetch)
        assert report.lying == [b.address]
        assert report.source == c.address
        assert report.complete
        with fresh.session() as session, a.runtime.db.session() as original:
            assert (
                storage.current_head(session).root
                == storage.tree_head_at(original, storage.current_size(session)).root
            )
            assert storage.anchored_size(session) == checkpoints[-1].size
        assert report.archives_recreated == 3
    finally:
        fresh.dispose()


def _config(settings: object, path: Path, peers: dict[str, str]) -> Path:
    lines = [
        'mode = "dev"',
        f'data_dir = "{settings.data_dir}"',  # type: ignore[attr-defined]
        f'rpc_url = "{settings.rpc_url}"',  # type: ignore[attr-defined]
        f'deployment_file = "{settings.deployment_file}"',  # type: ignore[attr-defined]
        "[peers]",
        *(f'"{address}" = "{url}"' for address, url in peers.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _files_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_drill_a_node_restored_from_an_old_backup_gets_its_log_keys_and_blobs_from_peers(
    consortium: Consortium,
    nodes: dict[str, Hospital],
    chain: RpcChain,
    tmp_path: Path,
    hospital_a,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The drill's database scenario, through ``archivechain restore BACKUP --from-peers``: A's
    database is lost and restored from a backup older than its last checkpoint; the log comes back
    from B and C to the chain's checkpoint (verified), the blobs from replicas, and the keys and
    titles of the archives created after the backup from the key records at the replica holders
    (which hold neither plaintext nor an unwrapped key); A starts, anchors again, every archive
    reads and every proof verifies."""
    from archivechain import main
    from node.backup import LostEventsError, create_backup, restore_backup

    a = nodes["A"]
    before = [upload(a, CONTENT + bytes([i])) for i in range(2)]
    a.runtime.worker.run_until_anchored(timeout=30)
    backup = tmp_path / "a-old.tar"
    create_backup(a.runtime.settings, backup)
    after = [upload(a, CONTENT + bytes([10 + i])) for i in range(2)]
    with a.client() as api:  # a title only the lost database and the sealed records knew
        renamed = api.get(f"/archives/{after[0]}").json()
    placed = a.runtime.replicas.place()
    assert placed.placed == 4, placed.problems
    assert placed.records_sent == 4, placed.problems
    assert a.runtime.replicas.send_records().records_sent == 0  # up to date: nothing resent
    a.runtime.worker.run_until_anchored(timeout=30)
    assert not a.runtime.log_shipping.ship().problems
    with a.runtime.db.session() as session:
        acknowledged = storage.current_size(session)
        keys = {aid: a.runtime.keyring.own(session, aid).data_key for aid in [*before, *after]}

    # What the holders keep: ciphertext and opaque records, never the text, title or a data key.
    for holder in (nodes["B"], nodes["C"]):
        held = _files_under(holder.runtime.settings.replica_dir)
        with holder.runtime.db.session() as session:
            held += b"".join(
                bytes(r.event) for r in session.execute(select(ShippedEntry)).scalars()
            )
        assert CONTENT[:48] not in held
        assert b"Discharge summary" not in held
        assert b"MRN-7" not in held
        assert not any(key in held for key in keys.values())

    # B alone holds one more (unanchored) entry: not agreed by C, so not restored; after the
    # restore B must drop it, or the restored node's next entry would conflict there.
    with nodes["B"].runtime.db.transaction() as session:
        session.add(
            ShippedEntry(
                custodian=a.address,
                index=acknowledged,
                event=b'{"only":"at B"}',
                received_at=datetime.now(UTC),
            )
        )
    settings = a.runtime.settings
    port = a.port
    peers = dict(settings.peers)
    a.stop()
    shutil.rmtree(settings.data_dir)
    with pytest.raises(LostEventsError):  # alone, the old backup cannot anchor again
        restore_backup(backup, settings)
    shutil.rmtree(settings.data_dir)

    # Refused when no peer answers: exit 1, the node will not start.
    dead = {address: "http://127.0.0.1:9" for address in peers}
    assert main(["restore", str(backup), "--from-peers",
                 "--config", str(_config(settings, tmp_path / "dead.toml", dead))]) == 1  # fmt: skip
    assert "the log could not be rebuilt" in capsys.readouterr().err
    shutil.rmtree(settings.data_dir)

    config = _config(settings, tmp_path / "a.toml", peers)
    assert main(["restore", str(backup), "--from-peers", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 recreated from their events" in out, out  # created after the backup
    assert "2 archives' keys and titles from key records" in out, out
    assert "0 without a key" in out, out
    assert "4 fetched from replicas" in out, out  # the backup carried no blobs
    assert f"{acknowledged} events" in out  # no acknowledged event lost
    for holder in (nodes["B"], nodes["C"]):
        with holder.runtime.db.session() as session:
            held = session.execute(
                select(func.count()).where(ShippedEntry.custodian == a.address)
            ).scalar_one()
        assert held == acknowledged
    assert not (settings.data_dir / "RESTORE_UNVERIFIED").exists()

    restarted = start_hospital(
        "A", consortium, hospital_a, settings.data_dir, listen(port), peers, **MANUAL
    )
    nodes["A"] = restarted
    newer = upload(restarted)
    restarted.runtime.worker.run_until_anchored(timeout=30)
    shipped = restarted.runtime.log_shipping.ship()
    assert not shipped.problems, shipped.problems
    with restarted.runtime.db.session() as session:
        assert set(shipped.shipped.values()) == {storage.current_size(session)}
    with restarted.client() as api:
        for archive_id, content in (
            (before[0], CONTENT + b"\x00"),
            (after[0], CONTENT + bytes([10])),
            (after[1], CONTENT + bytes([11])),
        ):
            read = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
            assert read.status_code == 200, read.text
            assert read.content == content
        shown = api.get(f"/archives/{after[0]}").json()
        assert shown["title"] == renamed["title"] == "Discharge summary"
        assert shown["metadata"] == renamed["metadata"]
    with restarted.client("auditor") as api:
        for archive_id in [*before, *after, newer]:
            bundle = parse_bundle(api.get(f"/archives/{archive_id}/proof").content)
            verified = verify_bundle(bundle, chain)
            assert verified.ok, verified.to_text()


def test_a_restore_from_peers_after_a_destruction_verifies_without_the_destroyed_blob(
    nodes: dict[str, Hospital], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An archive destroyed after the backup: the catalogue rebuilt from peers replays it into
    DESTROYED and marks its blob deleted, and verification does not look for its ciphertext
    (which is legitimately gone), so ``restore --from-peers`` succeeds and the node may start."""
    from archivechain import main
    from node.backup import create_backup
    from node.principal import Role
    from tests.federation.test_destruction_shares import _archive_long_ago

    a = nodes["A"]
    kept = upload(a)
    archive_id = _archive_long_ago(a)
    assert a.runtime.replicas.place().placed == 2
    a.runtime.worker.run_until_anchored(timeout=30)
    backup = tmp_path / "a-before-destruction.tar"
    create_backup(a.runtime.settings, backup)
    manager = a.runtime.keys.issue(Role.RECORDS_MANAGER, "A-manager").secret
    with a.client() as api:
        assert api.post("/retention/run").is_success
        proposal = api.post(
            "/retention/proposals", json={"archive_ids": [archive_id], "reason": "expired"}
        ).json()["id"]
        approved = api.post(
            f"/retention/proposals/{proposal}/items/{archive_id}",
            headers={"Authorization": f"Bearer {manager}"},
            json={"approve": True, "reason": "reviewed"},
        )
        assert approved.is_success, approved.text
        destroyed = api.post(f"/retention/proposals/{proposal}/items/{archive_id}/destroy")
        assert destroyed.status_code == 200, destroyed.text
    assert a.runtime.replicas.drop_unneeded().dropped == 1
    a.runtime.worker.run_until_anchored(timeout=60)
    assert not a.runtime.log_shipping.ship().problems
    settings = a.runtime.settings
    peers = dict(settings.peers)
    a.stop()
    shutil.rmtree(settings.data_dir)

    config = _config(settings, tmp_path / "a.toml", peers)
    assert main(["restore", str(backup), "--from-peers", "--config", str(config)]) == 0, (
        capsys.readouterr().err
    )
    assert not (settings.data_dir / "RESTORE_UNVERIFIED").exists()
    database = Database.connect(settings.resolved_database_url)
    try:
        with database.session() as session:
            gone = {
                v.archive_id: v.blob_deleted_at
                for v in session.execute(select(ArchiveVersion)).scalars()
            }
            live_keys = session.execute(
                select(func.count()).where(
                    WrappedKey.archive_id == archive_id, WrappedKey.destroyed_at.is_(None)
                )
            ).scalar_one()
    finally:
        database.dispose()
    assert gone[archive_id] is not None  # the rebuild marks the destroyed blob deleted
    assert gone[kept] is None
    assert live_keys == 0  # the key the backup still held is destroyed again


def test_destruction_lists_the_replicas_and_deletes_them_at_the_holder(
    nodes: dict[str, Hospital], chain: RpcChain
) -> None:
    from node.principal import Role
    from tests.federation.test_destruction_shares import _archive_long_ago

    a = nodes["A"]
    archive_id = _archive_long_ago(a)
    assert a.runtime.replicas.place().placed == 1
    holder = holder_of(nodes, archive_id)
    manager = a.runtime.keys.issue(Role.RECORDS_MANAGER, "A-manager").secret
    with a.client() as api:
        assert api.post("/retention/run").is_success
        proposal = api.post(
            "/retention/proposals", json={"archive_ids": [archive_id], "reason": "expired"}
        ).json()["id"]
        approved = api.post(
            f"/retention/proposals/{proposal}/items/{archive_id}",
            headers={"Authorization": f"Bearer {manager}"},
            json={"approve": True, "reason": "reviewed"},
        )
        assert approved.is_success, approved.text
        destroyed = api.post(f"/retention/proposals/{proposal}/items/{archive_id}/destroy")
        assert destroyed.status_code == 200, destroyed.text
        certificate = api.get(f"/archives/{archive_id}/certificate").json()["certificate"]
    assert certificate["method"]["replicas_to_delete"] == [{"peer": holder.address, "version": 1}]
    with holder.runtime.db.session() as session:
        assert session.execute(select(HeldReplica)).first()  # until the replica job runs

    assert a.runtime.replicas.drop_unneeded().dropped == 1
    with holder.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()
    kinds = [(e["type"], e["data"].get("action")) for e in events(a, archive_id)]  # type: ignore[union-attr]
    assert kinds[-2:] == [("DESTROY", None), ("REPLICA", "dropped")]
    assert a.runtime.replicas.place().placed == 0  # a destroyed archive gets no new replica
    a.runtime.worker.run_until_anchored(timeout=60)
    with a.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()


def test_replicas_follow_custody_through_a_transfer_and_a_rebuild_takes_custody_from_the_chain(
    hospitals: dict[str, Hospital], chain: RpcChain, tmp_path: Path, hospital_a
) -> None:
    """A's replica of an archive it transfers to B is deleted at its holder once B accepts; B logs
    REPLICA dropped for the replica it inherited in the chain of events and places its own. A log
    rebuilt from peers is compared with the chain's custody: A's (honest, stale) log still says
    TRANSFER_PENDING, the chain says B holds it: reported and taken from the chain; an unanchored
    tail that two peers agree on but that puts a hold the chain does not know is refused."""
    from anchoring.events import HoldPlaceData, HoldPlaceEvent, canonical_bytes
    from anchoring.lifecycle import ArchiveStatus
    from node.models import Archive
    from tests.federation.test_flows import transfer_state, upload_and_archive

    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    archive_id = upload_and_archive(a)
    other = upload_and_archive(a)
    placed = a.runtime.replicas.place()
    assert placed.placed == 2, placed.problems
    assert placed.records_sent == 2, placed.problems
    holder = holder_of(hospitals, archive_id)
    assert held_bytes(holder, a.address, archive_id)

    with a.client() as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
        assert offered.status_code == 202, offered.text
    assert a.runtime.replicas.drop_unneeded().dropped == 0  # in transit: kept (may be cancelled)
    wait_for(lambda: transfer_state(b, archive_id, "in") == "accepted", 60, "B to accept")
    wait_for(lambda: transfer_state(a, archive_id, "out") == "accepted", 30, "A to see it")

    # A deletes its replica (and key record) at the holder: A no longer logs on the archive.
    before = len(events(a, archive_id))
    assert a.runtime.replicas.drop_unneeded().dropped == 1
    with holder.runtime.db.session() as session:
        assert not session.execute(
            select(HeldReplica).where(
                HeldReplica.custodian == a.address, HeldReplica.archive_id == archive_id
            )
        ).first()
    assert len(events(a, archive_id)) == before
    assert a.runtime.replicas.challenge().verified == 1  # only `other` is still A's

    # B releases the inherited replica in its own log, then places its own.
    released = b.runtime.replicas.release_inherited()
    assert released.dropped == 1, released.problems
    dropped = events(b, archive_id)[-1]
    assert (dropped["type"], dropped["data"]["action"], dropped["data"]["peer"]) == (  # type: ignore[index]
        "REPLICA",
        "dropped",
        holder.address,
    )
    assert b.runtime.replicas.release_inherited().dropped == 0
    mine = b.runtime.replicas.place()
    assert mine.placed == 1, mine.problems
    assert mine.records_sent == 1, mine.problems
    new_holder = rendezvous(archive_id, [a.address, c.address], 1)[0]
    placed_event = events(b, archive_id)[-1]
    assert placed_event["data"]["action"] == "placed"  # type: ignore[index]
    assert placed_event["data"]["peer"] == new_holder  # type: ignore[index]
    assert b.runtime.replicas.challenge().verified == 1
    b.runtime.worker.run_until_anchored(timeout=30)
    with b.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    verified = verify_bundle(parse_bundle(document), chain)
    assert verified.ok, verified.to_text()

    # A's log, shipped to B and C, rebuilt into a fresh database with the chain's custody.
    a.runtime.worker.run_until_anchored(timeout=30)
    assert not a.runtime.log_shipping.ship().problems
    with a.runtime.db.session() as session:
        size = storage.current_size(session)
        row = session.get(Archive, other)
        assert row is not None
        head = a.runtime.ledger.state(session, row).head
    # B and C both hold the same forged unanchored entry: a hold on `other` the chain never saw.
    forged = HoldPlaceEvent(
        hospital=a.address,
        log_index=size,
        archive_id=other,
        actor=a.address,
        time=datetime.now(UTC),
        prev=head,
        data=HoldPlaceData(reason_hash="11" * 32, by_regulator=False),
    )
    for peer in (b, c):
        with peer.runtime.db.transaction() as session:
            session.add(
                ShippedEntry(
                    custodian=a.address,
                    index=size,
                    event=canonical_bytes(forged),
                    received_at=datetime.now(UTC),
                )
            )
    url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    migrations.upgrade(url)
    fresh = Database.connect(url)
    checkpoints = [
        chain.checkpoint_at(a.address, i) for i in range(chain.checkpoint_count(a.address))
    ]
    assert checkpoints[-1].size == size
    # Anchored entries are never dropped at a holder, whoever asks.
    below = _signed(b, hospital_a, "POST", "/log/truncate", json.dumps({"size": size - 1}).encode())
    assert (below.status_code, below.json()["code"]) == (409, "log_anchored")

    def fetch(peer: str, start: int, limit: int) -> dict[str, object]:
        return a.runtime.remote.get_json(peer, f"/log/entries?start={start}&limit={limit}")

    try:
        report = rebuild_log(
            fresh, a.address, checkpoints, [b.address, c.address], fetch, custody=chain.custody
        )
        assert report.complete, report.problems
        assert not report.lying, report.problems
        assert report.tail_refused == 1, report.problems
        assert report.tail_recovered == 0, report.problems
        assert set(report.custody_mismatches) == {archive_id}
        with fresh.session() as session:
            assert storage.current_size(session) == size
            moved = session.get_one(Archive, archive_id)
            assert (moved.state, moved.custodian) == ("TRANSFERRED", b.address)
            kept = session.get_one(Archive, other)
            assert (kept.state, kept.custodian, kept.on_hold) == (
                ArchiveStatus.ARCHIVED.value,
                a.address,
                False,
            )
    finally:
        fresh.dispose()


def test_streamed_uploads_key_records_and_the_log_quota_refuse_what_they_must(
    nodes: dict[str, Hospital], hospital_a, hospital_c
) -> None:
    """A replica PUT is signed by its announced SHA-256 and streamed: bytes that are not the
    announced ones, an unsigned digest, a body above the limit or the quota are refused with
    nothing kept. Key records: only beside a held replica, exactly their fields, to their
    custodian only. A holder keeps at most ``log_quota_entries`` of a hospital's log."""
    from node.peers import sign_headers_for

    b = nodes["B"]
    archive_id = "01HZY3Z4Q8Q1V6S9N0M5K2J3H6"
    path = f"/replicas/{archive_id}/versions/1"
    target = "/peer/v1" + path
    body = b"streamed ciphertext " * 1000

    def put(chunks: object, digest: str, length: int | None = None) -> httpx.Response:
        headers = sign_headers_for(hospital_a, "PUT", target, digest, b.address)
        headers[CONTENT_SHA256] = digest
        if length is not None:
            headers["Content-Length"] = str(length)
        return httpx.put(b.url + target, headers=headers, content=chunks, timeout=30)  # type: ignore[arg-type]

    def stored_files() -> int:
        root = b.runtime.settings.replica_dir
        return sum(1 for p in root.rglob("*") if p.is_file() and ".part" not in p.name)

    files = stored_files()
    # Other bytes than the signed digest (streamed in chunks, no length): 400, nothing kept.
    wrong = put(iter([body[:5000], b"X" * 15000]), hashlib.sha256(body).hexdigest())
    assert (wrong.status_code, wrong.json()["code"]) == (400, "replica_digest_mismatch")
    assert stored_files() == files
    with b.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()
    # The digest header missing, or not the one signed: refused before a byte is stored.
    headers = sign_headers(hospital_a, "PUT", target, body, b.address)
    unsigned = httpx.put(b.url + target, headers=headers, content=body)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "peer_refused")
    forged_headers = sign_headers_for(hospital_a, "PUT", target, "00" * 32, b.address)
    forged_headers[CONTENT_SHA256] = hashlib.sha256(body).hexdigest()
    forged = httpx.put(b.url + target, headers=forged_headers, content=body)
    assert (forged.status_code, forged.json()["code"]) == (401, "peer_refused")
    # The right bytes, streamed in chunks: stored, answered with their digest and size.
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    ok = put(iter(chunks), hashlib.sha256(body).hexdigest(), len(body))
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    # Quota: refused from the declared length before the body is read.
    b.runtime.replica_holder.settings = b.runtime.settings.model_copy(
        update={"replica_quota_bytes": len(body) + 100}
    )
    try:
        other = f"/replicas/{archive_id}/versions/2"
        headers = sign_headers_for(hospital_a, "PUT", "/peer/v1" + other, "11" * 32, b.address)
        headers[CONTENT_SHA256] = "11" * 32
        over = httpx.put(b.url + "/peer/v1" + other, headers=headers, content=body)
        assert (over.status_code, over.json()["code"]) == (409, "replica_quota_exceeded")
    finally:
        b.runtime.replica_holder.settings = b.runtime.settings

    # Key records: only next to a held replica, exactly their fields, for their own archive.
    record = {"archive_id": archive_id, "kek_id": "k1", "key": "AAEC", "sealed": "AwQF"}
    lonely = "/replicas/01HZY3Z4Q8Q1V6S9N0M5K2J3H7/record"
    refused = _signed(
        b, hospital_a, "PUT", lonely, json.dumps({**record, "archive_id": lonely[10:36]}).encode()
    )
    assert (refused.status_code, refused.json()["code"]) == (404, "replica_not_found")
    for bad in (
        {**record, "extra": "x"},
        {**record, "archive_id": "01HZY3Z4Q8Q1V6S9N0M5K2J3H7"},
        {**record, "key": "not base64!"},
        {**record, "kek_id": ""},
        {**record, "sealed": 5},
    ):
        answer = _signed(
            b, hospital_a, "PUT", f"/replicas/{archive_id}/record", json.dumps(bad).encode()
        )
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_record"), bad
    stored = _signed(
        b, hospital_a, "PUT", f"/replicas/{archive_id}/record", json.dumps(record).encode()
    )
    assert stored.status_code == 200, stored.text
    assert _signed(b, hospital_a, "GET", f"/replicas/{archive_id}/record").json() == record
    other_reader = _signed(b, hospital_c, "GET", f"/replicas/{archive_id}/record")
    assert (other_reader.status_code, other_reader.json()["code"]) == (404, "replica_not_found")
    # Deleting the archive's last replica deletes its key record too.
    assert _signed(b, hospital_a, "DELETE", path).json() == {"deleted": True}
    gone = _signed(b, hospital_a, "GET", f"/replicas/{archive_id}/record")
    assert (gone.status_code, gone.json()["code"]) == (404, "replica_not_found")
    with b.runtime.db.session() as session:
        assert not session.execute(select(HeldReplica)).first()

    # Truncation of a shipped log: only past the sender's on-chain checkpoint (none yet: 0).
    for bad in (b"{}", b'{"size": -1}', b'{"size": true}', b"[1]", b'{"size": 1, "x": 2}'):
        refused = _signed(b, hospital_a, "POST", "/log/truncate", bad)
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_truncation"), bad

    # The shipped-log quota: entries beyond it are refused whole, the ones before stay.
    b.runtime.log_shipping.settings = b.runtime.settings.model_copy(update={"log_quota_entries": 3})
    try:
        entries = [base64.b64encode(b"entry %d" % i).decode() for i in range(4)]
        first = _signed(b, hospital_a, "POST", "/log/entries",
                        json.dumps({"start": 0, "entries": entries[:2]}).encode())  # fmt: skip
        assert first.json() == {"size": 2}
        over = _signed(b, hospital_a, "POST", "/log/entries",
                       json.dumps({"start": 2, "entries": entries[2:]}).encode())  # fmt: skip
        assert (over.status_code, over.json()["code"]) == (409, "log_quota_exceeded")
        again = _signed(b, hospital_a, "POST", "/log/entries",
                        json.dumps({"start": 0, "entries": entries[:2]}).encode())  # fmt: skip
        assert again.json() == {"size": 2}  # what is held is still accepted idempotently
        with b.runtime.db.session() as session:
            held = session.execute(
                select(ShippedEntry.index).where(ShippedEntry.custodian == hospital_a.address)
            ).scalars()
            assert sorted(held) == [0, 1]
    finally:
        b.runtime.log_shipping.settings = b.runtime.settings
