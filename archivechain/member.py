"""``archivechain login`` and ``archivechain regulator``: a consortium member's command line.

``login --keystore F --node URL`` signs the node's EIP-4361 challenge with the member key in F (a
Web3 Secret Storage v3 JSON file, as ``geth``/``clef``/``eth-account`` write it, or an
``archivechain.keystore/v1`` file, as ``archivechain up`` writes for its regulator and insurer
under ``data/members/<name>/keystore.json``; passphrase from
``--passphrase-file`` or ``$ARCHIVECHAIN_MEMBER_PASSPHRASE``) and stores the token, per node URL,
in the token file (``--token-file``, ``$ARCHIVECHAIN_TOKEN_FILE``, default
``~/.config/archivechain/tokens.json``, mode 0600) for the other commands.

``regulator hold|release ID --keystore F --rpc URL --deployment FILE --reason TEXT`` signs
``placeHold``/``releaseHold`` with the regulator's key and sends it to the chain itself; with
``--node URL`` (after ``login``) the signed transaction is relayed by that node instead. The reason
stays local: only its SHA-256 goes on chain. ``regulator holds --node URL`` lists holds.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import click
import httpx

from node.errors import InputError, NodeError, UnavailableError
from node.keystore import KEYSTORE_FORMAT, Keystore, KeystoreError, WrongPassphraseError

DEFAULT_TOKEN_FILE = Path("~/.config/archivechain/tokens.json")


def _token_file(given: Path | None) -> Path:
    env = os.environ.get("ARCHIVECHAIN_TOKEN_FILE")
    return (given or (Path(env) if env else DEFAULT_TOKEN_FILE)).expanduser()


def _load_key(keystore: Path, passphrase_file: Path | None) -> bytes:
    from eth_account import Account

    if passphrase_file is not None:
        passphrase = passphrase_file.read_text(encoding="utf-8").strip()
    else:
        passphrase = os.environ.get("ARCHIVECHAIN_MEMBER_PASSPHRASE", "")
    if not passphrase:
        raise InputError("no passphrase: use --passphrase-file or $ARCHIVECHAIN_MEMBER_PASSPHRASE")
    try:
        document = json.loads(keystore.read_text(encoding="utf-8"))
        if isinstance(document, dict) and document.get("format") == KEYSTORE_FORMAT:
            return Keystore.load(keystore, passphrase).eth_private_key
        return bytes(Account.decrypt(document, passphrase))
    except WrongPassphraseError:  # before OSError: it is also a PermissionError
        raise InputError(
            f"{keystore} is an {KEYSTORE_FORMAT} keystore this passphrase does not open"
        ) from None
    except KeystoreError as exc:  # damaged, or gone since: its own message
        raise InputError(f"{keystore}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read {keystore}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{keystore} is not a v3 keystore this passphrase opens") from None


def _node_url(node: str) -> str:
    """``node`` without a trailing slash; ``InputError`` unless it is an http(s) URL with a host."""
    parts = urlsplit(node.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"--node {node!r} is not an http:// or https:// URL")
    return node.strip().rstrip("/")


def _write_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """Write ``tokens`` to ``path`` with mode 0600 whatever mode the file had: a new file (0600
    from its creation) renamed over it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # whatever the umask or a leftover file said
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(tokens, handle, indent=2)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise InputError(f"cannot write the token file {path}: {exc.strerror}") from None


def _stored_token(token_file: Path, node: str) -> str:
    try:
        tokens = json.loads(token_file.read_text(encoding="utf-8"))
        entry = tokens[node.rstrip("/")]
    except (OSError, ValueError, KeyError):
        raise InputError(f"not signed in to {node}: run 'archivechain login' first") from None
    token: str = entry["token"]
    return token


def _fail(response: httpx.Response) -> NodeError:
    try:
        body = response.json()
        text = f"{body.get('code')}: {body.get('message')}"
    except ValueError:
        text = response.text[:200]
    return NodeError(f"the node answered {response.status_code} ({text})")


keystore_option = click.option(
    "--keystore",
    "keystore",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The member key: a Web3 Secret Storage (v3) JSON file or an archivechain keystore.",
)
passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the keystore passphrase (else $ARCHIVECHAIN_MEMBER_PASSPHRASE).",
)
token_file_option = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where tokens are kept (else $ARCHIVECHAIN_TOKEN_FILE or ~/.config/archivechain/tokens.json).",
)


@click.command()
@keystore_option
@passphrase_option
@click.option("--node", "node", required=True, help="The hospital node's URL.")
@click.option(
    "--role",
    type=click.Choice(["regulator", "insurer", "auditor"]),
    default="regulator",
    show_default=True,
    help="The registry role to sign in with.",
)
@token_file_option
def login(
    keystore: Path,
    passphrase_file: Path | None,
    node: str,
    role: str,
    token_file: Path | None,
) -> None:
    """Sign in to a hospital node with a member key (EIP-4361) and store the token."""
    from eth_account import Account

    base = _node_url(node)
    key = _load_key(keystore, passphrase_file)
    address = Account.from_key(key).address
    try:
        issued = _sign_in(base, key, address, role)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach {base}: {exc}") from None
    path = _token_file(token_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokens: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tokens = {}
    tokens[base] = {k: issued[k] for k in ("token", "jti", "sub", "role", "aud", "exp")}
    _write_tokens(path, tokens)
    click.echo(f"signed in to {base} as {address} ({issued['role']}) until {issued['exp']}")


def _sign_in(base: str, key: bytes, address: str, role: str) -> dict[str, Any]:
    """The node's challenge, signed, answered: the token the node issued."""
    from node.siwe import SiweMessage, format_time, sign_message

    with httpx.Client(base_url=base + "/api/v1", timeout=30) as http:
        answer = http.post("/auth/challenge")
        if answer.status_code != 200:
            raise _fail(answer)
        c = answer.json()
        now = datetime.now(UTC)
        message = SiweMessage(
            domain=c["domain"],
            address=address,
            statement=c["statement"],
            uri=c["uri"],
            chain_id=int(c["chain_id"]),
            nonce=c["nonce"],
            issued_at=format_time(now),
            expiration_time=format_time(now + timedelta(minutes=5)),
            resources=(f"urn:archivechain:role:{role}",),
        )
        text = message.text()
        answer = http.post(
            "/auth/verify", json={"message": text, "signature": sign_message(text, key)}
        )
        if answer.status_code != 200:
            raise _fail(answer)
        issued: dict[str, Any] = answer.json()
    return issued


@click.command("sign-message")
@keystore_option
@passphrase_option
@click.option(
    "--message-file",
    type=click.File("r", encoding="utf-8"),
    default="-",
    show_default=True,
    help="The EIP-4361 message to sign, exactly as the node showed it ('-': standard input).",
)
def sign_message_command(
    keystore: Path, passphrase_file: Path | None, message_file: TextIO
) -> None:
    """Sign a member sign-in message (EIP-191) with a member key, for the web console.

    Prints the signature of the EIP-4361 message the console's member sign-in shows; paste it
    back there. Nothing is sent anywhere."""
    from node.siwe import SiweFormatError, parse_message, sign_message

    key = _load_key(keystore, passphrase_file)
    try:
        text = message_file.read().replace("\r\n", "\n").rstrip("\n")
    except UnicodeDecodeError:
        raise InputError(
            f"{message_file.name} is not UTF-8 text (an EIP-4361 message is)"
        ) from None
    try:
        parse_message(text)
    except SiweFormatError as exc:
        raise InputError(f"not an EIP-4361 message: {exc}") from None
    click.echo(sign_message(text, key))


@click.group()
def regulator() -> None:
    """Regulator actions: legal holds signed with the regulator's key."""


def _hold(
    place: bool,
    archive_id: str,
    keystore: Path,
    passphrase_file: Path | None,
    rpc: str,
    deployment: Path,
    reason: str,
    node: str | None,
    token_file: Path | None,
) -> None:
    from eth_account import Account

    from anchoring.chain import ContractRevertError, ContractWriter, JsonRpc, RpcChain
    from anchoring.deployment import Deployment
    from anchoring.errors import AnchoringError
    from anchoring.ids import IdentifierError, archive_key

    function = "placeHold" if place else "releaseHold"
    if node is not None:
        node = _node_url(node)
    if not reason.strip():
        raise InputError("a reason is required")
    try:
        key_arg = archive_key(archive_id.strip().upper())
    except (IdentifierError, ValueError):
        raise InputError(f"{archive_id!r} is not an archive id") from None
    reason_hash = hashlib.sha256(reason.strip().encode("utf-8")).digest()
    account = Account.from_key(_load_key(keystore, passphrase_file))
    try:
        chain = RpcChain(JsonRpc(rpc), Deployment.load(deployment))
        writer = ContractWriter(chain, account)
        if node is None:
            receipt = writer.transact(function, [key_arg, reason_hash])
            click.echo(f"{function} {archive_id}: mined in block {receipt.block_number}")
            return
        token = _stored_token(_token_file(token_file), node)
        signed = writer.sign_call(function, [key_arg, reason_hash], writer.pending_nonce())
    except ContractRevertError as exc:
        raise NodeError(f"the notary refused: {exc.error_name or 'no reason'}") from None
    except AnchoringError as exc:
        raise NodeError(f"chain: {exc}") from None
    path = f"/regulator/holds/{archive_id}" + ("" if place else "/release")
    with httpx.Client(base_url=node.rstrip("/") + "/api/v1", timeout=30) as http:
        answer = http.post(
            path,
            json={"signed_transaction": "0x" + signed.raw.hex()},
            headers={"Authorization": f"Bearer {token}"},
        )
    if answer.status_code != 202:
        raise _fail(answer)
    click.echo(f"{function} {archive_id}: relayed by {node} as {answer.json()['tx_hash']}")


def _hold_options(command: Any) -> Any:
    for option in reversed(
        [
            click.argument("archive_id"),
            keystore_option,
            passphrase_option,
            click.option("--rpc", required=True, help="The consortium chain's JSON-RPC URL."),
            click.option(
                "--deployment",
                required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="The consortium's deployment.json (chain id, contract addresses).",
            ),
            click.option("--reason", required=True, help="Why (kept local; its SHA-256 on chain)."),
            click.option("--node", default=None, help="Relay through this node (after login)."),
            token_file_option,
        ]
    ):
        command = option(command)
    return command


@regulator.command("hold")
@_hold_options
def hold(archive_id: str, keystore: Path, passphrase_file: Path | None, rpc: str,
         deployment: Path, reason: str, node: str | None, token_file: Path | None) -> None:  # fmt: skip
    """Place a regulator's legal hold on an archive (signed with the regulator's key)."""
    _hold(True, archive_id, keystore, passphrase_file, rpc, deployment, reason, node, token_file)


@regulator.command("release")
@_hold_options
def release(archive_id: str, keystore: Path, passphrase_file: Path | None, rpc: str,
            deployment: Path, reason: str, node: str | None, token_file: Path | None) -> None:  # fmt: skip
    """Release the regulator's own hold (only the regulator that placed it, while active)."""
    _hold(False, archive_id, keystore, passphrase_file, rpc, deployment, reason, node, token_file)


@regulator.command("holds")
@click.option("--node", "node", required=True, help="The hospital node's URL (after login).")
@token_file_option
def holds(node: str, token_file: Path | None) -> None:
    """List the archives on hold at a node, and who placed each hold."""
    node = _node_url(node)
    token = _stored_token(_token_file(token_file), node)
    with httpx.Client(base_url=node.rstrip("/") + "/api/v1", timeout=30) as http:
        answer = http.get("/regulator/holds", headers={"Authorization": f"Bearer {token}"})
    if answer.status_code != 200:
        raise _fail(answer)
    for row in answer.json():
        who = row["placed_by"] or "-"
        kind = "regulator" if row["by_regulator"] else "custodian"
        click.echo(f"{row['archive_id']}  {row['state']:<18} {kind:<9} {who}")
