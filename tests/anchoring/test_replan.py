"""Nonce re-planning of the anchoring worker, on a real anvil and a real database.

Real nonce gaps, made with anvil's own controls: transactions dropped from the pool while the base
fee rose above what they offer (the node refuses them again), a dropped transaction that reappears
(it is replaced by its re-signed twin with the same nonce, or lands first and settles its rows), a
chain whose nonce for the node's key fell below the lowest unconfirmed one (``anvil_setNonce``:
the rows are re-signed lower and the higher nonces burnt), anvil restarted from an older state file
(refused as a lost state until replayed, then re-planned), and a worker killed with SIGKILL in the
middle of a re-plan. After each: everything confirmed, proofs verify against the chain, no
checkpoint twice, nothing reverted, no row carried out by two transactions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import create_engine, func, select, text

from anchoring import merkle, storage
from anchoring.chain import JsonRpc, RpcChain, sign_transaction
from anchoring.ids import archive_key
from anchoring.storage import OutboxAttempt, OutboxItem, OutboxState
from anchoring.worker import FEE_CAP, enqueue_call, fees_of, outbid
from devtools.devchain import AnvilProcess
from node import migrations
from node.db import Database
from tests.anchoring.chain_controls import manual_mining
from tests.anchoring.test_worker import append, assert_chain_matches_local, make_worker
from tests.fixtures.chain import Consortium, TestAccounts, build_consortium
from tests.support import REPO_ROOT


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The worker's tables on SQLite and PostgreSQL."""
    database = Database.connect(database_url)
    storage.metadata.create_all(database.writer)
    yield database
    database.dispose()


@dataclass(frozen=True)
class Sent:
    """One outbox row as recorded."""

    id: int
    kind: str
    state: OutboxState
    nonce: int | None
    tx_hash: str | None
    raw_tx: bytes | None


def outbox(db: Database) -> list[Sent]:
    with db.session() as session:
        rows = session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars()
        return [Sent(r.id, r.kind, r.state, r.nonce, r.tx_hash, r.raw_tx) for r in rows]


def transactions(db: Database) -> list[Sent]:
    """The submitted transactions (one row each), in nonce order."""
    seen: dict[str, Sent] = {}
    for row in outbox(db):
        if row.state is OutboxState.SUBMITTED and row.tx_hash not in seen:
            assert row.tx_hash is not None
            seen[row.tx_hash] = row
    return sorted(seen.values(), key=lambda row: row.nonce or 0)


def enqueue_registers(db: Database, count: int, tag: int = 0) -> list[str]:
    ids = [f"01JDQ000000000000000{tag:02d}{n:04d}" for n in range(count)]
    with db.transaction() as session:
        for archive_id in ids:
            enqueue_call(
                session,
                "register",
                [archive_key(archive_id), 1, 0, 2_000_000_000, bytes(31) + b"\x01", bytes(32)],
                archive_id=archive_id,
            )
    return ids


def assert_settled_cleanly(db: Database, chain: RpcChain, hospital: str) -> None:
    """Everything confirmed, nothing reverted, no checkpoint twice, no row carried out twice."""
    rows = outbox(db)
    assert [row for row in rows if row.state is not OutboxState.CONFIRMED] == []
    assert_chain_matches_local(db, chain, hospital)
    count = chain.checkpoint_count(hospital)
    sizes = [chain.checkpoint_at(hospital, i).size for i in range(count)]
    assert sizes == sorted(set(sizes))
    with db.session() as session:
        attempts = session.execute(select(OutboxAttempt.outbox_id, OutboxAttempt.tx_hash)).all()
    landed: dict[int, set[str]] = {}
    for outbox_id, tx_hash in attempts:
        if chain.rpc.receipt(tx_hash) is not None:
            landed.setdefault(outbox_id, set()).add(tx_hash)
    for row in rows:
        assert landed.get(row.id) == {row.tx_hash}, f"row {row.id}: {landed.get(row.id)}"


def assert_proofs_verify(db: Database, chain: RpcChain, hospital: str, leaves: list[bytes]) -> None:
    latest = chain.checkpoint_at(hospital, chain.checkpoint_count(hospital) - 1)
    assert latest.size == len(leaves)
    assert latest.root == merkle.root_from_leaf_hashes(leaves)
    with db.session() as session:
        for index in range(latest.size):
            proof = storage.inclusion_proof(session, index, latest.size)
            merkle.verify_inclusion(index, latest.size, leaves[index], proof, latest.root)


def test_dropped_transactions_the_node_refuses_again_are_replanned_with_the_same_nonces(
    db: Database,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    hospital_a: LocalAccount,
    raise_base_fee: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make_worker(db, chain, hospital_a, replan_grace=0.0)
    leaves = append(db, 4)
    registered = enqueue_registers(db, 3)
    with manual_mining(chain_rpc), caplog.at_level(logging.INFO, "anchoring.worker"):
        worker.tick()
        before = transactions(db)
        assert [row.kind for row in before] == ["call", "checkpoint"]  # registerBatch, checkpoint
        chain_rpc.request("anvil_dropAllTransactions")
        raise_base_fee()  # the recorded bytes can never be mined now

        status = worker.tick()
        after = transactions(db)
    assert [row.nonce for row in after] == [row.nonce for row in before]
    assert {row.tx_hash for row in after}.isdisjoint(row.tx_hash for row in before)
    assert status.replans == 1
    replan = status.last_replan
    assert replan is not None
    assert (replan.from_nonce, replan.transactions, replan.rows, replan.cancels) == (
        before[0].nonce,
        2,
        4,
        0,
    )
    assert "refuses it again" in replan.reason
    messages = [r.getMessage() for r in caplog.records]
    assert sum("anchoring stalled" in m for m in messages) == 1
    assert sum("re-planned nonces" in m for m in messages) == 1

    chain_rpc.request("evm_mine")
    worker.run_until_anchored(timeout=30)
    assert_settled_cleanly(db, chain, hospital_a.address)
    assert all(chain_rpc.receipt(str(row.tx_hash)) is None for row in before)
    assert_proofs_verify(db, chain, hospital_a.address, leaves)
    assert all(chain.custody(a).custodian == hospital_a.address for a in registered)


def test_a_dropped_transaction_that_reappears_is_replaced_by_its_replan(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    worker = make_worker(db, chain, hospital_a)
    leaves = append(db, 3)
    with manual_mining(chain_rpc):
        worker.tick()
        (old,) = transactions(db)
        chain_rpc.request("anvil_dropAllTransactions")

        def reappear(point: str) -> None:
            if point == "replanned":  # after the re-plan is recorded, before it is sent
                assert old.raw_tx is not None
                chain_rpc.send_raw(old.raw_tx)

        worker.fault_hook = reappear
        assert worker.replay_lost() == 0  # `anchor replay`: nothing lost, nonces re-planned
        worker.fault_hook = None
        (new,) = transactions(db)
        assert new.nonce == old.nonce
        assert new.tx_hash != old.tx_hash
        chain_rpc.request("evm_mine")
    worker.run_until_anchored(timeout=30)
    assert chain_rpc.receipt(str(old.tx_hash)) is None  # the replacement won the nonce
    assert_settled_cleanly(db, chain, hospital_a.address)
    (confirmed,) = outbox(db)
    assert confirmed.tx_hash == new.tx_hash
    assert_proofs_verify(db, chain, hospital_a.address, leaves)


def test_an_earlier_transaction_that_lands_before_its_replacement_settles_its_rows(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    worker = make_worker(db, chain, hospital_a)
    leaves = append(db, 3)
    registered = enqueue_registers(db, 2)
    with manual_mining(chain_rpc):
        worker.tick()
        batch, checkpoint = transactions(db)
        chain_rpc.request("anvil_dropAllTransactions")

        def land_first(point: str) -> None:
            if point == "replanned":  # the old registerBatch comes back and is mined at once
                assert batch.raw_tx is not None
                chain_rpc.send_raw(batch.raw_tx)
                chain_rpc.request("evm_mine")

        worker.fault_hook = land_first
        worker.replay_lost()
        worker.fault_hook = None
        replacements = {row.kind: row for row in transactions(db)}
        assert replacements["call"].tx_hash != batch.tx_hash
        chain_rpc.request("evm_mine")
    worker.run_until_anchored(timeout=30)
    # The registers are recorded from the transaction that landed, never sent a third time; the
    # replacement of the batch found its nonce used and the checkpoint went out re-signed.
    rows = {row.kind: row for row in outbox(db)}
    assert rows["call"].tx_hash == batch.tx_hash
    assert rows["checkpoint"].tx_hash == replacements["checkpoint"].tx_hash
    assert chain_rpc.receipt(str(replacements["call"].tx_hash)) is None
    assert chain_rpc.receipt(str(checkpoint.tx_hash)) is None
    assert_settled_cleanly(db, chain, hospital_a.address)
    assert all(chain.custody(a).custodian == hospital_a.address for a in registered)
    assert_proofs_verify(db, chain, hospital_a.address, leaves)


def test_a_chain_nonce_below_the_next_unconfirmed_one_is_replanned_and_higher_nonces_burnt(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    worker = make_worker(db, chain, hospital_a, replan_grace=0.0)
    leaves = append(db, 2)
    worker.run_until_anchored(timeout=30)
    first = {row.id for row in outbox(db)}
    leaves += append(db, 2)
    registered = enqueue_registers(db, 2)
    with manual_mining(chain_rpc):
        worker.tick()
        old = transactions(db)
        lowest = old[0].nonce
        assert lowest is not None
        chain_rpc.request("anvil_dropAllTransactions")
        # The chain's nonce for the key falls below the lowest unconfirmed transaction: those
        # wait behind the gap forever unless re-planned.
        chain_rpc.request("anvil_setNonce", [hospital_a.address, hex(lowest - 1)])

        def reappear(point: str) -> None:
            if point == "replanned":  # the old ones come back, queued above the gap
                for row in old:
                    assert row.raw_tx is not None
                    chain_rpc.send_raw(row.raw_tx)

        worker.fault_hook = reappear
        status = worker.tick()
        worker.fault_hook = None
        assert status.last_replan is not None
        assert (status.last_replan.from_nonce, status.last_replan.cancels) == (lowest - 1, 1)
        chain_rpc.request("evm_mine")
    worker.run_until_anchored(timeout=30)
    replanned = [(row.kind, row.nonce) for row in outbox(db) if row.id not in first]
    assert replanned == [
        ("call", lowest - 1),  # the registerBatch (two rows)
        ("call", lowest - 1),
        ("checkpoint", lowest),
        ("cancel", lowest + 1),  # the old checkpoint's nonce, burnt
    ]
    assert all(chain_rpc.receipt(str(row.tx_hash)) is None for row in old)
    assert chain_rpc.nonce(hospital_a.address) == lowest + 2
    assert_settled_cleanly(db, chain, hospital_a.address)
    assert all(chain.custody(a).custodian == hospital_a.address for a in registered)
    assert_proofs_verify(db, chain, hospital_a.address, leaves)


def test_anvil_restarted_from_an_older_state_is_refused_until_replayed_then_replanned(
    tmp_path: Path,
    test_accounts: TestAccounts,
    anvil_factory: Callable[..., AnvilProcess],
    sqlite_url: str,
) -> None:
    state = tmp_path / "chain" / "state.json"
    anvil = anvil_factory(state_file=state, state_interval=None)  # dumps only on a clean stop
    port = int(anvil.rpc_url.rsplit(":", 1)[1])
    consortium: Consortium = build_consortium(anvil.rpc_url, test_accounts, tmp_path)
    chain = RpcChain(anvil.rpc_url, consortium.deployment)
    hospital = test_accounts.hospital_a
    db = Database.connect(sqlite_url)
    storage.metadata.create_all(db.writer)
    worker = make_worker(db, chain, hospital, replan_grace=0.0, backoff_initial=0.0)
    leaves = append(db, 3)
    worker.run_until_anchored(timeout=30)
    anvil.stop()  # the last dump anvil will ever write: checkpoint 1

    anvil = anvil_factory(port=port, state_file=state, state_interval=None)
    leaves += append(db, 2)
    registered = enqueue_registers(db, 2)
    worker.run_until_anchored(timeout=30)  # checkpoint 2 and the registers confirmed
    leaves += append(db, 2)
    with manual_mining(chain.rpc):
        worker.tick()  # checkpoint 3 sent, waiting in the pool
        assert len(transactions(db)) == 1
    os.kill(anvil.pid, signal.SIGKILL)  # no dump: the restart finds checkpoint 1 only
    anvil.stop(timeout=10)  # reaps it
    anvil_factory(port=port, state_file=state, state_interval=None)

    status = worker.tick()
    assert status.chain_state_lost is True  # said at once, not after a grace period
    assert "recorded 2 confirmed checkpoints but the chain holds 1" in str(status.last_error)
    unchanged = outbox(db)
    assert worker.tick().chain_state_lost is True
    assert outbox(db) == unchanged  # nothing signed into the gap while the state is lost

    assert worker.replay_lost() == 3  # checkpoint 2 and the registerBatch's two rows
    replan = worker.status.last_replan
    assert replan is not None
    assert (replan.transactions, replan.rows) == (3, 4)  # batch, checkpoint 2, checkpoint 3
    assert replan.cancels == 0  # the lost nonces are all taken again
    worker.run_until_anchored(timeout=30)
    assert_settled_cleanly(db, chain, hospital.address)
    assert all(chain.custody(a).custodian == hospital.address for a in registered)
    assert_proofs_verify(db, chain, hospital.address, leaves)
    db.dispose()


def test_a_chain_that_lost_a_confirmed_custody_call_is_reported_not_replanned_over(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    leaves = append(db, 2)
    worker.run_until_anchored(timeout=30)
    before_register = chain_rpc.request("evm_snapshot")
    (lost,) = enqueue_registers(db, 1)
    worker.run_until_anchored(timeout=30)
    assert chain.custody(lost).custodian == hospital_a.address
    # The chain forgets the register's block; its checkpoints are all still there.
    assert chain_rpc.request("evm_revert", [before_register]) is True
    (later,) = enqueue_registers(db, 1, tag=1)

    status = worker.tick()  # the next transaction would take the lost one's nonce
    assert status.chain_state_lost is True
    assert "the chain no longer knows transaction" in str(status.last_error)
    assert [r.state for r in outbox(db) if r.kind == "call"] == [
        OutboxState.CONFIRMED,
        OutboxState.PENDING,  # nothing signed over the lost one
    ]

    assert worker.replay_lost() == 1
    worker.run_until_anchored(timeout=30)
    assert_settled_cleanly(db, chain, hospital_a.address)
    assert chain.custody(lost).custodian == hospital_a.address
    assert chain.custody(later).custodian == hospital_a.address
    assert_proofs_verify(db, chain, hospital_a.address, leaves)


def test_a_replayed_destroy_the_chain_still_holds_is_settled_not_sent_again(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    """As for registrations below: a destroy whose receipt the chain lost but whose effect (the
    archive DESTROYED with the same certificate hash) it kept is settled from the chain, not sent
    again in a destroyBatch that would revert for every archive in it."""
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    kept, later = "01JDQ0000000000000000D0001", "01JDQ0000000000000000D0002"
    deadline = chain.block_timestamp("latest") + 10
    with db.transaction() as session:
        for archive_id in (kept, later):
            enqueue_call(
                session,
                "register",
                [archive_key(archive_id), 3, 0, deadline, bytes(31) + b"\x01", bytes(32)],
                archive_id=archive_id,
            )
    worker.run_until_anchored(timeout=30)
    chain.rpc.request("evm_increaseTime", [100])
    chain.rpc.request("evm_mine")
    with db.transaction() as session:
        enqueue_call(session, "destroy", [archive_key(kept), b"\x07" * 32], archive_id=kept)
    worker.run_until_anchored(timeout=30)
    assert chain.custody(kept).certificate_hash == b"\x07" * 32
    with db.transaction() as session:
        row = session.execute(
            select(OutboxItem).where(
                OutboxItem.archive_id == kept,
                OutboxItem.payload["function"].as_string() == "destroy",
            )
        ).scalar_one()
        row.tx_hash = "0x" + "cd" * 32  # a transaction the chain never saw
        destroy_row = row.id
        enqueue_call(session, "destroy", [archive_key(later), b"\x08" * 32], archive_id=later)

    assert worker.replay_lost() == 1
    worker.run_until_anchored(timeout=30)
    with db.session() as session:
        destroys = [
            r
            for r in session.execute(select(OutboxItem).where(OutboxItem.kind == "call")).scalars()
            if r.payload["function"] == "destroy"
        ]
    assert all(r.state is OutboxState.CONFIRMED for r in destroys)
    settled = next(r for r in destroys if r.id == destroy_row)
    assert str(settled.error).startswith("settled: the chain already holds")
    assert chain.custody(later).certificate_hash == b"\x08" * 32


def test_a_replayed_registration_the_chain_still_holds_is_settled_not_sent_again(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    """A chain restored from a state dump can keep a registration's storage but not its receipt
    (seen in the kill -9 chain recovery test). Here the receipt is made unknown by recording
    another hash for the row; the chain's storage still holds the archive. The replay must settle
    that row from the chain, not re-send it in a batch that would revert for every row in it."""
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    leaves = append(db, 2)
    (kept,) = enqueue_registers(db, 1)
    worker.run_until_anchored(timeout=30)
    assert chain.custody(kept).custodian == hospital_a.address
    with db.transaction() as session:
        row = session.execute(select(OutboxItem).where(OutboxItem.archive_id == kept)).scalar_one()
        row.tx_hash = "0x" + "ab" * 32  # a transaction the chain never saw
    (later,) = enqueue_registers(db, 1, tag=1)

    assert worker.replay_lost() == 1
    worker.run_until_anchored(timeout=30)
    with db.session() as session:
        calls = {
            r.archive_id: r
            for r in session.execute(select(OutboxItem).where(OutboxItem.kind == "call")).scalars()
        }
    assert {a: r.state for a, r in calls.items()} == {
        kept: OutboxState.CONFIRMED,
        later: OutboxState.CONFIRMED,
    }
    assert str(calls[kept].error).startswith("settled: the chain already holds")
    assert calls[later].error is None
    assert chain.custody(later).custodian == hospital_a.address
    # The settled row carried no transaction: only the first registration and the later one.
    with db.session() as session:
        signed = session.execute(
            select(func.count())
            .select_from(OutboxAttempt)
            .where(OutboxAttempt.outbox_id == calls[kept].id)
        ).scalar_one()
    assert signed == 1
    assert_proofs_verify(db, chain, hospital_a.address, leaves)


def test_a_registration_with_another_commitment_on_chain_is_sent_and_fails_loudly(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    """Only the same commitment settles a row: another record under the id is a conflict."""
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    (archive_id,) = enqueue_registers(db, 1)
    worker.run_until_anchored(timeout=30)
    with db.transaction() as session:
        conflicting = enqueue_call(
            session,
            "register",
            [archive_key(archive_id), 1, 0, 2_000_000_000, bytes(31) + b"\x02", bytes(32)],
            archive_id=archive_id,
        )
        conflicting.attempts = 1  # as if signed before a reset: checked against the chain

    worker.run_until_anchored(timeout=30)
    with db.session() as session:
        row = session.get_one(OutboxItem, conflicting.id)
    assert row.state is OutboxState.FAILED
    assert "NotaryUnexpectedState" in str(row.error)


def _enqueue_hold(db: Database, archive_id: str, function: str) -> int:
    with db.transaction() as session:
        row = enqueue_call(
            session, function, [archive_key(archive_id), bytes(31) + b"\x07"], archive_id=archive_id
        )
        session.flush()
        return row.id


def test_a_replayed_hold_the_chain_still_holds_is_settled_not_sent_again(
    db: Database, chain: RpcChain, hospital_a: LocalAccount
) -> None:
    """As for registrations: a hold whose receipt the chain forgot but whose effect it kept
    (the archive is on hold) is settled; re-sent, it would revert (already on hold)."""
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    (archive_id,) = enqueue_registers(db, 1)
    worker.run_until_anchored(timeout=30)
    hold = _enqueue_hold(db, archive_id, "placeHold")
    worker.run_until_anchored(timeout=30)
    assert chain.custody(archive_id).on_hold is True
    with db.transaction() as session:
        session.get_one(OutboxItem, hold).tx_hash = "0x" + "ef" * 32  # never seen by the chain

    assert worker.replay_lost() == 1
    worker.run_until_anchored(timeout=30)
    with db.session() as session:
        row = session.get_one(OutboxItem, hold)
        signed = session.execute(
            select(func.count()).select_from(OutboxAttempt).where(OutboxAttempt.outbox_id == hold)
        ).scalar_one()
    assert row.state is OutboxState.CONFIRMED
    assert str(row.error) == "settled: the chain already holds this placeHold"
    assert signed == 1
    assert chain.custody(archive_id).on_hold is True


def test_a_release_after_a_lost_hold_is_sent_after_it_not_settled_early(
    db: Database, chain: RpcChain, chain_rpc: JsonRpc, hospital_a: LocalAccount
) -> None:
    """Hold then release, both lost with their blocks: the chain shows "not on hold", which is
    the release's effect, but only because the hold is not there yet. The release must be sent
    after the re-sent hold, or the archive would stay on hold on chain."""
    worker = make_worker(db, chain, hospital_a, backoff_initial=0.0)
    (archive_id,) = enqueue_registers(db, 1)
    worker.run_until_anchored(timeout=30)
    before_holds = chain_rpc.request("evm_snapshot")
    hold = _enqueue_hold(db, archive_id, "placeHold")
    worker.run_until_anchored(timeout=30)
    release = _enqueue_hold(db, archive_id, "releaseHold")
    worker.run_until_anchored(timeout=30)
    assert chain.custody(archive_id).on_hold is False
    assert chain_rpc.request("evm_revert", [before_holds]) is True

    assert worker.replay_lost() == 2
    worker.run_until_anchored(timeout=30)
    with db.session() as session:
        rows = [session.get_one(OutboxItem, i) for i in (hold, release)]
    assert [r.state for r in rows] == [OutboxState.CONFIRMED, OutboxState.CONFIRMED]
    assert not any(str(r.error).startswith("settled") for r in rows)  # both really sent again
    assert chain.custody(archive_id).on_hold is False


@pytest.mark.parametrize("point", ["replanning", "replanned", "replan-broadcast"])
def test_kill_minus_nine_in_the_middle_of_a_replan_is_completed_by_the_next_start(
    tmp_path: Path,
    consortium: Consortium,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    hospital_b: LocalAccount,
    raise_base_fee: Callable[[], None],
    point: str,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'replan.db'}"
    db = Database.connect(db_url)
    storage.metadata.create_all(db.writer)
    leaves = append(db, 3)
    registered = enqueue_registers(db, 2)
    worker = make_worker(db, chain, hospital_b)
    with manual_mining(chain_rpc):
        worker.tick()
        before = transactions(db)
        assert len(before) == 2
        chain_rpc.request("anvil_dropAllTransactions")
        raise_base_fee()
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.anchoring.replan_child",
                db_url,
                consortium.rpc_url,
                str(consortium.deployment_file),
                bytes(hospital_b.key).hex(),
                point,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == -9, child.stdout + child.stderr
        after = transactions(db)
        if point == "replanning":  # killed before the commit: nothing of the re-plan remains
            assert after == before
        else:  # committed: every row re-signed, same nonces
            assert [r.nonce for r in after] == [r.nonce for r in before]
            assert {r.tx_hash for r in after}.isdisjoint(r.tx_hash for r in before)
        known = [chain_rpc.transaction(str(r.tx_hash)) is not None for r in after]
        assert (
            known
            == {
                "replanning": [False, False],
                "replanned": [False, False],
                "replan-broadcast": [True, False],
            }[point]
        )
        chain_rpc.request("evm_mine")
    restarted = make_worker(db, chain, hospital_b, replan_grace=0.0)
    restarted.run_until_anchored(timeout=60)
    assert_settled_cleanly(db, chain, hospital_b.address)
    assert all(chain_rpc.receipt(str(r.tx_hash)) is None for r in before)
    assert all(chain.custody(a).custodian == hospital_b.address for a in registered)
    assert_proofs_verify(db, chain, hospital_b.address, leaves)
    db.dispose()


def test_the_migration_records_already_signed_transactions_as_attempts(sqlite_url: str) -> None:
    migrations.upgrade(sqlite_url, "0002")
    account = Account.create()
    signed = sign_transaction(
        account,
        chain_id=31337,
        nonce=7,
        to=account.address,
        data=b"",
        gas=21_000,
        fees={"maxFeePerGas": 3_000_000_000, "maxPriorityFeePerGas": 1_000_000_000},
    )
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        for row_id, tx_hash, raw, state in (
            (1, signed.tx_hash, signed.raw, "SUBMITTED"),
            (2, None, None, "PENDING"),
        ):
            connection.execute(
                text(
                    "INSERT INTO chain_outbox (id, kind, payload, state, nonce, tx_hash, raw_tx, "
                    "attempts, created_at, updated_at) VALUES (:id, 'cancel', '{}', :state, "
                    ":nonce, :tx_hash, :raw, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {
                    "id": row_id,
                    "state": state,
                    "nonce": 7 if tx_hash else None,
                    "tx_hash": tx_hash,
                    "raw": raw,
                },
            )
    engine.dispose()
    migrations.upgrade(sqlite_url)
    db = Database.connect(sqlite_url)
    with db.session() as session:
        (attempt,) = session.execute(select(OutboxAttempt)).scalars()
        assert (attempt.outbox_id, attempt.nonce, attempt.tx_hash) == (1, 7, signed.tx_hash)
        assert attempt.fees == {
            "maxFeePerGas": 3_000_000_000,
            "maxPriorityFeePerGas": 1_000_000_000,
        }
        assert session.execute(select(func.count()).select_from(OutboxItem)).scalar_one() == 2
    db.dispose()


def test_fees_of_reads_typed_and_legacy_transactions() -> None:
    account = Account.create()
    common = {"chain_id": 1, "nonce": 0, "to": account.address, "data": b"", "gas": 21_000}
    legacy = sign_transaction(account, fees={"gasPrice": 123}, **common)  # type: ignore[arg-type]
    typed = sign_transaction(
        account,
        fees={"maxFeePerGas": 9, "maxPriorityFeePerGas": 2},
        **common,  # type: ignore[arg-type]
    )
    assert fees_of(legacy.raw) == {"gasPrice": 123}
    assert fees_of(typed.raw) == {"maxFeePerGas": 9, "maxPriorityFeePerGas": 2}
    assert fees_of(b"\x01\x02") == {}


def test_a_replacement_outbids_every_earlier_offer_up_to_a_cap() -> None:
    current = {"maxFeePerGas": 1000, "maxPriorityFeePerGas": 100}
    assert outbid(current, []) == current
    # 5/4 of the earlier offer (plus one) where that beats the current fees
    assert outbid(current, [{"maxFeePerGas": 2000, "maxPriorityFeePerGas": 60}]) == {
        "maxFeePerGas": 2501,
        "maxPriorityFeePerGas": 100,
    }
    # however often a nonce was re-signed, never more than FEE_CAP times the current fees
    runaway = [{"maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**9}]
    assert outbid(current, runaway) == {
        "maxFeePerGas": 1000 * FEE_CAP,
        "maxPriorityFeePerGas": 100 * FEE_CAP,
    }
    assert outbid({"gasPrice": 50}, [{"gasPrice": 40}, {"gasPrice": 60}]) == {"gasPrice": 76}
