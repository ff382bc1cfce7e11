"""The destruction path signs certificates with libsecp256k1 directly (``sign_digest``): the
signatures must be byte for byte those eth-account gives, and recover to the node's address with
the verifier's own code (``anchoring.certificate.signer``)."""

from __future__ import annotations

import os

from coincurve import PrivateKey
from eth_account import Account

from anchoring.certificate import signer, typed_digest
from node.services.retention import _keccak, sign_digest


def test_sign_digest_equals_eth_account_and_recovers() -> None:
    for _ in range(50):
        account = Account.from_key(os.urandom(32))
        key = PrivateKey(bytes(account.key))
        digest = typed_digest(
            chain_id=31337,
            notary="0x5FbDB2315678afecb367f032d93F642f64180aa3",
            archive_id="01J0Z8Q6J8ZK3W6Y9V5T3N2M1A",
            digest=os.urandom(32),
            custodian=account.address,
            hasher=_keccak,
        )
        ours = sign_digest(key, digest)
        assert ours == "0x" + bytes(account.unsafe_sign_hash(digest).signature).hex()


def test_native_keccak_digest_equals_the_verifiers_and_the_signature_recovers() -> None:
    account = Account.from_key(os.urandom(32))
    fields = {
        "chain_id": 31337,
        "notary": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "archive_id": "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A",
        "digest": os.urandom(32),
        "custodian": account.address,
    }
    native = typed_digest(**fields, hasher=_keccak)
    assert native == typed_digest(**fields)
    signature = sign_digest(PrivateKey(bytes(account.key)), native)
    assert signer(**fields, signature=signature) == account.address
    tampered = signature[:-2] + ("1c" if signature.endswith("1b") else "1b")
    assert signer(**fields, signature=tampered) != account.address
