"""EIP-55 checksummed addresses, and the Keccak-256 they are defined with.

EIP-55 hashes with **Keccak-256**, the original Keccak submission (padding byte ``0x01``), not
the standardised SHA3-256 (FIPS 202, padding byte ``0x06``) that ``hashlib.sha3_256`` provides:
the two differ on every input (``keccak256(b"")`` starts ``c5d24601``, ``sha3_256(b"")``
``a7ffc6f8``). Written in plain Python so that verifying a bundle does not import eth_utils
(about 0.13 s of start-up); results are cached because a handful of member addresses recur.
A test checks it against eth_utils' Keccak on random inputs.
"""

from __future__ import annotations

import re
from functools import lru_cache

_MASK = (1 << 64) - 1
_RATE = 136  # bytes absorbed per permutation for a 256-bit output (1600 - 2*256 bits)
_ROUND_CONSTANTS = (
    0x0000000000000001,
    0x0000000000008082,
    0x800000000000808A,
    0x8000000080008000,
    0x000000000000808B,
    0x0000000080000001,
    0x8000000080008081,
    0x8000000000008009,
    0x000000000000008A,
    0x0000000000000088,
    0x0000000080008009,
    0x000000008000000A,
    0x000000008000808B,
    0x800000000000008B,
    0x8000000000008089,
    0x8000000000008003,
    0x8000000000008002,
    0x8000000000000080,
    0x000000000000800A,
    0x800000008000000A,
    0x8000000080008081,
    0x8000000000008080,
    0x0000000080000001,
    0x8000000080008008,
)
_ROTATIONS = (  # r[x][y]
    (0, 36, 3, 41, 18),
    (1, 44, 10, 45, 2),
    (62, 6, 43, 15, 61),
    (28, 55, 25, 21, 56),
    (27, 20, 39, 8, 14),
)
# rho and pi together: lane (x, y) rotated by r[x][y] moves to lane (y, 2x + 3y mod 5).
_RHO_PI = tuple(
    (x + 5 * y, y + 5 * ((2 * x + 3 * y) % 5), _ROTATIONS[x][y]) for x in range(5) for y in range(5)
)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _permute(lanes: list[int]) -> None:
    """Keccak-f[1600] on 25 little-endian 64-bit lanes (index x + 5y), in place."""
    moved = [0] * 25
    for constant in _ROUND_CONSTANTS:
        columns = [
            lanes[x] ^ lanes[x + 5] ^ lanes[x + 10] ^ lanes[x + 15] ^ lanes[x + 20]
            for x in range(5)
        ]
        for x in range(5):
            right = columns[(x + 1) % 5]
            mix = columns[(x - 1) % 5] ^ (((right << 1) | (right >> 63)) & _MASK)
            for y in range(0, 25, 5):
                lanes[x + y] ^= mix
        for source, target, shift in _RHO_PI:
            lane = lanes[source]
            moved[target] = ((lane << shift) | (lane >> (64 - shift))) & _MASK if shift else lane
        for y in range(0, 25, 5):
            a, b, c, d, e = moved[y : y + 5]
            lanes[y] = a ^ (~b & c)
            lanes[y + 1] = b ^ (~c & d)
            lanes[y + 2] = c ^ (~d & e)
            lanes[y + 3] = d ^ (~e & a)
            lanes[y + 4] = e ^ (~a & b)
        lanes[0] ^= constant


def keccak256(data: bytes) -> bytes:
    """Keccak-256 of ``data`` (Ethereum's hash; not SHA3-256)."""
    padded = bytearray(data)
    padded.append(0x01)
    padded.extend(bytes(-len(padded) % _RATE))
    padded[-1] |= 0x80
    lanes = [0] * 25
    for start in range(0, len(padded), _RATE):
        block = padded[start : start + _RATE]
        for i in range(_RATE // 8):
            lanes[i] ^= int.from_bytes(block[8 * i : 8 * i + 8], "little")
        _permute(lanes)
    return b"".join(lane.to_bytes(8, "little") for lane in lanes[:4])


@lru_cache(maxsize=4096)
def _checksummed(lower_hex: str) -> str:
    digest = keccak256(lower_hex.encode("ascii")).hex()
    return "0x" + "".join(
        char.upper() if char.isalpha() and int(nibble, 16) >= 8 else char
        for char, nibble in zip(lower_hex, digest, strict=False)
    )


def to_checksum_address(address: str) -> str:
    """The EIP-55 form of ``0x`` + 40 hex characters (any case); ``ValueError`` otherwise.

    Each hex letter is upper-cased when the matching nibble of Keccak-256 over the 40
    lower-case hex characters (as ASCII, without ``0x``) is 8 or more.
    """
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise ValueError(f"not a 20-byte hex address: {address!r}")
    return _checksummed(address[2:].lower())


def is_checksum_address(address: str) -> bool:
    """True when ``address`` is ``0x`` + 40 hex characters in exactly its EIP-55 form."""
    return (
        isinstance(address, str)
        and _ADDRESS.fullmatch(address) is not None
        and _checksummed(address[2:].lower()) == address
    )
