"""Every enumerated string column is wide enough for every value the code writes to it, and every
column written from a checked input is as wide as the longest input the checks accept.

SQLite does not enforce ``VARCHAR(n)``; PostgreSQL refuses a longer value, so a state one
character too long works in every SQLite test and fails in production on PostgreSQL (as
``transfers.state`` did with ``accepted_on_chain``, migration 0019). The table below names each
column with the values written to it; the second test makes a new enumerated column join it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import get_args

import pytest
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Column, String

import node.models  # registers the node tables
from anchoring.events import Code, EventType, TagKind
from anchoring.storage import CheckpointState, OutboxState, metadata
from anchoring.worker import CALL_KIND
from api import schemas
from node import dicom, fhir, hl7v2
from node.alerts import Severity
from node.models import (
    CatalogueState,
    ChainStatus,
    DispositionDecision,
    TransferDirection,
    TransferState,
)
from node.principal import Role
from node.services import ingestion, notices, replicas
from node.services.permissions import Origin
from node.services.quality import QcTrigger
from node.services.retention import RetentionCause
from node.services.tags import ScanRefusal
from node.services.webhooks import DeliveryState


def _values(holder: type) -> list[str]:
    """The string constants of a plain class used as a namespace of column values."""
    return [v for k, v in vars(holder).items() if k.isupper() and isinstance(v, str)]


COLUMN_VALUES: dict[str, Iterable[str]] = {
    "archives.state": [s.value for s in CatalogueState],
    "archives.chain_status": [s.value for s in ChainStatus],
    "transfers.direction": [d.value for d in TransferDirection],
    "transfers.state": [s.value for s in TransferState],
    "disposition_items.decision": [d.value for d in DispositionDecision],
    "webhook_deliveries.state": _values(DeliveryState),
    "replicas.state": [replicas.ACTIVE, replicas.FAILED, replicas.DROPPED],
    "destruction_notices.state": [notices.PENDING, notices.DELIVERED, notices.REFUSED],
    "alerts.severity": [s.value for s in Severity],
    "api_keys.role": [r.value for r in Role],
    "member_tokens.role": [r.value for r in Role],
    "access_denials.origin": _values(Origin),
    "access_denials.role": [r.value for r in Role],
    "qc_results.trigger": get_args(QcTrigger),
    "tags.kind": [k.value for k in TagKind],
    "tag_scan_refusals.reason": get_args(ScanRefusal),
    "retention_changes.cause": get_args(RetentionCause),
    "log_entries.event_type": [e.value for e in EventType],
    "chain_outbox.kind": [CALL_KIND],
    "chain_outbox.state": [s.value for s in OutboxState],
    "checkpoints.state": [s.value for s in CheckpointState],
}

FREE_FORM = {"ingested_messages.kind"}
"""Named like an enumeration but derived from the message (e.g. ``hl7-oru-r01``) and cut to the
column's width where it is written (``IngestionService.remember_message``)."""

ENUMERATED_NAMES = {"state", "status", "chain_status", "direction", "decision", "role", "origin"}
ENUMERATED_NAMES |= {"severity", "trigger", "cause", "reason", "kind", "event_type"}


def _column(name: str) -> Column[object]:
    table, column = name.split(".")
    return metadata.tables[table].c[column]


@pytest.mark.parametrize("name", sorted(COLUMN_VALUES))
def test_every_value_fits_its_column(name: str) -> None:
    column = _column(name)
    assert isinstance(column.type, String), f"{name} is not a string column"
    width = column.type.length
    values = list(COLUMN_VALUES[name])
    assert values, f"no values listed for {name}"
    too_long = [v for v in values if width is not None and len(v) > width]
    assert not too_long, f"{name} is VARCHAR({width}) but the code writes {too_long}"


def test_every_short_enumerated_column_is_listed() -> None:
    """A short string column named like an enumeration (state, kind, role …) must be in the table
    above, so its values are checked against its width."""
    assert node.models.Transfer.__tablename__ in metadata.tables
    unlisted = sorted(
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if column.name in ENUMERATED_NAMES
        and isinstance(column.type, String)
        and column.type.length is not None
        and column.type.length <= 32
        and f"{table.name}.{column.name}" not in COLUMN_VALUES.keys() | FREE_FORM
    )
    assert unlisted == []


def _accepts(check: Callable[[str], object]) -> Callable[[str], bool]:
    def accepted(value: str) -> bool:
        try:
            check(value)
        except (ValidationError, ValueError):
            return False
        return True

    return accepted


def _schema(annotation: object) -> Callable[[str], bool]:
    return _accepts(TypeAdapter(annotation).validate_python)


def _pattern(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None


def _longest(accepted: Callable[[str], bool]) -> int:
    """The length of the longest run of ``a`` that ``accepted`` takes (up to 1024)."""
    return max(n for n in range(1, 1025) if accepted("a" * n))


INPUT_CHECKS: dict[str, list[Callable[[str], bool]]] = {
    "archives.source_system": [
        _schema(schemas.Code),  # POST /archives, /ingest/documents
        _schema(Code),  # the CREATE event
        _pattern(ingestion._CODE),  # the ingestion service
        _pattern(fhir._CODE),  # meta.source
        _pattern(hl7v2._CODE),  # MSH-3
        _pattern(dicom._CODE),  # the calling AE title
    ],
    "ingested_messages.source_system": [_pattern(ingestion._CODE)],
    "archives.department": [_schema(schemas.Code), _pattern(ingestion._CODE)],
    "archives.title": [_schema(schemas.Title), lambda v: len(v) <= ingestion.MAX_TITLE],
    "archive_versions.filename": [_schema(schemas.FileName)],
    "ingested_messages.message_id": [lambda v: len(v) <= ingestion.MAX_MESSAGE_ID],
    "api_keys.name": [_schema(schemas.KeyName)],
}
"""Free-form columns and the checks of what is written to them (a value any check accepts can
reach the column)."""


@pytest.mark.parametrize("name", sorted(INPUT_CHECKS))
def test_every_accepted_input_fits_its_column(name: str) -> None:
    """PostgreSQL refuses a value longer than its ``VARCHAR(n)`` (an internal error at the
    request); SQLite stores it. ``archives.source_system`` was 32 wide for 64-character codes."""
    column = _column(name)
    assert isinstance(column.type, String), name
    assert column.type.length is not None, name
    longest = max(_longest(check) for check in INPUT_CHECKS[name])
    assert longest <= column.type.length, (
        f"{name} is VARCHAR({column.type.length}) but accepts {longest} characters"
    )
