"""``archivechain contracts``: compile the Solidity sources, deploy the consortium contracts."""

from __future__ import annotations

from pathlib import Path

import click

from node.errors import NodeError, UnavailableError

# devtools.solc and devtools.deploy (web3, eth-account, py-solc-x) are imported inside the commands: they
# take most of a second to import and the other command groups do not need them.


@click.group()
def contracts() -> None:
    """Compile and deploy the consortium contracts."""


@contracts.command("compile")
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; fail when the committed artifacts differ from a fresh compilation.",
)
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Artifact folder (default: anchoring/contracts, the artifacts shipped with the package).",
)
def compile_command(check: bool, build_dir: Path | None) -> None:
    """Compile contracts/*.sol with py-solc-x (native solc 0.8.37, else solcjs)."""
    from anchoring.artifacts import default_build_dir
    from devtools.solc import build_differences, compile_contracts, write_build

    build = compile_contracts()
    for warning in build.warnings:
        click.echo(f"warning: {warning}", err=True)
    target = build_dir or default_build_dir()
    if check:
        differing = build_differences(build, target)
        if differing:
            raise NodeError(
                f"committed artifacts are out of date: {', '.join(differing)} "
                "(run `archivechain contracts compile`)",
                code="artifacts_stale",
            )
        click.echo(f"artifacts in {target} match the sources")
        return
    for path in write_build(build, target):
        click.echo(f"wrote {path}")


@contracts.command("deploy")
@click.option("--rpc", "rpc_url", required=True, help="JSON-RPC URL of the chain.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    envvar="ARCHIVECHAIN_DATA_DIR",
    help="Data directory receiving deployment.json.",
)
@click.option(
    "--proposal-lifetime",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds a governance proposal stays open.  [default: 604800 (7 days)]",
)
def deploy_command(rpc_url: str, data_dir: Path, proposal_lifetime: int | None) -> None:
    """Deploy ConsortiumRegistry, ArchiveNotary and AttestationRevocations once; later runs
    verify the deployment.

    The deployer key comes from $ARCHIVECHAIN_DEPLOYER_KEY; on the dev chain (id 31337) it
    defaults to anvil's public test account.
    """
    from anchoring.errors import AnchoringError, ChainError
    from devtools.deploy import DEFAULT_PROPOSAL_LIFETIME, ensure_deployed

    try:
        outcome = ensure_deployed(
            rpc_url, data_dir, proposal_lifetime=proposal_lifetime or DEFAULT_PROPOSAL_LIFETIME
        )
    except ChainError as exc:
        raise UnavailableError(str(exc)) from None
    except AnchoringError as exc:
        raise NodeError(str(exc), code=exc.code) from None
    d = outcome.deployment
    verb = "deployed" if outcome.created else "already deployed, verified"
    click.echo(f"{verb} on chain {d.chain_id}: {outcome.path}")
    click.echo(f"  ConsortiumRegistry     {d.registry.address}")
    click.echo(f"  ArchiveNotary          {d.notary.address}")
    if d.revocations is not None:
        click.echo(f"  AttestationRevocations {d.revocations.address}")
