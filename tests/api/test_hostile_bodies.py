"""Hostile bodies on every route that takes one, through the ASGI app (both databases).

The routes are derived from the app itself (the OpenAPI document plus every route, hidden or not,
that declares a body), so a route added later is covered without editing this file. Before
authentication (no key, a wrong key) every hostile body gets a 4xx in the API's error shape — 401
before a byte of the body is read, 413 for a declared over-limit length — and the node still
answers ``/healthz``. With a valid key the JSON body check refuses deep nesting and bad encodings
with 400 and a code, and nothing is stored or logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from api.authfirst import PUBLIC_BODY_PREFIXES
from api.jsonbody import MAX_JSON_DEPTH
from api.limits import route_limit
from api.main import body_limits, is_upload
from api.routes.verify import MAX_VERIFY_BODY_BYTES
from tests.api.conftest import UPLOAD_LIMIT, Api

ARCHIVE_ID = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
JSON = {"Content-Type": "application/json"}
OVER_ANY_LIMIT = MAX_VERIFY_BODY_BYTES + 1
"""Larger than the largest body limit of any route (uploads in these tests accept 64 KiB)."""


def deep(levels: int) -> bytes:
    """The issue's body: ``{"reports":`` then ``levels`` arrays opened and closed."""
    return b'{"reports":' + b"[" * levels + b"]" * levels + b"}"


def body_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with parameters filled) of every route that declares a request body."""
    declared: set[tuple[str, str]] = set()
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                declared.add((method.upper(), path))
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.body_field is not None and context.path:
            declared.update((method, context.path) for method in route.methods)
    return sorted((method, re.sub(r"\{[^}]+\}", ARCHIVE_ID, path)) for method, path in declared)


def limit_of(method: str, path: str) -> int:
    """The body limit of a route, as the app applies it."""
    return route_limit(method, path) or body_limits(UPLOAD_LIMIT)(method, path)


async def _chunks(total: int, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes of ``[`` in chunks, sent without a Content-Length."""
    sent = 0
    while sent < total:
        chunk = min(size, total - sent)
        sent += chunk
        yield b"[" * chunk


def hostile_bodies() -> Iterator[tuple[str, bytes | None]]:
    """(name, body; None: more than any limit, streamed without a Content-Length)."""
    yield "100,000 deep", deep(100_000)
    yield "75,000 deep", deep(75_000)
    yield "30,000 deep", deep(30_000)  # under the small-body limit
    yield "over the limit, declared", b"[" * OVER_ANY_LIMIT
    yield "over the limit, chunked", None
    yield "invalid UTF-8", b'{"reports": "\xff\xfe\xc3"}'
    yield "UTF-16", '{"reports": []}'.encode("utf-16")
    yield "empty", b""
    yield "truncated", b'{"reports": [{"archive_id": "01J'


def assert_error_shape(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    body: dict[str, Any] = response.json()
    assert set(body) >= {"code", "message"}, body
    assert all(isinstance(body[key], str) and body[key] for key in ("code", "message")), body
    return body


def test_every_route_with_a_body_requires_a_key(api: Api) -> None:
    """The authentication gate's premise (see api.authfirst): no public route reads a JSON body."""
    routes = body_routes(api.app)
    assert len(routes) >= 9  # uploads, amend, archive, hold, access events, verify, keys, ...
    document = api.app.openapi()
    for path, item in document["paths"].items():
        if path.startswith(PUBLIC_BODY_PREFIXES):  # the body is the credential (member sign-in)
            continue
        for operation in item.values():
            if "requestBody" in operation:
                assert operation.get("security"), path


@pytest.mark.parametrize("who", ["no key", "wrong key"])
def test_hostile_bodies_before_authentication(
    api: Api, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {} if who == "no key" else {"Authorization": "Bearer ak_not-a-real-key"}
    before = api.footprint()
    caplog.set_level(logging.WARNING)
    for method, path in body_routes(api.app):
        for name, content in hostile_bodies():
            # A declared length over the limit is refused first (nothing is read either way);
            # everything else is refused for want of a key before its body is read.
            declared_too_large = content is not None and len(content) > limit_of(method, path)
            response = api.client.request(
                method,
                path,
                content=_chunks(OVER_ANY_LIMIT) if content is None else content,
                headers={**JSON, **auth},
            )
            if path.startswith(PUBLIC_BODY_PREFIXES):  # read before any key: refused as input
                assert_error_shape(response, 413 if declared_too_large else None)
                continue
            body = assert_error_shape(response, 413 if declared_too_large else 401)
            if response.status_code == 401:
                assert body["code"] in {"missing_api_key", "invalid_api_key"}, (path, name, body)
                assert response.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/healthz").status_code == 200
    assert api.footprint() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_hostile_bodies_with_a_valid_key_are_refused_before_parsing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    refusals: list[tuple[str, bytes, int, str]] = [
        ("100,000 deep", deep(100_000), 400, "json_too_deep"),
        ("75,000 deep", deep(75_000), 400, "json_too_deep"),
        ("30,000 deep", deep(30_000), 400, "json_too_deep"),
        ("one level too deep", b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), 400,
         "json_too_deep"),
        ("unclosed deep", b'{"reports":' + b"[" * 50_000, 400, "json_too_deep"),
        ("invalid UTF-8", b'{"reports": "\xff"}', 400, "invalid_encoding"),
        ("UTF-16 with BOM", '{"reports": []}'.encode("utf-16"), 400, "invalid_encoding"),
        ("UTF-16 without BOM", '{"reports": []}'.encode("utf-16-le"), 400, "invalid_encoding"),
        ("UTF-8 BOM", b'\xef\xbb\xbf{"reports": []}', 400, "invalid_encoding"),
        ("lone surrogate", b'{"reports": [{"staff_id": "\\ud800"}]}', 400, "invalid_encoding"),
        ("lone surrogate key", b'{"\\udfff": 1}', 400, "invalid_encoding"),
        ("escaped NUL", b'{"reports": [{"staff_id": "a\\u0000b"}]}', 400, "invalid_encoding"),
        ("escaped NUL key", b'{"\\u0000": 1}', 400, "invalid_encoding"),
    ]  # fmt: skip
    before = api.footprint()
    caplog.set_level(logging.WARNING)
    json_routes = [(m, p) for m, p in body_routes(api.app) if not is_upload(m, p)]
    assert json_routes
    for method, path in json_routes:
        for name, content, status, code in refusals:
            if len(content) > limit_of(method, path):
                status, code = 413, "payload_too_large"
            response = api.client.request(
                method, path, content=content, headers={**JSON, **api.auth("admin")}
            )
            assert_error_shape(response, status)
            assert response.json()["code"] == code, (method, path, name, response.text)
    assert api.footprint() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert api.client.get("/healthz").status_code == 200


def test_a_body_at_the_depth_limit_reaches_the_route(api: Api) -> None:
    """The cap refuses nothing legitimate: a body nested exactly ``MAX_JSON_DEPTH`` deep is judged
    by the route (a validation error here), a proper surrogate pair is not an encoding error, nor
    is an escaped backslash followed by the text ``u0000``."""
    at_limit = b'{"reports":' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    response = api.client.post(
        "/api/v1/access-events", content=at_limit, headers={**JSON, **api.auth("archivist")}
    )
    assert_error_shape(response, 422)
    assert response.json()["code"] == "validation_error"
    emoji = (
        b'{"reports": [{"archive_id": "x", "purpose": "treatment", "staff_id": "\\ud83d\\ude00"}]}'
    )
    response = api.client.post(
        "/api/v1/access-events", content=emoji, headers={**JSON, **api.auth("archivist")}
    )
    assert_error_shape(response, 422)
    assert response.json()["details"]["errors"][0]["loc"][-1] == "archive_id"
    backslash = (
        b'{"reports": [{"archive_id": "x", "purpose": "treatment", "staff_id": "\\\\u0000"}]}'
    )
    response = api.client.post(
        "/api/v1/access-events", content=backslash, headers={**JSON, **api.auth("archivist")}
    )
    assert_error_shape(response, 422)  # the text \u0000, not a NUL: judged by the route
    assert response.json()["details"]["errors"][0]["loc"][-1] == "archive_id"


def test_deep_upload_metadata_is_refused(api: Api) -> None:
    """Uploads skip the body check (they are streamed); their JSON field is parsed by pydantic's
    depth-limited parser, which refuses deep nesting as a validation error."""
    before = api.footprint()
    for levels in (75_000, 60_000):
        metadata = "[" * levels + "]" * levels
        response = api.upload(metadata=metadata[: 60 * 1024])
        assert_error_shape(response, 422)
    assert api.footprint() == before
    assert api.client.get("/healthz").status_code == 200


def test_a_revoked_key_is_refused_before_its_body_is_read(api: Api) -> None:
    """A request with a body and a valid key passes the gate (the route reuses its principal); once
    the key is revoked, the gate refuses it before reading the body."""
    created = api.client.post(
        "/api/v1/keys", json={"role": "auditor", "name": "gate-check"}, headers=api.auth("admin")
    )
    assert created.status_code == 201, created.text
    issued = created.json()
    revoked = api.client.delete(f"/api/v1/keys/{issued['key']['id']}", headers=api.auth("admin"))
    assert revoked.status_code == 200, revoked.text
    refused = api.client.post(
        "/api/v1/verify",
        content=deep(100_000),
        headers={**JSON, "Authorization": f"Bearer {issued['secret']}"},
    )
    assert_error_shape(refused, 401)
