"""``archivechain audit fixity|log``: audit a stopped node now (it uses the node's database, blob
store and chain directly, like ``archivechain anchor``). ``fixity`` re-reads the blobs, ``log``
checks the log against the chain and each archive's hash chain against its catalogue row. Exit 0
when everything passed, 1 when anything failed (each failure is also an alert in the node's
database)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from anchoring.events import RecordClass
from archivechain.node import (
    CONFIG_OPTION,
    NODE_DATA_DIR_OPTION,
    holding_node_pid,
    node_settings,
    open_runtime,
    settings_refusals,
)
from node.errors import InputError


@click.group()
def audit() -> None:
    """Audit this node's stored blobs (fixity) and its log (against the chain)."""


@audit.command("fixity")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--archive", "archive_ids", multiple=True, help="Only this archive (repeatable).")
@click.option(
    "--class",
    "record_class",
    type=click.Choice([c.value for c in RecordClass]),
    default=None,
    help="Only archives of this record class.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fixity(
    config_file: Path | None,
    data_dir: Path | None,
    archive_ids: tuple[str, ...],
    record_class: str | None,
    as_json: bool,
) -> int:
    """Re-read every stored blob in scope and compare its SHA-256 with the hash its event
    recorded; log a FIXITY_CHECK event per version and an alert per failure."""
    from node.services.audits import AuditScope, ScopeKind

    if archive_ids and record_class:
        raise InputError("give --archive or --class, not both", code="invalid_scope")
    if archive_ids:
        scope = AuditScope(ScopeKind.ARCHIVES, archive_ids=archive_ids)
    elif record_class:
        scope = AuditScope(ScopeKind.CLASS, record_class=RecordClass(record_class))
    else:
        scope = AuditScope()
    runtime = open_runtime(node_settings(config_file, data_dir), create_keystore=False)
    try:
        runtime.committer.start()
        report = runtime.fixity.audit(None, scope)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
    else:
        click.echo(
            f"checked {report.checked} version(s): {report.passed} passed, {report.failed} "
            f"failed, {report.skipped} skipped; {report.bytes_read} bytes in "
            f"{report.seconds:.2f} s; replicas at peers: {report.replicas_verified} verified, "
            f"{report.replicas_failed} failed, {report.replicas_unavailable} unavailable"
        )
        for failure in report.failures:
            click.echo(f"FAILED {failure.archive_id} v{failure.version}: {failure.problem}")
    return 1 if report.failed or report.replicas_failed else 0


@audit.command("log")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def log_audit(config_file: Path | None, data_dir: Path | None, as_json: bool) -> int:
    """Re-hash the log, compare its root with every checkpoint anchored on chain, and replay each
    archive's hash chain against its catalogue row; an alert per finding."""
    runtime = open_runtime(node_settings(config_file, data_dir), create_keystore=False)
    try:
        report = runtime.log_audit.audit(None)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps({"ok": report.ok, **asdict(report)}, indent=2))
    else:
        click.echo(
            f"{report.entries} log entries, {report.checkpoints} checkpoints, "
            f"{report.archives} archives checked in {report.seconds:.2f} s: "
            + ("ok" if report.ok else f"{len(report.findings)} finding(s)")
        )
        for finding in report.findings:
            click.echo(f"FINDING {finding.kind} {finding.subject} {json.dumps(finding.detail)}")
    return 0 if report.ok else 1


@audit.command("orphans")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option(
    "--delete", is_flag=True, help="Delete the unreferenced blobs of local stores (else list them)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def orphans(config_file: Path | None, data_dir: Path | None, delete: bool, as_json: bool) -> int:
    """List (or delete) blobs that no record names: ciphertext left by an upload killed before it
    committed. The node must be stopped; this command holds its pid file meanwhile."""
    from node.orphans import require_node_data, search

    settings = node_settings(config_file, data_dir)
    with settings_refusals():
        require_node_data(settings)  # before the pid file: a mistyped directory stays untouched
        with holding_node_pid(  # refuses while the node runs, and keeps it from starting
            settings,
            "listing its blobs (an upload in progress has stored its blob but not yet the record "
            "that names it)",
        ):
            report = search(settings, delete=delete)
    remaining = report.remaining
    if as_json:
        document = {
            "scanned": report.scanned,
            "referenced": report.referenced,
            "orphans": [asdict(orphan) for orphan in report.orphans],
            "removed": [asdict(orphan) for orphan in report.removed],
            "remaining": len(remaining),
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(
            f"{report.scanned} stored blob(s), {report.referenced} referenced CID(s): "
            f"{len(report.orphans)} unreferenced, {len(report.removed)} deleted"
        )
        for orphan in remaining:
            size = "?" if orphan.size is None else str(orphan.size)
            note = "" if orphan.removable else " (IPFS pin: not removed by this command)"
            click.echo(f"ORPHAN {orphan.tier} {orphan.cid} {size} bytes{note}")
    return 1 if remaining else 0
