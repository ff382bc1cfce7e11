"""Destruction certificates: the EIP-712 digest computed directly equals eth-account's typed-data
encoding, the signer recovers, and certificates that are not canonical or not of this format are
refused."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message
from eth_utils.crypto import keccak

from anchoring.certificate import (
    CERTIFICATE_FORMAT,
    canonical_certificate,
    certificate_hash,
    parse_certificate,
    signer,
    typed_digest,
    typed_message,
)
from anchoring.errors import BundleFormatError

NOTARY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ARCHIVE = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"


def test_the_direct_digest_is_the_typed_data_digest_and_the_signer_recovers() -> None:
    account = Account.create()
    other = Account.create()
    document = canonical_certificate({"format": CERTIFICATE_FORMAT, "archive_id": ARCHIVE})
    fields = {
        "chain_id": 31337,
        "notary": NOTARY,
        "archive_id": ARCHIVE,
        "digest": certificate_hash(document),
        "custodian": account.address,
    }
    assert certificate_hash(document) == hashlib.sha256(document).digest()
    assert _hash_eip191_message(typed_message(**fields)) == typed_digest(**fields)
    assert typed_digest(**fields, hasher=keccak) == typed_digest(**fields)  # native, as nodes sign
    signature = "0x" + bytes(account.sign_message(typed_message(**fields)).signature).hex()
    assert signer(**fields, signature=signature) == account.address
    forged = "0x" + bytes(other.sign_message(typed_message(**fields)).signature).hex()
    assert signer(**fields, signature=forged) == other.address
    # Another chain, notary or hash: another digest, so the custodian is not recovered.
    assert signer(**{**fields, "chain_id": 1}, signature=signature) != account.address
    assert signer(**{**fields, "digest": bytes(32)}, signature=signature) != account.address
    assert signer(**fields, signature="0x" + "00" * 65) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"format":"archivechain.proof/v1"}',
        b'{ "format": "archivechain.destruction-certificate/v1" }',  # not canonical
        b'{"z":1,"format":"archivechain.destruction-certificate/v1"}',  # keys unsorted
        b'{"format":"archivechain.destruction-certificate/v1","x":"' + b"a" * 300_000 + b'"}',
        b"\xff\xfe",
    ],
)
def test_malformed_certificates_are_refused(raw: bytes) -> None:
    with pytest.raises(BundleFormatError):
        parse_certificate(raw)


def test_a_canonical_certificate_parses() -> None:
    document = {"format": CERTIFICATE_FORMAT, "archive_id": ARCHIVE, "chain_id": 31337}
    assert parse_certificate(canonical_certificate(document)) == document
