"""The one place that turns exceptions into HTTP answers: JSON ``{"code", "message"[, "details"]}``.

- ``NodeError`` by class: InputError 400 (413 for ``payload_too_large``, 415 for
  ``unsupported_media_type``), AuthenticationError 401 (with ``WWW-Authenticate: Bearer``),
  PermissionDeniedError 403, NotFoundError 404, ConflictError 409, GoneError 410,
  UnavailableError 503.
- ``anchoring``: the LifecycleError family 409 with its code (``illegal_transition``,
  ``prev_mismatch``…), BundleFormatError 422 naming the field, a malformed identifier
  (``IdentifierError``) 422, ChainError 503.
- Request validation 422 with a readable message (never echoing the input, which may be PHI),
  unknown routes and methods 404/405, body limits 413 — all in the same shape.
- Anything else (including node errors that mean the node itself is broken, such as a failed
  decryption or a missing blob) is a 500: ``internal_error`` or the error's own code, with a
  generic message. Details go to the server log only, as exception type and traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anchoring.errors import AnchoringError, BundleFormatError, ChainError, LifecycleError
from anchoring.ids import IdentifierError
from api.schemas import ErrorOut
from node.errors import (
    AuthenticationError,
    ConflictError,
    GoneError,
    InputError,
    NodeError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

log = logging.getLogger(__name__)

_NODE_STATUS: dict[type[NodeError], int] = {
    InputError: 400,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    GoneError: 410,
    UnavailableError: 503,
}
_INPUT_STATUS_BY_CODE = {
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "fhir_unprocessable": 422,
    "fhir_type_not_supported": 404,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    410: "gone",
    415: "unsupported_media_type",
    422: "validation_error",
}
_MAX_VALIDATION_ERRORS = 10
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON error in the API's one shape."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _status_of_node_error(exc: NodeError) -> int | None:
    for cls in type(exc).__mro__:
        status = _NODE_STATUS.get(cls)
        if status is not None:
            if status == 400:
                return _INPUT_STATUS_BY_CODE.get(exc.code, 400)
            return status
    return None


def status_of_node_error(exc: NodeError) -> int | None:
    """The HTTP status of a node error (None: the node itself failed, a 500)."""
    return _status_of_node_error(exc)


def node_error_response(request: Request, exc: Exception) -> JSONResponse:
    """NodeError → its status; a node error with no client meaning → 500 without its text."""
    assert isinstance(exc, NodeError)
    status = _status_of_node_error(exc)
    if status is None:
        log.error(
            "%s %s failed inside the node: %s (%s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc.code,
            exc_info=exc,
        )
        return error_response(500, exc.code, "the node could not complete the request")
    if status == 503:
        log.warning(
            "%s %s: dependency unavailable (%s)", request.method, request.url.path, exc.code
        )
    headers = BEARER_CHALLENGE if status == 401 else None
    return error_response(status, exc.code, exc.message, details=exc.details, headers=headers)


def anchoring_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Lifecycle refusals 409, malformed bundles 422, chain trouble 503, the rest 500."""
    assert isinstance(exc, AnchoringError)
    if isinstance(exc, LifecycleError):
        return error_response(409, exc.code, str(exc))
    if isinstance(exc, BundleFormatError):
        details = {"field": exc.field} if exc.field else None
        return error_response(422, exc.code, str(exc), details=details)
    if isinstance(exc, IdentifierError):
        return error_response(422, exc.code, "malformed archive id or member address")
    if isinstance(exc, ChainError):
        # The RPC error text may carry the endpoint URL (and credentials in it): log the type only.
        log.warning("%s %s: chain unavailable (%s)", request.method, request.url.path, exc.code)
        return error_response(503, exc.code, "the chain cannot be reached right now; retry later")
    log.error(
        "%s %s failed in the evidence layer: %s (%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc.code,
        exc_info=exc,
    )
    return error_response(500, exc.code, "the node could not complete the request")


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(request)"


_LOC_PART_CHARS = 64
"""A field or parameter name is named with at most this many characters: names of unknown query
parameters come from the client, and a 70,000-character one was echoed twice (message and
details) in a 140 kB answer."""


def _loc_part(part: Any) -> str | int:
    if isinstance(part, int):
        return part
    text = str(part)
    return text if len(text) <= _LOC_PART_CHARS else text[: _LOC_PART_CHARS - 1] + "…"


def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each offending field and what is wrong with it (without the input value; a
    name longer than 64 characters shortened)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [_loc_part(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "value_error")),
        }
        for e in exc.errors()[:_MAX_VALIDATION_ERRORS]
    ]
    message = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    return error_response(422, "validation_error", message, details={"errors": errors})


def http_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (unknown route, wrong method, unparsable body) in our shape."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, f"http_{status}")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    if status == 404 and message == phrase:
        message = f"no such resource: {request.url.path}"
    headers = dict(exc.headers or {})
    if status == 401:
        headers.update(BEARER_CHALLENGE)
    return error_response(status, code, message, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler of this module on ``app`` and the last-resort 500 middleware."""
    app.add_exception_handler(NodeError, node_error_response)
    app.add_exception_handler(AnchoringError, anchoring_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    app.add_middleware(UnhandledErrorMiddleware)


class UnhandledErrorMiddleware:
    """Answers an unexpected exception with ``500 internal_error`` and no exception text.

    Pure ASGI (so a streamed response is not buffered). The exception is logged here with its
    traceback; it is not re-raised when the 500 could be sent, so the server does not log it
    twice. If the response had already started (a stream failed half way), it is re-raised so
    the server aborts the connection and the client sees a truncated transfer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "unhandled %s on %s %s",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                exc_info=exc,
            )
            if started:
                raise
            response = error_response(500, "internal_error", "internal error")
            await response(scope, receive, send)


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Unusable input (e.g. an empty file); `code` says which rule.",
    401: "Missing, unknown or revoked API key.",
    403: "The caller's role may not do this.",
    404: "No such resource in the caller's scope.",
    409: "Illegal in the current state (`illegal_transition`, `proof_pending`, …).",
    410: "Destroyed on purpose (`destroyed`): the content is gone, the evidence remains.",
    413: "The request body (or the uploaded content) is larger than this endpoint accepts.",
    415: "The file's media type is not accepted by this node.",
    422: "The request does not match the schema (`validation_error`) or the bundle is "
    "malformed (`bundle_invalid`, with `details.field`).",
    500: "The node failed (`internal_error` or a node integrity code).",
    503: "A dependency (chain, database, blob store) is unavailable; retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting ``statuses`` with the error schema."""
    return {
        status: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


# --------------------------------------------------------------------------------------------
# FHIR: the same errors, as OperationOutcome

FHIR_PATH_PREFIX = "/fhir/"
FHIR_ERROR_SYSTEM = "urn:archivechain:error-code"
_FHIR_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    503: "transient",
}


def operation_outcome(status: int, code: str, message: str) -> dict[str, Any]:
    """An error in the API's shape as a FHIR OperationOutcome: ``issue.code`` from the status,
    the API's ``code`` in ``details``, its message in ``diagnostics``."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status < 500 else "fatal",
                "code": _FHIR_ISSUE_CODES.get(status, "exception"),
                "details": {"coding": [{"system": FHIR_ERROR_SYSTEM, "code": code}]},
                "diagnostics": message,
            }
        ],
    }


class FhirOutcomeMiddleware:
    """On ``/fhir/`` paths, rewrites every JSON error answer (from any layer: body limits,
    authentication, the JSON body check, validation, services, the last-resort 500) into an
    OperationOutcome with the same status and headers, as ``application/fhir+json``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(FHIR_PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] >= 400 and is_json:
                    start = message  # hold it: the body decides
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await _send_outcome(start, b"".join(body), send)

        await self.app(scope, receive, rewriting_send)


async def _send_outcome(start: Message, raw: bytes, send: Send) -> None:
    status = int(start["status"])
    try:
        error = json.loads(raw)
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = _HTTP_CODES.get(status, "error"), "error"
    payload = json.dumps(operation_outcome(status, code, message)).encode("utf-8")
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name not in (b"content-type", b"content-length")
    ]
    headers += [
        (b"content-type", b"application/fhir+json"),
        (b"content-length", str(len(payload)).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
