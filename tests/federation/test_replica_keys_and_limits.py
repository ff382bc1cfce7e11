"""Key records across a KEK rotation, and the replica upload limit, over real HTTP on anvil
(docs/recovery.md §1): a rotation keeps the old KEK until every holder has the key record under the
new one, so a record still sealed under the old KEK restores (re-wrapped to the current KEK); once
the replica job has re-sent the records it retires the old KEK. A replica PUT over the holder's
limit gets 413 ``payload_too_large`` and an interrupted upload leaves no file behind. The node under
test runs on SQLite and on PostgreSQL (``database_url``)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select

from anchoring.chain import RpcChain
from api.main import MULTIPART_ALLOWANCE
from node.keyring import KEK_HOLDER_PREFIX, kek_holder
from node.models import HeldReplica, SearchTerm, WrappedKey
from node.peers import CONTENT_SHA256, sign_headers_for
from node.recovery import restore_records
from node.services.replicas import record_path, rendezvous
from tests.federation.conftest import Hospital, listen, running_hospitals, start_hospital, wait_for
from tests.federation.test_replicas import upload
from tests.fixtures.chain import Consortium

CONTENT = b"Operative note: replicated, its key record sealed under a rotated KEK. " * 200
MANUAL = {"replica_tick": 3600.0, "log_ship_tick": 3600.0}


@pytest.fixture
def nodes(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    database_url: str,
    hospital_a,
    hospital_b,
    hospital_c,
) -> Iterator[dict[str, Hospital]]:
    """A (on ``database_url``), B and C, the replica jobs left to the test."""
    accounts = {"A": hospital_a, "B": hospital_b, "C": hospital_c}
    with running_hospitals(
        consortium, accounts, tmp_path, {"A": database_url}, **MANUAL
    ) as started:
        yield started


def _lose_key(a: Hospital, archive_id: str) -> None:
    """A's database no longer has the archive's key (lost with the database, the archive
    recreated from the log): what ``restore --from-peers`` finds for archives after a backup."""
    with a.runtime.db.transaction() as session:
        session.execute(delete(WrappedKey).where(WrappedKey.archive_id == archive_id))


def _own_key_holders(a: Hospital, archive_id: str) -> list[str]:
    with a.runtime.db.session() as session:
        return list(
            session.execute(
                select(WrappedKey.holder).where(
                    WrappedKey.archive_id == archive_id,
                    WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"),
                    WrappedKey.blob.is_not(None),
                )
            ).scalars()
        )


def _read(a: Hospital, archive_id: str) -> bytes:
    with a.client() as api:
        response = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert response.status_code == 200, response.text
        return response.content


def test_a_key_record_under_a_rotated_kek_restores_and_the_old_kek_waits_for_the_holders(
    nodes: dict[str, Hospital],
) -> None:
    a = nodes["A"]
    archive_id = upload(a, CONTENT)
    placed = a.runtime.replicas.place()
    assert (placed.placed, placed.records_sent) == (1, 1), placed.problems
    holder = rendezvous(archive_id, [nodes["B"].address, nodes["C"].address], 1)[0]
    old_kek = a.runtime.keystore.current_kek_id
    old_record = a.runtime.remote.get_json(holder, record_path(archive_id))
    assert old_record["kek_id"] == old_kek

    # A real rotation: every data key re-wrapped, but the old KEK stays: the holder's record is
    # still sealed under it.
    report = a.runtime.kek.rotate()
    new_kek = a.runtime.keystore.current_kek_id
    assert new_kek != old_kek
    assert report.rewrapped == 1
    assert report.retired_kek_ids == ()
    assert report.records_behind == 1
    assert {info.kek_id for info in a.runtime.keystore.keks} == {old_kek, new_kek}
    assert _own_key_holders(a, archive_id) == [kek_holder(new_kek)]
    assert a.runtime.kek.retire_unused() == []  # still refused: the record is behind

    # The database loses the key and the search terms: the record under the old KEK restores
    # the key, re-wrapped to the current KEK, and the terms, each with the archive's department
    # (which a department-bound search walks by); the content reads again.
    _lose_key(a, archive_id)
    with a.runtime.db.transaction() as session:
        session.execute(delete(SearchTerm).where(SearchTerm.archive_id == archive_id))
    restored = restore_records(
        a.runtime.db, a.runtime.keystore, a.address, a.runtime.remote.get_json
    )
    assert (restored.restored, restored.rewrapped, restored.missing) == (1, 1, []), restored
    assert _own_key_holders(a, archive_id) == [kek_holder(new_kek)]
    assert _read(a, archive_id) == CONTENT
    with a.runtime.db.session() as session:
        terms = set(
            session.execute(
                select(SearchTerm.term, SearchTerm.department).where(
                    SearchTerm.archive_id == archive_id
                )
            ).tuples()
        )
    assert {("discharge", "general"), ("summary", "general")} <= terms
    assert {department for _, department in terms} == {"general"}

    # The replica job re-sends the record under the new KEK, then retires the old one.
    step = a.runtime.replicas.tick()
    assert step.records_sent == 1, step.problems
    assert step.keks_retired == 1, step.problems
    assert [info.kek_id for info in a.runtime.keystore.keks] == [new_kek]
    assert a.runtime.remote.get_json(holder, record_path(archive_id))["kek_id"] == new_kek
    assert a.runtime.replicas.tick().records_sent == 0  # up to date

    # Restored again from the new record: kept as it came (already under the current KEK).
    _lose_key(a, archive_id)
    again = restore_records(a.runtime.db, a.runtime.keystore, a.address, a.runtime.remote.get_json)
    assert (again.restored, again.rewrapped, again.missing) == (1, 0, []), again
    assert _read(a, archive_id) == CONTENT

    # Why the old KEK had to wait: a record under a KEK the keystore no longer holds is refused.
    body = json.dumps(old_record).encode()
    a.runtime.remote.send_json(holder, "PUT", record_path(archive_id), body)
    _lose_key(a, archive_id)
    refused = restore_records(
        a.runtime.db, a.runtime.keystore, a.address, a.runtime.remote.get_json
    )
    assert (refused.restored, refused.missing) == (0, [archive_id])
    assert any("no KEK with id" in problem for problem in refused.problems), refused.problems
    assert _own_key_holders(a, archive_id) == []


LIMIT = 64 * 1024  # max_upload_bytes of the holder; its replica PUT limit adds the allowance


@pytest.fixture
def holder(
    consortium: Consortium, chain: RpcChain, tmp_path: Path, database_url: str, hospital_b
) -> Iterator[Hospital]:
    """B alone, with a small upload limit (A only signs requests here)."""
    started = start_hospital(
        "B", consortium, hospital_b, tmp_path / "B", listen(), {},
        max_upload_bytes=LIMIT, database_url=database_url, **MANUAL,
    )  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


def _files(b: Hospital) -> list[Path]:
    return [p for p in b.runtime.settings.replica_dir.rglob("*") if p.is_file()]


def _rows(b: Hospital) -> int:
    with b.runtime.db.session() as session:
        return len(session.execute(select(HeldReplica)).all())


def test_a_replica_over_the_limit_gets_413_and_an_interrupted_upload_leaves_nothing(
    holder: Hospital, hospital_a, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.blobstore.local as local_module

    b = holder
    archive_id = "01HZY3Z4Q8Q1V6S9N0M5K2J3H8"
    target = f"/peer/v1/replicas/{archive_id}/versions/1"
    limit = LIMIT + MULTIPART_ALLOWANCE

    def headers(digest: str) -> dict[str, str]:
        signed = sign_headers_for(hospital_a, "PUT", target, digest, b.address)
        signed[CONTENT_SHA256] = digest
        return signed

    # A declared length over the limit: refused before a byte is read.
    big = b"c" * (limit + 1)
    declared = httpx.put(
        b.url + target, headers=headers(hashlib.sha256(big).hexdigest()), content=big, timeout=30
    )
    assert declared.status_code == 413, declared.text
    assert declared.json()["code"] == "payload_too_large"
    assert (_files(b), _rows(b)) == ([], 0)

    # No length (chunked): cut off as the stream passes the limit; the partial file is removed.
    chunks = [b"d" * 16384 for _ in range(limit // 16384 + 4)]
    whole = b"".join(chunks)
    streamed = httpx.put(
        b.url + target,
        headers=headers(hashlib.sha256(whole).hexdigest()),
        content=iter(chunks),
        timeout=30,
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["code"] == "payload_too_large"
    assert (_files(b), _rows(b)) == ([], 0)

    # A slow upload that stops half-way (the sender dies): while it runs only a temporary
    # file exists, never a stored replica or a row; when the connection drops it is removed.
    # A blob of up to SMALL_BLOB_BYTES is held in memory until it is whole (no file at all);
    # lowered here so that this 100 KB body goes through a temporary file, as a large one does.
    monkeypatch.setattr(local_module, "SMALL_BLOB_BYTES", 16 * 1024)
    body = b"e" * 100_000
    host, port = b.url.removeprefix("http://").split(":")
    request = [f"PUT {target} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    request += [f"{k}: {v}" for k, v in headers(hashlib.sha256(body).hexdigest()).items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode() + body[:40_000])
        partial = wait_for(lambda: _files(b), 10, "the upload to reach the store")
        assert all(p.name.endswith(".part") for p in partial), partial
        time.sleep(0.3)
        sock.sendall(body[40_000:60_000])
        time.sleep(0.3)
        assert all(p.name.endswith(".part") for p in _files(b))
        assert _rows(b) == 0
    wait_for(lambda: not _files(b), 10, "the partial upload to be removed")
    assert _rows(b) == 0

    # The same bytes sent whole afterwards are stored (the refusals left no conflicting state).
    ok = httpx.put(
        b.url + target, headers=headers(hashlib.sha256(body).hexdigest()), content=body, timeout=30
    )
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    assert _rows(b) == 1
    assert [p.name.endswith(".part") for p in _files(b)] == [False]
