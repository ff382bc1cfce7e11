"""Hostile HTTP clients against a real node process (``archivechain node run``: live uvicorn, real
TCP) on its own anvil: deep JSON on every route that takes a body, half-open connections, trickled
bodies, a crowd of slow connections larger than the process's file limit. The node answers every
request with a 4xx, drops slow clients, keeps answering ``/healthz``, stays alive, and its log
grows by a bounded amount.

The node runs with a hard open-file limit of ``FILE_LIMIT`` (set with ``setrlimit`` before it
starts) and short timeouts (``SETTINGS``), so the tests reach every limit in a few seconds. They
assert outcomes (answered, dropped, alive), never timings; deadlines only bound the polling.

A last test serves a deliberately unguarded app (no body check) the way the node does
(``api.server``) and shows that deep recursion in a handler, on the event loop or in a worker
thread, ends in a 500 and not in a dead process.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.server import RateLimitFilter
from devtools.devchain import AnvilOptions, start_anvil
from node.ports import free_port
from node.principal import Role
from tests.fixtures.chain import TestAccounts, build_consortium
from tests.fixtures.node import build_node
from tests.network.conftest import cli as _cli
from tests.network.conftest import environment as _environment
from tests.support import REPO_ROOT

FILE_LIMIT = 512
"""Hard RLIMIT_NOFILE of the node process."""
MAX_CONNECTIONS = 384
"""The node's connection limit under ``FILE_LIMIT`` (128 descriptors kept for the node)."""
SETTINGS = {
    "http_header_timeout": 2.0,
    "http_body_timeout": 10.0,
    "http_body_min_rate": 1024,
    "http_idle_timeout": 2,
}
LOG_GROWTH_BOUND = 64 * 1024
"""Most the node's log may grow while being attacked in one test (rate-limited lines)."""


@dataclass
class LiveNode:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path
    admin_key: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def log_size(self) -> int:
        return self.log.stat().st_size

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)


def _limit_files() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def live_node(
    tmp_path_factory: pytest.TempPathFactory, test_accounts: TestAccounts
) -> Iterator[LiveNode]:
    tmp = tmp_path_factory.mktemp("hostile")
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    process: subprocess.Popen[bytes] | None = None
    try:
        consortium = build_consortium(anvil.rpc_url, test_accounts, tmp / "chain")
        data_dir, port = tmp / "node", free_port()
        runtime = build_node(consortium, test_accounts.hospital_a, data_dir)
        admin_key = runtime.keys.issue(Role.ADMIN, "admin").secret
        runtime.close()
        settings = {
            "mode": "dev",
            "name": "hostile",
            "data_dir": str(data_dir),
            "rpc_url": consortium.rpc_url,
            "deployment_file": str(consortium.deployment_file),
            "host": "127.0.0.1",
            "port": port,
            **SETTINGS,
        }
        config = data_dir / "node.toml"
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        log = data_dir / "node.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                _cli("node", "run", "--config", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_environment(),
                preexec_fn=_limit_files,
            )
        node = LiveNode(process, "127.0.0.1", port, log, admin_key)
        wait_until(lambda: node.healthy() or not node.alive(), 60, "the node to serve")
        assert node.alive(), log.read_text()
        yield node
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        anvil.stop()


def deep(levels: int) -> bytes:
    return b'{"reports":' + b"[" * levels + b"]" * levels + b"}"


def body_routes(node: LiveNode) -> list[tuple[str, str]]:
    """Every operation of the node's OpenAPI document that takes a body, parameters filled."""
    document = httpx.get(node.url + "/openapi.json", timeout=10).json()
    routes = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                filled = path.replace("{archive_id}", "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A")
                routes.append((method.upper(), filled))
    return sorted(routes)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset; data is read and ignored)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_deep_json_on_every_body_route_is_refused_and_the_process_lives(
    live_node: LiveNode,
) -> None:
    routes = body_routes(live_node)
    assert len(routes) >= 9
    keys = {"no key": {}, "wrong key": {"Authorization": "Bearer ak_wrong"}}
    keys["valid key"] = {"Authorization": f"Bearer {live_node.admin_key}"}
    with httpx.Client(base_url=live_node.url, timeout=30) as client:
        for method, path in routes:
            for levels in (100_000, 75_000):
                for who, auth in keys.items():
                    response = client.request(
                        method,
                        path,
                        content=deep(levels),
                        headers={"Content-Type": "application/json", **auth},
                    )
                    assert 400 <= response.status_code < 500, (method, path, who)
                    assert set(response.json()) >= {"code", "message"}
                    if who != "valid key":
                        assert response.status_code in {401, 413}, (method, path, who)
                    assert live_node.alive(), f"{method} {path} ({who}) killed the node"
        # A node-to-node route reads its body before the signature check: the body check refuses it.
        peer = client.request(
            "GET",
            "/peer/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/bundle",
            content=deep(30_000),
            headers={"Content-Type": "application/json"},
        )
        assert peer.status_code == 400
        assert peer.json()["code"] == "json_too_deep"
        valid = client.post(
            "/api/v1/access-events",
            content=deep(100_000),
            headers={"Content-Type": "application/json", **keys["valid key"]},
        )
        assert valid.json()["code"] == "json_too_deep"
    assert live_node.alive()
    assert live_node.healthy()


def test_half_open_connections_are_dropped(live_node: LiveNode) -> None:
    log_before = live_node.log_size()
    partial = [live_node.connect() for _ in range(40)]
    for sock in partial:
        sock.sendall(b"POST /api/v1/keys HTTP/1.1\r\nHost: node\r\nContent-Type: applic")
    silent = [live_node.connect() for _ in range(10)]
    held = partial + silent
    try:
        wait_until(
            lambda: all(closed_by_server(s) for s in held), 20, "the half-open connections to drop"
        )
    finally:
        for sock in held:
            sock.close()
    assert live_node.healthy()
    assert live_node.log_size() - log_before < LOG_GROWTH_BOUND


def test_a_trickled_body_is_dropped_and_a_steady_one_is_answered(live_node: LiveNode) -> None:
    body = json.dumps({"role": "auditor", "name": "steady-client"}).encode()
    head = (
        "POST /api/v1/keys HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {live_node.admin_key}\r\nContent-Length: {{length}}\r\n\r\n"
    )
    trickle = live_node.connect()
    trickle.sendall(head.format(length=4000).encode() + b'{"role": "auditor", "name": "')
    sent = 0

    def dropped_while_trickling() -> bool:
        nonlocal sent
        if closed_by_server(trickle):
            return True
        try:
            trickle.sendall(b"x")  # one byte every polling round: far below the minimum rate
        except OSError:
            return True
        sent += 1
        return False

    try:
        wait_until(dropped_while_trickling, 40, "the trickled body to be dropped")
    finally:
        trickle.close()
    assert sent < 4000  # dropped long before the body could complete

    steady = live_node.connect()
    try:
        steady.sendall(head.format(length=len(body)).encode())
        for start in range(0, len(body), 16):  # in pieces, well within the body timeout
            steady.sendall(body[start : start + 16])
            time.sleep(0.02)
        steady.settimeout(20)
        answer = steady.recv(65536)
    finally:
        steady.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert live_node.alive()


def test_healthz_answers_while_more_slow_connections_than_files_are_held(
    live_node: LiveNode,
) -> None:
    """More half-open connections than the node's file limit: new connections evict the
    longest-idle ones instead of failing to be accepted, so a real request still gets through;
    the log records the crowding a bounded number of times."""
    log_before = live_node.log_size()
    crowd: list[socket.socket] = []
    try:
        for _ in range(FILE_LIMIT + 200):
            sock = live_node.connect()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n")
            crowd.append(sock)
        for _ in range(3):
            assert live_node.healthy()
    finally:
        for sock in crowd:
            sock.close()
    assert live_node.alive()
    log = live_node.log.read_text(errors="replace")
    assert f"http_max_connections lowered from 1000 to {MAX_CONNECTIONS}" in log
    # A burst beyond the file limit can still fail an accept() for a moment (asyncio accepts a
    # whole batch before any connection can be evicted, then backs off for a second): the line
    # and its traceback are rate-limited, and the node recovers (the /healthz probes above).
    assert log.count("socket.accept() out of system resource") <= 2 * RateLimitFilter().burst
    assert live_node.log_size() - log_before < LOG_GROWTH_BOUND


def test_bodies_that_never_come_do_not_lock_out_clients(live_node: LiveNode) -> None:
    """More connections than the node holds (but fewer than its file limit), each declaring a
    body and sending none: to a route that needs a key (answered 401 at once, then only drained)
    or to ``/peer/v1`` (read before its signature is checked). Such connections make way for new
    ones, so a real request gets through long before their body timeout."""
    log_before = live_node.log_size()
    heads = [
        b"POST /api/v1/keys HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        b"Content-Length: 60000\r\n\r\n{",
        b"GET /peer/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A/bundle HTTP/1.1\r\nHost: node\r\n"
        b"Content-Length: 60000\r\n\r\n[",
    ]
    crowd: list[socket.socket] = []
    try:
        for index in range(MAX_CONNECTIONS + 50):
            sock = live_node.connect()
            sock.sendall(heads[index % 2])
            crowd.append(sock)
        time.sleep(1.5)  # a stalled body becomes evictable after a second of waiting
        for _ in range(3):
            assert live_node.healthy()
    finally:
        for sock in crowd:
            sock.close()
    assert live_node.alive()
    assert live_node.log_size() - log_before < LOG_GROWTH_BOUND


def test_upgrade_requests_do_not_use_up_connections(live_node: LiveNode) -> None:
    """More WebSocket upgrade requests than the node has connections: each is answered as plain
    HTTP and its connection stays countable (evicted or closed), so the node still answers."""
    log_before = live_node.log_size()
    upgrade = (
        b"GET /no-such-page HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    for _ in range(FILE_LIMIT // 64):
        batch = [live_node.connect() for _ in range(64)]
        try:
            for sock in batch:
                sock.sendall(upgrade)
            for sock in batch:
                sock.recv(1024)  # whatever the answer, the connection is then left to the server
        finally:
            for sock in batch:
                sock.close()
    assert live_node.healthy()
    assert live_node.alive()
    assert live_node.log_size() - log_before < LOG_GROWTH_BOUND


def test_a_request_framed_both_ways_is_refused_and_its_connection_closed(
    live_node: LiveNode,
) -> None:
    """``Content-Length`` and ``Transfer-Encoding: chunked`` together (RFC 9112 §6.1): a proxy
    that framed the body by the length would see the rest as a second request (smuggling). The
    node answers 400 ``invalid_framing`` with ``Connection: close`` and closes, so the request
    pipelined behind it is never served (before, it was: 422, then the smuggled GET)."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"
    request = (
        b"POST /api/v1/verify HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
    )
    sock = live_node.connect()
    try:
        sock.settimeout(20)
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # until the node closes the connection
            answer += chunk
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"connection: close" in head.lower()
    assert json.loads(body[: body.index(b"}") + 1])["code"] == "invalid_framing"
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the pipelined GET got no answer
    assert live_node.healthy()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/v1/verify HTTP/1.1\r\nHost: node\r\nContent-Length: 12x\r\n\r\n{}",
        b"POST /api/v1/verify HTTP/1.1\r\nHost: node\r\nContent-Length: 2, 3\r\n\r\n{}",
        b"GET /healthz HTTP/1.1\r\nHost: node\r\nno colon here\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    ],
    ids=["length_not_a_number", "two_lengths", "header_without_colon", "no_request_line",
         "head_of_200_kB"],
)  # fmt: skip
def test_requests_that_are_not_http_get_the_json_error_shape(
    live_node: LiveNode, request_bytes: bytes
) -> None:
    """What h11 itself refuses (before the app sees a request) is answered like every other
    refusal: 400 with ``{"code": "invalid_http", "message": …}`` and ``Connection: close``, then
    the connection closes and the node still serves (uvicorn answered in plain text)."""
    sock = live_node.connect()
    answer = b""
    try:
        sock.settimeout(20)
        with contextlib.suppress(OSError):  # the node may close before the whole head is sent
            sock.sendall(request_bytes)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):  # until the node closes the connection
                answer += chunk
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    error = json.loads(body)
    assert error["code"] == "invalid_http"
    assert "not valid HTTP/1.1" in error["message"]
    assert live_node.healthy()


UNGUARDED_APP = textwrap.dedent(
    """
    import json, sys
    from fastapi import FastAPI, Request
    from starlette.concurrency import run_in_threadpool
    from api.server import HttpLimits, make_server, prepare_process, run_server

    prepare_process()
    import node.runtime  # as in the node: the Ethereum stack is imported after prepare_process
    app = FastAPI()

    class Nested:
        def __init__(self, inner):
            self.inner = inner
        def __repr__(self):
            return "N(" + repr(self.inner) + ")"

    def nest(levels):
        value = None
        for _ in range(levels):
            value = Nested(value)
        return repr(value)

    @app.post("/loop")
    async def on_the_event_loop(request: Request):
        return {"parsed": type(json.loads(await request.body())).__name__}

    @app.post("/thread")
    async def in_a_worker_thread(request: Request):
        body = await request.body()
        return {"parsed": type(await run_in_threadpool(json.loads, body)).__name__}

    @app.post("/repr")
    async def python_through_c(request: Request):
        return {"length": len(await run_in_threadpool(nest, len(await request.body())))}

    @app.get("/ok")
    async def ok():
        return {"ok": True}

    run_server(make_server(app, host="127.0.0.1", port=int(sys.argv[1]), limits=HttpLimits()))
    """
)


def test_deep_recursion_in_an_unguarded_handler_does_not_kill_the_process(
    tmp_path: Path,
) -> None:
    """Even a route without the body check (a future mistake) cannot crash a process served by
    ``api.server``: the recursion limit fits every handler thread's stack, so deep input ends in
    a RecursionError (500) whether it recurses on the event loop, in a worker thread, in the JSON
    decoder or in Python code re-entered through C."""
    port = free_port()
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_APP)
    log = tmp_path / "unguarded.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(url + "/ok", timeout=2).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        wait_until(up, 30, "the unguarded app to serve")
        assert process.poll() is None, log.read_text()
        # One connection per request: uvicorn closes a connection whose handler raised.
        for path in ("/loop", "/thread"):
            for levels in (100_000, 200_000):
                answer = httpx.post(url + path, content=b"[" * levels + b"]" * levels, timeout=60)
                assert answer.status_code == 500, (path, levels, answer.text[:200])
                assert process.poll() is None, f"{path} at {levels} levels killed it"
        assert httpx.post(url + "/repr", content=b"x" * 50_000, timeout=60).status_code == 500
        assert httpx.get(url + "/ok", timeout=10).status_code == 200
        assert process.poll() is None
        assert "RecursionError" in log.read_text()
    finally:
        process.terminate()
        process.wait(30)
