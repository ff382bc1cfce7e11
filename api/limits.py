"""Request body size limits, enforced before a body is parsed and answered in the API's JSON shape.

Each request gets a limit from its method and path (uploads: the node's ``max_upload_bytes`` plus
room for the multipart envelope; ``/verify``: a bundle limit; everything else: a small JSON limit).
A route whose body is large by design (a batch of access reports) has its own limit in
``ROUTE_LIMITS``, which takes precedence over the app's ``limit_for``.
A declared ``Content-Length`` above the limit is refused before any byte is read; a body without
one is counted as it streams and the request is cut off as soon as it passes the limit. Either
way the answer is ``413 payload_too_large``. Starlette's own limiter answers in plain text, hence
this middleware. A request framed both ways (``Content-Length`` and ``Transfer-Encoding``) is
refused first, 400 ``invalid_framing``, and its connection closed (request smuggling).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from node.errors import InputError

LimitFor = Callable[[str, str], int]
"""``limit_for(method, path) -> max body bytes``."""

ACCESS_EVENTS_BODY_BYTES = 8 * 1024 * 1024
"""Body limit of ``POST /api/v1/access-events``: 10,000 reports with the longest fields (a 64-
character staff id written as ``\\uXXXX`` escapes) are about 5 MB of JSON; a typical full batch is
about 1.5 MB."""

ROUTE_LIMITS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("POST", re.compile(r"^/api/v1/access-events/?$"), ACCESS_EVENTS_BODY_BYTES),
)
"""Per-route body limits (method, path pattern, bytes) that override ``limit_for``."""


def route_limit(method: str, path: str) -> int | None:
    """The body limit ``ROUTE_LIMITS`` sets for this request, if any."""
    for route_method, pattern, limit in ROUTE_LIMITS:
        if method == route_method and pattern.match(path):
            return limit
    return None


class BodyTooLargeError(InputError):
    """The request body is larger than this endpoint accepts."""

    code = "payload_too_large"


class BodyLimitMiddleware:
    """Refuses request bodies above the limit of their endpoint with 413 (JSON)."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _ambiguous_framing(scope):
            response = error_response(
                400,
                "invalid_framing",
                "a request may not carry both Content-Length and Transfer-Encoding",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        limit = route_limit(method, path) or self.limit_for(method, path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(limit, scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLargeError(_message(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app made of the broken body is replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            if started:
                raise
        if exceeded and not started:
            await _refuse(limit, scope, receive, send)


def _message(limit: int) -> str:
    return f"the request body exceeds the limit of {limit} bytes for this endpoint"


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(413, BodyTooLargeError.code, _message(limit))
    await response(scope, receive, send)


def _ambiguous_framing(scope: Scope) -> bool:
    """Both ``Content-Length`` and ``Transfer-Encoding``: RFC 9112 §6.1 lets a server reject the
    request and requires it to close the connection afterwards; a proxy in front that framed the
    body by the other header would otherwise see the rest of the connection as another request
    (request smuggling). Refused with 400 and ``Connection: close``, before any byte is read."""
    names = {name for name, _ in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero length or a transfer encoding)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() != b"0":
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
