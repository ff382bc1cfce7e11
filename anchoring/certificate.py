"""Destruction certificates: what was destroyed, when, how and on whose approval, as RFC 8785
canonical JSON, hashed (SHA-256) into the DESTROY event and onto the chain (``destroy(id,
certificateHash)``), and signed by the custodian's node key as EIP-712 typed data.

Pure: no I/O, and light: Keccak from ``anchoring.eip55``, recovery with coincurve (the verifier
imports neither eth-account nor eth-utils). ``certificate_hash`` and ``signer`` are what a verifier needs; the document's fields
are listed in docs/retention.md and docs/proof-format.md.

EIP-712 domain: ``name`` "ArchiveChain", ``version`` "1", ``chainId`` the chain's id,
``verifyingContract`` the ArchiveNotary address. Primary type::

    DestructionCertificate(bytes32 archiveId,bytes32 certificateHash,address custodian)

``archiveId`` is the archive's on-chain key (``anchoring.ids.archive_key``), ``certificateHash``
the SHA-256 of the canonical document, ``custodian`` the signer's own address.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from coincurve import PublicKey

from anchoring.eip55 import keccak256 as keccak
from anchoring.eip55 import to_checksum_address
from anchoring.errors import BundleFormatError
from anchoring.events import jcs
from anchoring.ids import archive_key

if TYPE_CHECKING:  # eth-account is for signing nodes only: the verifier never imports it
    from eth_account.messages import SignableMessage

CERTIFICATE_FORMAT = "archivechain.destruction-certificate/v1"
MAX_CERTIFICATE_BYTES = 256 * 1024
EIP712_NAME = "ArchiveChain"
EIP712_VERSION = "1"

_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "DestructionCertificate": [
        {"name": "archiveId", "type": "bytes32"},
        {"name": "certificateHash", "type": "bytes32"},
        {"name": "custodian", "type": "address"},
    ],
}


def canonical_certificate(document: dict[str, Any]) -> bytes:
    """The certificate's RFC 8785 bytes (the bytes that are hashed and signed)."""
    return jcs(document)


def certificate_hash(raw: bytes) -> bytes:
    """SHA-256 of the canonical certificate bytes (the on-chain ``certificateHash``)."""
    return hashlib.sha256(raw).digest()


def parse_certificate(raw: bytes) -> dict[str, Any]:
    """The certificate document of ``raw``, refused (``BundleFormatError``) unless it is a JSON
    object of this format in canonical form."""
    if len(raw) > MAX_CERTIFICATE_BYTES:
        raise BundleFormatError("the certificate is too large", field="certificate")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleFormatError("the certificate is not JSON", field="certificate") from None
    if not isinstance(document, dict) or document.get("format") != CERTIFICATE_FORMAT:
        raise BundleFormatError(
            f"the certificate is not a {CERTIFICATE_FORMAT} object", field="certificate"
        )
    try:
        canonical = canonical_certificate(document)
    except (TypeError, ValueError):
        raise BundleFormatError(
            "the certificate holds a value JCS cannot encode", field="certificate"
        ) from None
    if canonical != raw:
        raise BundleFormatError(
            "the certificate is not in RFC 8785 canonical form", field="certificate"
        )
    return document


def typed_message(
    *, chain_id: int, notary: str, archive_id: str, digest: bytes, custodian: str
) -> SignableMessage:
    """The EIP-712 message for a certificate with hash ``digest``, as eth-account encodes it
    (a test checks ``typed_digest`` against it)."""
    from eth_account.messages import encode_typed_data

    return encode_typed_data(
        full_message={
            "types": _TYPES,
            "primaryType": "DestructionCertificate",
            "domain": {
                "name": EIP712_NAME,
                "version": EIP712_VERSION,
                "chainId": chain_id,
                "verifyingContract": notary,
            },
            "message": {
                "archiveId": archive_key(archive_id),
                "certificateHash": digest,
                "custodian": custodian,
            },
        }
    )


_DOMAIN_TYPE_HASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_CERTIFICATE_TYPE_HASH = keccak(
    b"DestructionCertificate(bytes32 archiveId,bytes32 certificateHash,address custodian)"
)


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


Hasher = Callable[[bytes], bytes]


@lru_cache(maxsize=64)
def _domain_separator(chain_id: int, notary: str) -> bytes:
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(EIP712_NAME.encode())
        + keccak(EIP712_VERSION.encode())
        + chain_id.to_bytes(32, "big")
        + _address_word(notary)
    )


def typed_digest(
    *,
    chain_id: int,
    notary: str,
    archive_id: str,
    digest: bytes,
    custodian: str,
    hasher: Hasher = keccak,
) -> bytes:
    """The EIP-712 digest ``keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message))`` of the
    certificate message, computed directly (the same bytes ``typed_message`` signs; a test
    compares them). ``hasher`` is Keccak-256: the pure one here by default, a native one where
    a node signs thousands of certificates."""
    message = hasher(
        _CERTIFICATE_TYPE_HASH + archive_key(archive_id) + digest + _address_word(custodian)
    )
    return hasher(b"\x19\x01" + _domain_separator(chain_id, notary.lower()) + message)


def signer(
    *,
    chain_id: int,
    notary: str,
    archive_id: str,
    digest: bytes,
    custodian: str,
    signature: str,
) -> str | None:
    """The address that produced ``signature`` over the certificate message (None when the
    signature does not parse or recover)."""
    message = typed_digest(
        chain_id=chain_id, notary=notary, archive_id=archive_id, digest=digest, custodian=custodian
    )
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65 or raw[64] not in (27, 28):
            return None
        recoverable = raw[:64] + bytes([raw[64] - 27])
        public = PublicKey.from_signature_and_message(recoverable, message, hasher=None)
    except Exception:  # malformed signature bytes of any kind
        return None
    return to_checksum_address("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())
