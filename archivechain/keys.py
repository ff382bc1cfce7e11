"""``archivechain keys``: the node's keystore and API keys, from the command line.

``init`` creates a production keystore (passphrase from ``ARCHIVECHAIN_KEYSTORE_PASSPHRASE`` or
``--passphrase-file``; insecure ones refused). ``create``/``list``/``revoke`` work on the node's
database directly, whether or not the node runs; a new key's secret is printed once and only its hash
is stored. ``rotate-kek`` re-wraps every data key under a fresh KEK and retires the old one; it needs
the keystore for itself, so it refuses while the node runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from archivechain.node import (
    CONFIG_OPTION,
    NODE_DATA_DIR_OPTION,
    SettingsRefusedError,
    node_settings,
    open_runtime,
    refuse_running_node,
)
from node.config import NodeSettings
from node.errors import ConflictError, InputError
from node.principal import Role

if TYPE_CHECKING:
    from node.principal import Principal
    from node.runtime import NodeRuntime

OPERATOR_NAME = "cli-operator"
"""Name of the principal the local operator acts as (admin rights, never stored as a key)."""


@click.group("keys")
def keys() -> None:
    """Manage the node keystore and its API keys."""


@keys.command("init")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File holding the keystore passphrase (else $ARCHIVECHAIN_KEYSTORE_PASSPHRASE).",
)
def init(config_file: Path | None, data_dir: Path | None, passphrase_file: Path | None) -> None:
    """Create a production keystore (hospital key, encryption key, KEK, pseudonym secret)."""
    from node.keystore import DEFAULT_SCRYPT_N, Keystore, is_insecure_passphrase

    settings = node_settings(config_file, data_dir)
    passphrase = _init_passphrase(settings, passphrase_file)
    if is_insecure_passphrase(passphrase):
        raise SettingsRefusedError(
            "the keystore passphrase is insecure (shorter than 12 characters, trivial or the dev "
            "default); choose another",
            code="insecure_passphrase",
        )
    path = settings.resolved_keystore_path
    with _refusals():
        keystore = Keystore.create(path, passphrase, scrypt_n=DEFAULT_SCRYPT_N)
    click.echo(f"created keystore {path}")
    click.echo(f"  address               {keystore.address}")
    click.echo(f"  encryption public key {keystore.encryption_public_key.hex()}")
    click.echo(f"  KEK                   {keystore.current_kek_id}")
    click.echo("admit this address to the consortium through governance before anchoring")


def _init_passphrase(settings: NodeSettings, passphrase_file: Path | None) -> str:
    source = passphrase_file or settings.keystore_passphrase_file
    if passphrase_file is None and settings.keystore_passphrase is not None:
        return settings.keystore_passphrase.get_secret_value()
    if source is None:
        raise SettingsRefusedError(
            "no keystore passphrase: set ARCHIVECHAIN_KEYSTORE_PASSPHRASE or pass --passphrase-file",
            code="passphrase_missing",
        )
    try:
        return source.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsRefusedError(f"cannot read the passphrase file {source}: {exc}") from None


@contextmanager
def _refusals() -> Iterator[None]:
    from archivechain.node import settings_refusals
    from node.keystore import KeystoreExistsError

    try:
        with settings_refusals():
            yield
    except KeystoreExistsError as exc:
        raise SettingsRefusedError(exc.message, code=exc.code) from None


@contextmanager
def _offline_node(settings: NodeSettings) -> Iterator[NodeRuntime]:
    """The node's runtime with only its database writer running (no HTTP, no anchoring)."""
    runtime = open_runtime(settings, create_keystore=False)
    try:
        runtime.start(scheduler=False)
        yield runtime
    finally:
        runtime.close()


def _operator(runtime: NodeRuntime) -> Principal:
    """The local operator: admin rights over keys, acting from the node's own machine."""
    from node import crypto
    from node.principal import Principal

    actor = crypto.pseudonym(runtime.keystore.pseudonym_secret, "staff", OPERATOR_NAME)
    return Principal(key_id=0, name=OPERATOR_NAME, role=Role.ADMIN, actor=actor)


@keys.command("create")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", required=True, help="Who or what uses the key (1 to 64 characters).")
@click.option("--department", default=None, help="Department (clinician keys only).")
@click.option(
    "--member",
    default=None,
    help="The insurer's member address (insurer keys only; an active INSURER member on chain).",
)
def create(
    config_file: Path | None,
    data_dir: Path | None,
    role: str,
    name: str,
    department: str | None,
    member: str | None,
) -> None:
    """Create an API key and print its secret (shown this once, never stored)."""
    settings = node_settings(config_file, data_dir)
    with _offline_node(settings) as runtime:
        try:
            issued = runtime.keys.issue(Role(role), name, department, member)
        except ConflictError as exc:  # e.g. --member is not an active insurer: unusable input
            raise InputError(exc.message, code=exc.code) from None
    key = issued.key
    scope = f", department {key.department}" if key.department else ""
    click.echo(f"created API key {key.id} ({key.name}, {key.role.value}{scope})", err=True)
    click.echo("the secret is shown once; store it now:", err=True)
    click.echo(issued.secret)


@keys.command("list")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
def list_keys(config_file: Path | None, data_dir: Path | None) -> None:
    """List API keys (never their secrets)."""
    settings = node_settings(config_file, data_dir)
    with _offline_node(settings) as runtime:
        views = runtime.keys.list(_operator(runtime))
    if not views:
        click.echo("no API keys")
        return
    click.echo(f"{'id':>5}  {'role':<10} {'department':<14} {'prefix':<12} {'status':<8} name")
    for view in views:
        status = "revoked" if view.revoked_at else "active"
        click.echo(
            f"{view.id:>5}  {view.role.value:<10} {view.department or '-':<14} "
            f"{view.prefix:<12} {status:<8} {view.name}"
        )


@keys.command("revoke")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.argument("key_id", type=click.IntRange(min=1))
def revoke(config_file: Path | None, data_dir: Path | None, key_id: int) -> None:
    """Revoke an API key (effective at once, also on a running node)."""
    settings = node_settings(config_file, data_dir)
    with _offline_node(settings) as runtime:
        view = runtime.keys.revoke(_operator(runtime), key_id)
    click.echo(f"revoked API key {view.id} ({view.name}, {view.role.value})")


@keys.command("rotate-kek")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
def rotate_kek(config_file: Path | None, data_dir: Path | None, batch_size: int) -> None:
    """Rotate the KEK: re-wrap every data key, then retire the old KEK. Rerun to resume."""
    from node.services.kek import BatchProgress

    settings = node_settings(config_file, data_dir)
    refuse_running_node(settings, "rotating its KEK (the keystore has one owner)")

    def show(progress: BatchProgress) -> None:
        click.echo(
            f"batch {progress.batch}: re-wrapped {progress.total_rewrapped}, "
            f"{progress.remaining} left",
            err=True,
        )

    with _offline_node(settings) as runtime:
        report = runtime.kek.rotate(batch_size=batch_size, progress=show)
    verb = "resumed the unfinished rotation" if report.resumed else "rotated"
    retired = ", ".join(report.retired_kek_ids) or "none"
    click.echo(
        f"{verb}: current KEK {report.current_kek_id}; re-wrapped {report.rewrapped} data keys; "
        f"retired {retired}"
    )
    if report.records_behind:
        click.echo(
            f"old KEKs kept until the replica job has re-sent {report.records_behind} key "
            "records to their holders (it then retires them)"
        )
