"""EIP-4361 ("Sign-In with Ethereum") messages: the text format, a strict parser and the signer.

Parsed and verified through the ``siwe`` package (4.4.0: its EIP-4361 ABNF parser and its
``verify``, EIP-191 recovery), with this module's stricter rules on top: only the canonical
encoding (``SiweMessage.text()`` reproduces the text byte for byte), an EIP-55 address, a nonce of
at least 8 alphanumerics. siwe 4.4.0 needs ``eth-account<0.14`` (the project pins 0.13.7 with
eth-keyfile 0.8.1) and does not import with ``abnf`` 2.9 (pinned 2.8.3): docs/regulators.md §1.2.
The package is imported lazily, so ``archivechain`` commands that never sign in do not load it.

The message (EIP-4361 §"Message format", LF line ends, no trailing LF)::

    {domain} wants you to sign in with your Ethereum account:
    {address}                               # EIP-55 checksummed

    {statement}                             # optional line (without it, the line stays empty)

    URI: {uri}
    Version: 1
    Chain ID: {chain_id}
    Nonce: {nonce}                          # at least 8 alphanumerics
    Issued At: {issued_at}                  # RFC 3339
    Expiration Time: {expiration_time}      # optional
    Not Before: {not_before}                # optional
    Request ID: {request_id}                # optional
    Resources:                              # optional, then one "- {uri}" line each
    - {resource}

The signature is EIP-191 ``personal_sign`` over the UTF-8 bytes of that text (65 bytes r‖s‖v).
``parse_message`` accepts only text that ``SiweMessage.text()`` reproduces byte for byte, so a
message has one encoding.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from anchoring.eip55 import is_checksum_address

HEADER = " wants you to sign in with your Ethereum account:"
_DOMAIN = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")


class SiweFormatError(ValueError):
    """The text is not an EIP-4361 message in its one encoding."""


@dataclass(frozen=True, slots=True)
class SiweMessage:
    """The fields of an EIP-4361 message."""

    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    version: str = "1"
    statement: str | None = None
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()

    def text(self) -> str:
        """The message exactly as it is signed."""
        # EIP-4361 ABNF: address LF LF [ statement LF ] LF "URI: " (no statement: a second
        # blank line)
        lines = [f"{self.domain}{HEADER}", self.address, ""]
        lines += [self.statement, ""] if self.statement is not None else [""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {self.expiration_time}")
        if self.not_before is not None:
            lines.append(f"Not Before: {self.not_before}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)


def _package_message(text: str) -> Any:
    """The ``siwe`` package's parse (ABNF grammar of EIP-4361) of ``text``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # abnf warns about the grammar's core-rule redefinitions
        from siwe import SiweMessage as PackageMessage

        try:
            return PackageMessage.from_message(text, abnf=True)
        except Exception:  # the package raises ValueError or pydantic errors
            raise SiweFormatError("not an EIP-4361 message (siwe ABNF parser)") from None


def parse_message(text: str) -> SiweMessage:
    """The message's fields; ``SiweFormatError`` for anything that is not exactly one."""
    package = _package_message(text)
    message = _parse_canonical(text)
    same = (
        str(package.domain) == message.domain
        and str(package.address) == message.address
        and str(package.uri) == message.uri
        and int(package.chain_id) == message.chain_id
        and str(package.nonce) == message.nonce
        and [str(r) for r in package.resources or []] == list(message.resources)
    )
    if not same:
        raise SiweFormatError("the siwe package reads other fields than this parser")
    return message


def verify_signature(message: SiweMessage, signature: str, now: datetime) -> None:
    """``siwe``'s verification of ``signature`` over the message (EIP-191, the message's address;
    domain, nonce and validity period at ``now`` checked again); ``ValueError`` if it fails."""
    if not _SIGNATURE.fullmatch(signature):
        raise ValueError("the signature must be 65 bytes as 0x-prefixed hex")
    package = _package_message(message.text())
    try:
        package.verify(signature, domain=message.domain, nonce=message.nonce, timestamp=now)
    except Exception as exc:  # siwe's VerificationError subclasses, or a malformed signature
        raise ValueError(f"siwe verification failed: {type(exc).__name__}") from None


def _parse_canonical(text: str) -> SiweMessage:
    """This module's strict parser (one encoding, EIP-55 address, nonce of 8+ alphanumerics)."""
    lines = text.split("\n")
    if len(lines) < 9 or not lines[0].endswith(HEADER):
        raise SiweFormatError(f"the first line must be '<domain>{HEADER}'")
    domain = lines[0][: -len(HEADER)]
    if not _DOMAIN.fullmatch(domain):
        raise SiweFormatError(f"invalid domain {domain!r}")
    address = lines[1]
    if not is_checksum_address(address):
        raise SiweFormatError("the address must be EIP-55 checksummed")
    if lines[2] != "":
        raise SiweFormatError("a blank line must follow the address")
    rest = lines[3:]
    statement: str | None = None
    if rest and rest[0] == "":  # no statement: two blank lines
        rest = rest[1:]
    elif rest and not rest[0].startswith("URI: "):
        statement = rest[0]
        if not statement or "\n" in statement or len(rest) < 2 or rest[1] != "":
            raise SiweFormatError("the statement is one line followed by a blank line")
        rest = rest[2:]
    else:
        raise SiweFormatError("the address is followed by a blank line, a statement, a blank line")
    fields: dict[str, str] = {}
    order = ["URI", "Version", "Chain ID", "Nonce", "Issued At"]
    optional = ["Expiration Time", "Not Before", "Request ID"]
    position = 0
    for name in order:
        if position >= len(rest) or not rest[position].startswith(f"{name}: "):
            raise SiweFormatError(f"missing or misplaced field {name!r}")
        fields[name] = rest[position][len(name) + 2 :]
        position += 1
    for name in optional:
        if position < len(rest) and rest[position].startswith(f"{name}: "):
            fields[name] = rest[position][len(name) + 2 :]
            position += 1
    resources: list[str] = []
    if position < len(rest) and rest[position] == "Resources:":
        position += 1
        while position < len(rest) and rest[position].startswith("- "):
            resources.append(rest[position][2:])
            position += 1
    if position != len(rest):
        raise SiweFormatError(f"unexpected line {rest[position][:40]!r}")
    if not _URI.fullmatch(fields["URI"]):
        raise SiweFormatError("invalid URI")
    if fields["Version"] != "1":
        raise SiweFormatError("Version must be 1")
    if not re.fullmatch(r"[1-9][0-9]{0,17}", fields["Chain ID"]):
        raise SiweFormatError("invalid Chain ID")
    if not _NONCE.fullmatch(fields["Nonce"]):
        raise SiweFormatError("the nonce must be at least 8 letters or digits")
    for name in ("Issued At", "Expiration Time", "Not Before"):
        if name in fields and not _RFC3339.fullmatch(fields[name]):
            raise SiweFormatError(f"{name} must be an RFC 3339 date-time")
    for resource in resources:
        if not _URI.fullmatch(resource):
            raise SiweFormatError(f"invalid resource {resource[:40]!r}")
    message = SiweMessage(
        domain=domain,
        address=address,
        statement=statement,
        uri=fields["URI"],
        version=fields["Version"],
        chain_id=int(fields["Chain ID"]),
        nonce=fields["Nonce"],
        issued_at=fields["Issued At"],
        expiration_time=fields.get("Expiration Time"),
        not_before=fields.get("Not Before"),
        request_id=fields.get("Request ID"),
        resources=tuple(resources),
    )
    if message.text() != text:
        raise SiweFormatError("the message is not in its canonical form")
    return message


def parse_time(value: str) -> datetime:
    """An RFC 3339 time of a message as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def format_time(value: datetime) -> str:
    """A datetime as the RFC 3339 text messages carry (UTC, ``Z``, whole seconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recover_signer(text: str, signature: str) -> str:
    """The address whose key made the EIP-191 ``signature`` over ``text``; ``ValueError`` when
    the signature is malformed or recovers nothing."""
    if not _SIGNATURE.fullmatch(signature):
        raise ValueError("the signature must be 65 bytes as 0x-prefixed hex")
    recovered: str = Account.recover_message(
        encode_defunct(text=text), signature=bytes.fromhex(signature[2:])
    )
    return recovered


def sign_message(text: str, private_key: bytes) -> str:
    """EIP-191 ``personal_sign`` of ``text`` (what a member's wallet or the CLI does)."""
    signed = Account.sign_message(encode_defunct(text=text), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()
