"""Three hospital nodes (A, B, C) in this test process, each behind a real uvicorn HTTP server on
its own port, on the session anvil (isolated per test by the ``chain`` fixture), with full
background schedules (anchoring, chain watcher, incoming transfers). The process-level tests in
``test_processes.py`` run the same flows with three separate node processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount

from anchoring.chain import RpcChain
from api.main import create_app
from node.ports import free_port
from node.principal import Role
from node.runtime import NodeRuntime
from tests.fixtures.chain import Consortium
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

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
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


def start_hospital(
    name: str,
    consortium: Consortium,
    account: LocalAccount,
    data_dir: Path,
    port: int,
    peers: dict[str, str],
    **settings: Any,
) -> Hospital:
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
    runtime.start(scheduler=True)
    keys = {
        role: runtime.keys.issue(
            Role(role), f"{name}-{role}", "general" if role == "clinician" else None
        ).secret
        for role in ("admin", "archivist", "clinician", "auditor")
    }
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, f"{name} to serve")
    return Hospital(name, runtime, f"http://127.0.0.1:{port}", server, thread, keys)


@pytest.fixture
def hospitals(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
    hospital_c: LocalAccount,
) -> Iterator[dict[str, Hospital]]:
    accounts = {"A": hospital_a, "B": hospital_b, "C": hospital_c}
    ports = {name: free_port() for name in accounts}
    urls = {accounts[n].address: f"http://127.0.0.1:{ports[n]}" for n in accounts}
    started: dict[str, Hospital] = {}
    try:
        for name, account in accounts.items():
            peers = {a: u for a, u in urls.items() if a != account.address}
            started[name] = start_hospital(  # replicas are placed by the tests that want them
                name, consortium, account, tmp_path / name, ports[name], peers, replica_tick=3600.0
            )
        # Each node registers its own encryption key on start (the fixture consortium was
        # bootstrapped with other keys): wait until the registry holds them.
        for hospital in started.values():
            wait_for(
                lambda h=hospital: (
                    bytes(chain.member(h.address).public_key)
                    == h.runtime.keystore.encryption_public_key
                ),
                30,
                f"{hospital.name}'s public key on chain",
            )
        yield started
    finally:
        for hospital in started.values():
            hospital.stop()
