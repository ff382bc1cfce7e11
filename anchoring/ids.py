"""Identifiers shared by the chain and the off-chain world.

An archive id is a ULID string off chain and, on chain, the ``bytes32`` made of 16 zero bytes
followed by the 16 ULID bytes (``bytes32(uint256(ulid))``). Addresses are EIP-55 checksummed strings.
"""

from __future__ import annotations

import re

from anchoring.eip55 import is_checksum_address, to_checksum_address
from anchoring.errors import AnchoringError

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


class IdentifierError(AnchoringError, ValueError):
    """An archive id or address is malformed."""

    code = "invalid_identifier"


def archive_key(archive_id: str) -> bytes:
    """The on-chain ``bytes32`` key of a canonical (upper-case) ULID string."""
    if not isinstance(archive_id, str) or not _ULID_RE.fullmatch(archive_id):
        raise IdentifierError(
            f"archive id must be a 26-character upper-case ULID, got {archive_id!r}"
        )
    value = 0
    for char in archive_id:  # Crockford base32, 5 bits a character (130 bits, first one <= 7)
        value = value << 5 | _CROCKFORD.index(char)
    return value.to_bytes(32, "big")


def archive_id_from_key(key: bytes) -> str:
    """The ULID string of an on-chain ``bytes32`` key (inverse of ``archive_key``)."""
    if len(key) != 32 or any(key[:16]):
        raise IdentifierError(
            f"archive key must be 32 bytes starting with 16 zero bytes, got {key.hex()}"
        )
    from ulid import ULID  # imported here: the verifier never needs it, and it is slow to load

    return str(ULID.from_bytes(key[16:]))


def normalize_address(address: str) -> str:
    """EIP-55 form of a 0x-prefixed 20-byte hex address.

    All-lower or all-upper hex is accepted; mixed case must be a valid checksum (a typo otherwise).
    """
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise IdentifierError(f"not an address: {address!r}")
    body = address[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(address):
        raise IdentifierError(f"address {address} has an invalid EIP-55 checksum")
    return str(to_checksum_address(address))
