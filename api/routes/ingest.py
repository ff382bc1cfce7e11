"""Generic documents into the ingestion path: ``POST /ingest/documents`` (multipart).

For systems (and the legacy backfill, ``archivechain import``) that send plain files rather than
FHIR, HL7 or DICOM: the file plus a JSON ``metadata`` part naming the patient, the source system
and its message id (the idempotency key), optional class hint, department, encounter, dates. The
document is classified and graded like every ingested record; a resent message id answers the
archive it already is (200, ``duplicate: true``), a new one 201.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from anchoring.events import RecordClass
from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.routes.archives import MultipartOnly
from api.schemas import CODE_PATTERN, CalendarDate
from node.classification import SourceHints
from node.errors import InputError
from node.services.ingestion import IncomingDocument

router = APIRouter(prefix="/ingest", tags=["ingestion"])

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class DocumentIn(BaseModel):
    """The ``metadata`` part of ``POST /ingest/documents``."""

    model_config = ConfigDict(extra="forbid")

    patient_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    source_system: Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
    message_id: Short = Field(description="The source's id of this document (idempotency key).")
    title: Short
    class_hint: Short | None = Field(
        default=None, description="A record class (INPATIENT…) or a Chinese label (住院病历…)."
    )
    record_class: RecordClass | None = None
    department: Short | None = None
    encounter_id: Short | None = None
    trigger_date: CalendarDate | None = None


class IngestedOut(BaseModel):
    """What became of the document."""

    archive_id: str
    duplicate: bool
    record_class: str
    sensitivity: str
    state: str


def _metadata(raw: str) -> DocumentIn:
    try:
        return DocumentIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", "metadata", *error["loc"])}
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


@router.post(
    "/documents",
    status_code=201,
    response_model=IngestedOut,
    summary="Ingest a generic document (classified, idempotent by message id)",
    description=(
        "Multipart form: `file` and `metadata` (JSON, schema `DocumentIn`). 201 for a new "
        "archive, 200 with `duplicate: true` when the source already sent this message id. "
        "Roles: archivist; clinician (own department)."
    ),
    responses={
        **error_responses(400, 401, 403, 409, 413, 415, 422, 503),
        200: {"model": IngestedOut, "description": "Already ingested: nothing new was stored."},
    },
    dependencies=[MultipartOnly],
)
def ingest_document(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="The document.")],
    metadata: Annotated[str, Form(description="JSON object: see `DocumentIn`.")],
) -> JSONResponse:
    fields = _metadata(metadata)
    limit = runtime.settings.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise InputError(f"content exceeds the limit of {limit} bytes", code="payload_too_large")
    file.file.seek(0)
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise InputError(f"content exceeds the limit of {limit} bytes", code="payload_too_large")
    media_type = (file.content_type or "").split(";", 1)[0].strip().lower()
    name = re.split(r"[\\/]", file.filename or "")[-1]
    name = _UNSAFE.sub("", name).strip()[:255] or None
    hint = fields.record_class.value if fields.record_class is not None else fields.class_hint
    doc = IncomingDocument(
        content=content,
        media_type=media_type or "application/octet-stream",
        patient_id=fields.patient_id,
        source_system=fields.source_system,
        title=fields.title,
        message_id=fields.message_id,
        encounter_id=fields.encounter_id,
        department=fields.department,
        hints=SourceHints(class_hint=hint, department=fields.department),
        filename=name,
        trigger_date=fields.trigger_date,
        kind="document",
    )
    done = runtime.ingestion.ingest(principal, doc)
    out = IngestedOut(
        archive_id=done.archive.id,
        duplicate=done.duplicate,
        record_class=done.archive.record_class,
        sensitivity=done.archive.sensitivity,
        state=done.archive.state,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if done.duplicate else 201)
