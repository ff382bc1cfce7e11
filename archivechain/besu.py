"""``archivechain besu``: generate a Besu QBFT network (one validator per hospital) for production.

``init`` writes the genesis, encrypted validator keys, static nodes, the local permissioning
allowlists and a compose override (``devtools.besu``); ``unlock-key`` decrypts one validator key
into a file Besu reads with ``--node-private-key-file`` (meant for a tmpfs). The key passphrase comes
from ``--passphrase-file`` or ``ARCHIVECHAIN_BESU_KEY_PASSPHRASE``; insecure ones are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from node.errors import InputError

PASSPHRASE_ENV = "ARCHIVECHAIN_BESU_KEY_PASSPHRASE"  # noqa: S105 - a variable name


class BesuRefusedError(InputError):
    """The network or key cannot be generated or unlocked as asked (exit 2, one line)."""

    code = "besu_refused"


def _passphrase(passphrase_file: Path | None) -> str:
    from node.keystore import is_insecure_passphrase

    if passphrase_file is not None:
        value = passphrase_file.read_text(encoding="utf-8").strip()
    else:
        value = os.environ.get(PASSPHRASE_ENV, "")
    if not value:
        raise BesuRefusedError(f"no key passphrase: use --passphrase-file or set {PASSPHRASE_ENV}")
    if is_insecure_passphrase(value):
        raise BesuRefusedError(
            "the key passphrase is insecure (shorter than 12 characters, trivial or the dev "
            "default); choose another"
        )
    return value


PASSPHRASE_OPTION = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help=f"File holding the validator key passphrase (else ${PASSPHRASE_ENV}).",
)


@click.group("besu")
def besu() -> None:
    """Generate a Besu QBFT network for production (one validator per hospital)."""


@besu.command("init")
@click.option("--hospitals", type=int, required=True, help="Number of hospitals (validators).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output dir."
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    help="An account allowed to send transactions (deployer, each node's address); repeat.",
)
@click.option(
    "--ip", "ips", multiple=True, help="Each validator's IP address, in order (default: one host)."
)
@click.option("--chain-id", type=int, default=None, help="Chain id (default 1981).")
@click.option("--block-period", type=int, default=None, help="Seconds between blocks (default 2).")
@PASSPHRASE_OPTION
def init(
    hospitals: int,
    out: Path,
    accounts: tuple[str, ...],
    ips: tuple[str, ...],
    chain_id: int | None,
    block_period: int | None,
    passphrase_file: Path | None,
) -> None:
    """Write genesis, encrypted validator keys, static nodes, allowlists and a compose override."""
    from anchoring.artifacts import MANIFEST_NAME, default_build_dir
    from devtools.besu import (
        DEFAULT_BLOCK_PERIOD_SECONDS,
        DEFAULT_CHAIN_ID,
        BesuConfigError,
        generate_network,
    )

    passphrase = _passphrase(passphrase_file)
    manifest = json.loads((default_build_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    evm_version = manifest["compiler"]["settings"]["evmVersion"]
    try:
        network = generate_network(
            out,
            hospitals,
            passphrase,
            accounts=accounts,
            ips=ips,
            evm_version=evm_version,
            chain_id=DEFAULT_CHAIN_ID if chain_id is None else chain_id,
            block_period=DEFAULT_BLOCK_PERIOD_SECONDS if block_period is None else block_period,
        )
    except BesuConfigError as exc:
        raise BesuRefusedError(str(exc)) from None
    click.echo(f"QBFT network for {hospitals} hospitals written to {out} (EVM {evm_version})")
    for validator in network.validators:
        click.echo(f"  {validator.name}  validator {validator.address}")
    if hospitals < 4:
        click.echo("warning: QBFT tolerates a faulty validator only from 4 validators on")
    if not accounts:
        click.echo(
            "warning: the account allowlist is empty; add the deployer and every node's address "
            "to permissions_config.toml before sending transactions"
        )


@besu.command("unlock-key")
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@PASSPHRASE_OPTION
def unlock_key(key: Path, out: Path, passphrase_file: Path | None) -> None:
    """Decrypt a validator key for Besu's --node-private-key-file (write it to a tmpfs)."""
    from devtools.besu import decrypt_validator_key

    passphrase = _passphrase(passphrase_file)
    try:
        raw = decrypt_validator_key(key, passphrase)
    except (ValueError, KeyError, json.JSONDecodeError):
        raise BesuRefusedError(
            f"cannot decrypt {key}: wrong passphrase or not a key file"
        ) from None
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("0x" + raw.hex() + "\n")
    click.echo(f"validator key written to {out}")
