"""``archivechain chain start`` + ``archivechain contracts deploy`` through the real CLI in
subprocesses, then reads with plain JSON-RPC (urllib + eth_abi, no web3) as a `cast` user would:
idempotent deployment, state surviving a restart, and loud refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from anchoring.chain import ContractWriter, RpcChain
from anchoring.deployment import Deployment, deployment_path
from devtools.deploy import DEV_CHAIN_DEPLOYER_KEY, HospitalSeed, bootstrap_hospitals
from devtools.devchain import AnvilOptions, AnvilProcess, stop_devchain
from node.ports import free_port
from tests.contracts.helpers import OLD_TRIGGER, MerkleLog, h, new_archive
from tests.fixtures.chain import TestAccounts, public_key_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``archivechain`` (``python -m archivechain``) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "archivechain", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def rpc_call(url: str, method: str, params: list[Any]) -> Any:
    """One plain JSON-RPC request."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def eth_call(url: str, to: str, contract: str, signature: str, types: list[str], args: list[Any],
             returns: list[str]) -> tuple[Any, ...]:  # fmt: skip
    """Call ``signature`` the way `cast call` does: selector from the artifact, eth_abi encoding."""
    selector = _selector(contract, signature)
    data = "0x" + selector + abi_encode(types, args).hex()
    answer = rpc_call(url, "eth_call", [{"to": to, "data": data}, "latest"])
    assert "result" in answer, answer
    return tuple(abi_decode(returns, bytes.fromhex(answer["result"][2:])))


def _selector(contract: str, signature: str) -> str:
    path = REPO_ROOT / "anchoring" / "contracts" / f"{contract}.json"
    return str(json.loads(path.read_text())["methodIdentifiers"][signature])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose dev chain is always stopped afterwards."""
    folder = tmp_path / "data"
    yield folder
    stop_devchain(folder)


def test_chain_start_deploy_and_plain_json_rpc_reads(
    data_dir: Path, test_accounts: TestAccounts
) -> None:
    port = str(free_port())
    url = f"http://127.0.0.1:{port}"
    start = ["chain", "start", "--port", port, "--data-dir", str(data_dir), "--block-time", "0.2"]
    started = cli(*start)
    assert started.returncode == 0, started.stderr
    assert f"dev chain running at {url}" in started.stdout
    assert cli("chain", "status", "--data-dir", str(data_dir)).returncode == 0
    assert "already running" in cli(*start).stdout

    deployed = cli("contracts", "deploy", "--rpc", url, "--data-dir", str(data_dir))
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed on chain 31337" in deployed.stdout
    file = deployment_path(data_dir)
    first_bytes = file.read_bytes()
    deployment = Deployment.load(file)
    again = cli("contracts", "deploy", "--rpc", url, "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert "already deployed, verified" in again.stdout
    assert file.read_bytes() == first_bytes

    # Some activity: the dev deployer bootstraps hospital A, which registers and anchors.
    a = test_accounts.hospital_a
    assert test_accounts.deployer.key.hex().removeprefix("0x") == DEV_CHAIN_DEPLOYER_KEY[2:]
    chain = RpcChain(url, deployment)
    bootstrap_hospitals(
        chain, test_accounts.deployer, [HospitalSeed(a.address, "A", public_key_of(a))]
    )
    log = MerkleLog(12)
    archive_id, key = new_archive()
    w = ContractWriter(chain, a)
    w.transact("register", [key, 2, OLD_TRIGGER, 2_000_000_000, h("content"), bytes(32)])
    w.transact("anchorCheckpoint", [5, log.root(5), []])
    last = w.transact("anchorCheckpoint", [12, log.root(12), log.consistency(5, 12)])

    notary = deployment.notary.address
    (count,) = eth_call(url, notary, "ArchiveNotary", "checkpointCount(address)", ["address"],
                        [a.address], ["uint64"])  # fmt: skip
    assert count == 2
    size, root, anchored_at = eth_call(url, notary, "ArchiveNotary", "checkpointAt(address,uint64)",
                                       ["address", "uint64"], [a.address, 1],
                                       ["uint64", "bytes32", "uint64"])  # fmt: skip
    block = rpc_call(url, "eth_getBlockByNumber", [hex(last.block_number), False])["result"]
    assert (size, root, anchored_at) == (12, log.root(12), int(block["timestamp"], 16))
    ((custodian, state, on_hold, _, record_class, deadline, commitment, _, _),) = eth_call(
        url, notary, "ArchiveNotary", "archive(bytes32)", ["bytes32"], [key],
        ["(address,uint8,bool,bool,uint8,uint64,bytes32,address,bytes32)"],
    )  # fmt: skip
    assert (custodian.lower(), state, on_hold, record_class, deadline, commitment) == (
        a.address.lower(), 1, False, 2, 2_000_000_000, h("content"),
    )  # fmt: skip

    # A clean stop dumps the state; the restarted chain still has everything.
    stopped = cli("chain", "stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0
    assert "state saved" in stopped.stdout
    assert cli("chain", "status", "--data-dir", str(data_dir)).returncode == 1
    assert (data_dir / "chain" / "state.json").stat().st_size > 0
    assert cli(*start).returncode == 0
    verified = cli("contracts", "deploy", "--rpc", url, "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "already deployed, verified" in verified.stdout
    assert RpcChain(url, deployment).checkpoint_count(a.address) == 2
    assert RpcChain(url, deployment).custody(archive_id).custodian == a.address

    # A chain that lost its state is refused loudly instead of silently redeployed.
    assert cli("chain", "stop", "--data-dir", str(data_dir)).returncode == 0
    (data_dir / "chain" / "state.json").unlink()
    assert cli(*start).returncode == 0
    lost = cli("contracts", "deploy", "--rpc", url, "--data-dir", str(data_dir))
    assert lost.returncode == 1
    assert "no code at the ConsortiumRegistry address" in lost.stderr
    assert "remove the deployment file" in lost.stderr


def test_start_refuses_a_busy_port(
    data_dir: Path, anvil_factory: Callable[..., AnvilProcess]
) -> None:
    other = anvil_factory()
    port = other.rpc_url.rsplit(":", 1)[1]
    busy = cli("chain", "start", "--port", port, "--data-dir", str(data_dir))
    assert busy.returncode == 1
    assert "already in use" in busy.stderr


def test_deploy_needs_a_key_off_the_dev_chain(
    tmp_path: Path, anvil_factory: Callable[..., AnvilProcess], test_accounts: TestAccounts
) -> None:
    other = anvil_factory(chain_id=999)
    refused = cli("contracts", "deploy", "--rpc", other.rpc_url, "--data-dir", str(tmp_path),
                  env={"ARCHIVECHAIN_DEPLOYER_KEY": ""})  # fmt: skip
    assert refused.returncode == 2  # a configuration problem: one line, exit 2
    assert "not the dev chain" in refused.stderr
    dev_key = cli("contracts", "deploy", "--rpc", other.rpc_url, "--data-dir", str(tmp_path),
                  env={"ARCHIVECHAIN_DEPLOYER_KEY": DEV_CHAIN_DEPLOYER_KEY})  # fmt: skip
    assert dev_key.returncode == 2
    assert "public dev key" in dev_key.stderr
    key = "0x" + test_accounts.outsider.key.hex().removeprefix("0x")
    ok = cli("contracts", "deploy", "--rpc", other.rpc_url, "--data-dir", str(tmp_path),
             env={"ARCHIVECHAIN_DEPLOYER_KEY": key})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    deployment = Deployment.load(deployment_path(tmp_path))
    assert (deployment.chain_id, deployment.deployer) == (999, test_accounts.outsider.address)
    for output in (refused, dev_key, ok):  # the key never shows up
        assert key[2:] not in output.stdout + output.stderr
        assert DEV_CHAIN_DEPLOYER_KEY[2:] not in output.stdout + output.stderr


def test_deploy_against_an_unreachable_chain(tmp_path: Path) -> None:
    down = cli("contracts", "deploy", "--rpc", f"http://127.0.0.1:{free_port()}",
               "--data-dir", str(tmp_path))  # fmt: skip
    assert down.returncode == 1
    assert "unreachable" in down.stderr
    assert not deployment_path(tmp_path).exists()


def test_dev_chain_command_line_defaults() -> None:
    command = AnvilOptions(state_file=Path("/d/chain/state.json")).command(Path("/bin/anvil"))
    assert command[:1] == ["/bin/anvil"]
    joined = " ".join(command)
    for expected in ("--port 8545", "--block-time 1", "--state /d/chain/state.json",
                     "--state-interval 5", "--hardfork shanghai", "--chain-id 31337"):  # fmt: skip
        assert expected in joined
    automine = AnvilOptions(block_time=None, state_file=None).command(Path("/bin/anvil"))
    assert "--block-time" not in automine
    assert "--state" not in automine


def test_foreground_chain_stops_cleanly_on_sigterm(data_dir: Path) -> None:
    port = str(free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "archivechain", "chain", "start", "--foreground", "--port", port,
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert "dev chain running" in process.stdout.readline()
        assert cli("chain", "status", "--data-dir", str(data_dir)).returncode == 0
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "state saved" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert cli("chain", "status", "--data-dir", str(data_dir)).returncode == 1
    assert (data_dir / "chain" / "state.json").exists()
