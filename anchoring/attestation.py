"""Insurer attestations: the ``archivechain.attestation/v1`` document, its EIP-712 typed data,
digest and signer, and the verification procedure of docs/attestations.md.

Pure: no I/O (chain facts come through ``AttestationChain``), Keccak from ``anchoring.eip55`` and
recovery with coincurve, like ``anchoring.certificate``, so ``archivechain attest verify`` loads
neither web3 nor eth-account.

EIP-712 domain: ``name`` "ArchiveChain", ``version`` "1", ``chainId``, ``verifyingContract`` = the
ArchiveNotary address. Primary type (``ATTESTATION_TYPE``)::

    Attestation(bytes32 attestationId,address issuer,address insurer,bytes32 patientRef,
                bytes32 consentHash,string purpose,string facts,string claimStart,
                string claimEnd,uint64 issuedAt,uint64 expiresAt,uint64 issuedBlock,
                address revocations,bytes32 recordsHash)

``recordsHash`` = SHA-256 of the RFC 8785 bytes of the document's ``records`` array.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from coincurve import PublicKey

from anchoring import merkle
from anchoring.chainview import OnChainCheckpoint
from anchoring.eip55 import is_checksum_address, to_checksum_address
from anchoring.eip55 import keccak256 as keccak
from anchoring.errors import (
    AnchoringError,
    ChainError,
    EventFormatError,
    NotANotaryError,
    ProofError,
)
from anchoring.events import AttestedFact, AttestEvent, format_time, jcs, parse_event

ATTESTATION_FORMAT = "archivechain.attestation/v1"
MAX_ATTESTATION_BYTES = 1024 * 1024
EIP712_NAME = "ArchiveChain"
EIP712_VERSION = "1"
ROLE_HOSPITAL = 1
MAX_PROOF_HASHES = 64
MAX_RECORDS = 1000

ATTESTATION_TYPE = (
    "Attestation(bytes32 attestationId,address issuer,address insurer,bytes32 patientRef,"
    "bytes32 consentHash,string purpose,string facts,string claimStart,string claimEnd,"
    "uint64 issuedAt,uint64 expiresAt,uint64 issuedBlock,address revocations,bytes32 recordsHash)"
)
_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (part.split(" ")[1], part.split(" ")[0])
    for part in ATTESTATION_TYPE[len("Attestation(") : -1].split(",")
)
"""(name, type) of each message field, in type order."""

EIP712_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Attestation": [{"name": name, "type": kind} for name, kind in _FIELDS],
}
"""The ``types`` of ``eth_signTypedData_v4`` for an attestation."""

_DOMAIN_TYPE_HASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_ATTESTATION_TYPE_HASH = keccak(ATTESTATION_TYPE.encode())
_BYTES32 = re.compile(r"0x[0-9a-f]{64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UINT64_MAX = 2**64 - 1
_TOP_KEYS = frozenset({"format", "domain", "message", "records", "signature", "evidence"})
_EVIDENCE_KEYS = frozenset({"event", "log_index", "checkpoint_index", "tree_size", "proof"})
_RECORD_KEYS = frozenset({"exists", *(fact.value for fact in AttestedFact)})


class AttestationError(AnchoringError, ValueError):
    """An attestation failed a check; ``code`` names it (docs/attestations.md §5)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------
# Typed data


def records_hash(records: Sequence[dict[str, Any]]) -> bytes:
    """SHA-256 of the RFC 8785 bytes of the ``records`` array."""
    return hashlib.sha256(jcs(list(records))).digest()


def _word(kind: str, value: Any) -> bytes:
    if kind == "bytes32":
        return bytes.fromhex(value[2:])
    if kind == "address":
        return bytes(12) + bytes.fromhex(value[2:])
    if kind == "string":
        return keccak(value.encode("utf-8"))
    return int(value).to_bytes(32, "big")  # uint64


def domain_separator(chain_id: int, notary: str) -> bytes:
    """``hashStruct(EIP712Domain)`` for ``chain_id`` and the notary address."""
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(EIP712_NAME.encode())
        + keccak(EIP712_VERSION.encode())
        + chain_id.to_bytes(32, "big")
        + _word("address", notary.lower())
    )


def typed_digest(domain: dict[str, Any], message: dict[str, Any]) -> bytes:
    """``keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message))`` of a checked message."""
    struct = keccak(
        _ATTESTATION_TYPE_HASH + b"".join(_word(kind, message[name]) for name, kind in _FIELDS)
    )
    separator = domain_separator(int(domain["chainId"]), str(domain["verifyingContract"]))
    return keccak(b"\x19\x01" + separator + struct)


def recover_signer(digest: bytes, signature: str) -> str | None:
    """The address whose key produced the 65-byte ``r ‖ s ‖ v`` signature, or None."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65 or raw[64] not in (27, 28):
            return None
        recoverable = raw[:64] + bytes([raw[64] - 27])
        public = PublicKey.from_signature_and_message(recoverable, digest, hasher=None)
    except Exception:  # malformed signature bytes of any kind
        return None
    return to_checksum_address("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())


# ------------------------------------------------------------------------------------------
# Document


def _fail(code: str, message: str) -> AttestationError:
    return AttestationError(code, message)


def _check_message(message: object) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) != {name for name, _ in _FIELDS}:
        raise _fail("attestation_malformed", "message: must hold exactly the Attestation fields")
    for name, kind in _FIELDS:
        value = message[name]
        ok = False
        if kind == "bytes32":
            ok = isinstance(value, str) and bool(_BYTES32.fullmatch(value))
        elif kind == "address":
            ok = isinstance(value, str) and is_checksum_address(value)
        elif kind == "string":
            ok = isinstance(value, str) and value.isascii() and len(value) <= 256
            if ok and name in ("claimStart", "claimEnd"):
                ok = bool(_DATE.fullmatch(value))
        else:
            ok = type(value) is int and 0 <= value <= _UINT64_MAX
        if not ok:
            raise _fail("attestation_malformed", f"message.{name}: not a valid {kind}")
    return message


def parse_attestation(raw: bytes) -> dict[str, Any]:
    """The attestation document of ``raw``, checked for shape (``AttestationError`` with code
    ``attestation_malformed`` otherwise); nothing about its truth is checked here."""
    if len(raw) > MAX_ATTESTATION_BYTES:
        raise _fail("attestation_malformed", "the document is too large")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("attestation_malformed", "the document is not UTF-8 JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != ATTESTATION_FORMAT:
        raise _fail("attestation_malformed", f"not an {ATTESTATION_FORMAT} document")
    if not set(doc) <= _TOP_KEYS or not (_TOP_KEYS - {"evidence"}) <= set(doc):
        raise _fail("attestation_malformed", f"top-level keys must be {sorted(_TOP_KEYS)}")
    domain = doc["domain"]
    if (
        not isinstance(domain, dict)
        or set(domain) != {"name", "version", "chainId", "verifyingContract"}
        or type(domain["chainId"]) is not int
        or not isinstance(domain["verifyingContract"], str)
        or not is_checksum_address(domain["verifyingContract"])
    ):
        raise _fail("attestation_malformed", "domain: name, version, chainId, verifyingContract")
    _check_message(doc["message"])
    records = doc["records"]
    if not isinstance(records, list) or len(records) > MAX_RECORDS:
        raise _fail("attestation_malformed", f"records: an array of at most {MAX_RECORDS}")
    for position, record in enumerate(records):
        if not isinstance(record, dict) or record.get("exists") is not True:
            raise _fail("attestation_malformed", f"records[{position}]: needs exists: true")
        if not set(record) <= _RECORD_KEYS:
            raise _fail("attestation_malformed", f"records[{position}]: unknown field")
    if not isinstance(doc["signature"], str):
        raise _fail("attestation_malformed", "signature: a 0x-hex string")
    evidence = doc.get("evidence")
    if evidence is not None and (
        not isinstance(evidence, dict)
        or set(evidence) != _EVIDENCE_KEYS
        or not isinstance(evidence["event"], str)
        or not isinstance(evidence["proof"], list)
        or len(evidence["proof"]) > MAX_PROOF_HASHES
        or not all(
            type(evidence[key]) is int and evidence[key] >= 0
            for key in ("log_index", "checkpoint_index", "tree_size")
        )
    ):
        raise _fail("attestation_malformed", f"evidence: exactly {sorted(_EVIDENCE_KEYS)}")
    return doc


def serialize_attestation(doc: dict[str, Any]) -> bytes:
    """The document as it is handed out: RFC 8785 bytes."""
    return jcs(doc)


# ------------------------------------------------------------------------------------------
# Verification


class AttestationChain(Protocol):
    """The chain facts the verification needs (docs/attestations.md §4)."""

    def chain_id(self) -> int: ...
    def notary_address(self) -> str: ...
    def latest_block(self) -> int: ...
    def is_active_at(self, account: str, role: int, block: int) -> bool: ...
    def revocations_notary(self, revocations: str) -> str: ...
    def revoked_at(self, revocations: str, issuer: str, attestation_id: bytes) -> int: ...
    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint: ...


@dataclass
class AttestationReport:
    """Outcome: ``ok`` with the checks passed, or the first failure's ``code`` and message."""

    ok: bool
    checks: list[str] = field(default_factory=list)
    code: str | None = None
    message: str | None = None
    issuer: str | None = None
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as printed by ``archivechain attest verify --json``."""
        return {
            "ok": self.ok,
            "checks": self.checks,
            "code": self.code,
            "message": self.message,
            "issuer": self.issuer,
            "digest": self.digest,
        }


def verify_attestation(doc: dict[str, Any], chain: AttestationChain, now: int) -> AttestationReport:
    """Run every check of docs/attestations.md §4 in order; the first failure ends it."""
    report = AttestationReport(ok=False)
    try:
        _verify(doc, chain, now, report)
    except AttestationError as exc:
        report.code, report.message = exc.code, str(exc)
        return report
    except NotANotaryError as exc:
        report.code, report.message = "notary_mismatch", str(exc)
        return report
    report.ok = True
    return report


def _verify(
    doc: dict[str, Any], chain: AttestationChain, now: int, report: AttestationReport
) -> None:
    domain, message = doc["domain"], doc["message"]
    # 1. domain
    if domain["name"] != EIP712_NAME or domain["version"] != EIP712_VERSION:
        raise _fail("domain_mismatch", "the domain is not ArchiveChain version 1")
    if domain["chainId"] != chain.chain_id():
        raise _fail("domain_mismatch", f"chainId {domain['chainId']} is not the chain's")
    if domain["verifyingContract"] != chain.notary_address():
        raise _fail("domain_mismatch", "verifyingContract is not the trusted notary")
    report.checks.append("domain")
    # 2. records against the signed hash and the facts listed
    if "0x" + records_hash(doc["records"]).hex() != message["recordsHash"]:
        raise _fail("records_mismatch", "records do not hash to recordsHash")
    facts = message["facts"].split(",") if message["facts"] else []
    if facts != sorted(set(facts)) or not set(facts) <= {f.value for f in AttestedFact}:
        raise _fail("attestation_malformed", "message.facts: sorted, known, comma-separated")
    allowed = {"exists", *facts}
    for position, record in enumerate(doc["records"]):
        extra = set(record) - allowed
        if extra:
            raise _fail("records_mismatch", f"records[{position}] states unlisted {sorted(extra)}")
    report.checks.append("records")
    # 3. signature
    digest = typed_digest(domain, message)
    report.digest = digest.hex()
    signer = recover_signer(digest, doc["signature"])
    if signer is None or signer != message["issuer"]:
        raise _fail("bad_signature", "the signature is not the issuer's over this message")
    report.issuer = signer
    report.checks.append("signature")
    # 4. the signer was an active hospital when it issued
    block = message["issuedBlock"]
    if block > chain.latest_block():
        raise _fail("signer_not_member", f"issuedBlock {block} is not on the chain yet")
    if not chain.is_active_at(signer, ROLE_HOSPITAL, block):
        raise _fail("signer_not_member", f"{signer} was not an active hospital at block {block}")
    report.checks.append("membership")
    # 5. expiry
    if not message["issuedAt"] < message["expiresAt"]:
        raise _fail("attestation_malformed", "expiresAt must be after issuedAt")
    if now >= message["expiresAt"]:
        raise _fail("expired", f"the attestation expired at {message['expiresAt']}")
    report.checks.append("expiry")
    # 6. revocation: one read
    revocations = message["revocations"]
    if chain.revocations_notary(revocations) != chain.notary_address():
        raise _fail("revocations_mismatch", f"{revocations} is not this notary's revocation list")
    attestation_id = bytes.fromhex(message["attestationId"][2:])
    revoked = chain.revoked_at(revocations, signer, attestation_id)
    if revoked:
        raise _fail("revoked", f"revoked by the issuer at {revoked}")
    report.checks.append("revocation")
    # 7. the ATTEST event is in the issuer's anchored log
    _check_evidence(doc.get("evidence"), message, digest, chain)
    report.checks.append("inclusion")


def _check_evidence(
    evidence: dict[str, Any] | None, message: dict[str, Any], digest: bytes, chain: AttestationChain
) -> None:
    if evidence is None:
        raise _fail("evidence_missing", "no ATTEST inclusion evidence (fetch it once anchored)")
    try:
        raw = base64.b64decode(evidence["event"], validate=True)
        event = parse_event(raw)
        proof = [bytes.fromhex(item) for item in evidence["proof"]]
    except (binascii.Error, ValueError, TypeError, EventFormatError) as exc:
        raise _fail("evidence_mismatch", f"evidence: {exc}") from None
    if not isinstance(event, AttestEvent):
        raise _fail("evidence_mismatch", f"the evidence event is {event.type}, not ATTEST")
    data = event.data
    expected = {
        "hospital": (event.hospital, message["issuer"]),
        "attestation_id": ("0x" + data.attestation_id, message["attestationId"]),
        "digest": (data.digest, digest.hex()),
        "insurer": (data.insurer, message["insurer"]),
        "expires_at": (int(data.expires_at.timestamp()), message["expiresAt"]),
        "log_index": (event.log_index, evidence["log_index"]),
    }
    for name, (found, wanted) in expected.items():
        if found != wanted:
            raise _fail("evidence_mismatch", f"the ATTEST event's {name} is not the attestation's")
    if int(event.time.timestamp()) != message["issuedAt"]:
        raise _fail("evidence_mismatch", f"ATTEST dated {format_time(event.time)}, not issuedAt")
    try:
        checkpoint = chain.checkpoint_at(message["issuer"], evidence["checkpoint_index"])
    except ChainError:
        raise
    except AnchoringError as exc:
        raise _fail("checkpoint_missing", f"checkpoint: {exc}") from None
    if checkpoint.size != evidence["tree_size"]:
        raise _fail("checkpoint_missing", "the anchored checkpoint has another size")
    try:
        merkle.verify_inclusion(
            event.log_index, checkpoint.size, merkle.leaf_hash(raw), proof, checkpoint.root
        )
    except ProofError as exc:
        raise _fail(
            "inclusion_failed", f"the ATTEST event is not in the anchored log: {exc}"
        ) from None
