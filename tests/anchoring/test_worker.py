"""The anchoring worker against a real anvil and a real database: batching, crash recovery at each
step (in-process seams), chain outages with backoff and lag, and a chain that lost its state."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select

from anchoring import merkle, storage
from anchoring.chain import ContractWriter, JsonRpc, RpcChain
from anchoring.errors import ChainStateLostError
from anchoring.storage import Checkpoint, CheckpointState, LogWriter, OutboxItem, OutboxState
from anchoring.worker import AnchoringWorker, WorkerConfig, enqueue_call
from node.db import Database
from node.ports import free_port
from tests.fixtures.chain import Consortium


class Crash(Exception):
    """Stands in for the process dying at a fault point (the kill -9 test does it for real)."""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.connect(f"sqlite:///{tmp_path / 'log.db'}")
    storage.metadata.create_all(database.writer)
    yield database
    database.dispose()


def append(db: Database, count: int) -> list[bytes]:
    """Append ``count`` events in one transaction; returns their leaf hashes."""
    with db.transaction() as session:
        writer = LogWriter.open(session)
        start = writer.size
        leaves = [
            writer.append(
                b'{"event":%d}' % (start + i),
                archive_id="01JDQ0000000000000000000AA",
                event_type="ACCESS",
                time=datetime.now(UTC),
            ).leaf_hash
            for i in range(count)
        ]
        writer.flush()
    return leaves


def make_worker(
    db: Database, chain: RpcChain, account: LocalAccount, **config: object
) -> AnchoringWorker:
    return AnchoringWorker(
        sessions=db.write_session,
        chain=ContractWriter(chain, account),
        config=WorkerConfig(**{"interval": 0.0, "backoff_initial": 0.05, **config}),  # type: ignore[arg-type]
    )


def checkpoints(db: Database) -> list[Checkpoint]:
    with db.session() as session:
        return list(session.execute(select(Checkpoint).order_by(Checkpoint.id)).scalars())


def assert_chain_matches_local(db: Database, chain: RpcChain, hospital: str) -> None:
    """Every confirmed local checkpoint is on chain exactly once, at its index, same size/root."""
    confirmed = [c for c in checkpoints(db) if c.state is CheckpointState.CONFIRMED]
    assert chain.checkpoint_count(hospital) == len(confirmed)
    for index, local in enumerate(confirmed):
        theirs = chain.checkpoint_at(hospital, index)
        assert local.chain_index == index
        assert (theirs.size, theirs.root) == (local.size, local.root)


def test_anchors_everything_and_proofs_verify_against_chain(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    leaves = append(db, 7)
    worker = make_worker(db, chain, hospital_a)
    status = worker.run_until_anchored(timeout=20)
    assert (status.events_behind, status.pending_transactions) == (0, 0)
    leaves += append(db, 9)
    worker.run_until_anchored(timeout=20)
    assert_chain_matches_local(db, chain, hospital_a.address)
    latest = chain.checkpoint_at(hospital_a.address, chain.checkpoint_count(hospital_a.address) - 1)
    assert latest.size == 16
    assert latest.root == merkle.root_from_leaf_hashes(leaves)
    with db.session() as session:
        for index in (0, 6, 15):
            proof = storage.inclusion_proof(session, index, latest.size)
            merkle.verify_inclusion(index, latest.size, leaves[index], proof, latest.root)


def test_batches_by_size_or_by_age_whichever_first(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    skew = [0.0]  # the worker's clock runs ``skew`` seconds ahead of the event times
    worker = make_worker(db, chain, hospital_a, interval=30.0, max_batch=10)
    worker.clock = lambda: time.time() + skew[0]

    def settle() -> None:  # until nothing is pending (50 fixed rounds gave up under load)
        deadline = time.monotonic() + 30
        while worker.tick().pending_transactions:
            assert time.monotonic() < deadline, "transactions still pending after 30 s"
            time.sleep(0.05)

    append(db, 4)
    settle()
    assert checkpoints(db) == []  # too few and too young
    append(db, 6)  # now 10 waiting: the size trigger fires at once
    settle()
    assert [(c.size, c.state) for c in checkpoints(db)] == [(10, CheckpointState.CONFIRMED)]
    append(db, 1)
    settle()
    assert len(checkpoints(db)) == 1  # one young event waits
    skew[0] = 31.0  # ... until it is older than the interval
    settle()
    assert [c.size for c in checkpoints(db)] == [10, 11]
    assert worker.status.events_behind == 0


def tick_until_crash(worker: AnchoringWorker, timeout: float) -> None:
    """Tick ``worker`` until its fault hook raises; fail if it never does within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.tick()
        time.sleep(0.05)
    pytest.fail(f"the fault point was not reached in {timeout} s")


@pytest.mark.parametrize("point", ["planned", "signed", "broadcast", "recorded"])
def test_crash_at_each_step_recovers_without_double_anchoring(
    db: Database, chain: RpcChain, hospital_a: LocalAccount, point: str
) -> None:
    append(db, 5)
    crashing = make_worker(db, chain, hospital_a)

    def hook(at: str) -> None:
        if at == point:
            raise Crash(at)

    crashing.fault_hook = hook
    # "recorded" is reached only once the receipt is there: anvil mines an automined
    # transaction after answering eth_sendRawTransaction, so on a busy host the first pass can
    # end before it. The crashing worker ticks until its fault point is reached.
    with pytest.raises(Crash):
        tick_until_crash(crashing, timeout=20)
    # A new worker (a restarted process) finishes the job: one checkpoint, exactly once.
    append(db, 3)
    restarted = make_worker(db, chain, hospital_a)
    restarted.run_until_anchored(timeout=20)
    assert_chain_matches_local(db, chain, hospital_a.address)
    sizes = [chain.checkpoint_at(hospital_a.address, i).size for i in range(2)]
    assert sizes[-1] == 8
    with db.session() as session:
        failed = session.execute(
            select(func.count())
            .select_from(OutboxItem)
            .where(OutboxItem.state == OutboxState.FAILED)
        ).scalar_one()
    assert failed == 0  # nothing was sent twice (a duplicate would have reverted)


class SlowDeadRpc(JsonRpc):
    """An RPC endpoint nobody listens on, whose every call also moves the worker's clock on by
    ``delay`` seconds: a dead node that takes its time to fail."""

    def __init__(self, now: list[float], delay: float) -> None:
        super().__init__(f"http://127.0.0.1:{free_port()}", timeout=1.0)
        self.now = now
        self.delay = delay

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        self.now[0] += self.delay
        return super().request(method, params)


def test_chain_unreachable_keeps_accepting_events_and_backs_off(
    db: Database, consortium: Consortium, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    now = [time.time()]  # the worker's clock, moved by the test alone
    dead = RpcChain(SlowDeadRpc(now, delay=0.0), consortium.deployment)
    worker = make_worker(db, dead, hospital_a, backoff_initial=0.2)
    worker.clock = lambda: now[0]
    append(db, 3)
    status = worker.tick()
    assert status.chain_reachable is False
    assert status.last_error
    assert status.events_behind == 3
    first_failures = status.consecutive_failures
    assert first_failures == 1
    now[0] += 0.1
    assert worker.tick().consecutive_failures == first_failures  # backing off: no new attempt
    append(db, 2)  # events are still accepted while the chain is down
    now[0] += 0.2
    assert worker.tick().consecutive_failures == first_failures + 1
    now[0] += 0.3  # the second backoff is twice the first
    assert worker.tick().consecutive_failures == first_failures + 1
    now[0] += 0.2
    assert worker.tick().consecutive_failures == first_failures + 2
    assert worker.status.events_behind == 5
    assert worker.status.seconds_behind > 0
    # The chain comes back: the same database is anchored by a worker that reaches it.
    healthy = make_worker(db, chain, hospital_a)
    assert healthy.run_until_anchored(timeout=20).events_behind == 0
    assert chain.checkpoint_at(hospital_a.address, 0).size == 5


def test_backoff_counts_from_the_end_of_a_slow_failed_pass(
    db: Database, consortium: Consortium, hospital_a: LocalAccount
) -> None:
    """A pass that spends 5 s failing against a dead RPC backs off 0.2 s from when it failed, not
    from when it began (counted from the start, the retry would be due before the pass ended)."""
    now = [time.time()]
    dead = RpcChain(SlowDeadRpc(now, delay=5.0), consortium.deployment)
    worker = make_worker(db, dead, hospital_a, backoff_initial=0.2)
    worker.clock = lambda: now[0]
    append(db, 1)
    assert worker.tick().consecutive_failures == 1
    now[0] += 0.1
    assert worker.tick().consecutive_failures == 1  # still backing off
    now[0] += 0.2
    assert worker.tick().consecutive_failures == 2


def test_chain_that_lost_its_state_is_reported_and_replayed(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    enqueue_ok = make_worker(db, chain, hospital_a)
    before = chain_rpc.request("evm_snapshot")
    append(db, 4)
    enqueue_ok.run_until_anchored(timeout=20)
    append(db, 2)
    enqueue_ok.run_until_anchored(timeout=20)
    local = [(c.size, c.root) for c in checkpoints(db)]
    assert chain_rpc.request("evm_revert", [before]) is True  # the dev chain "forgets"

    restarted = make_worker(db, chain, hospital_a)
    with pytest.raises(ChainStateLostError, match="recorded 2 confirmed checkpoints"):
        restarted.reconcile()
    assert restarted.tick().chain_state_lost is True

    assert restarted.replay_lost() == 2
    restarted.run_until_anchored(timeout=20)
    replayed = [
        (c.size, c.root) for c in (chain.checkpoint_at(hospital_a.address, i) for i in range(2))
    ]
    assert replayed == local  # same checkpoints, same indices: old bundles verify again
    assert_chain_matches_local(db, chain, hospital_a.address)


def test_custody_calls_are_sent_in_order_and_registers_are_batched(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    from anchoring.ids import archive_key

    ids = [f"01JDQ00000000000000000{n:04d}" for n in range(5)]
    with db.transaction() as session:
        for archive_id in ids:
            enqueue_call(
                session,
                "register",
                [archive_key(archive_id), 1, 0, 2_000_000_000, bytes(31) + b"\x01", bytes(32)],
                archive_id=archive_id,
            )
        enqueue_call(session, "placeHold", [archive_key(ids[0]), bytes(32)], archive_id=ids[0])
    worker = make_worker(db, chain, hospital_a)
    worker.run_until_anchored(timeout=20)
    with db.session() as session:
        rows = list(session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())
    assert all(row.state is OutboxState.CONFIRMED for row in rows)
    assert len({row.tx_hash for row in rows[:5]}) == 1  # one registerBatch transaction
    assert rows[5].nonce == rows[0].nonce + 1  # the hold follows it
    assert chain.custody(ids[0]).on_hold is True
    assert chain.custody(ids[4]).custodian == hospital_a.address


def test_queued_destroys_are_sent_as_one_destroy_batch(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    """Issue 10: the destroys a disposition run queues go out as one ``destroyBatch``."""
    from anchoring.chainview import CustodyState
    from anchoring.ids import archive_key

    ids = [f"01JDQ00000000000000001{n:04d}" for n in range(5)]
    deadline = chain.block_timestamp("latest") + 10
    with db.transaction() as session:
        for archive_id in ids:
            enqueue_call(
                session,
                "register",
                [archive_key(archive_id), 3, 0, deadline, bytes(31) + b"\x01", bytes(32)],
                archive_id=archive_id,
            )
    worker = make_worker(db, chain, hospital_a)
    worker.run_until_anchored(timeout=20)
    chain.rpc.request("evm_increaseTime", [100])
    chain.rpc.request("evm_mine")
    certificates = {a: bytes([n + 1]) * 32 for n, a in enumerate(ids)}
    with db.transaction() as session:
        for archive_id in ids:
            enqueue_call(
                session,
                "destroy",
                [archive_key(archive_id), certificates[archive_id]],
                archive_id=archive_id,
            )
    worker.run_until_anchored(timeout=20)
    with db.session() as session:
        rows = list(
            session.execute(
                select(OutboxItem).where(OutboxItem.kind == "call").order_by(OutboxItem.id)
            ).scalars()
        )
    destroys = [r for r in rows if r.payload["function"] == "destroy"]
    assert len(destroys) == 5
    assert all(r.state is OutboxState.CONFIRMED for r in rows)
    assert len({r.tx_hash for r in destroys}) == 1  # one destroyBatch transaction
    receipt = chain.rpc.receipt(destroys[0].tx_hash)
    assert receipt is not None
    assert len(receipt["logs"]) == 5  # one ArchiveDestroyed per archive
    for archive_id in ids:
        record = chain.custody(archive_id)
        assert record.state is CustodyState.DESTROYED
        assert record.certificate_hash == certificates[archive_id]


def test_reverted_call_is_recorded_as_failed_with_the_decoded_reason(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    from anchoring.ids import archive_key

    with db.transaction() as session:
        # A hold on an archive that was never registered reverts on chain.
        enqueue_call(
            session,
            "placeHold",
            [archive_key("01JDQ0000000000000000000ZZ"), bytes(32)],
            archive_id="01JDQ0000000000000000000ZZ",
        )
    worker = make_worker(db, chain, hospital_a)
    worker.run_until_anchored(timeout=20)
    with db.session() as session:
        row = session.execute(select(OutboxItem)).scalar_one()
    assert row.state is OutboxState.FAILED
    assert row.error is not None
    assert "Notary" in row.error
