"""The ``archivechain`` command line.

Bad input exits with code 2 and one line on stderr; the verifier uses 0 (valid) and 1 (invalid).
Sub-command groups live in their own modules and are registered here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from node.errors import ConfigError, InputError, NodeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archivechain")
def cli() -> None:
    """ArchiveChain: notarization network for hospital electronic archives."""


def _register() -> None:
    from archivechain import anchor, chain, contracts, keys, network, node, verify

    cli.add_command(chain.chain)
    cli.add_command(contracts.contracts)
    cli.add_command(node.node_group)
    cli.add_command(keys.keys)
    cli.add_command(network.up)
    cli.add_command(network.down_command)
    cli.add_command(verify.verify)
    cli.add_command(anchor.anchor)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI, turning usage and input errors into one line and exit code 2."""
    _register()
    try:
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:  # usage errors, bad parameters, missing files
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except (InputError, ConfigError) as exc:  # unusable input or settings: one line, exit 2
        click.echo(f"error: {exc.message}", err=True)
        return 2
    except NodeError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _entry() -> None:
    """Console-script wrapper: exit with ``main``'s code."""
    sys.exit(main())
