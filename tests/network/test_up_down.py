"""``archivechain up`` / ``down`` end to end, in real processes: a 2-hospital network on free ports,
an archive created, archived, read and anchored over HTTP, the network stopped and resumed with the
same identities, keys, data and byte-identical proof that still verifies against the chain; a chain
that lost its state is detected loudly and recovered with ``--reset-chain``; nothing is left running.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from anchoring.bundle import parse_bundle
from anchoring.chain import MemberStatus, Role, RpcChain
from anchoring.chainview import CustodyState
from anchoring.deployment import Deployment
from anchoring.verifier import verify_bundle
from devtools.network import NETWORK_NOTE
from node.keystore import DEV_PASSPHRASE
from node.process import pid_alive
from tests.network.conftest import Net, environment, stop_cleanly, wait_ready

METADATA = {
    "record_class": "INPATIENT",
    "sensitivity": "NORMAL",
    "department": "general",
    "title": "Discharge summary",
    "patient_id": "MRN-4242",
    "source_system": "HIS",
}
CONTENT = b"Discharge summary: patient stable, follow-up in 2 weeks.\n" * 40


def _anchored_proof(
    client: httpx.Client, network: dict[str, Any], archive_id: str, entries: int
) -> httpx.Response:
    """Poll until the proof holds ``entries`` anchored events and the archive is registered on
    chain (read from the chain: a metadata read through the API would itself be logged)."""
    chain = RpcChain.for_notary(network["rpc_url"], network["contracts"]["ArchiveNotary"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        proof = client.get(f"/api/v1/archives/{archive_id}/proof")
        if (
            proof.status_code == 200
            and proof.headers["X-Unanchored-Events"] == "0"
            and len(json.loads(proof.content)["entries"]) == entries
            and chain.custody(archive_id).state is CustodyState.ARCHIVED
        ):
            return proof
        time.sleep(0.5)
    pytest.fail(f"archive {archive_id} not anchored in time: {proof.status_code} {proof.text}")


def _verify(network: dict[str, Any], document: bytes, reads: int = 1) -> None:
    """What `archivechain verify` does: trust only the RPC endpoint and the notary address."""
    chain = RpcChain.for_notary(network["rpc_url"], network["contracts"]["ArchiveNotary"])
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
    assert [e.event_type for e in report.entries] == ["CREATE", "ARCHIVE"] + ["ACCESS"] * reads


def _regulator_hold(network: dict[str, Any], archivist_key: str, data_dir: Path) -> str:
    """A second archive at the first hospital, put on hold by the dev regulator with the member
    command line and its `up`-written keystore; its id once the node mirrored the hold."""
    hospital = network["nodes"][0]
    with httpx.Client(base_url=hospital["url"], timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {archivist_key}"
        created = client.post(
            "/api/v1/archives",
            files={"file": ("held.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(METADATA)},
        )
        assert created.status_code == 201, created.text
        held_id = str(created.json()["id"])
        assert client.post(f"/api/v1/archives/{held_id}/archive").status_code == 200
        _anchored_proof(client, network, held_id, entries=2)
        keystore = data_dir / "members" / "regulator" / "keystore.json"
        placed = subprocess.run(
            [sys.executable, "-m", "archivechain", "regulator", "hold", held_id,
             "--keystore", str(keystore), "--rpc", network["rpc_url"],
             "--deployment", network["deployment_file"], "--reason", "inquiry"],
            capture_output=True,
            env=environment() | {"ARCHIVECHAIN_MEMBER_PASSPHRASE": DEV_PASSPHRASE},
            timeout=120,
            check=False,
        )  # fmt: skip
        assert placed.returncode == 0, placed.stderr
        deadline = time.monotonic() + 60
        while not client.get(f"/api/v1/archives/{held_id}").json()["hold_by_regulator"]:
            assert time.monotonic() < deadline, "the node did not mirror the regulator's hold"
            time.sleep(0.5)
    return held_id


def test_up_down_up_keeps_data_and_proofs(net: Net) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    first = net.up("--hospitals", "2", *ports, tag="first")
    network = wait_ready(net, first, nodes=2)

    # network.json: private, complete, and true to the chain
    mode = stat.S_IMODE((net.data_dir / "network.json").stat().st_mode)
    assert mode == 0o600
    assert network["note"] == NETWORK_NOTE
    assert network["rpc_url"] == f"http://127.0.0.1:{net.chain_port}"
    assert [n["url"] for n in network["nodes"]] == [
        f"http://127.0.0.1:{net.base_port}",
        f"http://127.0.0.1:{net.base_port + 1}",
    ]
    for node in network["nodes"]:
        assert set(node["api_keys"]) == {
            "admin",
            "archivist",
            "clinician",
            "auditor",
            "records_manager",
        }
    chain = RpcChain(network["rpc_url"], Deployment.load(Path(network["deployment_file"])))
    assert chain.addresses == network["contracts"]
    expected_roles = {n["address"]: Role.HOSPITAL for n in network["nodes"]}
    expected_roles[network["members"]["regulator"]["address"]] = Role.REGULATOR
    expected_roles[network["members"]["insurer"]["address"]] = Role.INSURER
    for address, role in expected_roles.items():
        member = chain.member(address)
        assert (member.role, member.status) == (role, MemberStatus.ACTIVE)
    assert chain.call("ConsortiumRegistry", "bootstrapping") == (False,)
    assert chain.call("ConsortiumRegistry", "proposalCount") == (3,)  # 1 hospital + 2 members

    # each role's key works with its role's rights
    hospital = network["nodes"][0]
    keys = hospital["api_keys"]
    with httpx.Client(base_url=hospital["url"], timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {keys['admin']}"
        listed = admin.get("/api/v1/keys")
        assert listed.status_code == 200, listed.text
    with httpx.Client(base_url=hospital["url"], timeout=30) as auditor:
        auditor.headers["Authorization"] = f"Bearer {keys['auditor']}"
        refused = auditor.post(
            "/api/v1/archives",
            files={"file": ("summary.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(METADATA)},
        )
        assert refused.status_code == 403, refused.text
        assert auditor.get("/api/v1/archives").status_code == 200
    for api_role in ("records_manager", "clinician"):  # the disposition approver's key too
        whoami = httpx.get(
            f"{hospital['url']}/api/v1/auth/whoami",
            headers={"Authorization": f"Bearer {keys[api_role]}"},
            timeout=30,
        )
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["role"] == api_role

    # first (so that the proof below stays the latest): an archive on the regulator's hold
    held_id = _regulator_hold(network, keys["archivist"], net.data_dir)
    with httpx.Client(base_url=hospital["url"], timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {keys['archivist']}"
        created = client.post(
            "/api/v1/archives",
            files={"file": ("summary.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(METADATA)},
        )
        assert created.status_code == 201, created.text
        archive_id = created.json()["id"]
        assert client.post(f"/api/v1/archives/{archive_id}/archive").status_code == 200
        content = client.get(
            f"/api/v1/archives/{archive_id}/content", params={"purpose": "treatment"}
        )
        assert content.status_code == 200, content.text
        assert content.content == CONTENT
        proof = _anchored_proof(client, network, archive_id, entries=3)
        events = client.get(f"/api/v1/archives/{archive_id}/events").json()
    _verify(network, proof.content)

    first_pids = stop_cleanly(net, first)

    # resume: same identities, deployment, admissions, API keys, data and proof
    second = net.up(tag="second")  # ports and size as recorded
    resumed = wait_ready(net, second, nodes=2)
    log = second.err.read_text()
    assert "identities reused" in log
    assert "contracts verified" in log
    for fresh_work in ("identities created", "deployed", "admitted", "API keys issued", "funded"):
        assert fresh_work not in log, log
    for key in ("rpc_url", "contracts", "members", "chain_id"):
        assert resumed[key] == network[key]
    assert [(n["name"], n["address"], n["url"], n["api_keys"]) for n in resumed["nodes"]] == [
        (n["name"], n["address"], n["url"], n["api_keys"]) for n in network["nodes"]
    ]
    assert chain.call("ConsortiumRegistry", "proposalCount") == (3,)  # nothing proposed again
    with httpx.Client(base_url=hospital["url"], timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {keys['archivist']}"
        assert client.get(f"/api/v1/archives/{archive_id}/events").json() == events
        again = client.get(f"/api/v1/archives/{archive_id}/proof")
        assert again.status_code == 200
        assert again.content == proof.content
        archive = client.get(f"/api/v1/archives/{archive_id}")  # a metadata read: logged
        assert archive.status_code == 200
        assert archive.json()["state"] == "ARCHIVED"
    _verify(resumed, proof.content)
    second_pids = stop_cleanly(net, second)
    assert second_pids["anvil"] != first_pids["anvil"]

    # the chain loses its state: `up` refuses loudly and leaves nothing running
    (net.data_dir / "chain" / "state.json").unlink()
    lost = net.up(tag="lost")
    assert lost.process.wait(60) == 1, lost.output()
    message = lost.err.read_text()
    assert "LOST ITS STATE" in message
    recovery = re.search(r"Recover with: (.+) up --reset-chain --data-dir (\S+)", message)
    assert recovery is not None, message
    assert recovery[2] == str(net.data_dir)
    # the command runs as printed (`up` ran as `python -m archivechain` here, not on PATH)
    program = shlex.split(recovery[1])
    assert program[-2:] == ["-m", "archivechain"], recovery[1]
    printed = subprocess.run(
        [*program, "up", "--help"], capture_output=True, env=environment(), timeout=60, check=False
    )
    assert printed.returncode == 0, printed.stderr
    assert not (net.data_dir / "chain" / "anvil.pid").exists()
    assert not (net.data_dir / "up.pid").exists()

    # --reset-chain redeploys at the same addresses and re-anchors: the old proof verifies again
    reset = net.up("--reset-chain", tag="reset")
    recovered = wait_ready(net, reset, nodes=2)
    assert recovered["contracts"] == network["contracts"]
    assert "same addresses" in reset.err.read_text()
    # the regulator's hold was the regulator's transaction, which no node can send again: named
    lost_hold = re.search(
        r"(\d+) archive\(s\) were on a regulator hold that the reset chain no longer has: (\S+)\.",
        reset.err.read_text(),
    )
    assert lost_hold is not None, reset.err.read_text()
    assert (lost_hold[1], lost_hold[2]) == ("1", held_id)
    with httpx.Client(base_url=hospital["url"], timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {keys['archivist']}"
        reanchored = _anchored_proof(client, recovered, archive_id, entries=4)
    old_entries = json.loads(proof.content)["entries"]
    new_entries = json.loads(reanchored.content)["entries"]
    assert [(e["log_index"], e["event"]) for e in new_entries[:3]] == [
        (e["log_index"], e["event"]) for e in old_entries
    ]  # the same events, then the metadata read logged after the resume
    _verify(recovered, proof.content)  # the old proof verifies again
    _verify(recovered, reanchored.content, reads=2)
    stop_cleanly(net, reset)


def test_ctrl_c_or_down_after_a_kill_stops_everything_and_a_second_up_is_refused(net: Net) -> None:
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    up = net.up("--hospitals", "1", *ports, tag="ctrl-c")
    try:
        wait_ready(net, up, nodes=1)
        again = net.up(tag="twice")
        assert again.process.wait(60) == 1
        assert "already up" in again.err.read_text()
        assert len(again.err.read_text().strip().splitlines()) == 1
        pids = net.pids()
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0, up.output()
        assert {name: pid for name, pid in pids.items() if pid_alive(pid)} == {}
        assert not (net.data_dir / "up.pid").exists()

        # `up` killed outright leaves its nodes and chain running: `down` still stops them all
        up = net.up(tag="killed")
        wait_ready(net, up, nodes=1)
        pids = net.pids()
        up.process.kill()
        up.process.wait(10)
        assert pid_alive(pids["anvil"])
        assert pid_alive(pids["hospital-1"])
        result = net.down()
        assert result.returncode == 0, result.stderr
        assert "1 leftover node process(es)" in result.stdout
        assert "the dev chain (state saved)" in result.stdout
        assert {name: pid for name, pid in pids.items() if pid_alive(pid)} == {}
        assert net.down().stdout.startswith("nothing was running")
    finally:
        if up.process.poll() is None:
            up.process.kill()
