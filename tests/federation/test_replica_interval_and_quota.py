"""The replica challenger's interval and the holder's quota under parallel uploads, over real HTTP
on anvil (docs/recovery.md §1). The node under test runs on SQLite and on PostgreSQL
(``database_url``).

- A replica is challenged again only ``replica_challenge_interval`` (default a day) after its last
  passed challenge: an idle node running its replica step every 30 s logged a REPLICA ``verified``
  event per replica and step (thousands a day per archive), flooding the archives' chains and
  their bundles. A fixity audit still challenges at once (and restarts the interval); a holder
  that does not answer once the replica is due counts as gone only an hour after it was due.
- ``replica_quota_bytes`` holds against uploads streamed in parallel: each used to pass against the
  total read before any of them was stored (12 parallel 90 kB uploads under a 100 kB quota were all
  kept); refused ones answer ``replica_quota_exceeded`` and leave no file behind."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select

from anchoring.chain import RpcChain
from node.models import Alert, HeldReplica, Replica
from node.peers import CONTENT_SHA256, sign_headers_for
from node.services.audits import AuditScope
from tests.federation.conftest import Hospital, listen, running_hospitals, start_hospital
from tests.federation.test_replicas import replica_actions, upload
from tests.fixtures.chain import Consortium

MANUAL = {"replica_tick": 3600.0, "log_ship_tick": 3600.0, "fixity_tick": 3600.0}
DAY = timedelta(days=1)


class AheadClock:
    """The wall clock plus ``ahead`` (moved by the test)."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
def pair(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    database_url: str,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> Iterator[tuple[Hospital, Hospital, AheadClock]]:
    """A (on ``database_url``, its clock moved by the test) and B, its only peer; the replica
    step is run by the test."""
    clock = AheadClock()
    accounts = {"A": hospital_a, "B": hospital_b}
    per_hospital = {"A": {"clock": clock, "database_url": database_url}}
    with running_hospitals(
        consortium, accounts, tmp_path, per_hospital=per_hospital, **MANUAL
    ) as started:
        yield started["A"], started["B"], clock


def _replica(a: Hospital) -> Replica:
    with a.runtime.db.session() as session:
        row = session.execute(select(Replica)).scalar_one()
        session.expunge(row)
        return row


def test_a_replica_is_challenged_once_per_interval_not_at_every_step(
    pair: tuple[Hospital, Hospital, AheadClock],
) -> None:
    a, b, clock = pair
    assert a.runtime.settings.replica_challenge_interval == DAY.total_seconds()
    archive_id = upload(a)

    # Placed and verified at the first step; the steps after (every 30 s in production) log
    # nothing more: the replica was verified less than a day ago.
    first = a.runtime.replicas.tick()
    assert (first.placed, first.verified) == (1, 1), first.problems
    for _ in range(5):
        step = a.runtime.replicas.tick()
        assert (step.placed, step.verified, step.failed, step.unavailable) == (0, 0, 0, 0)
    assert replica_actions(a, archive_id) == ["placed", "verified"]

    # A minute short of a day later: still not due.
    clock.ahead = DAY - timedelta(minutes=1)
    assert a.runtime.replicas.tick().verified == 0
    assert replica_actions(a, archive_id) == ["placed", "verified"]

    # A day later: challenged once more, and then not again for a day.
    clock.ahead = DAY + timedelta(seconds=1)
    assert a.runtime.replicas.tick().verified == 1
    for _ in range(3):
        assert a.runtime.replicas.tick().verified == 0
    assert replica_actions(a, archive_id) == ["placed", "verified", "verified"]

    # A fixity audit (here on demand) challenges the replica whether due or not, and its pass
    # restarts the interval: the step after it challenges nothing.
    audited = a.runtime.fixity.audit(None, AuditScope())
    assert (audited.passed, audited.replicas_verified) == (1, 1)
    assert a.runtime.replicas.tick().verified == 0
    assert replica_actions(a, archive_id) == ["placed", "verified", "verified", "verified"]
    # ``every`` (the drill's "challenge all") ignores the interval.
    assert a.runtime.replicas.challenge(every=True).verified == 1
    assert replica_actions(a, archive_id)[-1] == "verified"
    verified = len(replica_actions(a, archive_id))

    # The holder goes down. A day later the replica is due; the unanswered challenges are
    # asked again at every step (no event), and the silence counts from when the replica was
    # due, not from its last pass a day before: within the hour the replica stays.
    b.server.should_exit = True
    b.thread.join(10)
    clock.ahead += DAY + timedelta(seconds=1)
    for attempt in range(1, 5):
        step = a.runtime.replicas.tick()
        assert (step.verified, step.failed, step.unavailable) == (0, 0, 1), step.problems
        row = _replica(a)
        assert (row.state, row.failures) == ("active", attempt)
    assert len(replica_actions(a, archive_id)) == verified
    with a.runtime.db.session() as session:
        assert not session.execute(select(Alert).where(Alert.kind == "replica_failed")).first()
    # Silent for more than an hour since it was due: failed (``unreachable``).
    clock.ahead += timedelta(hours=1, minutes=1)
    step = a.runtime.replicas.tick()
    assert step.failed == 1, step.problems
    assert replica_actions(a, archive_id)[-1] == "failed"
    with a.runtime.db.session() as session:
        alert = session.execute(select(Alert).where(Alert.kind == "replica_failed")).scalar_one()
    assert alert.detail["reason"] == "unreachable"


@pytest.fixture
def holder(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    database_url: str,
    hospital_b: LocalAccount,
) -> Iterator[Hospital]:
    """B alone on ``database_url`` (A only signs requests here)."""
    started = start_hospital(
        "B", consortium, hospital_b, tmp_path / "B", listen(), {},
        database_url=database_url, **MANUAL,
    )  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


def _stored_files(b: Hospital) -> list[Path]:
    root = b.runtime.settings.replica_dir
    return [p for p in root.rglob("*") if p.is_file() and ".part" not in p.name]


def _held(b: Hospital, sender: str) -> tuple[int, int]:
    with b.runtime.db.session() as session:
        count, size = session.execute(
            select(func.count(), func.coalesce(func.sum(HeldReplica.size), 0)).where(
                HeldReplica.custodian == sender
            )
        ).one()
    return int(count), int(size)


def test_parallel_replica_uploads_and_key_records_stay_within_the_quota(
    holder: Hospital, hospital_a: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = holder
    size, parallel = 30_000, 8
    record_size = len(_record("01HZY3Z4Q8Q1V6S9N0M5K2J300"))
    quota = 3 * size + 2 * record_size + 100  # three replicas fit, then two records of three
    b.runtime.replica_holder.settings = b.runtime.settings.model_copy(
        update={"replica_quota_bytes": quota}
    )
    # Every upload has passed the checks before reading (nothing is held yet) before any of
    # them stores its bytes: the race the checks in the unit of work must close.
    store = b.runtime.replica_holder.store
    original = store.put_stream
    barrier = threading.Barrier(parallel)

    def put_stream(chunks: Iterable[bytes], *args: Any, **kwargs: Any) -> Any:
        with suppress(threading.BrokenBarrierError):  # not all arrived in time: go on
            barrier.wait(timeout=15)
        return original(chunks, *args, **kwargs)

    monkeypatch.setattr(store, "put_stream", put_stream)
    archives = [f"01HZY3Z4Q8Q1V6S9N0M5K2J3{i:02d}" for i in range(parallel)]

    def put(index: int) -> httpx.Response:
        body = secrets.token_bytes(size)
        digest = hashlib.sha256(body).hexdigest()
        target = f"/peer/v1/replicas/{archives[index]}/versions/1"
        headers = sign_headers_for(hospital_a, "PUT", target, digest, b.address)
        headers[CONTENT_SHA256] = digest
        return httpx.put(b.url + target, headers=headers, content=body, timeout=60)

    with ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(put, range(parallel)))
    stored = [i for i, r in enumerate(answers) if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(stored) == 3, [(r.status_code, r.text) for r in answers]
    assert {(r.status_code, r.json()["code"]) for r in refused} == {(409, "replica_quota_exceeded")}
    assert _held(b, hospital_a.address) == (3, 3 * size)
    assert len(_stored_files(b)) == 3  # the refused ones' bytes are gone

    # Key records of the three held archives, in parallel: two fit.
    barrier = threading.Barrier(len(stored))

    def put_record(index: int) -> httpx.Response:
        body = _record(archives[index])
        target = f"/peer/v1/replicas/{archives[index]}/record"
        digest = hashlib.sha256(body).hexdigest()
        headers = sign_headers_for(hospital_a, "PUT", target, digest, b.address)
        headers[CONTENT_SHA256] = digest
        return httpx.put(b.url + target, headers=headers, content=body, timeout=60)

    with ThreadPoolExecutor(len(stored)) as pool:
        records = list(pool.map(put_record, stored))
    assert sorted(r.status_code for r in records) == [200, 200, 409], [r.text for r in records]
    assert next(r for r in records if r.status_code == 409).json()["code"] == (
        "replica_quota_exceeded"
    )
    count, held = _held(b, hospital_a.address)
    assert (count, held) == (5, 3 * size + 2 * record_size)
    assert held <= quota
    assert len(_stored_files(b)) == 5


def _record(archive_id: str) -> bytes:
    """A key record of ``archive_id`` (opaque to the holder) of a fixed size."""
    return json.dumps(
        {
            "archive_id": archive_id,
            "kek_id": "k1",
            "key": base64.b64encode(b"k" * 60).decode(),
            "sealed": base64.b64encode(b"s" * 3000).decode(),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
