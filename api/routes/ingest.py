"""Generic documents into the ingestion path: ``POST /ingest/documents`` (multipart).

For systems (and the legacy backfill, ``archivechain import``) that send plain files rather than
FHIR, HL7 or DICOM: the file plus a JSON ``metadata`` part naming the patient, the source system
and its message id (the idempotency key), optional class hint, department, encounter, dates. The
document is classified and graded like every ingested record; a resent message id answers the
archive it already is (200, ``duplicate: true``), a new one 201.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from anchoring.events import RecordClass
from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.routes.archives import MultipartOnly
from api.schemas import CODE_PATTERN, CalendarDate
from node.classification import SourceHints
from node.errors import InputError
from node.filenames import display_name
from node.services.ingestion import IncomingDocument, Ingested

router = APIRouter(prefix="/ingest", tags=["ingestion"])

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


MAX_BATCH_DOCUMENTS = 500
"""Most documents one ``POST /ingest/documents/batch`` may carry."""
BATCH_METADATA_BYTES = 4 * 1024 * 1024
"""Largest ``metadata`` part of a batch (500 documents with long escaped fields fit)."""

_DocumentList = TypeAdapter(list[DocumentIn])


class BatchOut(BaseModel):
    """What became of each document of a batch, in the order they were sent."""

    documents: list[IngestedOut]


def _metadata(raw: str) -> DocumentIn:
    try:
        return DocumentIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc)) from None


def _metadata_list(raw: str) -> list[DocumentIn]:
    try:
        return _DocumentList.validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc)) from None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {**error, "loc": ("body", "metadata", *error["loc"])}
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]


def _too_large(limit: int, index: int | None = None) -> InputError:
    error = InputError(f"content exceeds the limit of {limit} bytes", code="payload_too_large")
    if index is not None:
        error.details = {"index": index}
    return error


def _content(file: UploadFile, limit: int, index: int | None = None) -> bytes:
    """The part's bytes (413 ``payload_too_large`` above ``limit``)."""
    if file.size is not None and file.size > limit:
        raise _too_large(limit, index)
    file.file.seek(0)
    content = file.file.read(limit + 1)
    if len(content) > limit:
        raise _too_large(limit, index)
    return content


def _incoming(file: UploadFile, content: bytes, fields: DocumentIn) -> IncomingDocument:
    media_type = (file.content_type or "").split(";", 1)[0].strip().lower()
    name = display_name(file.filename)
    hint = fields.record_class.value if fields.record_class is not None else fields.class_hint
    return IncomingDocument(
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


def _out(done: Ingested) -> IngestedOut:
    return IngestedOut(
        archive_id=done.archive.id,
        duplicate=done.duplicate,
        record_class=done.archive.record_class,
        sensitivity=done.archive.sensitivity,
        state=done.archive.state,
    )


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
    content = _content(file, runtime.settings.max_upload_bytes)
    done = runtime.ingestion.ingest(principal, _incoming(file, content, fields))
    out = _out(done)
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if done.duplicate else 201)


@router.post(
    "/documents/batch",
    status_code=201,
    response_model=BatchOut,
    summary="Ingest up to 500 generic documents in one unit (all or nothing)",
    description=(
        f"Multipart form: 1 to {MAX_BATCH_DOCUMENTS} `file` parts and one `metadata` part, a "
        "JSON array of as many `DocumentIn` objects, in the order of the files. The whole body "
        "stays under the node's upload limit. All documents are stored in one transaction: if "
        "any is refused, nothing is stored and the answer is the refusal's code with "
        "`details.index`, the position of the refused document (validation errors name it in "
        "`loc`: `body.metadata.<index>`). Otherwise one entry per document, in order; a message "
        "id the source sent before answers `duplicate: true` and stores nothing. 201 when at "
        "least one archive is new, 200 when all were duplicates. Roles: archivist; clinician "
        "(own department)."
    ),
    responses={
        **error_responses(400, 401, 403, 409, 413, 415, 422, 503),
        200: {"model": BatchOut, "description": "Every document was already ingested."},
    },
    dependencies=[MultipartOnly],
    form_limits={
        "max_files": MAX_BATCH_DOCUMENTS,
        "max_fields": 4,
        "max_part_size": BATCH_METADATA_BYTES,
    },
)
def ingest_documents_batch(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    file: Annotated[list[UploadFile], File(description="The documents, in order.")],
    metadata: Annotated[
        str, Form(description="JSON array of `DocumentIn` objects, one per file, in order.")
    ],
) -> JSONResponse:
    if not 1 <= len(file) <= MAX_BATCH_DOCUMENTS:
        raise InputError(
            f"a batch holds 1 to {MAX_BATCH_DOCUMENTS} documents", code="invalid_batch"
        )
    fields = _metadata_list(metadata)
    if len(fields) != len(file):
        raise InputError(
            f"{len(file)} files but {len(fields)} metadata objects: one per file, in order",
            code="batch_count_mismatch",
        )
    limit = runtime.settings.max_upload_bytes
    docs: list[IncomingDocument] = []
    total = 0
    for index, (upload, item) in enumerate(zip(file, fields, strict=True)):
        content = _content(upload, limit, index)
        total += len(content)
        if total > limit:
            raise _too_large(limit, index)
        docs.append(_incoming(upload, content, item))
    done = runtime.ingestion.ingest_batch(principal, docs)
    out = BatchOut(documents=[_out(item) for item in done])
    fresh = any(not item.duplicate for item in done)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if fresh else 200)
