"""Other hospitals' nodes, as services see them: signed requests to a member by address.

``RemoteNodes`` finds a member's node URL in configuration and sends signed requests through
``node.peers.PeerClient``. A peer's refusal keeps its meaning here: its 401/403/404 (no grant, no
transfer, not a member) becomes our 404 with the peer's code, its 409 our 409; anything else (the
peer is down or broken) stays a 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from node.errors import ConflictError, NotFoundError
from node.peers import PeerClient, PeerRefusedError, PeerStream

T = TypeVar("T")


class RemoteNodes:
    """Signed requests from this node to other hospitals' nodes."""

    def __init__(self, client: PeerClient, urls: Mapping[str, str]) -> None:
        self._client = client
        self._urls = urls

    def url(self, member: str) -> str:
        """The configured node URL of hospital ``member`` (404 ``unknown_peer`` otherwise)."""
        url = self._urls.get(member)
        if not url:
            raise NotFoundError(f"no node is configured for hospital {member}", code="unknown_peer")
        return url

    def get_json(self, member: str, path: str) -> dict[str, Any]:
        """GET a JSON document from ``member``'s node."""
        url = self.url(member)
        return _refusals(lambda: self._client.get_json(url, member, path))

    def post_json(self, member: str, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON document to ``member``'s node; the peer's refusals raised as they come
        (``PeerRefusedError`` with its status and code), so a sender can tell final from not."""
        return self._client.post_json(self.url(member), member, path, document)

    def stream(self, member: str, path: str) -> Iterator[bytes]:
        """GET a byte stream (ciphertext) from ``member``'s node, in chunks."""
        return self._client.stream(self.url(member), member, path)

    def send_json(
        self,
        member: str,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send a signed request with a body to ``member``'s node; its JSON answer. The peer's
        refusals keep their status (``PeerRefusedError``): replica audits tell them apart."""
        return self._client.send_json(method, self.url(member), member, path, body, content_type)

    def send_stream(
        self, member: str, method: str, path: str, chunks: Iterable[bytes], sha256: str, size: int
    ) -> dict[str, Any]:
        """Stream a body of ``size`` bytes with SHA-256 ``sha256`` to ``member``'s node (signed by
        that digest); its JSON answer. Refusals keep their status (``PeerRefusedError``)."""
        return self._client.send_stream(
            method, self.url(member), member, path, chunks, sha256, size
        )

    def open_stream(self, member: str, path: str) -> tuple[httpx.Headers, PeerStream]:
        """GET a byte stream whose headers matter; the body is closeable unread."""
        url = self.url(member)
        return _refusals(lambda: self._client.open_stream(url, member, path))


def _refusals(call: Callable[[], T]) -> T:
    try:
        return call()
    except PeerRefusedError as exc:
        if exc.status in (401, 403, 404):
            raise NotFoundError(f"the peer refused: {exc.peer_code}", code=exc.peer_code) from None
        if exc.status == 409:  # e.g. the archive is in transit, or the purpose differs
            raise ConflictError(f"the peer refused: {exc.peer_code}", code=exc.peer_code) from None
        raise
