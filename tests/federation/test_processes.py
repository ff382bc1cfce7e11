"""Three real node processes and anvil (``archivechain up --hospitals 3``): a custody transfer
A → B during which B is SIGKILLed mid-accept (after staging the package, and again after the chain
accepted but before TRANSFER_ACCEPT was logged) still ends in exactly one outcome — B is the
custodian and decrypts, A cannot — and a share to C works until it is revoked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.chainview import CustodyState
from anchoring.verifier import verify_bundle
from archivechain.node import FAULT_POINT_ENV
from devtools.network import down
from node.ports import free_block
from tests.network.conftest import Net, cli, environment, wait_ready
from tests.support import REPO_ROOT

CONTENT = b"Transfer of care: cardiology referral, full record.\n" * 300


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Net, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("federation")
    net = Net(tmp / "net", base_port=free_block(3), chain_port=free_block(1))
    up = net.up(
        "--hospitals", "3", "--base-port", str(net.base_port), "--chain-port",
        str(net.chain_port), tag="fed",
    )  # fmt: skip
    try:
        yield net, wait_ready(net, up, 3)
    finally:
        down(net.data_dir, timeout=30)
        up.process.wait(60)


def client(node: dict[str, Any], role: str = "archivist") -> httpx.Client:
    return httpx.Client(
        base_url=node["url"] + "/api/v1",
        headers={"Authorization": f"Bearer {node['api_keys'][role]}"},
        timeout=30,
    )


def wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def create_archived(node: dict[str, Any]) -> str:
    with client(node) as api:
        metadata = {
            "record_class": "INPATIENT", "department": "general", "title": "Referral",
            "source_system": "HIS", "patient_id": "MRN-77",
        }  # fmt: skip
        created = api.post(
            "/archives",
            files={"file": ("referral.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        assert created.status_code == 201, created.text
        archive_id = str(created.json()["id"])
        assert api.post(f"/archives/{archive_id}/archive").status_code == 200
        wait(
            lambda: api.get(f"/archives/{archive_id}").json()["chain_status"] == "registered",
            60,
            "registration",
        )
    return archive_id


def transfer_state(node: dict[str, Any], archive_id: str, direction: str) -> str | None:
    with client(node) as api:
        for row in api.get("/transfers").json():
            if row["archive_id"] == archive_id and row["direction"] == direction:
                return str(row["state"])
    return None


def restart(net: Net, name: str, fault: str | None = None) -> subprocess.Popen[bytes]:
    """Stop node ``name`` (SIGTERM via its pid file) and start it again, optionally armed to
    SIGKILL itself at a fault point."""
    from node.process import stop_recorded

    stop_recorded(net.data_dir / "nodes" / name / "node.pid", timeout=30)
    env = environment() | ({FAULT_POINT_ENV: fault} if fault else {})
    log = (net.data_dir / "nodes" / name / f"restart-{fault or 'clean'}.log").open("ab")
    process = subprocess.Popen(
        cli("node", "run", "--config", str(net.data_dir / "nodes" / name / "node.toml")),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return process


@pytest.mark.parametrize("fault", ["transfer-staged", "transfer-completing"])
def test_transfer_survives_recipient_killed_mid_accept(
    network: tuple[Net, dict[str, Any]], fault: str
) -> None:
    net, doc = network
    a, b = doc["nodes"][0], doc["nodes"][1]
    archive_id = create_archived(a)
    armed = restart(net, b["name"], fault)
    wait(lambda: httpx.get(b["url"] + "/healthz", timeout=2).status_code == 200, 60, "B up")
    with client(a) as api:
        offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b["address"]})
        assert offered.status_code == 202, offered.text
    assert armed.wait(90) == -9, "B should have killed itself at the fault point"
    clean = restart(net, b["name"])
    try:
        wait(lambda: transfer_state(b, archive_id, "in") == "accepted", 90, "B to accept")
        wait(lambda: transfer_state(a, archive_id, "out") == "accepted", 60, "A to see it")
        chain = RpcChain.for_notary(doc["rpc_url"], doc["contracts"]["ArchiveNotary"])
        custody = chain.custody(archive_id)
        assert (custody.state, custody.custodian) == (CustodyState.ARCHIVED, b["address"])
        with client(b) as api:
            read = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
            assert read.status_code == 200
            assert read.content == CONTENT
            events = api.get(f"/archives/{archive_id}/events").json()
        assert [e["type"] for e in events].count("TRANSFER_ACCEPT") == 1
        with client(a) as api:
            refused = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
            assert refused.status_code == 409
        with client(b, "auditor") as api:
            document = wait(
                lambda: (
                    (r := api.get(f"/archives/{archive_id}/proof")).status_code == 200
                    and r.headers["X-Unanchored-Events"] == "0"
                    and r.content
                ),
                60,
                "B's events anchored",
            )
        report = verify_bundle(parse_bundle(document), chain)
        assert report.ok, report.to_text()
        assert {e.hospital for e in report.entries} == {a["address"], b["address"]}
    finally:
        del clean  # left running: `down` stops it through its pid file


def test_share_with_c_then_revoke(network: tuple[Net, dict[str, Any]]) -> None:
    _, doc = network
    a, c = doc["nodes"][0], doc["nodes"][2]
    archive_id = create_archived(a)
    with client(a) as api:
        granted = api.post(
            f"/archives/{archive_id}/shares",
            json={
                "to": c["address"],
                "purpose": "treatment",
                "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
        )
        assert granted.status_code == 201, granted.text
    path = f"/shared/{a['address']}/{archive_id}/content"
    with client(c) as api:
        read = api.get(path, params={"purpose": "treatment"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
    with client(a) as api:
        assert api.delete(f"/archives/{archive_id}/shares/{c['address']}").status_code == 204
    with client(c) as api:
        assert api.get(path, params={"purpose": "treatment"}).status_code == 404


def test_demo_script_runs_against_the_network(network: tuple[Net, dict[str, Any]]) -> None:
    net, _ = network
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--data-dir", str(net.data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "identical: True" in out
    assert "A can no longer decrypt: 409 not_custodian" in out
    assert "B tries to transfer to C: 409" in out
    assert "VALID:" in out
    assert "TRANSFER_ACCEPT" in out
