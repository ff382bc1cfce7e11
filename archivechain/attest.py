"""``archivechain attest verify FILE --rpc URL --notary ADDR``: check an insurer attestation
(``archivechain.attestation/v1``) against the chain, trusting only the notary address.

Checks, in order (docs/attestations.md §4): the EIP-712 domain, the records against the signed
``recordsHash``, the signature, the signer's hospital membership at ``issuedBlock``, expiry,
revocation (one read of ``AttestationRevocations.revokedAt``) and the ATTEST event's inclusion in an
anchored checkpoint of the signer's log. Exit codes: 0 valid, 1 invalid (the failure's code is
printed), 2 unusable input, 3 chain unavailable. Imports no web3, SQLAlchemy or FastAPI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from anchoring.attestation import (
    MAX_ATTESTATION_BYTES,
    AttestationError,
    parse_attestation,
    verify_attestation,
)
from anchoring.errors import ChainError
from anchoring.ids import IdentifierError, normalize_address
from anchoring.rpcview import AttestationReader
from node.errors import InputError

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE, EXIT_CHAIN_UNAVAILABLE = 0, 1, 2, 3


@click.group()
def attest() -> None:
    """Insurer attestations: verify a signed attestation against the chain."""


@attest.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rpc", "rpc_url", required=True, help="JSON-RPC endpoint of the consortium chain.")
@click.option("--notary", required=True, help="The consortium's ArchiveNotary address (trusted).")
@click.option("--at", "at", type=int, default=None, help="Judge expiry at this unix time.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify(file: Path, rpc_url: str, notary: str, at: int | None, as_json: bool) -> int:
    """Verify one attestation FILE; exit 0 valid, 1 invalid, 2 unusable, 3 chain unavailable."""
    try:
        notary_address = normalize_address(notary)
    except IdentifierError as exc:
        raise InputError(f"--notary: {exc}") from None
    try:
        raw = file.read_bytes()[: MAX_ATTESTATION_BYTES + 1]
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        document = parse_attestation(raw)
    except AttestationError as exc:
        click.echo(f"unusable: {exc.code}: {exc}", err=True)
        return EXIT_UNUSABLE
    try:
        reader = AttestationReader(rpc_url, notary_address)
    except ValueError as exc:
        raise InputError(f"--rpc: {exc}") from None
    now = at if at is not None else int(time.time())
    try:
        report = verify_attestation(document, reader, now)
    except ChainError as exc:
        click.echo(f"chain unavailable: {exc}", err=True)
        return EXIT_CHAIN_UNAVAILABLE
    finally:
        reader.rpc.close()
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    elif report.ok:
        click.echo(f"valid: signed by {report.issuer}; checks: {', '.join(report.checks)}")
    else:
        click.echo(f"invalid: {report.code}: {report.message}")
    return EXIT_VALID if report.ok else EXIT_INVALID
