"""ArchiveNotary checkpoints on a real anvil: anchoring with RFC 6962 consistency proofs, the reads,
and every refusal (role, suspension, size not growing, bad or forged proofs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, RpcChain
from tests.contracts.helpers import MerkleLog, h, reverts
from tests.fixtures.chain import Consortium

Writer = Callable[[LocalAccount], ContractWriter]


@pytest.fixture(scope="module")
def log() -> MerkleLog:
    """A 64-leaf log (roots and proofs for any sizes up to 64)."""
    return MerkleLog(64)


def test_first_checkpoint_then_consistent_growth(
    chain: RpcChain, writer: Writer, hospital_a: LocalAccount, log: MerkleLog
) -> None:
    w = writer(hospital_a)
    first = w.transact("anchorCheckpoint", [5, log.root(5), []])
    assert first.event("CheckpointAnchored").args == {
        "hospital": hospital_a.address, "index": 0, "size": 5, "root": log.root(5),
    }  # fmt: skip
    second = w.transact("anchorCheckpoint", [13, log.root(13), log.consistency(5, 13)])
    assert second.event("CheckpointAnchored").args["index"] == 1
    assert chain.checkpoint_count(hospital_a.address) == 2
    cp0 = chain.checkpoint_at(hospital_a.address, 0)
    cp1 = chain.checkpoint_at(hospital_a.address, 1)
    assert (cp0.hospital, cp0.index, cp0.size, cp0.root) == (hospital_a.address, 0, 5, log.root(5))
    assert (cp1.index, cp1.size, cp1.root) == (1, 13, log.root(13))
    assert cp0.anchored_at == chain.block_timestamp(first.block_number)
    assert cp1.anchored_at == chain.block_timestamp(second.block_number)


def test_many_checkpoints_in_sequence(
    chain: RpcChain, writer: Writer, hospital_b: LocalAccount, log: MerkleLog
) -> None:
    w = writer(hospital_b)
    sizes = [1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 32, 33, 63, 64]
    previous = 0
    for size in sizes:
        proof = log.consistency(previous, size) if previous else []
        w.transact("anchorCheckpoint", [size, log.root(size), proof])
        previous = size
    assert chain.checkpoint_count(hospital_b.address) == len(sizes)
    assert [chain.checkpoint_at(hospital_b.address, i).size for i in range(len(sizes))] == sizes


def test_hospitals_have_independent_logs(
    chain: RpcChain, writer: Writer, consortium: Consortium, log: MerkleLog
) -> None:
    a, b = consortium.accounts.hospital_a, consortium.accounts.hospital_b
    other = MerkleLog(10, seed="other hospital")
    writer(a).transact("anchorCheckpoint", [8, log.root(8), []])
    writer(b).transact("anchorCheckpoint", [3, other.root(3), []])
    writer(b).transact("anchorCheckpoint", [10, other.root(10), other.consistency(3, 10)])
    assert chain.checkpoint_count(a.address) == 1
    assert chain.checkpoint_count(b.address) == 2
    assert chain.checkpoint_count(consortium.accounts.hospital_c.address) == 0


def test_first_checkpoint_refusals(
    chain: RpcChain, writer: Writer, consortium: Consortium, log: MerkleLog
) -> None:
    a = consortium.accounts
    w = writer(a.hospital_a)
    with reverts("NotaryCheckpointNotGrowing", a.hospital_a.address, 0, 0):
        w.transact("anchorCheckpoint", [0, log.root(1), []])
    with reverts("NotaryInvalidConsistencyProof", a.hospital_a.address, 0, 4):
        w.transact("anchorCheckpoint", [4, log.root(4), [h("unexpected")]])
    for account in (a.regulator, a.insurer, a.auditor, a.outsider, a.deployer):
        with reverts("NotaryUnauthorized", account.address, 1):
            writer(account).transact("anchorCheckpoint", [4, log.root(4), []])


def test_size_must_strictly_grow(
    chain: RpcChain, writer: Writer, hospital_a: LocalAccount, log: MerkleLog
) -> None:
    w = writer(hospital_a)
    w.transact("anchorCheckpoint", [10, log.root(10), []])
    with reverts("NotaryCheckpointNotGrowing", hospital_a.address, 10, 10):
        w.transact("anchorCheckpoint", [10, log.root(10), []])
    with reverts("NotaryCheckpointNotGrowing", hospital_a.address, 10, 9):
        w.transact("anchorCheckpoint", [9, log.root(9), log.consistency(9, 10)])


def test_bad_proofs_are_refused(
    chain: RpcChain, writer: Writer, hospital_a: LocalAccount, log: MerkleLog
) -> None:
    w = writer(hospital_a)
    w.transact("anchorCheckpoint", [6, log.root(6), []])
    good = log.consistency(6, 20)
    flipped = [bytes([good[0][0] ^ 1]) + good[0][1:], *good[1:]]
    forged = MerkleLog(20, seed="rewritten history")  # same sizes, different leaves
    attempts = {
        "empty proof": (log.root(20), []),
        "bit flip": (log.root(20), flipped),
        "truncated": (log.root(20), good[:-1]),
        "extra node": (log.root(20), [*good, h("extra")]),
        "wrong new root": (h("not the root"), good),
        "rewritten history": (forged.root(20), forged.consistency(6, 20)),
        "proof for other sizes": (log.root(20), log.consistency(5, 20)),
    }
    for label, (root, proof) in attempts.items():
        with reverts("NotaryInvalidConsistencyProof", hospital_a.address, 6, 20):
            w.transact("anchorCheckpoint", [20, root, proof])
        assert chain.checkpoint_count(hospital_a.address) == 1, label
    w.transact("anchorCheckpoint", [20, log.root(20), good])
    assert chain.checkpoint_count(hospital_a.address) == 2


def test_checkpoint_at_out_of_range(chain: RpcChain, hospital_a: LocalAccount) -> None:
    with reverts("NotaryUnknownCheckpoint", hospital_a.address, 0, 0):
        chain.checkpoint_at(hospital_a.address, 0)
