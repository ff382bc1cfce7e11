"""``archivechain chain``: run the local development chain (anvil) of a data directory."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import click

from devtools.devchain import (
    DEFAULT_BLOCK_TIME,
    DEFAULT_PORT,
    DEFAULT_STATE_INTERVAL,
    ChainPaths,
    devchain_status,
    start_devchain,
    stop_devchain,
)

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    envvar="ARCHIVECHAIN_DATA_DIR",
    help="Data directory; the chain lives in <data-dir>/chain.",
)


@click.group()
def chain() -> None:
    """Run the local development chain (anvil, state kept in the data directory)."""


@chain.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@DATA_DIR_OPTION
@click.option(
    "--block-time",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BLOCK_TIME,
    show_default=True,
    help="Seconds between blocks (interval mining).",
)
@click.option(
    "--state-interval",
    type=click.IntRange(min=1),
    default=DEFAULT_STATE_INTERVAL,
    show_default=True,
    help="Seconds between state dumps (also dumped on a clean stop).",
)
@click.option("--foreground", is_flag=True, help="Stay attached; Ctrl-C stops the chain cleanly.")
def start(
    port: int, data_dir: Path, block_time: float, state_interval: int, foreground: bool
) -> None:
    """Start anvil in the background (or find it already running)."""
    process, started = start_devchain(
        data_dir,
        port=port,
        block_time=block_time,
        state_interval=state_interval,
        detach=not foreground,
    )
    if not started:
        click.echo(f"dev chain already running at {process.rpc_url} (pid {process.pid})")
        return
    paths = ChainPaths(data_dir.resolve())
    click.echo(f"dev chain running at {process.rpc_url} (pid {process.pid}); state {paths.state}")
    if not foreground:
        return

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while process.is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stop_devchain(data_dir)
    click.echo("dev chain stopped; state saved")


@chain.command("stop")
@DATA_DIR_OPTION
def stop(data_dir: Path) -> None:
    """Stop the dev chain cleanly (anvil dumps its state first)."""
    if stop_devchain(data_dir):
        click.echo("dev chain stopped; state saved")
    else:
        click.echo("no dev chain running")


@chain.command("status")
@DATA_DIR_OPTION
def status(data_dir: Path) -> int:
    """Say whether the dev chain runs (exit 0) or not (exit 1)."""
    running = devchain_status(data_dir)
    if running is None:
        click.echo("no dev chain running")
        return 1
    click.echo(f"dev chain running at {running.rpc_url} (pid {running.pid})")
    return 0
