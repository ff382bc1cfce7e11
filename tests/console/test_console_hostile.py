"""Hostile bodies on every console route that reads one, before authentication.

The network suite (``tests/network/test_hostile_http.py``) finds the routes that take a body in
the OpenAPI document, where the console's routes are not (``include_in_schema=False``). Here every
POST route of the console's three routers is taken from the routers themselves, so a new console
form is covered the day it is added, and each gets, with no session (no cookie, or a forged one): deep nesting, a body over its
limit, malformed UTF-8 and a broken multipart envelope — answered with a 4xx or the sign-in
redirect, never a 5xx, with nothing stored (footprint, sessions, ACCESS events). Over a live
uvicorn server (real TCP, the node's ``GuardedH11Protocol``), a slow sender is dropped on the
routes that read their body before any session exists (sign-in, member challenge and verify),
and answered at once without its body on the routes that need a session.
"""

from __future__ import annotations

import re
import socket
import time
from functools import partial

import httpx
from fastapi.routing import APIRoute

from api.main import body_limits, is_upload
from api.server import HttpLimits
from api.web import console as web_console
from api.web import console_member as web_console_member
from api.web import console_ops as web_console_ops
from node.runtime import NodeRuntime
from tests.api.conftest import Api, issue_keys
from tests.console.live import live_server
from tests.fixtures.node import MakeNode

ARCHIVE_ID = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
FILL = {"archive_id": ARCHIVE_ID, "alert_id": "1", "tag": "ab" * 32}
PRE_SESSION = {"/console/login", "/console/member/challenge", "/console/member/verify"}
"""The console routes that read their body with no session (the sign-in forms)."""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def console_posts() -> list[str]:
    """Every POST route of the console's routers, its path parameters filled."""
    paths = []
    for router in (web_console.router, web_console_ops.router, web_console_member.router):
        for route in router.routes:
            if isinstance(route, APIRoute) and "POST" in route.methods:
                paths.append(re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], route.path))
    return sorted(paths)


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def _sessions(api: Api) -> set[str]:
    store = getattr(api.app.state, "console_sessions", None)
    return set() if store is None else set(store.sessions)


def _post(
    api: Api, path: str, body: bytes, headers: dict[str, str], *, cookies: dict[str, str]
) -> tuple[int, str]:
    """The status and the error code (JSON) or the redirect's target; never a 5xx."""
    answer = api.client.post(path, content=body, headers=headers, cookies=cookies)
    assert answer.status_code < 500, (path, cookies, answer.status_code, answer.text[:200])
    if answer.status_code == 303:
        return 303, answer.headers["location"]
    if answer.headers.get("content-type", "").startswith("application/json"):
        return answer.status_code, str(answer.json()["code"])
    return answer.status_code, ""


def test_hostile_bodies_on_every_console_route_before_authentication(api: Api) -> None:
    paths = console_posts()
    assert len(paths) >= 20
    assert set(paths) >= PRE_SESSION
    limit_for = body_limits(api.node.settings.max_upload_bytes)
    before = api.footprint()
    sessions = _sessions(api)
    for cookies in ({}, {"ac_session": "forged-session-id"}):
        for path in paths:
            upload = is_upload("POST", path)
            where = (path, cookies)

            post = partial(_post, api, path, cookies=cookies)
            signed_out = (303, "/console/login")
            # deep nesting, as JSON and as a form body
            for headers in ({"Content-Type": "application/json"}, FORM):
                got = post(deep(10_000), headers)  # 60 KB: under the small-body limit
                assert got == (signed_out if upload else (400, "json_too_deep")), (where, got)
            # one byte over the route's limit (declared length, refused before it is read)
            got = post(b"x" * (limit_for("POST", path) + 1), FORM)
            assert got == (413, "payload_too_large"), (where, got)
            # malformed UTF-8
            got = post(b"csrf=\xff\xfe&api_key=\xc3(", FORM)
            expected = signed_out if upload else (400, "invalid_encoding")
            assert got == expected, (where, got)
            # a broken multipart envelope (no boundary, a part never closed)
            got = post(
                b'--x\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nabc',
                {"Content-Type": "multipart/form-data; boundary=x"},
            )
            if path in PRE_SESSION:
                assert 400 <= got[0] < 500, (where, got)  # refused (a sign-in that fails)
            else:
                assert got == signed_out, (where, got)
    assert api.footprint() == before
    assert _sessions(api) == sessions  # no session opened by any of it


def _trickle(base: str, paths: list[str], seconds: float) -> dict[str, tuple[bytes, int]]:
    """Open one connection per path, send a form request's head declaring 4,000 bytes of body,
    then one byte per path per round (far below the server's minimum rate) until the server has
    closed every connection: what each connection got back, and the body bytes it took."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\ncsrf="
    )
    open_: dict[str, socket.socket] = {}
    got: dict[str, bytes] = {path: b"" for path in paths}
    sent: dict[str, int] = {path: 0 for path in paths}
    try:
        for path in paths:
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(head.format(path=path, host=host, port=port).encode())
            sock.setblocking(False)
            open_[path] = sock
        deadline = time.monotonic() + seconds
        while open_:
            assert time.monotonic() < deadline, f"still open: {sorted(open_)}"
            for path, sock in list(open_.items()):
                try:
                    while data := sock.recv(65536):
                        got[path] += data
                    closed = True  # EOF
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if not closed:
                    try:
                        sock.send(b"x")
                        sent[path] += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                if closed:
                    sock.close()
                    del open_[path]
            time.sleep(0.2)
    finally:
        for sock in open_.values():
            sock.close()
    return {path: (got[path], sent[path]) for path in paths}


def test_slow_senders_on_every_console_route_are_dropped_or_answered_without_their_body(
    make_node: MakeNode,
) -> None:
    """Signed out, one trickled body per console POST route at once. An upload route (its body
    streamed to the form parser, ``api.main.is_upload``) answers the sign-in redirect without
    reading the body; every other route's body is read before the session is looked at (the JSON
    body check, bounded by the 64 KiB small-body limit), so the trickle is dropped by the server's
    minimum-rate guard with no answer. Then the node still signs a real caller in."""
    node: NodeRuntime = make_node()
    keys = issue_keys(node)
    limits = HttpLimits(header_timeout=5.0, body_timeout=10.0, body_min_rate=1024, idle_timeout=2)
    paths = console_posts()
    with live_server(node, limits=limits) as base:
        outcomes = _trickle(base, paths, 120)
        for path, (answer, sent) in outcomes.items():
            assert sent < 4000 - len("csrf="), path  # never read to the end
            if is_upload("POST", path):
                assert answer.startswith(b"HTTP/1.1 303 "), (path, answer[:200])
                assert b"location: /console/login" in answer.lower(), path
            else:
                assert answer == b"", (path, answer[:200])  # dropped, nothing answered
        with httpx.Client(base_url=base, timeout=30) as http:
            signed = http.post("/console/login", data={"api_key": keys["archivist"], "lang": "en"})
            assert signed.status_code == 303
            assert signed.headers["location"] == "/console/archives"
