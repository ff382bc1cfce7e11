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

- ``/peer/v1/`` (node to node) is authenticated by a signature over the body's hash, so its body
  must be read before the sender is known. It is bounded by the small-body limit (64 KiB), passes
  the JSON body check, and is only hashed, never parsed, until the signature verified (the one
  peer route with a body, the destruction notice, parses it after ``peer_sender``).
- ``/api/v1/auth/verify`` (member sign-in): the body *is* the credential, a signed EIP-4361
  message; bounded by the small-body limit and the JSON body check, its fields by the schema.
- ``/console/`` (the archivist console, ``api.web.console``) is authenticated by its session
  cookie and CSRF token, or is the sign-in form itself; its forms are small (64 KiB limit).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import PRINCIPAL_SCOPE_KEY, authenticate, bearer_scheme
from api.errors import node_error_response
from api.limits import has_body
from node.errors import NodeError
from node.peers import PEER_PREFIX
from node.runtime import NodeRuntime

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
        if (
            scope["type"] != "http"
            or not has_body(scope)
            or scope["path"].startswith(PUBLIC_BODY_PREFIXES)
        ):
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
