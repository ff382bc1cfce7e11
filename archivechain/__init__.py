"""The ``archivechain`` command line.

Bad input exits with code 2 and one line on stderr; ``verify`` also uses 0 (valid), 1 (invalid)
and 3 (chain unavailable). Sub-command groups live in their own modules, imported only when the
command runs (``LazyGroup``): a regulator's ``archivechain verify`` never loads web3, SQLAlchemy
or FastAPI, and ``archivechain --help`` lists the commands without importing any of them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence

import click

from node.errors import ConfigError, InputError, NodeError


class LazyGroup(click.Group):
    """A group whose commands are ``module:attribute`` references, imported on first use.

    ``lazy`` maps a command name to ``(module, attribute, short help)``; the short help is what
    ``--help`` lists, so listing imports nothing (a test keeps it equal to the command's own).
    """

    def __init__(
        self, *args: object, lazy: Mapping[str, tuple[str, str, str]], **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attribute, _ = self.lazy[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover  (a wrong table entry)
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:  # pragma: no cover
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.lazy:
                help_text = click.Command(name, help=self.lazy[name][2]).get_short_help_str(limit)
            else:  # pragma: no cover  (every command is lazy today)
                command = super().get_command(ctx, name)
                help_text = command.get_short_help_str(limit) if command else ""
            rows.append((name, help_text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


COMMANDS: dict[str, tuple[str, str, str]] = {
    "anchor": ("archivechain.anchor", "anchor", "Anchoring of this node's log on the chain."),
    "attest": (
        "archivechain.attest",
        "attest",
        "Insurer attestations: verify a signed attestation against the chain.",
    ),
    "audit": (
        "archivechain.audit",
        "audit",
        "Audit this node's stored blobs (fixity) and its log (against the chain).",
    ),
    "backup": (
        "archivechain.backup",
        "backup",
        "Back up the node (database, encrypted keystore, blob list; optionally blobs) while it runs.",
    ),
    "besu": (
        "archivechain.besu",
        "besu",
        "Generate a Besu QBFT network for production (one validator per hospital).",
    ),
    "chain": (
        "archivechain.chain",
        "chain",
        "Run the local development chain (anvil, state kept in the data directory).",
    ),
    "compose-init": (
        "archivechain.compose",
        "compose_init",
        "Prepare the compose consortium against an external chain (the compose one-shot job).",
    ),
    "contracts": (
        "archivechain.contracts",
        "contracts",
        "Compile and deploy the consortium contracts.",
    ),
    "down": (
        "archivechain.network",
        "down_command",
        "Stop the local consortium of a data directory (nodes first, then the chain).",
    ),
    "import": (
        "archivechain.importer",
        "import_command",
        "Backfill legacy files through the node's ingestion path (idempotent by file hash).",
    ),
    "keys": ("archivechain.keys", "keys", "Manage the node keystore and its API keys."),
    "login": (
        "archivechain.member",
        "login",
        "Sign in to a hospital node with a member key (EIP-4361) and store the token.",
    ),
    "node": ("archivechain.node", "node_group", "Run a hospital node."),
    "regulator": (
        "archivechain.member",
        "regulator",
        "Regulator actions: legal holds signed with the regulator's key.",
    ),
    "sign-message": (
        "archivechain.member",
        "sign_message_command",
        "Sign a member sign-in message (EIP-191) with a member key, for the web console.",
    ),
    "restore": (
        "archivechain.backup",
        "restore",
        "Restore a backup into an empty data directory and verify it before the node may serve.",
    ),
    "retention": (
        "archivechain.retention",
        "retention",
        "Retention: reminders, disposition review and leftovers of destruction.",
    ),
    "up": (
        "archivechain.network",
        "up",
        "Start (or resume) a local consortium: chain, contracts, members, one node per hospital.",
    ),
    "verify": (
        "archivechain.verify",
        "verify",
        "Verify proof bundles (archivechain.proof/v1) against the chain.",
    ),
}
"""Every sub-command: name -> (module, attribute, the one-line help ``--help`` lists)."""


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archivechain")
def cli() -> None:
    """ArchiveChain: notarization network for hospital electronic archives."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI, turning usage and input errors into one line and exit code 2."""
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
