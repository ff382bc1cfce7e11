"""``archivechain up`` and ``archivechain down``: a local dev consortium on embedded defaults.

``up`` prepares the network (chain, contracts, identities, admissions, API keys; see
``devtools.network``), starts one node process per hospital, prints a summary with what to do next and
supervises the nodes: one that dies is reported loudly and started again with back-off. Ctrl-C,
SIGTERM or ``archivechain down`` from another shell stop everything: nodes first, then anvil (which
saves its state); once a stop is asked for, nothing is restarted. Running ``up`` again on the same
data directory resumes the same network.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from devtools.network import (
    DEFAULT_BASE_PORT,
    DEFAULT_CHAIN_PORT,
    DEFAULT_HOSPITALS,
    MAX_HOSPITALS,
    ChainStateLostNetworkError,
    LocalNetwork,
    NetworkLayout,
    NetworkRunningError,
    cli_program,
    down,
    summary_lines,
)
from node.errors import InputError, NodeError, UnavailableError
from node.process import AlreadyRunningError, remove_pid_file, write_pid_file

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    envvar="ARCHIVECHAIN_NETWORK_DIR",
    help="Network data directory.",
)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _chain_errors() -> Iterator[None]:
    """Anchoring-layer errors (chain unreachable, reverts) as one-line node errors."""
    from anchoring.errors import AnchoringError, ChainError

    try:
        yield
    except ChainError as exc:
        raise UnavailableError(str(exc)) from None
    except AnchoringError as exc:
        raise NodeError(str(exc), code=exc.code) from None


@click.command("up")
@click.option(
    "--hospitals",
    type=click.IntRange(1, MAX_HOSPITALS),
    default=None,
    help=f"Number of hospital nodes.  [default: {DEFAULT_HOSPITALS}, or as recorded]",
)
@DATA_DIR_OPTION
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65535),
    default=None,
    help=f"Port of the first node; the others follow.  [default: {DEFAULT_BASE_PORT}, or as recorded]",
)
@click.option(
    "--chain-port",
    type=click.IntRange(1024, 65535),
    default=None,
    help=f"Port of the dev chain (anvil).  [default: {DEFAULT_CHAIN_PORT}, or as recorded]",
)
@click.option(
    "--reset-chain",
    is_flag=True,
    help="The dev chain lost its state: redeploy and re-anchor every node's recorded history.",
)
def up(
    hospitals: int | None,
    data_dir: Path,
    base_port: int | None,
    chain_port: int | None,
    reset_chain: bool,
) -> None:
    """Start (or resume) a local consortium: chain, contracts, members, one node per hospital."""
    layout = NetworkLayout.of(data_dir)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_pid_file(layout.supervisor_pid, "archivechain up")
    except AlreadyRunningError as exc:
        raise NetworkRunningError(
            f"a network is already up in {layout.data_dir} (pid {exc.pid}); "
            f"stop it with `{cli_program()} down --data-dir {data_dir}`"
        ) from None

    def report(line: str) -> None:
        click.echo(line, err=True)

    network = LocalNetwork(
        layout.data_dir,
        hospitals=hospitals,
        base_port=base_port,
        chain_port=chain_port,
        report=report,
    )
    previous = {sig: signal.signal(sig, _interrupt) for sig in _SIGNALS}
    try:
        with _chain_errors():
            network.prepare(reset_chain=reset_chain)
            network.start_nodes()
        for line in summary_lines(network):
            click.echo(line)
        stop = threading.Event()
        for sig in _SIGNALS:  # from here on a signal asks the supervision loop to end
            signal.signal(sig, lambda _signum, _frame: stop.set())
        network.supervise(stop.is_set)
        report("stopping the network …")
    except KeyboardInterrupt:
        report("stopping the network …")
    except ChainStateLostNetworkError as exc:
        report("!" * 78)
        report("!! THE DEV CHAIN LOST ITS STATE")
        report(f"!! {exc.message}")
        report("!" * 78)
        raise
    finally:
        for sig in _SIGNALS:  # a second Ctrl-C must not cut the clean stop short
            signal.signal(sig, signal.SIG_IGN)
        try:
            network.stop()
        finally:
            remove_pid_file(layout.supervisor_pid)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    report("network stopped")


@click.command("down")
@DATA_DIR_OPTION
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for a clean stop before killing.",
)
def down_command(data_dir: Path, timeout: float) -> None:
    """Stop the local consortium of a data directory (nodes first, then the chain)."""
    layout = NetworkLayout.of(data_dir)
    if not layout.holds_network():  # a mistyped --data-dir: not "nothing was running"
        raise InputError(
            f"no network is recorded in {layout.data_dir} (no network.json; `{cli_program()} up "
            f"--data-dir {data_dir}` records one)",
            code="no_network",
        )
    outcome = down(data_dir, timeout=timeout)
    stopped = []
    if outcome.supervisor is not None:
        stopped.append(f"`up` (pid {outcome.supervisor}) with its nodes and chain")
    if outcome.nodes:
        stopped.append(f"{len(outcome.nodes)} leftover node process(es)")
    if outcome.chain:
        stopped.append("the dev chain (state saved)")
    if stopped:
        click.echo("stopped " + ", ".join(stopped))
    else:
        click.echo(f"nothing was running in {NetworkLayout.of(data_dir).data_dir}")
