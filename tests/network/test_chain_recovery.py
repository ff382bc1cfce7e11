"""Recovery after an unclean chain crash (issue 8, item 4), end to end in real processes.

The reported sequence: `archivechain up` with two hospitals, archives written to both nodes while
anvil is killed with SIGKILL, `archivechain chain start`, then `down` and `up --reset-chain`. anvil
dumps its state every few seconds, so a kill -9 loses the blocks mined since the last dump: the
restarted chain holds fewer checkpoints than the nodes recorded and a lower nonce for each node's
key than the transactions the nodes already signed. Health must say ``chain_state_lost``; after
``up --reset-chain`` every node must anchor again (nonces re-planned from the chain), old and new
proofs must verify with `archivechain verify`, no checkpoint may be on chain twice and no
transaction may have reverted.

Which dump survives a kill -9 is a matter of timing, so the test pins it: it keeps a copy of one
periodic dump, writes until both nodes confirmed checkpoints after it, kills anvil with SIGKILL in
the middle of the writes and puts that copy back as the state file (exactly what anvil would have
found had the kill come right before its next dump). Everything else is the CLI as a user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from anchoring.chain import RpcChain
from anchoring.deployment import Deployment
from node.process import pid_alive
from tests.network.conftest import Net, cli, environment, stop_cleanly, wait_ready
from tests.network.test_up_down import CONTENT, METADATA

RECOVERY_TIMEOUT = 120.0


def _client(node: dict[str, Any]) -> httpx.Client:
    client = httpx.Client(base_url=node["url"], timeout=30)
    client.headers["Authorization"] = f"Bearer {node['api_keys']['archivist']}"
    return client


def _create(client: httpx.Client) -> str:
    created = client.post(
        "/api/v1/archives",
        files={"file": ("summary.txt", CONTENT, "text/plain")},
        data={"metadata": json.dumps(METADATA)},
    )
    assert created.status_code == 201, created.text
    archive_id = str(created.json()["id"])
    assert client.post(f"/api/v1/archives/{archive_id}/archive").status_code == 200
    return archive_id


def _health(node: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(node["url"] + "/healthz", timeout=10).json()
    return body


def _wait_for(what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _fully_anchored(node: dict[str, Any]) -> bool:
    health = _health(node)
    anchoring = health["anchoring"]
    return (
        health["problems"] == []
        and anchoring["events_behind"] == 0
        and anchoring["pending_transactions"] == 0
    )


def _proof(client: httpx.Client, archive_id: str, timeout: float) -> bytes:
    """The archive's bundle once every one of its events is anchored and it is registered."""
    deadline = time.monotonic() + timeout
    while True:
        proof = client.get(f"/api/v1/archives/{archive_id}/proof")
        archive = client.get(f"/api/v1/archives/{archive_id}").json()
        if (
            proof.status_code == 200
            and proof.headers["X-Unanchored-Events"] == "0"
            and archive["chain_status"] == "registered"
        ):
            return proof.content
        if time.monotonic() > deadline:
            pytest.fail(f"archive {archive_id} not anchored: {proof.status_code} {proof.text}")
        time.sleep(0.5)


def _verify_cli(bundle: bytes, path: Path, network: dict[str, Any]) -> None:
    path.write_bytes(bundle)
    done = subprocess.run(
        cli(
            "verify",
            str(path),
            "--rpc",
            network["rpc_url"],
            "--deployment",
            network["deployment_file"],
        ),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _copy_a_fresh_dump(state: Path, copy: Path) -> None:
    """Wait for anvil's next periodic dump and keep a complete copy of it."""
    before = state.stat().st_mtime_ns
    _wait_for("anvil's periodic state dump", lambda: state.stat().st_mtime_ns != before, 30)
    for _ in range(50):
        time.sleep(0.3)  # let the dump finish writing
        shutil.copyfile(state, copy)
        try:
            json.loads(copy.read_text())
        except ValueError:
            continue
        return
    pytest.fail("could not copy a complete state dump")


def _outbox_failures(node_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(node_dir / "node.db") as db:
        rows = db.execute("SELECT kind, error FROM chain_outbox WHERE state = 'FAILED'").fetchall()
    return [(str(kind), str(error)) for kind, error in rows]


def test_kill_nine_of_the_chain_during_writes_then_reset_chain_recovers_every_node(
    net: Net,
    tmp_path: Path,
) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    first = net.up("--hospitals", "2", *ports, tag="first")
    network = wait_ready(net, first, nodes=2)
    nodes = network["nodes"]
    clients = [_client(node) for node in nodes]
    try:
        baseline = [_create(client) for client in clients]
        baseline_proofs = [
            _proof(client, archive_id, 60)
            for client, archive_id in zip(clients, baseline, strict=True)
        ]

        # Writes on both nodes, all the time, from here until after the kill.
        stop = threading.Event()
        written: list[list[str]] = [[], []]
        errors: list[str] = []

        def write(index: int) -> None:
            with _client(nodes[index]) as client:
                while not stop.is_set():
                    try:
                        written[index].append(_create(client))
                    except (AssertionError, httpx.HTTPError) as exc:  # reported after the join
                        errors.append(f"{nodes[index]['name']}: {exc}")
                        return

        writers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(2)]
        for writer in writers:
            writer.start()
        state = net.data_dir / "chain" / "state.json"
        older = tmp_path / "older-state.json"
        _copy_a_fresh_dump(state, older)
        anchored_at_dump = [_health(node)["anchoring"]["anchored_size"] for node in nodes]
        _wait_for(
            "checkpoints confirmed after the dump on both nodes",
            lambda: all(
                _health(node)["anchoring"]["anchored_size"] > size
                for node, size in zip(nodes, anchored_at_dump, strict=True)
            ),
            60,
        )
        anvil_pid = int((net.data_dir / "chain" / "anvil.pid").read_text().strip())
        os.kill(anvil_pid, signal.SIGKILL)
        _wait_for("anvil to die", lambda: not pid_alive(anvil_pid), 10)
        time.sleep(1.0)  # writes go on against a dead chain
        stop.set()
        for writer in writers:
            writer.join(60)
        assert errors == []
        assert all(written), "no archive was written during the crash window"
        shutil.copyfile(older, state)  # the last dump before the crash

        started = subprocess.run(
            cli("chain", "start", "--data-dir", str(net.data_dir), "--port", str(net.chain_port)),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        # The nodes, still running, see a chain that forgot their latest checkpoints.
        for node in nodes:
            _wait_for(
                f"{node['name']} to report chain_state_lost",
                lambda node=node: "chain_state_lost" in _health(node)["problems"],
                60,
            )
    finally:
        for client in clients:
            client.close()
    result = net.down()
    assert result.returncode == 0, result.stderr
    assert first.process.wait(60) == 0, first.output()

    reset = net.up("--reset-chain", tag="reset")
    recovered = wait_ready(net, reset, nodes=2)
    assert recovered["contracts"] == network["contracts"]
    for node in recovered["nodes"]:
        _wait_for(
            f"{node['name']} to anchor everything again",
            lambda node=node: _fully_anchored(node),
            RECOVERY_TIMEOUT,
        )
    clients = [_client(node) for node in recovered["nodes"]]
    try:
        for index, client in enumerate(clients):
            fresh = _create(client)
            bundles = {
                "baseline": _proof(client, baseline[index], 30),
                "crash-window": _proof(client, written[index][-1], 30),
                "fresh": _proof(client, fresh, 60),
            }
            for label, bundle in bundles.items():
                _verify_cli(bundle, tmp_path / f"{index}-{label}.json", recovered)
            _verify_cli(baseline_proofs[index], tmp_path / f"{index}-before.json", recovered)
    finally:
        for client in clients:
            client.close()

    # No checkpoint twice on chain: each hospital's sizes strictly grow (the contract refuses a
    # repeat, so a duplicate would show as a reverted transaction below).
    chain = RpcChain(recovered["rpc_url"], Deployment.load(Path(recovered["deployment_file"])))
    for node in recovered["nodes"]:
        count = chain.checkpoint_count(node["address"])
        sizes = [chain.checkpoint_at(node["address"], i).size for i in range(count)]
        assert sizes == sorted(set(sizes)), sizes
    stop_cleanly(net, reset)
    for node in recovered["nodes"]:
        assert _outbox_failures(Path(node["data_dir"])) == []
