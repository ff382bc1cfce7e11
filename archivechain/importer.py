"""``archivechain import DIR --manifest FILE --node URL --api-key-file F``: legacy backfill.

The manifest lists the files of ``DIR`` to send, as CSV (a header row) or JSON (a list of
objects), with the same fields:

- ``file`` (required): path relative to ``DIR`` (never outside it);
- ``patient_id`` (required), ``title`` (default: the file name);
- ``class_hint`` (a record class such as ``INPATIENT`` or a Chinese label such as ``住院病历``),
  ``department``, ``encounter_id``, ``trigger_date`` (YYYY-MM-DD), ``media_type`` (default from
  the file name).

The whole manifest is checked before anything is sent (a bad row: exit 2 with one line). Each file
goes through the node's ingestion path with ``sha256:<hash of the file>`` as its message id, so
running the import again stores nothing twice. Files are sent ``--batch`` at a time (default 250)
to ``POST /api/v1/ingest/documents/batch``, ``--parallel`` requests at once (default 2), each
batch one transaction on the node. One bad file refuses a whole batch, storing nothing; when
the refusal names the file (a 4xx other than 413 with ``details.index``, or a schema error on one
``body.metadata.<index>``), that file is reported and the others are sent again as a batch;
otherwise, and from the fourth named refusal in one group, the remaining files go one by one to
``POST /api/v1/ingest/documents``, so the good files go in and each refusal is reported. The counts (imported, already present, failed) are printed at the end; exit 1 if any file
failed. The first error (a refused key, an unreachable node) stops the import: no request is
sent after it, the ones in flight are waited for, and the counts printed before the error line
(``… (stopped after N of M files)``) hold every file the node answered, N of them — including
those of groups in flight beside the failing one and the files a group had sent before its
error; the files of the failed requests and those never sent are not in N.
A progress line (files done, files/s, ETA) goes to standard error: redrawn on a terminal, every
5 seconds otherwise. ``--dry-run`` checks the manifest, reads and hashes every file and prints
what would be sent (files, bytes, requests, repeated contents) without contacting the node.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mimetypes
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

from node.errors import InputError, NodeError, UnavailableError

FIELDS = (
    "file",
    "patient_id",
    "title",
    "class_hint",
    "department",
    "encounter_id",
    "trigger_date",
    "media_type",
)
ROUTE = "/api/v1/ingest/documents"
BATCH_ROUTE = "/api/v1/ingest/documents/batch"
DEFAULT_BATCH = 250
MAX_BATCH = 500
"""The node's limit of documents per batch (``api.routes.ingest.MAX_BATCH_DOCUMENTS``)."""
DEFAULT_PARALLEL = 2
MAX_PARALLEL = 8
NAMED_REFUSALS = 3
"""Refused documents a group's batches may name and resend without before its other files go one
by one (a refused batch can cost the node most of a whole batch's work: PDF text, OCR)."""
BATCH_BYTES = 32 * 1024 * 1024
"""A batch is cut before its files pass this many bytes (memory, and the node's body limit)."""


@dataclass(frozen=True)
class Refused:
    """The node's refusal of a batch: status, error code, and the position of the document that
    caused it (None when the refusal is not one document's)."""

    status: int
    code: str
    index: int | None


class Interrupted(Exception):
    """An error (``error``) that stopped a group after the node had answered some of its files:
    ``settled`` maps their positions in the group to (HTTP status, error code), so they are
    counted although the group did not finish."""

    def __init__(self, error: Exception, settled: dict[int, tuple[int, str]]):
        super().__init__(error)
        self.error = error
        self.settled = settled


@dataclass
class Outcome:
    """What an import did so far: files imported, already present, and refused (file, code)."""

    imported: int = 0
    present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.imported + self.present + len(self.failed)

    def summary(self) -> str:
        return (
            f"imported {self.imported}, already present {self.present}, failed {len(self.failed)}"
        )


@dataclass(frozen=True)
class Row:
    path: Path
    metadata: dict[str, Any]
    media_type: str


Prepared = tuple[Row, bytes, dict[str, Any]]
"""A row with its file's bytes and its metadata (the message id is the bytes' hash)."""


def read_manifest(directory: Path, manifest: Path, source: str) -> list[Row]:
    """The manifest's rows, checked (InputError naming the row on the first problem)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {type(exc).__name__}") from None
    if manifest.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"manifest is not valid JSON (line {exc.lineno})") from None
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise InputError("a JSON manifest must be a list of objects")
        records: list[dict[str, Any]] = raw
    elif manifest.suffix.lower() == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        raise InputError("the manifest must be a .csv or .json file")
    if not records:
        raise InputError("the manifest lists no file")
    root = directory.resolve()
    rows: list[Row] = []
    for number, record in enumerate(records, start=1):
        rows.append(_row(root, number, record, source))
    return rows


def _row(root: Path, number: int, record: dict[str, Any], source: str) -> Row:
    where = f"manifest row {number}"
    unknown = set(record) - set(FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field {sorted(str(u) for u in unknown)[0]!r}")
    values = {k: v for k, v in record.items() if v not in (None, "")}
    if not all(isinstance(v, str) for v in values.values()):
        raise InputError(f"{where}: every field must be text")
    for required in ("file", "patient_id"):
        if required not in values:
            raise InputError(f"{where}: {required} is required")
    path = (root / values["file"]).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"{where}: the file is outside the import directory")
    if not path.is_file():
        raise InputError(f"{where}: no such file in the import directory")
    if "trigger_date" in values:
        try:
            date.fromisoformat(values["trigger_date"])
        except ValueError:
            raise InputError(f"{where}: trigger_date must be YYYY-MM-DD") from None
    media_type = values.get("media_type") or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    metadata: dict[str, Any] = {
        "patient_id": values["patient_id"],
        "source_system": source,
        "title": values.get("title") or path.name,
    }
    for name in ("class_hint", "department", "encounter_id", "trigger_date"):
        if name in values:
            metadata[name] = values[name]
    return Row(path, metadata, media_type)


def send(
    client: httpx.Client,
    rows: list[Row],
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    parallel: int = 1,
    outcome: Outcome | None = None,
) -> tuple[int, int, list[tuple[str, str]]]:
    """Send every row: (imported, already present, [(file, error code)]). Rows go ``batch`` at a
    time through the batch route (one transaction each); a refused batch is sent again without
    the file it names, or one file at a time (``_send_batched``), so its good files go in and
    each refusal is reported with its own code.

    ``parallel`` groups are in flight at once (each read, hashed and sent by its own thread over
    the shared client): the node stores one group's blobs while it commits another's, and this
    process reads files meanwhile. Groups are counted in order. The first error (a refused key,
    an unreachable node) stops the import: no group is sent after it, the groups already in
    flight (before or after the failing one) are waited for, and every file the node answered is
    counted — those groups' files, and the files the failing group (or another stopped one) had
    settled before its error; then that first error (in manifest order) is raised. Files whose
    request failed, and those never sent, are not counted (the requests are idempotent, so a
    rerun finds what went in). ``progress`` is told after each group how many of its files were
    counted; ``outcome`` (if given) holds the counts so far, also when an error stops the
    import."""
    done = outcome if outcome is not None else Outcome()
    first_error: Exception | None = None

    def tally(results: list[tuple[Row, int, str]]) -> None:
        for row, status, code in results:
            if status == 201:
                done.imported += 1
            elif status == 200:
                done.present += 1
            else:
                done.failed.append((row.path.name, code))
        if progress is not None and results:
            progress.advance(len(results))

    def settle(group: list[Row], future: Future[list[tuple[Row, int, str]]]) -> None:
        """Count what ``group``'s answers say, also when an error stopped it (kept if first)."""
        nonlocal first_error
        error: Exception | None = None
        try:
            results = future.result()
        except Interrupted as exc:
            results = [(group[i], *exc.settled[i]) for i in sorted(exc.settled)]
            error = exc.error
        except Exception as exc:
            results, error = [], exc
        tally(results)
        if first_error is None:
            first_error = error

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="import") as pool:
        in_flight: deque[tuple[list[Row], Future[list[tuple[Row, int, str]]]]] = deque()
        try:
            for group in _groups(rows, batch):
                if first_error is not None:
                    break
                in_flight.append((group, pool.submit(_send_group, client, group)))
                if len(in_flight) >= parallel:
                    settle(*in_flight.popleft())
            while in_flight:
                settle(*in_flight.popleft())
        except BaseException:
            for _, future in in_flight:
                future.cancel()
            raise
    if first_error is not None:
        raise first_error
    return done.imported, done.present, done.failed


def _send_group(client: httpx.Client, group: list[Row]) -> list[tuple[Row, int, str]]:
    """Read, hash and send one group: (row, HTTP status, error code) per file (``Interrupted``
    if an error stops the group after the node answered some of its files)."""
    prepared = [_prepare(row) for row in group]
    results = _send_batched(client, prepared)
    return [
        (row, status, code) for (row, _, _), (status, code) in zip(prepared, results, strict=True)
    ]


def _send_batched(client: httpx.Client, prepared: list[Prepared]) -> list[tuple[int, str]]:
    """(status, code) per file of a group, sent as batches while that pays.

    The node refuses a batch as a whole; a refusal caused by one document names it (see
    ``_refused_index``). That document is reported with the refusal (the node checks each
    document's fields before it answers a duplicate or stores anything, so sent alone it would
    get the same answer) and the others are sent again as one batch. A refusal that names no
    document (503, a body over the limit), or a fourth named refusal in one group (past
    ``NAMED_REFUSALS``, that document reported too), sends the group's remaining files one by
    one; a single file left goes alone.

    An error (a refused key, an unreachable node) ends the group: it is raised as
    ``Interrupted`` with the answers the group already had (refusals named by a batch, files
    sent one by one before it), so those are counted."""
    outcome: dict[int, tuple[int, str]] = {}
    try:
        pending = list(range(len(prepared)))
        named = 0
        while len(pending) > 1 and named <= NAMED_REFUSALS:
            answer = _send_batch(client, [prepared[i] for i in pending])
            if isinstance(answer, list):
                outcome.update(zip(pending, answer, strict=True))
                pending = []
            elif answer.index is None:
                break
            else:
                outcome[pending.pop(answer.index)] = (answer.status, answer.code)
                named += 1
        for i in pending:
            outcome[i] = _send_one(client, *prepared[i])
    except Exception as exc:
        raise Interrupted(exc, outcome) from exc
    return [outcome[i] for i in range(len(prepared))]


class Progress:
    """Files done, rate and ETA on standard error: redrawn in place on a terminal; elsewhere (a
    log, CI) one line at most every ``every`` seconds, and always the last one."""

    def __init__(
        self, total: int, *, every: float = 5.0, clock: Callable[[], float] = time.monotonic
    ):
        self.total = total
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._every = every
        self._shown = -every
        self._tty = sys.stderr.isatty()

    def line(self) -> str:
        """``done/total files  rate files/s  ETA h:mm:ss`` (ETA ``?`` before the first file)."""
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        remaining = self.total - self.done
        eta = str(timedelta(seconds=round(remaining / rate))) if rate > 0 else "?"
        percent = 100 * self.done // max(self.total, 1)
        return f"{self.done:,}/{self.total:,} files ({percent}%)  {rate:,.0f} files/s  ETA {eta}"

    def advance(self, files: int) -> None:
        self.done += files
        now = self._clock() - self._started
        last = self.done >= self.total
        if self._tty:
            click.echo("\r" + self.line(), nl=last, err=True)
        elif last or now - self._shown >= self._every:
            self._shown = now
            click.echo(self.line(), err=True)


def _groups(rows: list[Row], batch: int) -> list[list[Row]]:
    """``rows`` in groups of at most ``batch`` rows and ``BATCH_BYTES`` of content."""
    groups: list[list[Row]] = []
    current: list[Row] = []
    size = 0
    for row in rows:
        length = row.path.stat().st_size
        if current and (len(current) >= batch or size + length > BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(row)
        size += length
    if current:
        groups.append(current)
    return groups


def _prepare(row: Row) -> Prepared:
    content = row.path.read_bytes()
    metadata = {**row.metadata, "message_id": "sha256:" + hashlib.sha256(content).hexdigest()}
    return row, content, metadata


def _refused_index(response: httpx.Response, count: int) -> int | None:
    """The position of the document a batch refusal names, if it names one that the same
    document sent alone would get too: ``details.index`` of a 4xx answer other than 413 (a body
    over the limit may be the batch's size, not the document's), or the index in the ``loc`` of
    a schema error (``body.metadata.<index>``)."""
    if not 400 <= response.status_code < 500 or response.status_code == 413:
        return None
    try:
        body = response.json()
        details = body.get("details") or {}
        index = details.get("index")
        if index is None and body.get("code") == "validation_error":
            locations = {tuple(error["loc"][:3]) for error in details["errors"]}
            if len(locations) == 1:
                place, field, index = next(iter(locations))
                index = index if (place, field) == ("body", "metadata") else None
    except (ValueError, AttributeError, KeyError, TypeError, IndexError):
        return None
    if type(index) is not int or not 0 <= index < count:
        return None
    return index


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", response.status_code))
    except (ValueError, AttributeError):
        return str(response.status_code)


def _refused_key(response: httpx.Response) -> None:
    if response.status_code in (401, 403):
        raise InputError(f"the node refused the API key ({_code(response)})")


def _send_one(
    client: httpx.Client, row: Row, content: bytes, metadata: dict[str, Any]
) -> tuple[int, str]:
    """(HTTP status, error code) of one file sent alone."""
    response = client.post(
        ROUTE,
        files={"file": (row.path.name, content, row.media_type)},
        data={"metadata": json.dumps(metadata, ensure_ascii=False)},
    )
    if response.status_code in (200, 201):
        return response.status_code, ""
    _refused_key(response)
    return response.status_code, _code(response)


def _send_batch(client: httpx.Client, prepared: list[Prepared]) -> list[tuple[int, str]] | Refused:
    """(status, code) per file of a batch stored as one unit, or the node's refusal (nothing of
    the batch was stored)."""
    response = client.post(
        BATCH_ROUTE,
        files=[("file", (row.path.name, content, row.media_type)) for row, content, _ in prepared],
        data={"metadata": json.dumps([m for _, _, m in prepared], ensure_ascii=False)},
    )
    if response.status_code not in (200, 201):
        _refused_key(response)
        return Refused(
            response.status_code, _code(response), _refused_index(response, len(prepared))
        )
    try:
        documents = response.json()["documents"]
        if len(documents) != len(prepared):
            raise ValueError(len(documents))
        return [(200 if d["duplicate"] else 201, "") for d in documents]
    except (ValueError, KeyError, TypeError):
        raise UnavailableError("the node's answer to a batch is not one entry per file") from None


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--manifest",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON manifest (see docs/ingestion.md).",
)
@click.option("--node", "node_url", help="Base URL of the hospital node (not with --dry-run).")
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding an archivist API key (not with --dry-run).",
)
@click.option("--source", default="legacy-import", show_default=True, help="Source system code.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per request.")
@click.option(
    "--batch",
    default=DEFAULT_BATCH,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH),
    help="Files per request (one transaction on the node); 1 sends each file alone.",
)
@click.option(
    "--parallel",
    default=DEFAULT_PARALLEL,
    show_default=True,
    type=click.IntRange(1, MAX_PARALLEL),
    help="Requests in flight at once (the node stores one batch while it commits another).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the manifest and read every file, print what would be sent; send nothing.",
)
def import_command(
    directory: Path,
    manifest: Path,
    node_url: str | None,
    api_key_file: Path | None,
    source: str,
    timeout: float,
    batch: int,
    parallel: int,
    dry_run: bool,
) -> int:
    """Backfill legacy files through the node's ingestion path (idempotent by file hash)."""
    if dry_run:
        rows = read_manifest(directory, manifest, source)
        click.echo(dry_run_summary(rows, batch))
        return 0
    if not node_url or api_key_file is None:
        raise InputError("--node and --api-key-file are required (unless --dry-run)")
    try:
        key = api_key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise InputError("cannot read the API key file") from None
    if not key or any(c.isspace() for c in key):
        raise InputError("the API key file must hold one key")
    rows = read_manifest(directory, manifest, source)
    headers = {"Authorization": f"Bearer {key}"}
    outcome = Outcome()
    try:
        with httpx.Client(base_url=node_url, headers=headers, timeout=timeout) as client:
            send(client, rows, batch, Progress(len(rows)), parallel, outcome)
    except (httpx.HTTPError, NodeError) as exc:
        if outcome.done:  # every file the node answered (see ``send``), then the error
            _report(outcome, f" (stopped after {outcome.done} of {len(rows)} files)")
        if isinstance(exc, httpx.HTTPError):
            raise UnavailableError(f"cannot reach the node: {type(exc).__name__}") from None
        raise
    _report(outcome)
    return 1 if outcome.failed else 0


def _report(outcome: Outcome, tail: str = "") -> None:
    """Each refused file on stderr, then the counts on stdout."""
    for name, code in outcome.failed:
        click.echo(f"failed: {name}: {code}", err=True)
    click.echo(outcome.summary() + tail)


def dry_run_summary(rows: list[Row], batch: int) -> str:
    """What an import of ``rows`` would send, from the files themselves (each read and hashed,
    so an unreadable file is found now): files, bytes, requests, and files whose content an
    earlier row already lists (the node would answer them "already present")."""
    seen: set[str] = set()
    repeated = size = 0
    for row in rows:
        try:
            content = row.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {row.path.name}: {type(exc).__name__}") from None
        size += len(content)
        digest = hashlib.sha256(content).hexdigest()
        repeated += digest in seen
        seen.add(digest)
    requests = len(_groups(rows, batch))
    return (
        f"dry run: {len(rows)} files, {size:,} bytes, in {requests} requests of at most "
        f"{batch} files; {repeated} repeat an earlier file's content; nothing sent"
    )
