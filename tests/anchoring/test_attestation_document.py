"""The attestation document parser and the CLI's exit codes without a chain: malformed input is
refused with ``attestation_malformed`` (exit 2), bad arguments exit 2, an unreachable chain exits 3
(no verdict). The chain-backed checks are in tests/api/test_attestations.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_typing import Hash32

from anchoring.attestation import (
    ATTESTATION_FORMAT,
    AttestationError,
    parse_attestation,
    records_hash,
    recover_signer,
    typed_digest,
)
from anchoring.events import jcs
from archivechain import main

NOTARY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def document() -> dict[str, Any]:
    account = Account.from_key(b"\x07" * 32)  # TEST KEY ONLY
    records = [{"exists": True, "record_class": "INPATIENT"}]
    domain = {"name": "ArchiveChain", "version": "1", "chainId": 31337, "verifyingContract": NOTARY}
    message = {
        "attestationId": "0x" + "11" * 32,
        "issuer": account.address,
        "insurer": "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
        "patientRef": "0x" + "22" * 32,
        "consentHash": "0x" + "33" * 32,
        "purpose": "insurance",
        "facts": "record_class",
        "claimStart": "2024-01-01",
        "claimEnd": "2024-12-31",
        "issuedAt": 1700000000,
        "expiresAt": 1702592000,
        "issuedBlock": 12,
        "revocations": "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
        "recordsHash": "0x" + records_hash(records).hex(),
    }
    digest = typed_digest(domain, message)
    signature = "0x" + bytes(account.unsafe_sign_hash(Hash32(digest)).signature).hex()
    return {
        "format": ATTESTATION_FORMAT,
        "domain": domain,
        "message": message,
        "records": records,
        "signature": signature,
    }


def test_a_well_formed_document_parses_and_its_signer_recovers() -> None:
    doc = parse_attestation(jcs(document()))
    digest = typed_digest(doc["domain"], doc["message"])
    assert recover_signer(digest, doc["signature"]) == doc["message"]["issuer"]
    assert recover_signer(digest, "0x" + "00" * 65) is None


def _broken(change: str) -> dict[str, Any]:
    doc = document()
    if change == "format":
        doc["format"] = "archivechain.proof/v1"
    elif change == "missing key":
        del doc["signature"]
    elif change == "extra key":
        doc["note"] = "x"
    elif change == "bytes32":
        doc["message"]["attestationId"] = "0x1234"
    elif change == "address":
        doc["message"]["issuer"] = doc["message"]["issuer"].lower()
    elif change == "uint64":
        doc["message"]["expiresAt"] = -1
    elif change == "date":
        doc["message"]["claimStart"] = "2024/01/01"
    elif change == "record without exists":
        doc["records"] = [{"state": "ARCHIVED"}]
    elif change == "unknown record field":
        doc["records"] = [{"exists": True, "patient_name": "x"}]
    elif change == "evidence shape":
        doc["evidence"] = {"event": "", "proof": []}
    return doc


@pytest.mark.parametrize(
    "change",
    [
        "format",
        "missing key",
        "extra key",
        "bytes32",
        "address",
        "uint64",
        "date",
        "record without exists",
        "unknown record field",
        "evidence shape",
    ],
)
def test_malformed_documents_are_refused(change: str) -> None:
    with pytest.raises(AttestationError) as caught:
        parse_attestation(json.dumps(_broken(change)).encode())
    assert caught.value.code == "attestation_malformed"


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[]", b"{" * 100_000, b"1" * (2**20 + 1)])
def test_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(AttestationError) as caught:
        parse_attestation(raw)
    assert caught.value.code == "attestation_malformed"


def test_cli_exit_codes_without_a_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(jcs(document()))
    bad.write_bytes(b'{"format": "something else"}')
    rpc = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert main(["attest", "verify", str(bad), "--rpc", rpc, "--notary", NOTARY]) == 2
    assert main(["attest", "verify", str(good), "--rpc", rpc, "--notary", "0x12"]) == 2
    assert (
        main(["attest", "verify", str(tmp_path / "none.json"), "--rpc", rpc, "--notary", NOTARY])
        == 2
    )
    assert main(["attest", "verify", str(good), "--rpc", "ftp://x", "--notary", NOTARY]) == 2
    assert main(["attest", "verify", str(good), "--rpc", rpc, "--notary", NOTARY]) == 3
    assert "chain unavailable" in capsys.readouterr().err
