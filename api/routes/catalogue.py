"""Batch archiving and the archive catalogue (档案目录).

``POST /archives/batch-archive`` archives a list of records, or every CREATED record ingested
for an encounter, in one unit through ``ArchiveService.archive_many``: all or nothing, and a
refusal names every failing id with its code. ``GET /catalogue`` lists the caller's visible
archives as catalogue entries — class, state, dates, department, sensitivity; never titles,
metadata or patient ids — as JSON pages or, with ``format=csv``, as CSV.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anchoring.events import Purpose, RecordClass, Sensitivity
from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import (
    ARCHIVE_ID_PATTERN,
    CURSOR_FIELD,
    MAX_OFFSET,
    NEXT_CURSOR_FIELD,
    NO_CONTROL_PATTERN,
    ArchiveOut,
    CalendarDate,
    Code,
    PageCursor,
    Reason,
    SearchText,
    UtcDateTime,
)
from node.errors import InputError
from node.models import CatalogueState
from node.services.archives import MAX_PAGE, SearchFilters
from node.services.records import ArchiveView

MAX_BATCH = 500
"""Most archive ids one batch may name (one unit, one transaction)."""

batch_router = APIRouter(prefix="/archives", tags=["archives"])
router = APIRouter(prefix="/catalogue", tags=["catalogue"])

ArchiveId = Annotated[str, StringConstraints(pattern=ARCHIVE_ID_PATTERN)]
EncounterRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]
PatientRef = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROL_PATTERN
    ),
]


class _Strict(BaseModel):
    """Unknown fields and query parameters are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class BatchArchiveIn(_Strict):
    """Body of ``POST /archives/batch-archive``: ``archive_ids`` or ``encounter``, not both."""

    archive_ids: list[ArchiveId] | None = Field(
        default=None, min_length=1, max_length=MAX_BATCH, description="Archives to archive."
    )
    encounter: EncounterRef | None = Field(
        default=None,
        description="Encounter (visit) id as the source system sent it: its CREATED records.",
    )
    trigger_date: CalendarDate | None = Field(
        default=None, description="Retention runs from this day (default: each record's own)."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> BatchArchiveIn:
        if (self.archive_ids is None) == (self.encounter is None):
            raise ValueError("give either archive_ids or encounter")
        return self


class ReclassifyIn(_Strict):
    """Body of ``POST /archives/{id}/reclassify``: the corrected class and/or sensitivity and
    why (the reason stays on this node; the RECLASSIFY event carries its SHA-256)."""

    record_class: RecordClass | None = Field(default=None, description="The corrected class.")
    sensitivity: Sensitivity | None = Field(default=None, description="The corrected grade.")
    reason: Reason = Field(examples=["LOINC type was wrong: this is a lab report"])

    @model_validator(mode="after")
    def _something(self) -> ReclassifyIn:
        if self.record_class is None and self.sensitivity is None:
            raise ValueError("give record_class, sensitivity or both")
        return self


class BatchArchiveOut(BaseModel):
    """The archives archived by the batch (all of those named, or none and a 409)."""

    archived: list[ArchiveOut]


class CatalogueQuery(_Strict):
    """Query of ``GET /catalogue``; unknown parameters are refused."""

    record_class: RecordClass | None = None
    state: CatalogueState | None = None
    department: Code | None = None
    patient_id: PatientRef | None = Field(
        default=None,
        description="The patient's id as hospital systems send it: matched through the node's "
        "keyed pseudonym; never stored, logged or returned.",
    )
    encounter: EncounterRef | None = Field(
        default=None, description="Encounter (visit) id: the records ingested for it."
    )
    text: SearchText | None = Field(
        default=None,
        description="Words and Chinese text of the title, metadata and extracted text "
        "(PDF text layer, FHIR narrative, HL7 text): every term must match.",
    )
    created_from: UtcDateTime | None = Field(default=None, description="Created at or after.")
    created_to: UtcDateTime | None = Field(default=None, description="Created before.")
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    cursor: PageCursor | None = CURSOR_FIELD
    purpose: Purpose | None = None
    format: Literal["json", "csv"] = "json"


class CatalogueEntryOut(BaseModel):
    """One catalogue entry: no title, metadata, patient id or pseudonym."""

    id: str
    record_class: RecordClass
    state: CatalogueState
    sensitivity: Sensitivity
    department: str
    source_system: str
    trigger_date: date
    created_at: datetime
    archived_at: datetime | None
    retention_policy: str | None
    retention_deadline: datetime | None
    on_hold: bool

    @classmethod
    def of(cls, view: ArchiveView) -> CatalogueEntryOut:
        return cls(
            id=view.id,
            record_class=RecordClass(view.record_class),
            state=CatalogueState(view.state),
            sensitivity=Sensitivity(view.sensitivity),
            department=view.department,
            source_system=view.source_system,
            trigger_date=view.trigger_date.date(),
            created_at=view.created_at,
            archived_at=view.archived_at,
            retention_policy=view.retention_policy,
            retention_deadline=view.retention_deadline,
            on_hold=view.on_hold,
        )


class CataloguePageOut(BaseModel):
    """One page of the catalogue."""

    items: list[CatalogueEntryOut]
    total: int
    limit: int
    offset: int
    total_exact: bool = True  # false: the search counted up to its cap; at least `total`
    next_cursor: str | None = NEXT_CURSOR_FIELD


CSV_COLUMNS = tuple(CatalogueEntryOut.model_fields)


@batch_router.post(
    "/batch-archive",
    response_model=BatchArchiveOut,
    summary="Archive several records at once (all or nothing)",
    description=(
        "JSON body: `archive_ids` (1 to 500 ids) or `encounter` (every CREATED record ingested "
        "for that encounter), optional `trigger_date`. One unit: if any record cannot be "
        "archived (not found or out of scope, wrong state, on hold…) nothing is, and the 409 "
        "`batch_refused` lists every failing id with its code in `details.failed`. "
        "Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
)
def batch_archive(
    runtime: RuntimeDep, principal: PrincipalDep, body: BatchArchiveIn
) -> BatchArchiveOut:
    if body.encounter is not None:
        ids = runtime.ingestion.encounter_archives(body.encounter, state="CREATED")
    else:
        ids = list(body.archive_ids or [])
    # The role is checked first (an empty list included), so an encounter's records are never
    # revealed to a caller who may not archive.
    views = runtime.archives.archive_many(principal, ids, body.trigger_date)
    if not views:
        raise InputError(
            "the encounter has no record waiting to be archived", code="encounter_empty"
        )
    return BatchArchiveOut(archived=[ArchiveOut.of(view) for view in views])


@batch_router.post(
    "/{archive_id}/reclassify",
    response_model=ArchiveOut,
    summary="Correct the class or sensitivity the ingestion rules gave a record",
    description=(
        "An archivist's correction, logged as a RECLASSIFY event (docs/proof-format.md §8): "
        "while the record is CREATED or ARCHIVED. An archived record's class changes only toward "
        "a retention at least as long (409 `retention_would_shorten`), with a RETENTION_EXTEND "
        "when the new class keeps it longer; other states: 409 `illegal_transition`. The "
        "archive's `class_rule` / "
        "`sensitivity_rule` become `correction`. 409 `no_change` when both equal the current "
        "ones. The reason stays on this node; the event carries its hash. Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
)
def reclassify(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: Annotated[str, Path(pattern=ARCHIVE_ID_PATTERN)],
    body: ReclassifyIn,
) -> ArchiveOut:
    view = runtime.ingestion.reclassify(
        principal,
        archive_id,
        record_class=body.record_class,
        sensitivity=body.sensitivity,
        reason=body.reason,
    )
    return ArchiveOut.of(view)


@router.get(
    "",
    response_model=CataloguePageOut,
    summary="The archive catalogue (档案目录), JSON or CSV",
    description=(
        "The caller's visible archives, newest first: class, state, sensitivity, department, "
        "dates, retention — never titles, metadata or patient ids. Filters combine with AND; "
        "`patient_id` is matched through the node's keyed pseudonym (one patient's catalogue) "
        "and `encounter` through the encounter's. "
        "`format=csv` answers the same page as `text/csv` (header row; total in "
        "`X-Total-Count`, the next page's cursor in `X-Next-Cursor`). Page with `offset`, or with "
        "`cursor` as for `GET /archives` (400 `invalid_cursor`, 400 `invalid_page` with both). "
        "Listing counts as a metadata read (ACCESS), as for `GET /archives`. "
        "Roles: archivist, clinician (own department), auditor."
    ),
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **error_responses(400, 401, 403, 422, 503),
    },
)
def catalogue(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[CatalogueQuery, Query()]
) -> CataloguePageOut | Response:
    page = runtime.archives.search(
        principal,
        SearchFilters(
            record_class=query.record_class,
            department=query.department,
            patient_id=query.patient_id,
            encounter=query.encounter,
            text=query.text,
            state=query.state.value if query.state is not None else None,
            created_from=query.created_from,
            created_to=query.created_to,
            limit=query.limit,
            offset=query.offset,
            cursor=query.cursor,
            purpose=query.purpose,
        ),
    )
    entries = [CatalogueEntryOut.of(view) for view in page.items]
    if query.format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for entry in entries:
            row = entry.model_dump(mode="json")
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        headers = {
            "X-Total-Count": str(page.total),
            "X-Total-Exact": "true" if page.total_exact else "false",
        }
        if page.next_cursor is not None:
            headers["X-Next-Cursor"] = page.next_cursor
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    return CataloguePageOut(
        items=entries,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        total_exact=page.total_exact,
        next_cursor=page.next_cursor,
    )
