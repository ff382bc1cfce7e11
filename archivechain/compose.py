"""``archivechain compose-init``: the one-shot job of ``docker-compose.yml`` (``devtools.compose``).

Against a chain it does not run (ganache in its container): deploy the contracts, create and fund
the identities, bootstrap and admit the members through governance, create each hospital's
PostgreSQL database, write each node's ``node.toml`` and API keys and ``network.json`` — exactly
``archivechain up``'s preparation. Idempotent: run again, it resumes the same consortium.
"""

from __future__ import annotations

from pathlib import Path

import click

from archivechain.network import DATA_DIR_OPTION
from devtools.network import DEFAULT_BASE_PORT, DEFAULT_HOSPITALS, MAX_HOSPITALS


@click.command("compose-init")
@click.option("--rpc", "rpc_url", required=True, help="The chain's JSON-RPC URL (ganache).")
@DATA_DIR_OPTION
@click.option(
    "--hospitals",
    type=click.IntRange(1, MAX_HOSPITALS),
    default=DEFAULT_HOSPITALS,
    show_default=True,
)
@click.option(
    "--base-port", type=click.IntRange(1024, 65535), default=DEFAULT_BASE_PORT, show_default=True
)
@click.option(
    "--database-url-template",
    default=None,
    help="Each node's database URL, {name} being hospital_1, hospital_2, … (created if missing).",
)
@click.option(
    "--ipfs-api",
    "ipfs_apis",
    multiple=True,
    help="IPFS API multiaddr of one hospital's own daemon, once per hospital in order "
    "(none: local blob stores; a daemon is never shared by nodes).",
)
def compose_init(
    rpc_url: str,
    data_dir: Path,
    hospitals: int,
    base_port: int,
    database_url_template: str | None,
    ipfs_apis: tuple[str, ...],
) -> None:
    """Prepare the compose consortium against an external chain (the compose one-shot job)."""
    from anchoring.errors import AnchoringError, ChainError
    from devtools.compose import ComposeNetwork
    from node.errors import NodeError, UnavailableError

    def report(line: str) -> None:
        click.echo(line, err=True)

    network = ComposeNetwork(
        data_dir,
        hospitals=hospitals,
        base_port=base_port,
        report=report,
        external_rpc=rpc_url,
        database_url_template=database_url_template,
        ipfs_apis=ipfs_apis,
    )
    try:
        network.prepare()
    except ChainError as exc:
        raise UnavailableError(str(exc)) from None
    except AnchoringError as exc:
        raise NodeError(str(exc), code=exc.code) from None
    assert network.deployment is not None
    click.echo(f"compose consortium ready ({len(network.nodes)} hospitals)")
    click.echo(f"  chain     {network.rpc_url} (chain id {network.deployment.chain_id})")
    click.echo(f"  registry  {network.deployment.registry.address}")
    click.echo(f"  notary    {network.deployment.notary.address}")
    for node in network.nodes:
        click.echo(f"  {node.name:<11} {node.url}  {node.identity.address}  {node.config_file}")
    click.echo(f"  API keys in {network.layout.network_file} (dev only, mode 0600)")
