"""DICOMweb STOW-RS: ``POST /dicomweb/studies[/{study}]`` with ``multipart/related;
type="application/dicom"`` — each part one DICOM Part 10 instance.

The valid instances are archived in one unit of work (``IngestionService.ingest_batch``); an
instance already stored (same SOPInstanceUID from the same source) is answered as stored and not
archived again. The answer is the Store Instances Response Module in DICOM JSON
(``application/dicom+json``): ReferencedSOPSequence (0008,1199) for stored instances,
FailedSOPSequence (0008,1198) with a FailureReason (0008,1197) for refused ones; status 200 when
all were stored, 202 when some were, 409 when none was. Authentication is the API's; the body is
bounded by ``stow_body_limit`` and held in memory to be split.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, RuntimeDep
from node.dicom import DICOM_MEDIA_TYPE, Instance, read_instance
from node.errors import InputError, NodeError
from node.principal import Action, Principal
from node.runtime import NodeRuntime

DICOMWEB_PREFIX = "/dicomweb"
STOW_BODY_CAP = 256 * 1024 * 1024
MAX_PARTS = 1000
FAILURE_PROCESSING = 0x0110  # Processing failure
FAILURE_SOP_CLASS = 0x0122  # SOP class not supported (not an instance we can read)
FAILURE_STUDY_MISMATCH = 0xA900  # StudyInstanceUID differs from the one in the URL
DICOM_JSON = "application/dicom+json"

router = APIRouter(prefix=DICOMWEB_PREFIX, tags=["dicomweb"], include_in_schema=False)
"""Kept out of the OpenAPI document, like ``/fhir/r4``: its answers are DICOM JSON, described in
``docs/ingestion.md``."""


def stow_body_limit(max_upload_bytes: int) -> int:
    """The body limit of a STOW-RS request."""
    return min(max_upload_bytes + 256 * 1024, STOW_BODY_CAP)


def is_stow(method: str, path: str) -> bool:
    """Whether a request is a STOW-RS store (its body is multipart, not JSON)."""
    return method == "POST" and path.startswith(f"{DICOMWEB_PREFIX}/studies")


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/related":
        raise InputError(
            'STOW-RS bodies are multipart/related; type="application/dicom"',
            code="unsupported_media_type",
        )
    values: dict[str, str] = {}
    for param in params.split(";"):
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    part_type = values.get("type", DICOM_MEDIA_TYPE).lower()
    if part_type != DICOM_MEDIA_TYPE:
        raise InputError(
            f"only type={DICOM_MEDIA_TYPE} parts are accepted", code="unsupported_media_type"
        )
    boundary = values.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise InputError("the multipart boundary is missing or too long", code="invalid_multipart")
    return boundary.encode("latin-1")


def split_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The bodies of the parts of a multipart body (RFC 2046), each checked to be DICOM-typed."""
    delimiter = b"--" + boundary
    pieces = body.split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise InputError(
            "the multipart body is not closed by its boundary", code="invalid_multipart"
        )
    parts: list[bytes] = []
    for piece in pieces[1:-1]:
        if len(parts) >= MAX_PARTS:
            raise InputError(f"at most {MAX_PARTS} instances per request", code="invalid_multipart")
        piece = piece.removeprefix(b"\r\n")
        head, separator, content = piece.partition(b"\r\n\r\n")
        if not separator:
            if piece.startswith(b"\r\n"):  # no headers at all
                head, content = b"", piece[2:]
            else:
                raise InputError("a part has no header section", code="invalid_multipart")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                if media != DICOM_MEDIA_TYPE.encode():
                    raise InputError(
                        f"every part must be {DICOM_MEDIA_TYPE}", code="unsupported_media_type"
                    )
        parts.append(content.removesuffix(b"\r\n"))
    if not parts:
        raise InputError("the body holds no instance", code="invalid_multipart")
    return parts


def _reference(instance: Instance, archive_id: str) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [instance.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [instance.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [f"/api/v1/archives/{archive_id}"]},
    }


def _failure(sop_class: str, sop_instance: str, reason: int) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


def store(
    runtime: NodeRuntime, principal: Principal, parts: list[bytes], study: str | None
) -> JSONResponse:
    """Archive the instances of one STOW-RS request and build its response."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    instances: list[Instance] = []
    for part in parts:
        try:
            instance = read_instance(part)
        except NodeError:
            failed.append(_failure("", "", FAILURE_SOP_CLASS))
            continue
        if study is not None and instance.study_uid != study:
            failed.append(
                _failure(instance.sop_class_uid, instance.sop_instance_uid, FAILURE_STUDY_MISMATCH)
            )
            continue
        instances.append(instance)
    if instances:
        try:
            results = runtime.ingestion.ingest_batch(principal, [i.document for i in instances])
            pairs = list(zip(instances, results, strict=True))
            stored.extend(_reference(i, r.archive.id) for i, r in pairs)
        except NodeError as exc:
            if isinstance(exc, PermissionError):
                raise
            for instance in instances:  # one refused: store the others one by one
                try:
                    result = runtime.ingestion.ingest(principal, instance.document)
                    stored.append(_reference(instance, result.archive.id))
                except NodeError:
                    failed.append(
                        _failure(
                            instance.sop_class_uid, instance.sop_instance_uid, FAILURE_PROCESSING
                        )
                    )
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if stored else 409)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


async def _stow(
    request: Request, runtime: NodeRuntime, principal: Principal, study: str | None
) -> JSONResponse:
    principal_check(principal)
    boundary = _boundary(request.headers.get("content-type", ""))
    body = await request.body()
    parts = split_parts(body, boundary)
    return await run_in_threadpool(store, runtime, principal, parts, study)


def principal_check(principal: Principal) -> None:
    """Refuse (403) a caller who may not create archives, before the body is split."""
    principal.require(Action.CREATE)


@router.post(
    "/studies",
    summary="Store instances (STOW-RS)",
)
async def store_instances(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    return await _stow(request, runtime, principal, None)


@router.post(
    "/studies/{study}",
    summary="Store instances of one study (STOW-RS); instances of another study fail (A900)",
)
async def store_study_instances(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    study: Annotated[str, Path(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)],
) -> JSONResponse:
    return await _stow(request, runtime, principal, study)
