"""Node-to-node trust: every request between hospital nodes is signed with the sending member's
Ethereum key and checked against the on-chain ``ConsortiumRegistry``.

A request carries four headers: the sender's address, a unix timestamp, a random nonce and an
EIP-191 signature over::

    archivechain-peer/v1 \\n METHOD \\n PATH?QUERY \\n sha256(body) \\n timestamp \\n nonce \\n
    sender \\n recipient

The recipient refuses (and logs) a request whose signature does not recover the sender, whose
timestamp is outside the window, whose nonce it has already seen inside the window, that names
another recipient, or whose sender is not an ACTIVE HOSPITAL on chain right now. Headers are
checked against strict formats before anything else (``HEADER_FORMATS``): a timestamp of 1 to 12
ASCII digits, a nonce of 16 to 64 ASCII letters and digits, a 65-byte hex signature; anything else
is refused as ``malformed`` (401), whatever its size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from anchoring.ids import IdentifierError, normalize_address
from node.errors import AuthenticationError, UnavailableError

log = logging.getLogger(__name__)

PEER_PREFIX = "/peer/v1"
SENDER = "X-ArchiveChain-Sender"
TIMESTAMP = "X-ArchiveChain-Timestamp"
NONCE = "X-ArchiveChain-Nonce"
SIGNATURE = "X-ArchiveChain-Signature"
CONTENT_SHA256 = "X-ArchiveChain-Content-SHA256"
"""A body's SHA-256 (hex), announced with every body a node sends (the signature covers the same
digest): a receiver checks the signature before it reads a byte, then the bytes against this
digest (required for replica uploads and log shipments, whose bodies are large)."""
CONTENT_SHA256_FORMAT = re.compile(r"[0-9a-f]{64}")
"""The exact form of ``CONTENT_SHA256``: 64 lower-case hex characters."""
DOMAIN = "archivechain-peer/v1"
WINDOW_SECONDS = 300
MEMBERSHIP_TTL = 5.0
HEADER_FORMATS = {
    SENDER: re.compile(r"0x[0-9a-fA-F]{40}"),
    TIMESTAMP: re.compile(r"[0-9]{1,12}"),
    NONCE: re.compile(r"[A-Za-z0-9]{16,64}"),
    SIGNATURE: re.compile(r"(?:0x)?[0-9a-fA-F]{130}"),
}
"""The exact form of each authentication header (ASCII only: ``int()`` and ``str.isalnum``
would also accept other scripts' digits and letters, underscores and surrounding spaces)."""


class PeerAuthError(AuthenticationError):
    """A node-to-node request was refused (forged, replayed, expired, or not from an active
    hospital). ``reason`` is a short code for logs and tests."""

    code = "peer_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signing_message(
    method: str,
    target: str,
    body: bytes,
    timestamp: int,
    nonce: str,
    sender: str,
    recipient: str,
) -> str:
    """The exact text both sides sign and check."""
    digest = hashlib.sha256(body).hexdigest()
    return signing_message_for(method, target, digest, timestamp, nonce, sender, recipient)


def signing_message_for(
    method: str,
    target: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
    sender: str,
    recipient: str,
) -> str:
    """``signing_message`` for a body known by its SHA-256 (hex) only (a streamed body)."""
    return "\n".join(
        (
            DOMAIN,
            method.upper(),
            target,
            body_sha256,
            str(timestamp),
            nonce,
            sender,
            recipient,
        )
    )


def sign_headers(
    account: LocalAccount,
    method: str,
    target: str,
    body: bytes,
    recipient: str,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request from ``account`` to ``recipient``."""
    return sign_headers_for(
        account, method, target, hashlib.sha256(body).hexdigest(), recipient, now=now
    )


def sign_headers_for(
    account: LocalAccount,
    method: str,
    target: str,
    body_sha256: str,
    recipient: str,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """``sign_headers`` for a body known by its SHA-256 (hex) only (a streamed body)."""
    timestamp = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    sender = str(account.address)
    text = signing_message_for(method, target, body_sha256, timestamp, nonce, sender, recipient)
    signature = account.sign_message(encode_defunct(text=text)).signature
    return {
        SENDER: sender,
        TIMESTAMP: str(timestamp),
        NONCE: nonce,
        SIGNATURE: "0x" + bytes(signature).hex(),
    }


@dataclass
class PeerVerifier:
    """Checks signed requests addressed to ``recipient``.

    ``is_active_hospital(address)`` asks the registry (answers are cached for a few seconds);
    ``remember_nonce(nonce, sender)`` returns False when the nonce was already used.
    """

    recipient: str
    is_active_hospital: Callable[[str], bool]
    remember_nonce: Callable[[str, str], bool]
    window: int = WINDOW_SECONDS
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._members: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def forget_membership(self, address: str | None = None) -> None:
        """Drop cached registry answers (the chain watcher calls this on member events)."""
        with self._lock:
            if address is None:
                self._members.clear()
            else:
                self._members.pop(address, None)

    def verify(self, method: str, target: str, body: bytes, headers: Any) -> str:
        """The sender's address, or ``PeerAuthError`` naming why the request is refused."""
        return self.verify_digest(method, target, hashlib.sha256(body).hexdigest(), headers)

    def verify_digest(self, method: str, target: str, body_sha256: str, headers: Any) -> str:
        """``verify`` for a body known by its SHA-256 only (checked by the caller as it reads)."""
        try:
            return self._verify(method, target, body_sha256, headers)
        except PeerAuthError as exc:
            claimed = headers.get(SENDER) or ""
            log.warning(
                "refused peer request %s %s from %s: %s",
                method,
                target.split("?")[0][:200],
                claimed if HEADER_FORMATS[SENDER].fullmatch(claimed) else "(malformed sender)",
                exc.reason,
            )
            raise

    def _verify(self, method: str, target: str, body_sha256: str, headers: Any) -> str:
        values: dict[str, str] = {}
        missing = []
        for name in (SENDER, TIMESTAMP, NONCE, SIGNATURE):
            value = headers.get(name)
            if not value:
                missing.append(name)
            else:
                values[name] = value
        if missing:
            raise PeerAuthError("unsigned", f"missing {', '.join(missing)}")
        malformed = [name for name, value in values.items() if not _well_formed(name, value)]
        if malformed:
            raise PeerAuthError("malformed", f"malformed {', '.join(malformed)}")
        try:
            sender = normalize_address(values[SENDER])
        except IdentifierError:
            raise PeerAuthError("malformed", f"malformed {SENDER}") from None
        timestamp = int(values[TIMESTAMP])
        signature = bytes.fromhex(values[SIGNATURE].removeprefix("0x"))
        nonce = values[NONCE]
        if abs(self.clock() - timestamp) > self.window:
            raise PeerAuthError("expired", "request timestamp outside the accepted window")
        text = signing_message_for(
            method, target, body_sha256, timestamp, nonce, sender, self.recipient
        )
        try:
            signer = Account.recover_message(encode_defunct(text=text), signature=signature)
        except Exception:  # malformed signatures raise assorted errors
            raise PeerAuthError("forged", "signature does not verify") from None
        if signer != sender:
            raise PeerAuthError("forged", "signature does not match the sender")
        if not self._active(sender):
            raise PeerAuthError("not_member", f"{sender} is not an active hospital member")
        if not self.remember_nonce(nonce, sender):
            raise PeerAuthError("replayed", "nonce already used")
        return sender

    def _active(self, address: str) -> bool:
        now = time.monotonic()
        with self._lock:
            cached = self._members.get(address)
        if cached is not None and now - cached[0] < MEMBERSHIP_TTL:
            return cached[1]
        active = self.is_active_hospital(address)
        with self._lock:
            self._members[address] = (now, active)
        return active


def _well_formed(name: str, value: str) -> bool:
    return HEADER_FORMATS[name].fullmatch(value) is not None


class PeerClient:
    """Signed HTTP requests from this node to another hospital's node."""

    def __init__(self, account: LocalAccount, *, timeout: float = 30.0) -> None:
        self.account = account
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        base_url: str,
        recipient: str,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> httpx.Request:
        target = PEER_PREFIX + path
        digest = hashlib.sha256(body).hexdigest()
        headers = sign_headers_for(self.account, method, target, digest, recipient)
        if body:  # announced: a receiver may check the signature before reading the body
            headers[CONTENT_SHA256] = digest
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self._http.build_request(
            method, base_url.rstrip("/") + target, headers=headers, content=body or None
        )

    def send_json(
        self,
        method: str,
        base_url: str,
        recipient: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send ``body`` (signed with its SHA-256) and return the JSON answer (replicas, log
        shipping); HTTP errors become ``PeerRefusedError``, no answer ``UnavailableError``."""
        request = self._request(method, base_url, recipient, path, body, content_type)
        response = self._send(request)
        return _json_answer(response, recipient)

    def send_stream(
        self,
        method: str,
        base_url: str,
        recipient: str,
        path: str,
        chunks: Iterable[bytes],
        sha256: str,
        size: int,
    ) -> dict[str, Any]:
        """Stream ``size`` bytes of ``chunks`` (never held whole in memory), signed by their
        announced ``sha256``; the JSON answer. Errors as ``send_json``."""
        target = PEER_PREFIX + path
        headers = sign_headers_for(self.account, method, target, sha256, recipient)
        headers[CONTENT_SHA256] = sha256
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(size)
        request = self._http.build_request(
            method, base_url.rstrip("/") + target, headers=headers, content=iter(chunks)
        )
        response = self._send(request)
        return _json_answer(response, recipient)

    def post_json(
        self, base_url: str, recipient: str, path: str, document: dict[str, Any]
    ) -> dict[str, Any]:
        """POST a JSON document (signed over its exact bytes); the peer's JSON answer."""
        target = PEER_PREFIX + path
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        digest = hashlib.sha256(body).hexdigest()
        headers = sign_headers_for(self.account, "POST", target, digest, recipient)
        headers[CONTENT_SHA256] = digest
        headers["Content-Type"] = "application/json"
        request = self._http.build_request(
            "POST", base_url.rstrip("/") + target, content=body, headers=headers
        )
        response = self._send(request)
        return _json_answer(response, recipient)

    def get_json(self, base_url: str, recipient: str, path: str) -> dict[str, Any]:
        """GET a JSON document; HTTP errors become ``UnavailableError`` with the peer's code."""
        response = self._send(self._request("GET", base_url, recipient, path))
        return _json_answer(response, recipient)

    def stream(self, base_url: str, recipient: str, path: str) -> Iterator[bytes]:
        """GET a byte stream (ciphertext), yielded in chunks."""
        request = self._request("GET", base_url, recipient, path)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"peer {recipient} unreachable: {exc}") from None
        try:
            _check(response, recipient)
            yield from response.iter_bytes(1024 * 1024)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"peer {recipient} stopped sending: {exc}") from None
        finally:
            response.close()

    def open_stream(
        self, base_url: str, recipient: str, path: str
    ) -> tuple[httpx.Headers, PeerStream]:
        """GET a byte stream whose response headers matter (a disclosure's wrapped key): the
        headers once the peer accepted, and the body as a closeable stream of chunks."""
        request = self._request("GET", base_url, recipient, path)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"peer {recipient} unreachable: {exc}") from None
        try:
            _check(response, recipient)
        except BaseException:
            response.close()
            raise
        return response.headers, PeerStream(response, recipient)

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"peer unreachable: {exc}") from None
        _check(response, request.url.host or "?")
        return response


class PeerStream:
    """The body of a peer's streamed answer: iterate for chunks; ``close`` releases the
    connection whether or not the body was read."""

    def __init__(self, response: httpx.Response, peer: str) -> None:
        self._response = response
        self._peer = peer

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes(1024 * 1024)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"peer {self._peer} stopped sending: {exc}") from None
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


class PeerRefusedError(UnavailableError):
    """The peer answered with an error; ``status`` and ``peer_code`` say which."""

    code = "peer_error"

    def __init__(self, message: str, status: int, peer_code: str) -> None:
        super().__init__(message)
        self.status = status
        self.peer_code = peer_code


def _json_answer(response: httpx.Response, recipient: str) -> dict[str, Any]:
    """A peer's answer as a JSON object (``UnavailableError`` when it is not JSON, or not an
    object). Status codes are checked before, by ``PeerClient._send``."""
    try:
        document = response.json()
    except ValueError:
        raise UnavailableError(f"peer {recipient} answered non-JSON") from None
    if not isinstance(document, dict):
        raise UnavailableError(f"peer {recipient} answered an unexpected document")
    return document


def _check(response: httpx.Response, peer: str) -> None:
    if response.status_code < 400:
        return
    try:
        response.read()
        body = response.json()
        code, message = str(body.get("code")), str(body.get("message"))
    except Exception:
        code, message = "unknown", response.reason_phrase
    raise PeerRefusedError(
        f"peer {peer} refused ({response.status_code} {code}): {message}",
        response.status_code,
        code,
    )
