"""``archivechain up`` supervises its nodes, in real processes: a node killed with SIGKILL is
reported loudly (name, signal, last log line) and started again on the same port with its data; a
node that keeps dying keeps being reported, with a growing back-off; Ctrl-C while a restart is
pending stops everything and restarts nothing. Ports someone else holds are refused before anything
starts, naming the port, its probable holder and the option to choose another.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from devtools.network import RESTART_DELAY_MAX, restart_delay
from node.process import pid_alive, read_pid_file
from tests.network.conftest import (
    Net,
    cli,
    environment,
    free_block,
    stop_cleanly,
    wait_for_line,
    wait_ready,
)

METADATA = {
    "record_class": "OUTPATIENT",
    "department": "general",
    "title": "Clinic letter",
    "patient_id": "MRN-7001",
    "source_system": "HIS",
}
CONTENT = b"Clinic letter: blood pressure controlled; review in six months.\n"


def _node_pid(net: Net) -> int:
    recorded = read_pid_file(net.data_dir / "nodes" / "hospital-1" / "node.pid")
    assert recorded is not None
    return recorded[0]


def test_restart_delay_doubles_up_to_the_cap() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(100_000) == RESTART_DELAY_MAX


def test_a_killed_node_is_reported_and_restarted_with_its_data(net: Net) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    up = net.up("--hospitals", "1", *ports, tag="supervised")
    try:
        network = wait_ready(net, up, nodes=1)
        summary = up.out.read_text()
        node = network["nodes"][0]
        assert f"{node['url']}/docs" in summary  # what to do next
        assert f"jq '.nodes[0].api_keys' {net.data_dir}/network.json" in summary
        assert "Five-minute walkthrough" in summary
        headers = {"Authorization": f"Bearer {node['api_keys']['archivist']}"}
        with httpx.Client(base_url=node["url"], headers=headers, timeout=60) as client:
            created = client.post(
                "/api/v1/archives",
                files={"file": ("letter.txt", CONTENT, "text/plain")},
                data={"metadata": json.dumps(METADATA)},
            )
            assert created.status_code == 201, created.text
            archive_id = created.json()["id"]
            proof = client.get(f"/api/v1/archives/{archive_id}/proof", params={"wait": 30})
            assert proof.status_code == 200, proof.text
            assert proof.headers["X-Unanchored-Events"] == "0"

        # kill -9: reported loudly, restarted on the same port, data intact
        killed = _node_pid(net)
        os.kill(killed, signal.SIGKILL)
        down_line = wait_for_line(up, "NODE DOWN", "hospital-1")
        assert f"(pid {killed}) was killed by signal SIGKILL" in down_line
        assert "last log line: " in down_line
        assert "restarting it in 1 s" in down_line
        wait_for_line(up, "hospital-1 is back", node["url"])
        restarted = _node_pid(net)
        assert restarted != killed
        assert pid_alive(restarted)
        with httpx.Client(base_url=node["url"], headers=headers, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            content = client.get(
                f"/api/v1/archives/{archive_id}/content", params={"purpose": "treatment"}
            )
            assert content.status_code == 200
            assert content.content == CONTENT
            again = client.get(f"/api/v1/archives/{archive_id}/proof")
            assert again.status_code == 200
            assert again.content == proof.content

        # a node that cannot start keeps being reported, each time later (the kill above is
        # recent, so this death counts as the second in a row)
        config = net.data_dir / "nodes" / "hospital-1" / "node.toml"
        config.write_text("this is not toml\n")
        os.kill(restarted, signal.SIGKILL)
        second = wait_for_line(up, "NODE DOWN", f"(pid {restarted})")
        assert "was killed by signal SIGKILL, 2 times in a row" in second
        assert "restarting it in 2 s" in second
        third = wait_for_line(up, "NODE DOWN", "3 times in a row")
        assert "exited with code 2" in third
        assert "last log line: error: invalid configuration" in third
        assert "restarting it in 4 s" in third
        fourth = wait_for_line(up, "NODE DOWN", "4 times in a row")
        assert "exited with code 2" in fourth
        assert "restarting it in 8 s" in fourth

        # Ctrl-C while a restart is pending: everything stops, nothing is started again
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0, up.output()
        after_stop = up.err.read_text().split("stopping the network")[-1]
        assert ": restart " not in after_stop
        assert "network stopped" in after_stop
        assert {name: pid for name, pid in net.pids().items() if pid_alive(pid)} == {}
        assert not (net.data_dir / "up.pid").exists()
    finally:
        if up.process.poll() is None:
            up.process.kill()


def _refused_up(net: Net, *extra: str) -> str:
    """Run ``up`` expecting a one-line refusal (exit 1) that starts nothing; return the line."""
    chain_before = (net.data_dir / "chain" / "anvil.pid").exists()
    result = subprocess.run(
        cli("up", "--data-dir", str(net.data_dir), "--hospitals", "1", *extra),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert (net.data_dir / "chain" / "anvil.pid").exists() == chain_before  # nothing started
    assert not (net.data_dir / "up.pid").exists()
    return lines[0]


def test_busy_ports_are_refused_with_their_holder_and_the_way_out(net: Net) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", net.base_port))
        holder.listen()
        message = _refused_up(net, *ports)
    assert f"node port(s) {net.base_port} on 127.0.0.1 already in use" in message
    assert "by another program" in message
    assert "--base-port P (make up BASE_PORT=P)" in message

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", net.chain_port))
        holder.listen()
        message = _refused_up(net, *ports)
    assert f"chain port {net.chain_port} on 127.0.0.1 already in use" in message
    assert "--chain-port C (make up CHAIN_PORT=C)" in message


def test_ports_held_by_another_network_are_named_and_a_node_stopped_on_purpose_stays_stopped(
    net: Net, tmp_path: Path
) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    up = net.up("--hospitals", "1", *ports, tag="first")
    try:
        network = wait_ready(net, up, nodes=1)
        other = Net(tmp_path / "other", base_port=net.base_port, chain_port=free_block(1))
        message = _refused_up(other, "--base-port", str(net.base_port))
        assert "an ArchiveChain node answers there: probably another `archivechain up`" in message
        assert "--base-port P" in message

        # SIGTERM: the node stops cleanly, `up` says so and does not start it again
        stopped = _node_pid(net)
        os.kill(stopped, signal.SIGTERM)
        line = wait_for_line(up, f"(pid {stopped})")
        assert "exited cleanly (code 0): someone stopped it on purpose, so it stays stopped" in line

        other = Net(tmp_path / "third", base_port=free_block(1), chain_port=net.chain_port)
        message = _refused_up(  # takes longer than the 1 s a crashed node waits for its restart
            other, "--base-port", str(other.base_port), "--chain-port", str(net.chain_port)
        )
        assert "a JSON-RPC chain answers there" in message
        assert "--chain-port C" in message
        assert ": restart 1 (pid" not in up.err.read_text()
        assert "NODE DOWN" not in up.err.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(network["nodes"][0]["url"] + "/healthz", timeout=5)
    finally:
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0, up.output()


def test_nodes_left_by_a_killed_up_are_stopped_by_the_next_up(net: Net) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    up = net.up("--hospitals", "1", *ports, tag="killed")
    wait_ready(net, up, nodes=1)
    left = net.pids()
    up.process.kill()
    up.process.wait(10)
    assert pid_alive(left["hospital-1"])

    again = net.up(tag="again")
    try:
        wait_ready(net, again, nodes=1)
        assert f"hospital-1 was left running (pid {left['hospital-1']})" in again.err.read_text()
        assert "already in use" not in again.err.read_text()
        assert not pid_alive(left["hospital-1"])
        assert net.pids()["anvil"] == left["anvil"]  # the chain it left is reused
        stop_cleanly(net, again)
    finally:
        if again.process.poll() is None:
            again.process.kill()
