"""``archivechain anchor status|replay``: inspect anchoring, and re-anchor from the log when a dev
chain lost its state (re-planning the nonces of every unconfirmed transaction from the chain's).
Run them while the node is stopped (they use the node's database directly); ``replay`` refuses
while it runs (exit 2)."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from anchoring.errors import ChainError, ChainStateLostError
from anchoring.worker import measure_lag, outbox_stuck
from archivechain.node import (
    CONFIG_OPTION,
    NODE_DATA_DIR_OPTION,
    holding_node_pid,
    node_settings,
    open_runtime,
    refuse_running_node,
)
from node.errors import NodeError, UnavailableError


@click.group()
def anchor() -> None:
    """Anchoring of this node's log on the chain."""


@anchor.command("status")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
def status(config_file: Path | None, data_dir: Path | None) -> None:
    """Log size, anchored size, how far anchoring trails (events and seconds), and how many chain
    transactions wait unconfirmed and for how long."""
    runtime = open_runtime(node_settings(config_file, data_dir), create_keystore=False)
    try:
        with runtime.db.session() as session:
            lag = measure_lag(session, now=datetime.now(UTC))
        document = asdict(lag)
        document["outbox_stuck"] = outbox_stuck(lag, runtime.worker.config.stuck_after)
        try:
            runtime.worker.reconcile()
            document["chain"] = "consistent"
        except ChainStateLostError as exc:
            document["chain"] = f"STATE LOST: {exc}"
        except ChainError as exc:
            document["chain"] = f"unreachable: {exc}"
        click.echo(json.dumps(document, indent=2))
    finally:
        runtime.close()


@anchor.command("replay")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--timeout", type=float, default=300.0, show_default=True)
def replay(config_file: Path | None, data_dir: Path | None, timeout: float) -> None:
    """Re-send every transaction the chain lost (same checkpoints, same order), re-sign every
    unconfirmed one with nonces from the chain's, then wait until the whole log is anchored
    again. Refuses while the node runs (both would sign transactions with the same nonces)."""
    settings = node_settings(config_file, data_dir)
    refuse_running_node(settings, "replaying its anchoring transactions")
    runtime = open_runtime(settings, create_keystore=False)
    with closing(runtime), holding_node_pid(settings, "replaying"):
        try:
            requeued = runtime.worker.replay_lost()
        except ChainError as exc:
            raise UnavailableError(f"cannot reach the chain: {exc}") from None
        if runtime.worker.status.chain_state_lost:
            raise NodeError(
                f"cannot replay: {runtime.worker.status.last_error}", code="chain_state_lost"
            )
        click.echo(f"re-queued {requeued} transaction(s) the chain no longer knows")
        replanned = runtime.worker.status.last_replan
        if replanned is not None:
            click.echo(
                f"re-planned nonces from {replanned.from_nonce}: {replanned.transactions} "
                f"transaction(s) signed again, {replanned.cancels} higher nonce(s) burnt"
            )
        try:
            status = runtime.worker.run_until_anchored(timeout=timeout)
        except TimeoutError as exc:
            raise NodeError(str(exc), code="anchoring_timeout") from None
        click.echo(
            f"anchored: log size {status.log_size}, anchored size {status.anchored_size}, "
            f"{status.events_behind} events behind"
        )
