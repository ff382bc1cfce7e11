"""EIP-55 addresses and the Keccak-256 behind them (``anchoring.eip55``), checked against the
published vectors, against eth_utils on random inputs, and against the selectors of
docs/proof-format.md §6.1."""

from __future__ import annotations

import hashlib
import random

import pytest
from eth_utils.address import to_checksum_address as reference_checksum
from eth_utils.crypto import keccak as reference_keccak

from anchoring.eip55 import is_checksum_address, keccak256, to_checksum_address
from anchoring.rpcview import ARCHIVE, CHECKPOINT_AT, CHECKPOINT_COUNT

EMPTY_KECCAK = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
EMPTY_SHA3 = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"

EIP55_VECTORS = [  # from the EIP-55 text: all caps, all lower, mixed
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def test_keccak256_is_not_sha3_256() -> None:
    assert keccak256(b"").hex() == EMPTY_KECCAK
    assert hashlib.sha3_256(b"").hexdigest() == EMPTY_SHA3
    assert keccak256(b"abc") != hashlib.sha3_256(b"abc").digest()


def test_keccak256_agrees_with_eth_utils_across_block_boundaries() -> None:
    rng = random.Random(55)
    for length in [*range(0, 300), 1_000, 4_097]:
        data = rng.randbytes(length)
        assert keccak256(data) == reference_keccak(data), length


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_published_vectors(vector: str) -> None:
    assert to_checksum_address(vector.lower()) == vector
    assert to_checksum_address(vector.upper().replace("0X", "0x")) == vector
    assert is_checksum_address(vector)
    flipped = vector[:-1] + vector[-1].swapcase() if vector[-1].isalpha() else None
    if flipped is not None:
        assert not is_checksum_address(flipped)


def test_the_worked_example_of_the_spec() -> None:
    """docs/proof-format.md §3.4 walks through this address."""
    lower = "70997970c51812dc3a010c7d01b50e0d17dc79c8"
    digest = keccak256(lower.encode("ascii")).hex()
    assert digest == "ab0b23228b24d84488ffaac5e35a6017af55d9b5c00c385c9311735b71867ebc"
    assert to_checksum_address("0x" + lower) == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_agrees_with_eth_utils_on_random_addresses() -> None:
    rng = random.Random(8)
    for _ in range(300):
        address = "0x" + rng.randbytes(20).hex()
        assert to_checksum_address(address) == reference_checksum(address)
        assert is_checksum_address(reference_checksum(address))


@pytest.mark.parametrize(
    "bad", ["", "0x", "0x" + "g" * 40, "70997970c51812dc3a010c7d01b50e0d17dc79c8", "0x" + "a" * 41]
)
def test_malformed_addresses(bad: str) -> None:
    assert not is_checksum_address(bad)
    with pytest.raises(ValueError, match="not a 20-byte hex address"):
        to_checksum_address(bad)


def test_the_selectors_of_the_spec_are_keccak_of_the_signatures() -> None:
    assert keccak256(b"checkpointCount(address)")[:4] == CHECKPOINT_COUNT
    assert keccak256(b"checkpointAt(address,uint64)")[:4] == CHECKPOINT_AT
    assert keccak256(b"archive(bytes32)")[:4] == ARCHIVE
    assert CHECKPOINT_COUNT.hex() == "76a82342"
    assert CHECKPOINT_AT.hex() == "5cfa0e30"
    assert ARCHIVE.hex() == "a995db26"
