"""Helpers of the contract tests: revert assertions, time travel, ids, and Merkle logs of any size."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from ulid import ULID

from anchoring import merkle
from anchoring.chain import ContractRevertError, JsonRpc, RpcChain
from anchoring.ids import archive_key

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO32 = bytes(32)
ONE_YEAR = 365 * 24 * 3600
OLD_TRIGGER = 0
"""A trigger date of 1970-01-01: every class's retention floor ran out long ago, so any deadline
from now on is legal (tests of other rules than the floor)."""


@contextmanager
def reverts(name: str, *args: Any) -> Iterator[pytest.ExceptionInfo[ContractRevertError]]:
    """Expect a ``ContractRevertError`` with exactly this custom error name and arguments."""
    with pytest.raises(ContractRevertError) as info:
        yield info
    assert info.value.error_name == name, str(info.value)
    assert info.value.error_args == args, str(info.value)


def new_archive() -> tuple[str, bytes]:
    """A fresh ULID archive id and its on-chain key."""
    archive_id = str(ULID())
    return archive_id, archive_key(archive_id)


def h(label: str) -> bytes:
    """A recognisable 32-byte hash for test values."""
    return hashlib.sha256(label.encode()).digest()


def latest_time(chain: RpcChain) -> int:
    """Timestamp of the latest block."""
    return chain.block_timestamp("latest")


def advance_time(rpc: JsonRpc, seconds: int) -> None:
    """Move the chain clock forward and mine a block."""
    rpc.request("evm_increaseTime", [seconds])
    rpc.request("evm_mine")


class MerkleLog:
    """An RFC 6962 log of synthetic leaves with every perfect subtree stored, so roots and
    consistency proofs of any size come from ``anchoring.merkle``'s range arithmetic in
    O(log n) lookups (a 10^6-leaf log builds in about a second)."""

    def __init__(self, size: int, seed: str = "log") -> None:
        leaves = [merkle.leaf_hash(f"{seed}:{i}".encode()) for i in range(size)]
        self.levels: list[list[bytes]] = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def leaf_hashes(self) -> list[bytes]:
        """Hashes of the leaves."""
        return self.levels[0]

    def range_hash(self, lo: int, hi: int) -> bytes:
        """RFC 6962 hash of leaves ``[lo, hi)``."""
        return merkle.hash_from_subtrees(
            [self.levels[level][index] for level, index in merkle.perfect_subtrees(lo, hi)]
        )

    def root(self, size: int) -> bytes:
        """Root of the first ``size`` leaves."""
        return self.range_hash(0, size)

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof from ``size1`` to ``size2``."""
        return [self.range_hash(lo, hi) for lo, hi in merkle.consistency_ranges(size1, size2)]


def proof_args(proof: Sequence[bytes]) -> list[bytes]:
    """A proof as ABI ``bytes32[]`` argument."""
    return list(proof)
