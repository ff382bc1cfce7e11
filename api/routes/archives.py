"""Archive routes: upload, search, metadata, content, amend, archive, holds, events, proof.

Routes translate HTTP to service calls and back; every rule (roles, scope, transitions, limits)
lives in ``node.services``. Uploads are streamed from the spooled multipart file in
``settings.chunk_size`` pieces straight into encryption; content is streamed back the same way.
Routes are plain functions: FastAPI runs them in its thread pool, where blocking service calls
belong. The proof route is the exception: it may wait for anchoring (``?wait=N``), which it awaits
without holding a thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.routes.audits import QcResultOut
from api.schemas import (
    ARCHIVE_IN_EXAMPLE,
    ArchiveIn,
    ArchiveOut,
    ArchivePageOut,
    ArchiveRequestIn,
    ContentQuery,
    EventOut,
    HoldIn,
    MetadataQuery,
    ProofBundleDocument,
    ProofQuery,
    ReleaseHoldQuery,
    SearchQuery,
)
from api.streaming import content_response
from node.errors import InputError
from node.filenames import display_name

DEFAULT_MEDIA_TYPE = "application/octet-stream"
_MULTIPART = "multipart/form-data"

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/archives", tags=["archives"])


def require_multipart(request: Request, _caller: PrincipalDep) -> None:
    """Uploads must be ``multipart/form-data`` (415 otherwise, before any field is judged, but
    only once the caller is authenticated)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != _MULTIPART:
        raise InputError(
            f"uploads must be sent as {_MULTIPART} with a 'file' part",
            code="unsupported_media_type",
        )


MultipartOnly = Depends(require_multipart)


# --------------------------------------------------------------------------------------------
# helpers


def _parse_metadata(raw: str) -> ArchiveIn:
    """The ``metadata`` form field as ``ArchiveIn``; errors are reported under ``body.metadata``."""
    try:
        return ArchiveIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", "metadata", *error["loc"])}
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def _media_type(upload: UploadFile) -> str:
    """The uploaded part's media type without parameters (octet-stream when absent)."""
    value = (upload.content_type or "").split(";", 1)[0].strip().lower()
    return value or DEFAULT_MEDIA_TYPE


def _upload_name(upload: UploadFile) -> str | None:
    """A displayable name from the part's filename (``node.filenames.display_name``)."""
    return display_name(upload.filename)


def _chunks(handle: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def _content_chunks(upload: UploadFile, runtime_limit: int, chunk_size: int) -> Iterator[bytes]:
    """The upload's bytes in chunks, refusing at once what is known to be too large."""
    if upload.size is not None and upload.size > runtime_limit:
        raise InputError(
            f"content exceeds the limit of {runtime_limit} bytes", code="payload_too_large"
        )
    upload.file.seek(0)
    return _chunks(upload.file, chunk_size)


# --------------------------------------------------------------------------------------------
# commands

UPLOAD_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 503)
COMMAND_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 503)


@router.post(
    "",
    status_code=201,
    response_model=ArchiveOut,
    summary="Upload a record",
    description=(
        "Multipart form: `file` (the record; its part's Content-Type is the media type) and "
        "`metadata` (a JSON object, schema `ArchiveIn`). The content is encrypted with a new "
        "per-archive key and stored content-addressed; a CREATE event is logged. Refused "
        "uploads leave nothing behind. Roles: archivist; clinician (own department)."
    ),
    responses=UPLOAD_ERRORS,
    dependencies=[MultipartOnly],
)
def create_archive(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="The record (any accepted media type).")],
    metadata: Annotated[
        str,
        Form(
            description="JSON object: see the `ArchiveIn` schema.",
            examples=[json.dumps(ARCHIVE_IN_EXAMPLE)],
        ),
    ],
) -> ArchiveOut:
    fields = _parse_metadata(metadata)
    settings = runtime.settings
    new = fields.to_new_archive(_media_type(file), _upload_name(file))
    view = runtime.archives.create(
        principal,
        new,
        _content_chunks(file, settings.max_upload_bytes, settings.chunk_size),
    )
    return ArchiveOut.of(view)


@router.post(
    "/{archive_id}/amend",
    response_model=ArchiveOut,
    summary="Add a new version (only while CREATED)",
    description=(
        "Multipart form: `file` (its part's Content-Type and file name are the version's). "
        "Roles: archivist; clinician (own department)."
    ),
    responses={**UPLOAD_ERRORS, **error_responses(404, 409)},
    dependencies=[MultipartOnly],
)
def amend_archive(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    file: Annotated[UploadFile, File(description="The new version's content.")],
) -> ArchiveOut:
    settings = runtime.settings
    view = runtime.archives.amend(
        principal,
        archive_id,
        _media_type(file),
        _upload_name(file),
        _content_chunks(file, settings.max_upload_bytes, settings.chunk_size),
    )
    return ArchiveOut.of(view)


@router.post(
    "/{archive_id}/archive",
    response_model=ArchiveOut,
    summary="Archive: make immutable, set retention, register on chain",
    description="Optional JSON body `{trigger_date}`. Role: archivist.",
    responses=COMMAND_ERRORS,
)
def archive_archive(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    body: Annotated[ArchiveRequestIn | None, Body()] = None,
) -> ArchiveOut:
    trigger = body.trigger_date if body is not None else None
    return ArchiveOut.of(runtime.archives.archive(principal, archive_id, trigger))


@router.post(
    "/{archive_id}/hold",
    response_model=ArchiveOut,
    summary="Place a legal hold",
    description="The reason stays on this node; the event carries its hash. Role: archivist.",
    responses=COMMAND_ERRORS,
)
def place_hold(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: HoldIn
) -> ArchiveOut:
    return ArchiveOut.of(runtime.archives.place_hold(principal, archive_id, body.reason))


@router.delete(
    "/{archive_id}/hold",
    response_model=ArchiveOut,
    summary="Release this hospital's legal hold",
    description="A regulator's hold is released only by a regulator. Role: archivist.",
    responses=COMMAND_ERRORS,
)
def release_hold(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    query: Annotated[ReleaseHoldQuery, Query()],
) -> ArchiveOut:
    return ArchiveOut.of(runtime.archives.release_hold(principal, archive_id, query.reason))


# --------------------------------------------------------------------------------------------
# reads

READ_ERRORS = error_responses(401, 403, 404, 422, 503)


@router.get(
    "",
    response_model=ArchivePageOut,
    summary="Search the catalogue",
    description=(
        "Filters combine with AND; newest first. `patient_id` is matched through its pseudonym; "
        "`q` searches title and metadata (or an exact id); `text` finds words and Chinese text in "
        "the title, metadata and the text extracted at ingestion. Times are RFC 3339 with an "
        "offset. "
        "Page with `offset`, or with `cursor`: each page that is not the last returns a "
        "`next_cursor` that resumes right after it (400 `invalid_cursor` for a cursor this node "
        "did not issue or one of another kind of search). "
        "A clinician sees only their department. Every listed archive's catalogue entry counts "
        "as read: one metadata ACCESS each (deduplicated as for `GET /archives/{id}`). "
        "Roles: archivist, clinician, auditor."
    ),
    responses=error_responses(400, 401, 403, 422, 503),
)
def search_archives(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[SearchQuery, Query()]
) -> ArchivePageOut:
    return ArchivePageOut.of(runtime.archives.search(principal, query.to_filters()))


@router.get(
    "/{archive_id}",
    response_model=ArchiveOut,
    summary="Metadata and state of one archive",
    description=(
        "Titles and metadata may hold PHI: the read is logged (ACCESS, scope metadata, with its "
        "purpose) before the answer, once per caller, archive and purpose within the node's "
        "`metadata_read_log_window`. Roles: archivist, clinician (own department), auditor."
    ),
    responses=READ_ERRORS,
)
def get_archive(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    query: Annotated[MetadataQuery, Query()],
) -> ArchiveOut:
    return ArchiveOut.of(runtime.archives.get(principal, archive_id, query.purpose))


CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The decrypted content, streamed, with the version's media type. The read is "
            "logged (ACCESS event) before the first byte is sent."
        ),
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Archive-Version": {
                "description": "The version returned.",
                "schema": {"type": "integer"},
            },
            "Content-Disposition": {
                "description": "attachment, with the RFC 5987 encoded file name when known.",
                "schema": {"type": "string"},
            },
        },
    },
    **error_responses(401, 403, 404, 409, 410, 422, 500, 503),
}


@router.get(
    "/{archive_id}/content",
    response_class=StreamingResponse,
    summary="Read the content (logged)",
    description=(
        "`purpose` is mandatory and goes into the ACCESS event. Roles: archivist; clinician "
        "(own department). Auditors and admins never read content. A destroyed archive's "
        "content answers 410 `destroyed`."
    ),
    responses=CONTENT_RESPONSES,
)
def read_content(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    query: Annotated[ContentQuery, Query()],
) -> StreamingResponse:
    stream = runtime.archives.open_content(principal, archive_id, query.purpose, query.version)
    return content_response(request, runtime, stream, query.purpose.value)


@router.get(
    "/{archive_id}/quality",
    response_model=list[QcResultOut],
    summary="四性检测 results of the archive's versions",
    description=(
        "The latest stored result of each checked version (at archiving, or by a QC audit): "
        "failed checks by dimension and code; empty when never checked. Roles: archivist, "
        "auditor."
    ),
    responses=error_responses(401, 403, 404, 422),
)
def get_quality(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> list[QcResultOut]:
    return [QcResultOut.of(v) for v in runtime.quality.results(principal, archive_id)]


@router.get(
    "/{archive_id}/events",
    response_model=list[EventOut],
    summary="The archive's lifecycle events in this node's log",
    description="Roles: archivist, auditor.",
    responses=READ_ERRORS,
)
def list_events(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> list[EventOut]:
    return [EventOut.of(e) for e in runtime.archives.events(principal, archive_id)]


PROOF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ProofBundleDocument,
        "description": (
            "An `archivechain.proof/v1` bundle (RFC 8785 canonical JSON) of every event covered "
            "by the latest confirmed checkpoint."
        ),
        "headers": {
            "X-Unanchored-Events": {
                "description": "Newer events of the archive not yet anchored (left out).",
                "schema": {"type": "integer"},
            },
            "X-Checkpoint-Index": {
                "description": "Chain index of the checkpoint the entries are proven against.",
                "schema": {"type": "integer"},
            },
            "X-Checkpoint-Size": {
                "description": "Size of that checkpoint.",
                "schema": {"type": "integer"},
            },
        },
    },
    **error_responses(401, 403, 404, 422, 503),
    409: {
        "model": error_responses(409)[409]["model"],
        "description": (
            "`proof_pending`: no event of the archive is anchored yet, or (with `wait`) not every "
            "event was anchored in time; retry."
        ),
    },
}


@router.get(
    "/{archive_id}/proof",
    response_class=Response,
    summary="Proof bundle of the archive",
    description="Roles: archivist, auditor.",
    responses=PROOF_RESPONSES,
)
async def get_proof(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    query: Annotated[ProofQuery, Query()],
) -> Response:
    if query.wait:
        await runtime.proofs.wait_anchored(principal, archive_id, query.wait)
    built = await run_in_threadpool(runtime.proofs.bundle, principal, archive_id)
    return Response(
        content=built.document,
        media_type="application/json",
        headers={
            "X-Unanchored-Events": str(built.unanchored),
            "X-Checkpoint-Index": str(built.checkpoint_index),
            "X-Checkpoint-Size": str(built.checkpoint_size),
        },
    )
