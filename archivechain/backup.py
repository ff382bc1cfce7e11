"""``archivechain backup`` and ``archivechain restore``: an online backup of a node and a restore
that verifies itself before the node may serve (``node.backup``).

``backup --out FILE`` runs while the node runs. ``restore FILE --data-dir D`` unpacks into an empty
directory, then checks every archive's event hash chain, the log against every on-chain checkpoint
of this hospital and every blob against its hash; on a mismatch it exits 1, says what is wrong and
leaves ``RESTORE_UNVERIFIED`` in ``D`` so the node refuses to start. ``restore --verify-only``
re-runs the checks on a restored directory (e.g. after putting the missing blobs back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from archivechain.node import CONFIG_OPTION, NODE_DATA_DIR_OPTION, node_settings, settings_refusals


@click.command("backup")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--with-blobs",
    is_flag=True,
    help="Also copy every referenced blob (else only their list and hashes).",
)
def backup(config_file: Path | None, data_dir: Path | None, out: Path, with_blobs: bool) -> None:
    """Back up the node (database, encrypted keystore, blob list; optionally blobs) while it runs."""
    from node.backup import create_backup

    settings = node_settings(config_file, data_dir)
    with settings_refusals():
        result = create_backup(settings, out, include_blobs=with_blobs)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"backup written to {result.path}")
    click.echo(f"  log size       {result.log_size} events ({result.anchored_size} anchored)")
    click.echo(f"  archives       {result.archives}")
    click.echo(f"  blobs          {result.blobs_listed} listed, {result.blobs_included} included")
    click.echo(f"  files          {', '.join(result.files)}")


@click.command("restore")
@click.argument(
    "backup_file", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option(
    "--blobs-from",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A blob store directory (copy of blobs/) to take blobs from that the backup lacks.",
)
@click.option("--verify-only", is_flag=True, help="Only verify an already restored directory.")
@click.option(
    "--from-peers",
    is_flag=True,
    help="Take the log (to the chain's latest checkpoint) from the peers it was shipped to and "
    "missing blobs from replicas (docs/recovery.md); without BACKUP_FILE the data directory "
    "holds only the keystore, the deployment file and the settings.",
)
def restore(
    backup_file: Path | None,
    config_file: Path | None,
    data_dir: Path | None,
    blobs_from: Path | None,
    verify_only: bool,
    from_peers: bool = False,
) -> int:
    """Restore a backup into an empty data directory and verify it before the node may serve."""
    from node.backup import (
        RESTORE_MARKER,
        LostEventsError,
        VerificationError,
        restore_backup,
        verify_node_data,
    )

    settings = node_settings(config_file, data_dir)
    if from_peers:
        return _restore_from_peers(settings, backup_file, blobs_from)
    if verify_only == (backup_file is not None):
        raise click.UsageError("give a BACKUP_FILE to restore, or --verify-only (not both)")
    try:
        with settings_refusals():
            if backup_file is not None:
                report = restore_backup(backup_file, settings, blobs_from=blobs_from)
            else:
                report = verify_node_data(settings)
                (settings.data_dir / RESTORE_MARKER).unlink(missing_ok=True)
    except LostEventsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        click.echo(
            f"error: {exc.lost} EVENTS LOST — this node cannot anchor again from this backup; "
            "the node will not start (see docs/deployment.md)",
            err=True,
        )
        return 1
    except VerificationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        click.echo("error: the node will not start on this data directory", err=True)
        return 1
    click.echo(f"restored and verified {settings.data_dir}")
    click.echo(f"  hospital        {report.hospital}")
    click.echo(f"  log             {report.log_size} events, every event parsed and hashed")
    click.echo(
        f"  chain           {report.chain_checkpoints} checkpoints (up to {report.chain_size} "
        "events) match the log"
    )
    click.echo(f"  archives        {report.archives} event hash chains intact")
    click.echo(f"  blobs           {report.blobs} match their hashes")
    return 0


def _restore_from_peers(settings: Any, backup_file: Path | None, blobs_from: Path | None) -> int:
    """``restore [BACKUP_FILE] --from-peers``: unpack the backup if given (an old one is expected
    to lack events), rebuild from the consortium, then verify as a plain restore does."""
    from node.backup import (
        RESTORE_MARKER,
        VerificationError,
        restore_backup,
        verify_node_data,
    )
    from node.recovery import restore_from_peers

    with settings_refusals():
        if backup_file is not None:
            try:
                restore_backup(backup_file, settings, blobs_from=blobs_from)
            except VerificationError as exc:  # events or blobs missing: the peers fill them in
                click.echo(f"backup restored, incomplete: {exc.message}")
        else:
            (settings.data_dir / RESTORE_MARKER).write_text("restore from peers started\n")
        result = restore_from_peers(settings)
        recovery = result.log
        click.echo(f"log from peers   {recovery.recovered} entries up to the chain's checkpoint "
                   f"{recovery.chain_size} (source {recovery.source}), "
                   f"{recovery.tail_recovered} unanchored entries agreed by peers")  # fmt: skip
        for peer in recovery.lying:
            click.echo(
                f"warning: peer {peer} returned entries that miss the on-chain roots", err=True
            )
        click.echo(f"catalogue        {recovery.archives_resynced} archives brought up to date, "
                   f"{recovery.archives_recreated} recreated from their events")  # fmt: skip
        click.echo(f"keys             {result.records.restored} archives' keys and titles from "
                   f"key records at replica holders, {len(result.records.missing)} without a key")  # fmt: skip
        if result.records.rewrapped:
            click.echo(f"                 {result.records.rewrapped} of them sealed under an older "
                       "KEK, re-wrapped to the current one")  # fmt: skip
        for archive_id, mismatch in sorted(recovery.custody_mismatches.items()):
            click.echo(f"warning: custody of {archive_id} taken from the chain ({mismatch})",
                       err=True)  # fmt: skip
        click.echo(f"blobs            {result.blobs_restored} fetched from replicas "
                   f"({result.bytes_fetched} bytes)")  # fmt: skip
        for problem in [*recovery.problems, *result.records.problems, *result.blob_problems]:
            click.echo(f"warning: {problem}", err=True)
        if not recovery.complete:
            click.echo("error: the log could not be rebuilt to the chain; the node will not start",
                       err=True)  # fmt: skip
            return 1
        try:
            report = verify_node_data(settings)
        except VerificationError as exc:
            click.echo(f"error: {exc.message}", err=True)
            click.echo("error: the node will not start on this data directory", err=True)
            return 1
    (settings.data_dir / RESTORE_MARKER).unlink(missing_ok=True)
    click.echo(f"restored and verified {settings.data_dir}: {report.log_size} events, "
               f"{report.archives} archives, {report.blobs} blobs")  # fmt: skip
    return 0
