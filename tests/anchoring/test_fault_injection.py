"""kill -9 fault injection: a child process appends events and anchors them on a real anvil and is
SIGKILLed at chosen points (after the database commit, after planning, after signing but before the
transaction is sent, after sending but before the receipt is recorded, after recording, or at a
random moment). After every restart: every acknowledged event is in the log, everything acknowledged
before the restart is anchored, local checkpoints and on-chain checkpoints agree, and nothing was
ever anchored twice. ``scripts/fault_stress.py`` runs the same loop for longer."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select

from anchoring import storage
from anchoring.chain import RpcChain
from anchoring.storage import Checkpoint, CheckpointState, OutboxItem, OutboxState
from node.db import Database
from tests.fixtures.chain import Consortium
from tests.support import REPO_ROOT

POINTS = ("commit", "planned", "signed", "broadcast", "recorded", "random")
KILLS = 24


def run_child(
    db_url: str,
    consortium: Consortium,
    account: LocalAccount,
    point: str,
    kill_after: int,
    seed: int,
) -> tuple[int, dict[int, bytes], int | None]:
    """Run one child; returns (exit code, acknowledged index → event bytes, recovered size)."""
    args = [
        sys.executable,
        "-m",
        "tests.anchoring.fault_child",
        db_url,
        consortium.rpc_url,
        str(consortium.deployment_file),
        bytes(account.key).hex(),
        point,
        str(kill_after),
        "6",  # rounds
        "5",  # events per round (at most)
        str(seed),
    ]
    done = subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    acked: dict[int, bytes] = {}
    recovered = None
    for line in done.stdout.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "ack":
            index = int(value)
            acked[index] = b'{"seed":%d,"n":%d}' % (seed, index)
        elif kind == "recovered":
            recovered = int(value)
    if done.returncode not in (0, -9):
        pytest.fail(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode, acked, recovered


def check_invariants(db: Database, chain: RpcChain, hospital: str, *, settled: bool) -> None:
    with db.session() as session:
        rows = list(session.execute(select(Checkpoint).order_by(Checkpoint.id)).scalars())
        failed = session.execute(
            select(func.count())
            .select_from(OutboxItem)
            .where(OutboxItem.state == OutboxState.FAILED)
        ).scalar_one()
    assert failed == 0, "a transaction reverted: something was sent twice or out of order"
    confirmed = [c for c in rows if c.state is CheckpointState.CONFIRMED]
    in_flight = [c for c in rows if c.state is not CheckpointState.CONFIRMED]
    count = chain.checkpoint_count(hospital)
    # The chain holds the confirmed ones, plus at most the one in flight when the child died.
    assert len(confirmed) <= count <= len(confirmed) + len(in_flight)
    sizes = []
    for index in range(count):
        on_chain = chain.checkpoint_at(hospital, index)
        sizes.append(on_chain.size)
        if index < len(confirmed):
            assert (on_chain.size, on_chain.root) == (confirmed[index].size, confirmed[index].root)
            assert confirmed[index].chain_index == index
    assert sizes == sorted(set(sizes)), f"a size was anchored twice or shrank: {sizes}"
    if settled:
        assert count == len(confirmed)
        assert not in_flight


def test_kill_minus_nine_at_every_step(
    tmp_path: Path, consortium: Consortium, chain: RpcChain, hospital_b: LocalAccount
) -> None:
    db_url = f"sqlite:///{tmp_path / 'fault.db'}"
    db = Database.connect(db_url)
    storage.metadata.create_all(db.writer)
    rng = random.Random(6962)
    acknowledged: dict[int, bytes] = {}
    kills = 0
    killed_at: set[str] = set()
    seed = 0
    while kills < KILLS:
        seed += 1
        point = POINTS[seed % len(POINTS)]
        code, acked, recovered = run_child(
            db_url, consortium, hospital_b, point, rng.randint(1, 3), seed
        )
        if code == -9:
            kills += 1
            killed_at.add(point)
        # The restart (this child) first anchored everything acknowledged before it.
        assert recovered is not None
        assert recovered >= len(acknowledged)
        with db.session() as session:
            anchored = session.execute(
                select(func.max(Checkpoint.size)).where(
                    Checkpoint.state == CheckpointState.CONFIRMED
                )
            ).scalar_one()
            assert (anchored or 0) >= len(acknowledged)
        acknowledged.update(acked)
        with db.session() as session:
            for index, event in acknowledged.items():
                assert storage.entry_at(session, index).event == event
        check_invariants(db, chain, hospital_b.address, settled=False)
    assert killed_at == set(POINTS)
    # A last clean run settles everything.
    code, _, recovered = run_child(db_url, consortium, hospital_b, "none", 1, seed + 1)
    assert code == 0
    check_invariants(db, chain, hospital_b.address, settled=True)
    with db.session() as session:
        size = storage.current_size(session)
    assert size >= len(acknowledged)
    latest = chain.checkpoint_at(hospital_b.address, chain.checkpoint_count(hospital_b.address) - 1)
    assert latest.size == size
    db.dispose()
