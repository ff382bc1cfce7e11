"""Fixtures for tests that run ``archivechain up`` / ``down`` as real processes.

``net`` gives a fresh data directory and free ports, and leaves nothing running whatever the test
did; ``Net.up`` starts ``archivechain up`` with its output in files; ``wait_ready`` waits for the
summary line and checks every node answers its health check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.network import down
from node.ports import free_block
from node.process import pid_alive, read_pid_file

UP_TIMEOUT = 120.0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "archivechain", *args]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVECHAIN_")} | {
        "PYTHONUNBUFFERED": "1"
    }


@dataclass
class UpProcess:
    """A running ``archivechain up`` and where its output goes."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


@dataclass
class Net:
    """The test network's data directory and ports."""

    data_dir: Path
    base_port: int
    chain_port: int

    def up(self, *extra: str, tag: str) -> UpProcess:
        out, err = self.data_dir.parent / f"up-{tag}.out", self.data_dir.parent / f"up-{tag}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                cli("up", "--data-dir", str(self.data_dir), *extra),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=environment(),
            )
        return UpProcess(process, out, err)

    def down(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli("down", "--data-dir", str(self.data_dir)),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=90,
            check=False,
        )

    def network(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.data_dir / "network.json").read_text())
        return document

    def pids(self) -> dict[str, int]:
        """Every process the network recorded: supervisor, anvil, nodes."""
        found: dict[str, int] = {}
        for name, path in [
            ("up", self.data_dir / "up.pid"),
            *[(p.parent.name, p) for p in (self.data_dir / "nodes").glob("*/node.pid")],
        ]:
            recorded = read_pid_file(path)
            if recorded is not None:
                found[name] = recorded[0]
        anvil_pid = self.data_dir / "chain" / "anvil.pid"
        if anvil_pid.exists():
            found["anvil"] = int(anvil_pid.read_text().strip())
        return found


def wait_ready(net: Net, up: UpProcess, nodes: int) -> dict[str, Any]:
    """Wait for ``up``'s summary, then check ``network.json`` and every node's health."""
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        if up.process.poll() is not None:
            pytest.fail(f"up exited with {up.process.returncode}:\n{up.output()}")
        if "stops everything" in up.out.read_text():
            network = net.network()
            assert len(network["nodes"]) == nodes
            for node in network["nodes"]:
                assert httpx.get(node["url"] + "/healthz", timeout=5).status_code == 200
            return network
        time.sleep(0.25)
    pytest.fail(f"network not ready in {UP_TIMEOUT} s:\n{up.output()}")


def stop_cleanly(net: Net, up: UpProcess) -> dict[str, int]:
    """``down`` stops ``up`` cleanly: exit 0, every process gone, state saved, logs closed."""
    pids = net.pids()
    assert set(pids) >= {"up", "anvil", *(n["name"] for n in net.network()["nodes"])}, pids
    result = net.down()
    assert result.returncode == 0, result.stderr
    assert "stopped `up`" in result.stdout
    assert up.process.wait(60) == 0, up.output()
    assert "network stopped" in up.err.read_text()
    left = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert left == {}, f"processes left running: {left}"
    assert not (net.data_dir / "up.pid").exists()
    assert not list((net.data_dir / "nodes").glob("*/node.pid"))
    assert (net.data_dir / "chain" / "state.json").stat().st_size > 0  # anvil dumped its state
    for log in (net.data_dir / "nodes").glob("*/node.log"):  # each node closed its runtime
        assert log.read_text().rstrip().endswith(f"node {log.parent.name} stopped"), log
    assert "exited with code" not in up.err.read_text()
    return pids


def wait_for_line(up: UpProcess, *fragments: str, timeout: float = 60.0) -> str:
    """The first line of ``up``'s stderr holding every fragment (polled while it runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in up.err.read_text().splitlines():
            if all(fragment in line for fragment in fragments):
                return line
        if up.process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no line with {fragments} from up in {timeout:.0f} s:\n{up.output()}")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    network = Net(tmp_path / "net", base_port=free_block(2), chain_port=free_block(1))
    try:
        yield network
    finally:  # whatever happened, leave nothing running
        down(network.data_dir, timeout=20)
