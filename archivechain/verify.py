"""``archivechain verify BUNDLE --rpc URL``: check a proof bundle against the chain, trusting nothing
the hospital says. Exit 0 valid, 1 invalid (the first failure is named), 2 unusable input (unreadable
or malformed bundle, unreachable chain, bad arguments)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError, BundleFormatError, ChainError
from anchoring.verifier import Status, verify_bundle
from node.errors import InputError


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rpc", "rpc_url", required=True, help="JSON-RPC endpoint of the consortium chain.")
@click.option(
    "--deployment",
    "deployment_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trusted deployment.json naming the ArchiveNotary address.",
)
@click.option("--notary", help="Trusted ArchiveNotary address (instead of --deployment).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--no-custody", is_flag=True, help="Skip comparing the final state with the on-chain record."
)
def verify(
    bundle: Path,
    rpc_url: str,
    deployment_file: Path | None,
    notary: str | None,
    as_json: bool,
    no_custody: bool,
) -> int:
    """Verify a proof bundle (archivechain.proof/v1) against the chain."""
    if deployment_file is not None and notary is not None:
        raise InputError("give --deployment or --notary, not both")
    try:
        raw = bundle.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {bundle}: {exc.strerror}") from None
    try:
        parsed = parse_bundle(raw)
    except BundleFormatError as exc:
        raise InputError(f"malformed bundle: {exc}") from None
    warning = None
    try:
        if deployment_file is not None:
            chain = RpcChain(rpc_url, Deployment.load(deployment_file))
        else:
            if notary is None:
                warning = (
                    "warning: the notary address was taken from the bundle itself; pin it with "
                    "--notary or --deployment to the consortium's published address"
                )
            chain = RpcChain.for_notary(rpc_url, notary or parsed.notary)
    except ChainError as exc:
        raise InputError(f"cannot use the chain at {rpc_url}: {exc}") from None
    except AnchoringError as exc:
        raise InputError(str(exc)) from None
    report = verify_bundle(parsed, chain, check_custody=not no_custody)
    if report.status is Status.CHAIN_UNAVAILABLE:
        raise InputError(
            f"the chain at {rpc_url} could not be read: {report.failure.message if report.failure else ''}"
        )
    if as_json:
        document = report.to_json()
        if warning:
            document["warning"] = warning
        click.echo(json.dumps(document, indent=2))
    else:
        if warning:
            click.echo(warning, err=True)
        click.echo(report.to_text())
    return 0 if report.ok else 1
