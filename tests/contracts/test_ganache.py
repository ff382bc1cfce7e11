"""The same committed artifacts on ganache 7.9.2 (npm): deploy, register, anchor two checkpoints,
read back, and decode a revert — ganache reports errors differently from anvil."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from anchoring.chain import ContractWriter, JsonRpc, RpcChain
from anchoring.chainview import CustodyState
from devtools.deploy import HospitalSeed, bootstrap_hospitals, deploy_contracts
from devtools.devchain import rpc_answers
from node.ports import free_port
from tests.contracts.helpers import OLD_TRIGGER, MerkleLog, h, latest_time, new_archive, reverts
from tests.fixtures.chain import TEST_MNEMONIC, TestAccounts, public_key_of

GANACHE = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "ganache"


@contextmanager
def running_ganache(chain_id: int) -> Iterator[str]:
    """ganache started directly from node_modules/.bin (not npx: npx leaves node behind) with the
    test mnemonic and ``chain_id``; yields its RPC URL once it answers, stops it afterwards."""
    if not GANACHE.exists():
        pytest.fail(f"{GANACHE} is missing: run `npm ci` (ganache is pinned in package.json)")
    port = free_port()
    process = subprocess.Popen(
        [str(GANACHE), "--server.port", str(port), "--server.host", "127.0.0.1",
         "--chain.chainId", str(chain_id), "--chain.hardfork", "shanghai",
         "--wallet.mnemonic", TEST_MNEMONIC, "--logging.quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not rpc_answers(url):
            assert process.poll() is None, f"ganache exited with {process.returncode}"
            assert time.monotonic() < deadline, "ganache did not answer within 60 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def ganache_url() -> Iterator[str]:
    """ganache on chain id 1337."""
    with running_ganache(1337) as url:
        yield url


def test_ganache_smoke(ganache_url: str, test_accounts: TestAccounts) -> None:
    rpc = JsonRpc(ganache_url)
    assert rpc.chain_id() == 1337
    deployment = deploy_contracts(rpc, test_accounts.deployer, proposal_lifetime=3600)
    chain = RpcChain(rpc, deployment)
    assert chain.has_contract_code()
    a = test_accounts.hospital_a
    bootstrap_hospitals(
        chain, test_accounts.deployer, [HospitalSeed(a.address, "A", public_key_of(a))]
    )

    w = ContractWriter(chain, a)
    archive_id, key = new_archive()
    deadline = latest_time(chain) + 3600
    w.transact("register", [key, 3, OLD_TRIGGER, deadline, h("content"), bytes(32)])
    log = MerkleLog(40)
    w.transact("anchorCheckpoint", [17, log.root(17), []])
    w.transact("anchorCheckpoint", [40, log.root(40), log.consistency(17, 40)])

    assert chain.checkpoint_count(a.address) == 2
    first, second = chain.checkpoint_at(a.address, 0), chain.checkpoint_at(a.address, 1)
    assert (first.size, first.root) == (17, log.root(17))
    assert (second.size, second.root) == (40, log.root(40))
    assert second.anchored_at >= first.anchored_at > 0
    record = chain.custody(archive_id)
    assert (record.custodian, record.state, record.record_class, record.retention_deadline) == (
        a.address, CustodyState.ARCHIVED, 3, deadline,
    )  # fmt: skip

    # ganache's revert errors decode to the same custom errors as anvil's
    with reverts("NotaryUnexpectedState", key, 1, 0):
        w.transact("register", [key, 3, OLD_TRIGGER, deadline, h("content"), bytes(32)])
    with reverts("NotaryInvalidConsistencyProof", a.address, 40, 41):
        w.transact("anchorCheckpoint", [41, h("forged"), log.consistency(17, 40)])
    with reverts("NotaryUnknownCheckpoint", a.address, 2, 2):
        chain.checkpoint_at(a.address, 2)
