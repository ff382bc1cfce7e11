"""The proof bundle ``archivechain.proof/v1``: models, a strict bounded parser and a serializer.

A bundle carries, for one archive, each lifecycle event's exact canonical bytes (base64), the
hospital log that holds it, its leaf index, and an inclusion proof against a named checkpoint of
that log, plus the chain id and ArchiveNotary address where the checkpoints are anchored.
Entries may come from several hospitals' logs (custody transfers, share grants). The format is
specified in ``docs/proof-format.md``; this module only reads and writes it (the verifier judges).

Parsing is strict and bounded, in the order of docs/proof-format.md §3: size, nesting depth, JSON
syntax, then what the document is (``NotABundleError`` says what it is instead: an API error
response, another JSON value, another format or version), then no duplicate keys or non-integer
numbers, then the fields (no unknown ones, canonical base64 and lowercase hex only, list limits).
Every refusal names the offending field by its path, e.g. ``entries[3].proof[2]``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NoReturn

import rfc8785

from anchoring.chainview import CustodyState
from anchoring.errors import BundleFormatError, NotABundleError
from anchoring.events import (
    MAX_EVENT_BYTES,
    MAX_SAFE_INTEGER,
    check_address,
    check_archive_id,
    check_hex32,
)
from anchoring.ids import ZERO_ADDRESS
from anchoring.merkle import HASH_SIZE

BUNDLE_FORMAT = "archivechain.proof/v1"
PUBLIC_PROOF_FORMAT = "archivechain.public-proof/v1"
"""The public page's proof (docs/proof-format.md §11): the published ``ARCHIVE`` and ``DESTROY``
entries only (never ``CREATE``, which holds the patient pseudonym), and the certificate."""
MAX_PUBLIC_ENTRIES = 2
_FORMAT_FAMILY = "archivechain.proof/"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_PROOF_LENGTH = 64
MAX_DEPTH = 8
"""Deepest nesting accepted; a valid bundle nests four deep (document, entries, entry, proof)."""
_MAX_EVENT_BASE64 = 4 * ((MAX_EVENT_BYTES + 2) // 3)


@dataclass(frozen=True, slots=True)
class BundleCheckpoint:
    """The checkpoint an entry is proven against: checkpoint ``index`` of ``hospital``'s log."""

    hospital: str
    index: int
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One event: its canonical bytes, where it sits, and its inclusion proof."""

    hospital: str
    log_index: int
    event: bytes
    proof: tuple[bytes, ...]
    checkpoint: BundleCheckpoint


@dataclass(frozen=True, slots=True)
class CustodyClaim:
    """What the bundle's producer states the on-chain custody record was when it was built."""

    custodian: str
    state: CustodyState
    on_hold: bool
    commitment: str | None


@dataclass(frozen=True, slots=True)
class CertificateClaim:
    """A destroyed archive's destruction certificate: its RFC 8785 bytes and the custodian's
    EIP-712 signature (``0x`` + 130 hex digits)."""

    document: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """A parsed ``archivechain.proof/v1`` document."""

    chain_id: int
    notary: str
    archive_id: str
    entries: tuple[BundleEntry, ...]
    custody: CustodyClaim | None = None
    certificate: CertificateClaim | None = None
    public: bool = False
    """An ``archivechain.public-proof/v1`` document (§11): verified by its own sequence rules."""


# ------------------------------------------------------------------------------------------
# Parsing


def _fail(path: str, message: str) -> NoReturn:
    raise BundleFormatError(message, field=path or "(document)")


class _Strictness:
    """Hooks for ``json.loads`` that note the first duplicate key or non-integer number instead
    of failing at once, so that a document is first identified by its ``format`` (§3: a bundle
    of another version may use numbers or keys this one refuses) and refused afterwards."""

    def __init__(self) -> None:
        self.violation: str | None = None

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result and self.violation is None:
                self.violation = f'duplicate key "{_quote(key)}"'
            result[key] = value
        return result

    def float(self, text: str) -> int:
        if self.violation is None:
            self.violation = f"non-integer number {_quote(text)} is not allowed"
        return 0


def _no_constant(name: str) -> NoReturn:
    _fail("(document)", f"not JSON: {name} is not allowed")


def _quote(text: str, limit: int = 80) -> str:
    """``text`` made safe for a one-line message: control and non-ASCII characters escaped,
    cut at ``limit`` characters."""
    safe = text.encode("ascii", "backslashreplace").decode("ascii")
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in safe)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


_JSON_KIND = {str: "a JSON string", int: "a JSON number", bool: "JSON true or false"}
_API_ERROR_KEYS = frozenset({"code", "message", "details"})


def _not_a_bundle(document: object) -> str | None:
    """What ``document`` is when it is not an ``archivechain.proof/v1`` bundle (None when its
    ``format`` says it is one): the refusal says what the input is, not only what it is not."""
    if document is None:
        return "JSON null, not a proof bundle"
    if isinstance(document, list):
        return "a JSON array, not a proof bundle (a bundle is a JSON object)"
    if not isinstance(document, dict):
        return f"{_JSON_KIND.get(type(document), 'a JSON value')}, not a proof bundle"
    if "format" not in document:
        code, message = document.get("code"), document.get("message")
        if isinstance(code, str) and isinstance(message, str) and set(document) <= _API_ERROR_KEYS:
            return (
                f"this is an error response from the node API ({_quote(code, 40)}: "
                f"{_quote(message, 160)}), not a proof bundle"
            )
        keys = ", ".join(_quote(key, 30) for key in list(document)[:6])
        more = ", …" if len(document) > 6 else ""
        return (
            f'a JSON object without a "format" field (keys: {keys or "none"}{more}), '
            "not a proof bundle"
        )
    found = document["format"]
    if not isinstance(found, str):
        return 'a JSON object whose "format" is not a string, not a proof bundle'
    if found in (BUNDLE_FORMAT, PUBLIC_PROOF_FORMAT):
        return None
    if found.startswith(_FORMAT_FAMILY):
        return (
            f"a proof bundle of format {_quote(found, 60)}, which this verifier does not read "
            f"(it reads {BUNDLE_FORMAT})"
        )
    return f"a document of format {_quote(found, 60)}, not a proof bundle ({BUNDLE_FORMAT})"


def _object(
    value: object, path: str, required: Collection[str], optional: Collection[str] = ()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, "must be a JSON object")
    for key in value:
        if key not in required and key not in optional:
            _fail(f"{path}.{key}" if path else key, "unknown field")
    for key in sorted(required):
        if key not in value:
            _fail(f"{path}.{key}" if path else key, "missing")
    return value


def _int(value: object, path: str, minimum: int = 0) -> int:
    if type(value) is not int:
        _fail(path, "must be an integer")
    if not minimum <= value <= MAX_SAFE_INTEGER:
        _fail(path, f"must be between {minimum} and {MAX_SAFE_INTEGER}")
    return value


def _bool(value: object, path: str) -> bool:
    if type(value) is not bool:
        _fail(path, "must be true or false")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "must be a string")
    return value


def _checked(check: Callable[[str], str], value: object, path: str) -> str:
    text = _str(value, path)
    try:
        return check(text)
    except ValueError as exc:
        _fail(path, str(exc))


def _hash(value: object, path: str) -> bytes:
    return bytes.fromhex(_checked(check_hex32, value, path))


def _list(value: object, path: str, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, "must be a JSON array")
    if len(value) > maximum:
        _fail(path, f"has {len(value)} items, more than the limit of {maximum}")
    return value


def _base64(value: object, path: str) -> bytes:
    text = _str(value, path)
    if len(text) > _MAX_EVENT_BASE64:
        _fail(path, f"longer than {MAX_EVENT_BYTES} bytes once decoded")
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        _fail(path, "malformed base64 (standard alphabet, with padding)")
    if base64.b64encode(decoded).decode("ascii") != text:
        _fail(path, "non-canonical base64 (padding bits must be zero)")
    if not decoded:
        _fail(path, "is empty")
    if len(decoded) > MAX_EVENT_BYTES:  # the text limit above lets up to 2 more bytes through
        _fail(path, f"longer than {MAX_EVENT_BYTES} bytes once decoded")
    return decoded


def _checkpoint(value: object, path: str) -> BundleCheckpoint:
    obj = _object(value, path, {"hospital", "index", "size", "root"})
    return BundleCheckpoint(
        hospital=_checked(check_address, obj["hospital"], f"{path}.hospital"),
        index=_int(obj["index"], f"{path}.index"),
        size=_int(obj["size"], f"{path}.size", minimum=1),
        root=_hash(obj["root"], f"{path}.root"),
    )


def _entry(value: object, path: str) -> BundleEntry:
    obj = _object(value, path, {"hospital", "log_index", "event", "proof", "checkpoint"})
    proof_path = f"{path}.proof"
    proof = _list(obj["proof"], proof_path, MAX_PROOF_LENGTH)
    return BundleEntry(
        hospital=_checked(check_address, obj["hospital"], f"{path}.hospital"),
        log_index=_int(obj["log_index"], f"{path}.log_index"),
        event=_base64(obj["event"], f"{path}.event"),
        proof=tuple(_hash(item, f"{proof_path}[{i}]") for i, item in enumerate(proof)),
        checkpoint=_checkpoint(obj["checkpoint"], f"{path}.checkpoint"),
    )


def _custodian(value: str) -> str:
    return value if value == ZERO_ADDRESS else check_address(value)


def _custody(value: object, path: str) -> CustodyClaim:
    obj = _object(value, path, {"custodian", "state", "on_hold", "commitment"})
    state_name = _str(obj["state"], f"{path}.state")
    if state_name not in CustodyState.__members__:
        _fail(f"{path}.state", f"must be one of {', '.join(CustodyState.__members__)}")
    commitment = obj["commitment"]
    return CustodyClaim(
        custodian=_checked(_custodian, obj["custodian"], f"{path}.custodian"),
        state=CustodyState[state_name],
        on_hold=_bool(obj["on_hold"], f"{path}.on_hold"),
        commitment=None
        if commitment is None
        else _checked(check_hex32, commitment, f"{path}.commitment"),
    )


_SIGNATURE = re.compile(r"^0x[0-9a-f]{130}$")
MAX_CERTIFICATE_BASE64 = 4 * ((256 * 1024 + 2) // 3)


def _certificate(value: object, path: str) -> CertificateClaim:
    obj = _object(value, path, {"document", "signature"})
    text = _str(obj["document"], f"{path}.document")
    if len(text) > MAX_CERTIFICATE_BASE64:
        _fail(f"{path}.document", "longer than 256 KiB once decoded")
    try:
        document = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        _fail(f"{path}.document", "not standard base64")
    signature = _str(obj["signature"], f"{path}.signature")
    if not _SIGNATURE.fullmatch(signature):
        _fail(f"{path}.signature", "must be 0x and 130 lower-case hex digits (r, s, v)")
    return CertificateClaim(document=document, signature=signature)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def _too_deep(data: bytes) -> bool:
    """True when objects/arrays nest deeper than ``MAX_DEPTH`` (checked without recursion, so a
    hostile document cannot exhaust the stack of the recursive JSON decoder)."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def parse_bundle(
    raw: bytes | str, *, max_bytes: int = MAX_BUNDLE_BYTES, max_entries: int = MAX_ENTRIES
) -> ProofBundle:
    """Parse a bundle document; ``BundleFormatError`` (with ``field``) on anything off-format.

    ``max_bytes`` and ``max_entries`` bound the work a hostile document can cause.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        _fail("(document)", f"{len(data)} bytes is more than the limit of {max_bytes}")
    if _too_deep(data):
        _fail("(document)", f"objects and arrays nest deeper than {MAX_DEPTH}")
    strictness = _Strictness()
    try:
        document = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=strictness.pairs,
            parse_constant=_no_constant,
            parse_float=strictness.float,
        )
    except UnicodeDecodeError:
        _fail("(document)", "not UTF-8")
    except json.JSONDecodeError as exc:
        _fail("(document)", f"not JSON: {exc.msg.removesuffix(' at')} at offset {exc.pos}")
    except BundleFormatError:
        raise
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        _fail("(document)", "a number has too many digits")
    what = _not_a_bundle(document)
    if what is not None:
        field = "format" if isinstance(document, dict) and "format" in document else "(document)"
        raise NotABundleError(what, field=field)
    if strictness.violation is not None:
        _fail("(document)", strictness.violation)
    public = document["format"] == PUBLIC_PROOF_FORMAT
    obj = _object(
        document,
        "",
        {"format", "chain_id", "notary", "archive_id", "entries"},
        {"certificate"} if public else {"custody", "certificate"},
    )
    entries = _list(obj["entries"], "entries", MAX_PUBLIC_ENTRIES if public else max_entries)
    if not entries:
        _fail("entries", "must hold at least one entry")
    return ProofBundle(
        chain_id=_int(obj["chain_id"], "chain_id", minimum=1),
        notary=_checked(check_address, obj["notary"], "notary"),
        archive_id=_checked(check_archive_id, obj["archive_id"], "archive_id"),
        entries=tuple(_entry(item, f"entries[{i}]") for i, item in enumerate(entries)),
        custody=_custody(obj["custody"], "custody") if "custody" in obj else None,
        certificate=_certificate(obj["certificate"], "certificate")
        if "certificate" in obj
        else None,
        public=public,
    )


# ------------------------------------------------------------------------------------------
# Serialising


def bundle_to_json(bundle: ProofBundle) -> dict[str, Any]:
    """The bundle as a JSON object (the inverse of ``parse_bundle``)."""
    document: dict[str, Any] = {
        "format": PUBLIC_PROOF_FORMAT if bundle.public else BUNDLE_FORMAT,
        "chain_id": bundle.chain_id,
        "notary": bundle.notary,
        "archive_id": bundle.archive_id,
        "entries": [
            {
                "hospital": entry.hospital,
                "log_index": entry.log_index,
                "event": base64.b64encode(entry.event).decode("ascii"),
                "proof": [element.hex() for element in entry.proof],
                "checkpoint": {
                    "hospital": entry.checkpoint.hospital,
                    "index": entry.checkpoint.index,
                    "size": entry.checkpoint.size,
                    "root": entry.checkpoint.root.hex(),
                },
            }
            for entry in bundle.entries
        ],
    }
    if bundle.custody is not None:
        document["custody"] = {
            "custodian": bundle.custody.custodian,
            "state": bundle.custody.state.name,
            "on_hold": bundle.custody.on_hold,
            "commitment": bundle.custody.commitment,
        }
    if bundle.certificate is not None:
        document["certificate"] = {
            "document": base64.b64encode(bundle.certificate.document).decode("ascii"),
            "signature": bundle.certificate.signature,
        }
    return document


def dump_bundle(bundle: ProofBundle) -> bytes:
    """Deterministic bytes of the bundle: RFC 8785 canonical JSON (same bundle, same bytes)."""
    for position, entry in enumerate(bundle.entries):
        for element in (*entry.proof, entry.checkpoint.root):
            if len(element) != HASH_SIZE:
                raise BundleFormatError("hash must be 32 bytes", field=f"entries[{position}]")
    return rfc8785.dumps(bundle_to_json(bundle))
