"""``archivechain verify BUNDLE... --rpc URL``: check proof bundles against the chain, trusting
nothing the hospitals say.

Exit codes (docs/proof-format.md §7.5): 0 valid, 1 invalid (the first failure is named), 2 unusable
input (unreadable file, not a bundle, malformed bundle, bad arguments), 3 chain unavailable. With
several bundles the exit code is the worst outcome, in the order invalid, unusable, chain
unavailable, valid.

One file argument prints the full report (a line per event). Several files, a directory (its
``*.json`` files) or ``-`` (paths on stdin, one a line) verify every bundle in one process and
print one summary line per bundle; ``--json`` prints one JSON object per line in both cases.

This module imports only the verification core (``anchoring.bundle``, ``anchoring.verifier``) and
``anchoring.rpcview``, the standard-library JSON-RPC reader: no web3, SQLAlchemy or FastAPI, so a
verification starts in a small fraction of a second.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from anchoring.bundle import MAX_BUNDLE_BYTES, ProofBundle, parse_bundle
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError, BundleFormatError, NotABundleError
from anchoring.ids import normalize_address
from anchoring.rpcview import HttpJsonRpc, NotaryReader
from anchoring.verifier import Report, Status, verify_bundle
from node.errors import InputError

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE, EXIT_CHAIN_UNAVAILABLE = 0, 1, 2, 3
_EXIT_CODES = {
    Status.VALID: EXIT_VALID,
    Status.INVALID: EXIT_INVALID,
    Status.CHAIN_UNAVAILABLE: EXIT_CHAIN_UNAVAILABLE,
}
_SEVERITY = (EXIT_VALID, EXIT_CHAIN_UNAVAILABLE, EXIT_UNUSABLE, EXIT_INVALID)
"""Exit codes from least to most severe: a definite failure outranks an unusable document,
which outranks a chain that could not be read (as in §7, a definite failure wins)."""
_LABELS = {
    EXIT_VALID: "valid",
    EXIT_INVALID: "invalid",
    EXIT_UNUSABLE: "unusable",
    EXIT_CHAIN_UNAVAILABLE: "chain-unavailable",
}
UNPINNED_WARNING = (
    "warning: the notary address was taken from the bundle itself; pin it with "
    "--notary or --deployment to the consortium's published address"
)


@dataclass(frozen=True)
class Outcome:
    """What became of one bundle: its exit code, and the report or why it was unusable."""

    source: str
    exit_code: int
    report: Report | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One JSON line of ``--json`` output."""
        if self.report is None:
            return {
                "file": self.source,
                "exit_code": self.exit_code,
                "status": "unusable",
                "error": self.error,
            }
        return {"file": self.source, "exit_code": self.exit_code, **self.report.to_json()}

    def summary(self) -> str:
        """One line: outcome, file, archive and the first failure."""
        label = f"{_LABELS[self.exit_code]:<17} {self.source}"
        report = self.report
        if report is None:
            return f"{label}  {self.error}"
        head = f"{label}  archive {report.archive_id}"
        if report.ok:
            return f"{head}  {len(report.entries)} events"
        failure = report.failure
        if failure is None:  # pragma: no cover  (a report that is not ok names its failure)
            return head
        where = f"entry {failure.entry}: " if failure.entry is not None else ""
        return f"{head}  {where}{failure.code.value}: {failure.message}"


class Verifier:
    """Verifies bundles one after the other over one JSON-RPC connection."""

    def __init__(
        self, rpc: HttpJsonRpc, trusted_notary: str | None, *, check_custody: bool
    ) -> None:
        self.rpc = rpc
        self.trusted_notary = trusted_notary
        self.check_custody = check_custody
        self.readers: dict[str, NotaryReader] = {}

    def reader(self, bundle: ProofBundle) -> NotaryReader:
        """The reader of the trusted notary (or, unpinned, of the bundle's own)."""
        notary = self.trusted_notary or bundle.notary
        key = notary.lower()
        if key not in self.readers:
            self.readers[key] = NotaryReader(self.rpc, notary)
        return self.readers[key]

    def verify(self, source: str, path: Path | None) -> Outcome:
        """Read, parse and verify one bundle file (``path`` None: a directory without any)."""
        try:
            raw = _read(path, source)
            bundle = parse_bundle(raw)
        except _Unusable as exc:
            return Outcome(source, EXIT_UNUSABLE, error=str(exc))
        except NotABundleError as exc:
            return Outcome(source, EXIT_UNUSABLE, error=exc.reason)
        except BundleFormatError as exc:
            return Outcome(source, EXIT_UNUSABLE, error=f"malformed bundle: {exc}")
        report = verify_bundle(bundle, self.reader(bundle), check_custody=self.check_custody)
        return Outcome(source, _EXIT_CODES[report.status], report=report)


class _Unusable(Exception):
    """A bundle file could not be read."""


def _read(path: Path | None, source: str) -> bytes:
    if path is None:
        raise _Unusable(f"{source} is a directory without any *.json file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise _Unusable(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BUNDLE_BYTES:
        raise _Unusable(f"{source} is larger than the limit of {MAX_BUNDLE_BYTES} bytes")
    return raw


def _sources(arguments: tuple[str, ...]) -> Iterator[tuple[str, Path | None]]:
    """Each bundle named by the arguments: files as given, a directory's ``*.json`` files in
    name order, and for ``-`` the paths read from stdin (one a line, blank lines skipped). A
    directory without any is yielded with no path (reported as unusable)."""
    for argument in arguments:
        if argument == "-":
            for line in sys.stdin:
                name = line.rstrip("\r\n")
                if name.strip():
                    yield name, Path(name)
            continue
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file())
            yield from ((str(file), file) for file in found)
            if not found:
                yield argument, None
        else:
            yield argument, path


def _trusted_notary(deployment_file: Path | None, notary: str | None) -> str | None:
    if deployment_file is not None and notary is not None:
        raise InputError("give --deployment or --notary, not both")
    try:
        if deployment_file is not None:
            return Deployment.load(deployment_file).notary.address
        if notary is not None:
            return normalize_address(notary)
    except AnchoringError as exc:
        raise InputError(str(exc)) from None
    return None


@click.command()
@click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE...")
@click.option("--rpc", "rpc_url", required=True, help="JSON-RPC endpoint of the consortium chain.")
@click.option(
    "--deployment",
    "deployment_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trusted deployment.json naming the ArchiveNotary address.",
)
@click.option("--notary", help="Trusted ArchiveNotary address (instead of --deployment).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bundle, one a line.")
@click.option(
    "--no-custody", is_flag=True, help="Skip comparing the final state with the on-chain record."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each RPC answer.",
)
def verify(
    bundles: tuple[str, ...],
    rpc_url: str,
    deployment_file: Path | None,
    notary: str | None,
    as_json: bool,
    no_custody: bool,
    timeout: float,
) -> int:
    """Verify proof bundles (archivechain.proof/v1) against the chain.

    BUNDLE is a file, a directory (its *.json files) or - (file paths on stdin). One file prints
    a line per event; several print one line per bundle.

    Exit status: 0 valid, 1 invalid, 2 unusable input, 3 chain unavailable; for several
    bundles the worst (invalid, then unusable, then chain unavailable).
    """
    trusted = _trusted_notary(deployment_file, notary)
    try:
        rpc = HttpJsonRpc(rpc_url, timeout=timeout)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    verifier = Verifier(rpc, trusted, check_custody=not no_custody)
    warning = UNPINNED_WARNING if trusted is None else None
    try:
        if len(bundles) == 1 and bundles[0] != "-" and not Path(bundles[0]).is_dir():
            return _one(verifier, bundles[0], as_json, warning)
        return _many(verifier, bundles, as_json, warning)
    finally:
        rpc.close()


def _one(verifier: Verifier, source: str, as_json: bool, warning: str | None) -> int:
    outcome = verifier.verify(source, Path(source))
    if outcome.report is None:  # unusable input: one line on stderr, exit 2
        if as_json:  # and, as for several bundles, its JSON object on stdout
            click.echo(json.dumps(outcome.to_json()))
        raise InputError(outcome.error or "unusable input")
    if as_json:
        document = outcome.to_json()
        if warning:
            document["warning"] = warning
        click.echo(json.dumps(document))
    else:
        if warning:
            click.echo(warning, err=True)
        click.echo(outcome.report.to_text())
    return outcome.exit_code


def _many(
    verifier: Verifier, arguments: tuple[str, ...], as_json: bool, warning: str | None
) -> int:
    if warning:
        click.echo(warning, err=True)
    counts: Counter[int] = Counter()
    for source, path in _sources(arguments):
        outcome = verifier.verify(source, path)
        counts[outcome.exit_code] += 1
        click.echo(json.dumps(outcome.to_json()) if as_json else outcome.summary())
    if not counts:
        raise InputError("no bundle to verify (stdin named no file)")
    total = sum(counts.values())
    click.echo(
        f"{total} bundle{'s' if total != 1 else ''}: "
        + ", ".join(
            f"{counts[code]} {_LABELS[code]}" for code in reversed(_SEVERITY) if counts[code]
        ),
        err=True,
    )
    return max(counts, key=_SEVERITY.index)
