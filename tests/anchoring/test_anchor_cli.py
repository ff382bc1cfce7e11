"""``archivechain anchor replay`` and ``anchor status`` on a stopped node: a node whose transactions
the chain dropped and now prices out is re-planned from the chain's nonce and anchored again; a
chain whose checkpoints contradict the node's log is refused with one line and exit 1, leaving the
outbox as it was. Real anvil, real database, the CLI in process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, JsonRpc, RpcChain
from anchoring.storage import OutboxState
from archivechain import main
from node.db import Database
from node.process import _start_time
from node.runtime import NodeRuntime
from tests.anchoring.chain_controls import manual_mining
from tests.anchoring.test_replan import outbox, transactions
from tests.anchoring.test_worker import append
from tests.fixtures.node import MakeNode


def _config(node: NodeRuntime) -> Path:
    """The node's settings as the ``node.toml`` the CLI reads."""
    settings = node.settings
    path = settings.data_dir / "node.toml"
    lines = [
        'mode = "dev"',
        f"data_dir = {json.dumps(str(settings.data_dir))}",
        f"rpc_url = {json.dumps(settings.rpc_url)}",
        f"deployment_file = {json.dumps(str(settings.deployment_file))}",
    ]
    if settings.database_url:
        lines.append(f"database_url = {json.dumps(settings.database_url)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_anchor_replay_replans_priced_out_transactions_and_anchors_again(
    make_node: MakeNode,
    database_url: str,
    chain_rpc: JsonRpc,
    raise_base_fee: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = make_node(database_url=database_url, anchor_interval=0.01)
    append(node.db, 3)
    with manual_mining(chain_rpc):
        node.worker.tick()
        stuck = transactions(node.db)  # the checkpoint (and the key rotation a new node sends)
        chain_rpc.request("anvil_dropAllTransactions")
        raise_base_fee()
    node.close()  # the CLI works on a stopped node
    config = _config(node)

    code, out, err = _run(["anchor", "replay", "--config", str(config), "--timeout", "60"], capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "re-queued 0 transaction(s) the chain no longer knows",
        f"re-planned nonces from {stuck[0].nonce}: {len(stuck)} transaction(s) signed again, "
        "0 higher nonce(s) burnt",
        "anchored: log size 3, anchored size 3, 0 events behind",
    ]
    code, out, err = _run(["anchor", "status", "--config", str(config)], capsys)
    assert code == 0, err
    status = json.loads(out)
    assert (status["pending_transactions"], status["outbox_stuck"]) == (0, False)
    assert status["chain"] == "consistent"
    assert not (node.settings.data_dir / "node.pid").exists()  # held only while replaying


def test_anchor_replay_refuses_while_the_node_runs(
    make_node: MakeNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """The node and ``anchor replay`` would both sign with the hospital's key and nonces: the
    command refuses in one line (exit 2) while ``node.pid`` records a live process, doing
    nothing."""
    node = make_node(anchor_interval=0.01)
    append(node.db, 3)
    before = outbox(node.db)
    node.close()
    config = _config(node)
    sleeper = subprocess.Popen(["sleep", "30"])
    pid_file = node.settings.data_dir / "node.pid"
    try:
        pid_file.write_text(json.dumps({"pid": sleeper.pid, "start": _start_time(sleeper.pid)}))
        code, out, err = _run(["anchor", "replay", "--config", str(config)], capsys)
        assert code == 2
        assert out == ""
        assert err == (
            f"error: the node runs (pid {sleeper.pid}); stop it before replaying its anchoring "
            "transactions\n"
        )
        assert json.loads(pid_file.read_text())["pid"] == sleeper.pid  # the node's, untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    reopened = Database.connect(node.settings.resolved_database_url)
    assert outbox(reopened) == before  # nothing queued or signed
    reopened.dispose()


def test_anchor_replay_refuses_a_chain_that_contradicts_the_log(
    make_node: MakeNode,
    chain: RpcChain,
    chain_rpc: JsonRpc,
    hospital_a: LocalAccount,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = make_node(anchor_interval=0.01)
    append(node.db, 3)
    with manual_mining(chain_rpc):
        node.worker.tick()
        chain_rpc.request("anvil_dropAllTransactions")
    before = outbox(node.db)
    node.close()
    # Someone else anchors a checkpoint with this hospital's key: not a prefix of the node's log.
    ContractWriter(chain, hospital_a).transact("anchorCheckpoint", [5, b"\x07" * 32, []])

    code, out, err = _run(["anchor", "replay", "--config", str(_config(node))], capsys)
    assert code == 1
    assert out == ""
    assert err.startswith("error: cannot replay: the chain's latest checkpoint (size 5, root 0707")
    assert err.rstrip().endswith("is not a prefix of this node's log; refusing to anchor")
    assert len(err.strip().splitlines()) == 1
    reopened = Database.connect(node.settings.resolved_database_url)
    assert outbox(reopened) == before  # nothing re-signed
    assert {row.state for row in before} == {OutboxState.SUBMITTED}
    reopened.dispose()
