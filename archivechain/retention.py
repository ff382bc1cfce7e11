"""``archivechain retention``: the retention job on demand, on this machine (the node's own API
has ``POST /api/v1/retention/run``)."""

from __future__ import annotations

from pathlib import Path

import click

from archivechain.node import CONFIG_OPTION, NODE_DATA_DIR_OPTION, node_settings, open_runtime


@click.group("retention")
def retention() -> None:
    """Retention: reminders, disposition review and leftovers of destruction."""


@retention.command("run")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
def run(config_file: Path | None, data_dir: Path | None) -> None:
    """Run the retention job now, as the daily job does: raise reminders, move every due archive
    (not on hold, not in transfer) to disposition review, expire stale approvals, alert overdue
    dispositions, delete leftover ciphertext."""
    settings = node_settings(config_file, data_dir)
    runtime = open_runtime(settings, create_keystore=False)
    try:
        runtime.start(scheduler=False)
        reminded = runtime.retention.remind()
        moved = runtime.retention.start_dispositions()
        expired = runtime.retention.expire_approvals()
        overdue = runtime.retention.overdue()
        purged = runtime.retention.purge_destroyed_blobs()
    finally:
        runtime.close()
    click.echo(
        f"reminders {reminded}, moved to disposition review {moved}, approvals expired "
        f"{expired}, overdue dispositions alerted {overdue}, leftover blobs deleted {purged}"
    )
