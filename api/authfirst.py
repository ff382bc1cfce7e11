"""Authenticate before reading a body: a request that carries a body must present a valid API key
before any of it is read, so an anonymous client cannot make the node buffer, scan or parse up to
16 MiB.

FastAPI reads and parses a route's body before it resolves the route's dependencies, so the key
check in ``api.deps.get_principal`` alone comes too late. This middleware runs first: for a request
with a body (a non-zero ``Content-Length`` or a transfer encoding) it authenticates the caller
(``api.deps.authenticate``, in the thread pool) and either answers 401 without touching the body or
leaves the principal in the scope, where ``get_principal`` reuses it. Requests without a body are
left to the dependency, as before.

The rule fails closed: it does not depend on which route the request reaches, so a route added
later is covered, and an anonymous body to an unknown path is refused the same way. Every public
API route that reads a body requires a key anyway (``tests/api/test_hostile_bodies.py`` checks this
against the OpenAPI document). The one exception is ``PUBLIC_BODY_PREFIXES``:

- ``/peer/v1/`` (node to node) is authenticated by a signature over the body's hash. Its bodies
  are bounded by the small-body limit (64 KiB), pass the JSON body check, and are only hashed,
  never parsed, until the signature verified (``peer_sender``), with two exceptions whose bodies
  may be large and are therefore authenticated before a byte is read: replica uploads (the route
  itself, streamed) and log shipments (``SIGNED_DIGEST_BODIES``, here). Both announce the body's
  SHA-256 in ``X-ArchiveChain-Content-SHA256``, which the signature covers instead of the body;
  the bytes are checked against it as they are read. Before stop 38 a log shipment (16 MiB limit)
  was read whole before its signature was checked, so anyone could make a node hold 16 MiB per
  connection.
- ``/api/v1/auth/verify`` (member sign-in): the body *is* the credential, a signed EIP-4361
  message; bounded by the small-body limit and the JSON body check, its fields by the schema.
- ``/console/`` (the archivist console, ``api.web.console``) is authenticated by its session
  cookie and CSRF token, or is the sign-in form itself; its forms are small (64 KiB limit).
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import PRINCIPAL_SCOPE_KEY, authenticate, bearer_scheme
from api.errors import node_error_response
from api.limits import has_body
from node.errors import NodeError
from node.peers import CONTENT_SHA256, CONTENT_SHA256_FORMAT, PEER_PREFIX, PeerAuthError
from node.runtime import NodeRuntime

SIGNED_DIGEST_BODIES = re.compile(rf"^{PEER_PREFIX}/log/entries/?$")
"""Peer ``POST`` paths whose (large) body is authenticated by its announced digest before it is
read; the verified ``(sender, digest)`` is left in the scope under ``PEER_DIGEST_SCOPE_KEY`` for
``api.routes.peer.peer_sender``, which checks the body against the digest."""
PEER_DIGEST_SCOPE_KEY = "archivechain.peer_digest"
SIGNIN_PATH = "/api/v1/auth/verify"
"""Member sign-in: the body (a signed EIP-4361 message, small-body limit) is the credential."""
PUBLIC_BODY_PREFIXES = (PEER_PREFIX + "/", SIGNIN_PATH, "/console/")
"""Paths whose bodies are read before an API key is asked for (they authenticate otherwise)."""


class AuthenticateFirstMiddleware:
    """Answers 401 (JSON, ``WWW-Authenticate: Bearer``) to a request with a body, before the body
    is read, unless its bearer key is valid or its path is in ``PUBLIC_BODY_PREFIXES``."""

    def __init__(self, app: ASGIApp, runtime: NodeRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and SIGNED_DIGEST_BODIES.match(scope["path"]):
            await self._peer_digest_first(scope, receive, send)
            return
        if scope["path"].startswith(PUBLIC_BODY_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        credentials = await bearer_scheme(request)
        try:
            principal = await run_in_threadpool(authenticate, self.runtime, credentials)
        except NodeError as exc:  # 401 for bad keys; 503 when the key store cannot be read
            await node_error_response(request, exc)(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    async def _peer_digest_first(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A peer request with a large body: its signature over the announced digest is checked
        before the body is read (401 without reading it otherwise)."""
        request = Request(scope)
        digest = request.headers.get(CONTENT_SHA256, "")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            if not CONTENT_SHA256_FORMAT.fullmatch(digest):
                raise PeerAuthError(
                    "digest_required",
                    f"missing or malformed {CONTENT_SHA256}: this request's body is read only "
                    "once its signed SHA-256 verified",
                )
            sender = await run_in_threadpool(
                self.runtime.peer_verifier.verify_digest,
                request.method,
                target,
                digest,
                request.headers,
            )
        except NodeError as exc:  # 401 refused; 503 when the registry cannot be read
            await node_error_response(request, exc)(scope, receive, send)
            return
        scope[PEER_DIGEST_SCOPE_KEY] = (sender, digest)
        await self.app(scope, receive, send)
