"""``archivechain import DIR --manifest FILE --node URL --api-key-file F``: legacy backfill.

The manifest lists the files of ``DIR`` to send, as CSV (a header row) or JSON (a list of
objects), with the same fields:

- ``file`` (required): path relative to ``DIR`` (never outside it);
- ``patient_id`` (required), ``title`` (default: the file name);
- ``class_hint`` (a record class such as ``INPATIENT`` or a Chinese label such as ``住院病历``),
  ``department``, ``encounter_id``, ``trigger_date`` (YYYY-MM-DD), ``media_type`` (default from
  the file name).

The whole manifest is checked before anything is sent (a bad row: exit 2 with one line). Each file
goes through the node's ingestion path (``POST /api/v1/ingest/documents``) with
``sha256:<hash of the file>`` as its message id, so running the import again stores nothing
twice. The counts (imported, already present, failed) are printed at the end; exit 1 if any file
failed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import click
import httpx

from node.errors import InputError, UnavailableError

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


@dataclass(frozen=True)
class Row:
    path: Path
    metadata: dict[str, Any]
    media_type: str


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


def send(client: httpx.Client, rows: list[Row]) -> tuple[int, int, list[tuple[str, str]]]:
    """Send every row: (imported, already present, [(file, error code)])."""
    imported = present = 0
    failed: list[tuple[str, str]] = []
    for row in rows:
        content = row.path.read_bytes()
        metadata = {**row.metadata, "message_id": "sha256:" + hashlib.sha256(content).hexdigest()}
        response = client.post(
            ROUTE,
            files={"file": (row.path.name, content, row.media_type)},
            data={"metadata": json.dumps(metadata, ensure_ascii=False)},
        )
        if response.status_code == 201:
            imported += 1
        elif response.status_code == 200:
            present += 1
        else:
            try:
                code = str(response.json().get("code", response.status_code))
            except ValueError:
                code = str(response.status_code)
            failed.append((row.path.name, code))
            if response.status_code in (401, 403):
                raise InputError(f"the node refused the API key ({code})")
    return imported, present, failed


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--manifest",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON manifest (see docs/ingestion.md).",
)
@click.option("--node", "node_url", required=True, help="Base URL of the hospital node.")
@click.option(
    "--api-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding an archivist API key.",
)
@click.option("--source", default="legacy-import", show_default=True, help="Source system code.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per request.")
def import_command(
    directory: Path, manifest: Path, node_url: str, api_key_file: Path, source: str, timeout: float
) -> int:
    """Backfill legacy files through the node's ingestion path (idempotent by file hash)."""
    try:
        key = api_key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise InputError("cannot read the API key file") from None
    if not key or any(c.isspace() for c in key):
        raise InputError("the API key file must hold one key")
    rows = read_manifest(directory, manifest, source)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=node_url, headers=headers, timeout=timeout) as client:
            imported, present, failed = send(client, rows)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"cannot reach the node: {type(exc).__name__}") from None
    for name, code in failed:
        click.echo(f"failed: {name}: {code}", err=True)
    click.echo(f"imported {imported}, already present {present}, failed {len(failed)}")
    return 1 if failed else 0
