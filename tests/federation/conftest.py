"""Three hospital nodes (A, B, C) in this test process, each behind a real uvicorn HTTP server on
its own port, on the session anvil (isolated per test by the ``chain`` fixture), with full
background schedules (anchoring, chain watcher, incoming transfers). The ``hospitals`` fixture
runs every test twice: the three nodes on SQLite, then on PostgreSQL (a schema each). The
process-level tests in ``test_processes.py`` run the same flows with three separate node
processes.

Each server is handed a socket bound before any node starts (``listen``), so the peers' URLs are
known up front and no other test run on the machine can take a port between its choice and its
use."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount

from anchoring.chain import RpcChain
from api.main import create_app
from node.ports import LOCALHOST
from node.principal import Role
from node.runtime import NodeRuntime
from tests.fixtures.chain import Consortium
from tests.fixtures.db import postgres_schema
from tests.fixtures.node import build_node


@dataclass
class Hospital:
    """One running node: its runtime, URL, and an HTTP client per role."""

    name: str
    runtime: NodeRuntime
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    keys: dict[str, str]
    listener: socket.socket

    @property
    def address(self) -> str:
        return self.runtime.hospital

    def client(self, role: str = "archivist") -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=30,
        )

    def pause_incoming(self) -> None:
        """Stop collecting incoming transfers (the node still follows the chain)."""
        scheduler = self.runtime._scheduler
        assert scheduler is not None
        scheduler.pause_job("incoming-transfers")

    def resume_incoming(self) -> None:
        scheduler = self.runtime._scheduler
        assert scheduler is not None
        scheduler.resume_job("incoming-transfers")

    @property
    def port(self) -> int:
        """The port it serves on (still known once stopped: a restart binds it again)."""
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.close()
        self.runtime.close()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def listen(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (``port`` 0: a free port the kernel picks), for
    ``start_hospital``: the port is held until the hospital stops (uvicorn closes it then); a
    restarted node binds its old port again, so only a restart leaves a moment in which another
    process could take it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOCALHOST, port))
    listener.listen(128)
    return listener


def start_hospital(
    name: str,
    consortium: Consortium,
    account: LocalAccount,
    data_dir: Path,
    listener: socket.socket,
    peers: dict[str, str],
    **settings: Any,
) -> Hospital:
    """A node with full schedules, served on ``listener`` (closed with the hospital)."""
    port = int(listener.getsockname()[1])
    try:
        runtime = build_node(
            consortium,
            account,
            data_dir,
            start=False,
            name=name,
            port=port,
            peers=peers,
            watcher_confirmations=0,
            watcher_tick=0.2,
            anchor_tick=0.2,
            anchor_interval=0.2,
            **settings,
        )
    except BaseException:
        listener.close()
        raise
    runtime.start(scheduler=True)
    keys = {
        role: runtime.keys.issue(
            Role(role), f"{name}-{role}", "general" if role == "clinician" else None
        ).secret
        for role in ("admin", "archivist", "clinician", "auditor")
    }
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host=LOCALHOST, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    hospital = Hospital(name, runtime, f"http://{LOCALHOST}:{port}", server, thread, keys, listener)
    try:
        wait_for(lambda: server.started, 10, f"{name} to serve")
    except BaseException:
        hospital.stop()
        raise
    return hospital


@contextmanager
def running_hospitals(
    consortium: Consortium,
    accounts: dict[str, LocalAccount],
    data_root: Path,
    database_urls: dict[str, str] | None = None,
    per_hospital: dict[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> Iterator[dict[str, Hospital]]:
    """One node per named account, each knowing the others as peers, each on its own database
    (``database_urls[name]``; default SQLite under ``data_root / name``), with ``settings`` and
    its own ``per_hospital[name]``; all stopped on exit."""
    listeners = {name: listen() for name in accounts}
    urls = {
        accounts[n].address: f"http://{LOCALHOST}:{listeners[n].getsockname()[1]}" for n in accounts
    }
    started: dict[str, Hospital] = {}
    try:
        for name, account in accounts.items():
            peers = {a: u for a, u in urls.items() if a != account.address}
            url = (database_urls or {}).get(name)
            extra = {"database_url": url} if url else {}
            started[name] = start_hospital(
                name,
                consortium,
                account,
                data_root / name,
                listeners[name],
                peers,
                **{**settings, **extra, **(per_hospital or {}).get(name, {})},
            )
        yield started
    finally:
        for hospital in started.values():
            hospital.stop()
        for listener in listeners.values():
            listener.close()


def wait_keys_registered(chain: RpcChain, hospitals: Iterable[Hospital]) -> None:
    """Each node registers its own encryption key on start (the fixture consortium was
    bootstrapped with other keys): wait until the registry holds them."""
    for hospital in hospitals:
        wait_for(
            lambda h=hospital: (
                bytes(chain.member(h.address).public_key)
                == h.runtime.keystore.encryption_public_key
            ),
            30,
            f"{hospital.name}'s public key on chain",
        )


def own_databases(stack: ExitStack, backend: str, names: Iterable[str]) -> dict[str, str] | None:
    """For ``backend`` "postgres", each named hospital's own PostgreSQL schema (dropped when
    ``stack`` closes); None otherwise (each hospital on its own SQLite file)."""
    if backend != "postgres":
        return None
    return {name: stack.enter_context(postgres_schema()) for name in names}


@pytest.fixture(params=["sqlite", "postgres"])
def hospitals(
    request: pytest.FixtureRequest,
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
    hospital_c: LocalAccount,
) -> Iterator[dict[str, Hospital]]:
    """A, B and C with full schedules (replicas placed only by the tests that want them), on
    SQLite or each on its own PostgreSQL schema."""
    accounts = {"A": hospital_a, "B": hospital_b, "C": hospital_c}
    with ExitStack() as stack:
        database_urls = own_databases(stack, request.param, accounts)
        started = stack.enter_context(
            running_hospitals(consortium, accounts, tmp_path, database_urls, replica_tick=3600.0)
        )
        wait_keys_registered(chain, started.values())
        yield started
