"""FHIR R4 REST: ``/fhir/r4`` — hospital systems push DocumentReference, DiagnosticReport,
Composition, Encounter and transaction/batch Bundles of them; EMR viewers search DocumentReference.

Translation lives in ``node.fhir``, every rule in ``node.services.ingestion``; this router speaks
HTTP. Authentication is the API's (``Authorization: Bearer``, checked before the body is read);
bodies are JSON (``application/fhir+json`` or ``application/json``), bounded by
``FHIR_BODY_BYTES`` and checked for encoding and depth like every JSON body. Every error on
``/fhir/`` paths is an OperationOutcome (``api.errors.FhirOutcomeMiddleware``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from anchoring.events import Sensitivity
from api.deps import PrincipalDep, RuntimeDep
from api.errors import status_of_node_error
from node.classification import LOINC
from node.errors import InputError, NodeError
from node.fhir import (
    DOCUMENT_TYPES,
    FHIR_JSON,
    FHIR_VERSION,
    Entry,
    entries_of,
    parse_body,
    validate,
)
from node.principal import Principal
from node.runtime import NodeRuntime
from node.services.archives import MAX_PAGE, SearchFilters
from node.services.ingestion import Ingested
from node.services.records import ArchiveView

FHIR_PREFIX = "/fhir/r4"
FHIR_BODY_CAP = 64 * 1024 * 1024
"""Largest FHIR body whatever the upload limit: bodies are JSON, held in memory to be checked."""
RECORD_CLASS_SYSTEM = "urn:archivechain:record-class"
PSEUDONYM_SYSTEM = "urn:archivechain:patient-pseudonym"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_CONFIDENTIALITY = {
    Sensitivity.NORMAL.value: "N",
    Sensitivity.SENSITIVE.value: "R",
    Sensitivity.HIGHLY_SENSITIVE.value: "V",
}
_JSON_TYPES = (FHIR_JSON, "application/json")

router = APIRouter(prefix=FHIR_PREFIX, tags=["fhir"], include_in_schema=False)
"""Kept out of the OpenAPI document (whose every error is ``ErrorOut`` JSON): FHIR clients read the
CapabilityStatement at ``/fhir/r4/metadata``, and ``docs/ingestion.md`` describes the endpoint."""


def fhir_body_limit(max_upload_bytes: int) -> int:
    """The body limit of FHIR requests: base64 of the largest upload, plus the JSON around it."""
    return min(max_upload_bytes * 4 // 3 + 64 * 1024, FHIR_BODY_CAP)


def _fhir(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=FHIR_JSON)


def _outcome(severity: str, code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise InputError(f"FHIR bodies must be sent as {FHIR_JSON}", code="unsupported_media_type")
    return parse_body(await request.body())


def _location(archive_id: str) -> str:
    return f"{FHIR_PREFIX}/DocumentReference/{archive_id}"


def _describe(result: Ingested) -> str:
    view = result.archive
    if result.duplicate:
        return f"already archived as {view.id} (a resend: nothing stored)"
    decided = result.classification
    rules = (
        f" (class by rule {decided.class_rule}, sensitivity by rule {decided.sensitivity_rule})"
        if decided is not None
        else ""
    )
    return (
        f"archived as {view.id}: class {view.record_class}, sensitivity {view.sensitivity}{rules}"
    )


def _receive_encounter(runtime: NodeRuntime, principal: Principal, entry: Entry) -> tuple[int, str]:
    message = entry.encounter
    assert message is not None
    if message.report is None:
        return 200, "encounter received; its status changes nothing here"
    reported = runtime.ingestion.receive_encounter(
        principal,
        message.report,
        source_system=message.report.source_system or "FHIR",
        message_id=message.message_id,
        kind="fhir-encounter",
    )
    if not reported:
        return 200, "encounter already received (a resend: nothing reported)"
    return 201, f"encounter {message.report.kind.value} reported"


# --------------------------------------------------------------------------------------------
# create


@router.get("/metadata", summary="CapabilityStatement")
def capability_statement() -> JSONResponse:
    """What this endpoint supports (FHIR ``metadata`` interaction; no key needed)."""
    interactions = [{"code": "create"}]
    resources: list[dict[str, Any]] = [
        {"type": name, "interaction": interactions} for name in (*DOCUMENT_TYPES, "Encounter")
    ]
    resources[0]["interaction"] = [*interactions, {"code": "read"}, {"code": "search-type"}]
    resources[0]["searchParam"] = [
        {"name": "patient", "type": "reference"},
        {"name": "date", "type": "date"},
        {"name": "type", "type": "token"},
    ]
    return _fhir(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-02",
            "kind": "instance",
            "fhirVersion": FHIR_VERSION,
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": resources,
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                }
            ],
        }
    )


@router.post(
    "/{resource_type}",
    summary="Create a DocumentReference, DiagnosticReport, Composition or Encounter",
    description=(
        "A document resource becomes a classified archive (201, `Location` names it as a "
        "DocumentReference; 200 for a resend of the same identifier). An Encounter is reported "
        "to the encounter listeners (discharge, admission, visit). Errors are OperationOutcome."
    ),
)
async def create_resource(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    resource_type: Annotated[str, Path(pattern=r"^[A-Za-z]{1,64}$")],
) -> JSONResponse:
    if resource_type not in (*DOCUMENT_TYPES, "Encounter"):
        raise InputError(
            f"resource type {resource_type} is not accepted here", code="fhir_type_not_supported"
        )
    data = await _json_body(request)

    def handle() -> JSONResponse:
        resource = validate(data, resource_type)
        (entry,) = entries_of(resource)
        if entry.encounter is not None:
            status, text = _receive_encounter(runtime, principal, entry)
            return _fhir(_outcome("information", "informational", text), status)
        assert entry.document is not None
        result = runtime.ingestion.ingest(principal, entry.document)
        headers = {"Location": _location(result.archive.id), "ETag": 'W/"1"'}
        return _fhir(
            _outcome("information", "informational", _describe(result)),
            200 if result.duplicate else 201,
            headers,
        )

    return await run_in_threadpool(handle)


@router.post(
    "",
    summary="Process a transaction or batch Bundle",
    description=(
        "A `transaction` is all or nothing: every entry is validated and every document archived "
        "in one unit of work before encounters are reported. A `batch` processes each entry on "
        "its own and answers each with its status. Entries must be POSTs of DocumentReference, "
        "DiagnosticReport, Composition, Encounter or Binary (named by an attachment's url)."
    ),
)
async def process_bundle(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    data = await _json_body(request)

    def handle() -> JSONResponse:
        bundle = validate(data, "Bundle")
        kind = getattr(bundle, "type", None)
        entries = entries_of(bundle)
        if kind == "transaction":
            return _transaction(runtime, principal, entries)
        return _batch(runtime, principal, entries)

    return await run_in_threadpool(handle)


def _entry_response(
    status: int, location: str | None = None, text: str | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"status": f"{status} {_REASONS.get(status, '')}".strip()}
    if location:
        response["location"] = location
    if text:
        response["outcome"] = _outcome(
            "information" if status < 400 else "error",
            "informational" if status < 400 else "processing",
            text,
        )
    return {"response": response}


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity"}  # fmt: skip


def _transaction(runtime: NodeRuntime, principal: Principal, entries: list[Entry]) -> JSONResponse:
    documents = [entry.document for entry in entries if entry.document is not None]
    results = iter(runtime.ingestion.ingest_batch(principal, documents) if documents else [])
    answered: list[dict[str, Any]] = []
    for entry in entries:
        if entry.document is not None:
            result = next(results)
            answered.append(
                _entry_response(
                    200 if result.duplicate else 201,
                    _location(result.archive.id),
                    _describe(result),
                )
            )
        else:
            status, text = _receive_encounter(runtime, principal, entry)
            answered.append(_entry_response(status, None, text))
    return _fhir({"resourceType": "Bundle", "type": "transaction-response", "entry": answered})


def _batch(runtime: NodeRuntime, principal: Principal, entries: list[Entry]) -> JSONResponse:
    answered: list[dict[str, Any]] = []
    for entry in entries:
        try:
            if entry.document is not None:
                result = runtime.ingestion.ingest(principal, entry.document)
                answered.append(
                    _entry_response(
                        200 if result.duplicate else 201,
                        _location(result.archive.id),
                        _describe(result),
                    )
                )
            else:
                status, text = _receive_encounter(runtime, principal, entry)
                answered.append(_entry_response(status, None, text))
        except NodeError as exc:
            refused = status_of_node_error(exc)
            if refused is None or refused >= 500:
                raise
            answered.append(_entry_response(refused, None, f"{exc.code}: {exc.message}"))
    return _fhir({"resourceType": "Bundle", "type": "batch-response", "entry": answered})


# --------------------------------------------------------------------------------------------
# reads


def _date_range(value: str) -> tuple[datetime | None, datetime | None]:
    """A FHIR date search value (``[eq|ge|gt|le|lt]YYYY-MM-DD``) as a half-open UTC range."""
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InputError(
            "date must be [eq|ge|gt|le|lt]YYYY-MM-DD", code="invalid_search_parameter"
        ) from None
    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    ranges = {
        "eq": (start, end),
        "ge": (start, None),
        "gt": (end, None),
        "le": (None, end),
        "lt": (None, start),
    }
    if prefix not in ranges:
        raise InputError(f"date prefix {prefix} is not supported", code="invalid_search_parameter")
    return ranges[prefix]


def document_reference(view: ArchiveView, patient: str | None = None) -> dict[str, Any]:
    """An archive as an R4 DocumentReference (content by URL; the patient only as the caller
    named it, else as the node's pseudonym)."""
    current = view.versions[-1] if view.versions else None
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": view.id,
        "meta": {
            "versionId": str(view.current_version),
            "lastUpdated": view.updated_at.isoformat(),
        },
        "status": "current",
        "category": [{"coding": [{"system": RECORD_CLASS_SYSTEM, "code": view.record_class}]}],
        "subject": (
            {"reference": f"Patient/{patient}"}
            if patient
            else {"identifier": {"system": PSEUDONYM_SYSTEM, "value": view.patient_pseudonym}}
        ),
        "date": view.created_at.isoformat(),
        "description": view.title,
        "securityLabel": [
            {
                "coding": [
                    {"system": CONFIDENTIALITY_SYSTEM, "code": _CONFIDENTIALITY[view.sensitivity]}
                ]
            }
        ],
        "context": {"practiceSetting": {"coding": [{"code": view.department}]}},
        "content": [
            {
                "attachment": {
                    "contentType": current.media_type if current else "application/octet-stream",
                    "url": f"/api/v1/archives/{view.id}/content",
                    "size": current.size if current else 0,
                    "creation": view.created_at.isoformat(),
                }
            }
        ],
    }
    document_type = view.metadata.get("document_type")
    if isinstance(document_type, str):
        resource["type"] = {"coding": [{"system": LOINC, "code": document_type}]}
    return resource


@router.get(
    "/DocumentReference",
    summary="Search DocumentReference (searchset)",
    description=(
        "The caller's archives as DocumentReference resources, newest first. `patient` "
        "(the patient id, or `Patient/<id>`), `date` (`[eq|ge|gt|le|lt]YYYY-MM-DD`, on the "
        "archive's creation), `type` (a LOINC code, `[system|]code`). Every listed archive's "
        "metadata read is logged."
    ),
)
def search_document_references(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    patient: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    date_: Annotated[str | None, Query(alias="date", max_length=32)] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=128)] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=1_000_000_000)] = 0,
) -> JSONResponse:
    patient_id = patient.removeprefix("Patient/") if patient else None
    created_from = created_to = None
    if date_:
        created_from, created_to = _date_range(date_)
    keyword = None
    if type_:
        code = type_.rsplit("|", 1)[-1].strip()
        if not code:
            raise InputError("type must be [system|]code", code="invalid_search_parameter")
        keyword = f"document_type {code}"
    page = runtime.archives.search(
        principal,
        SearchFilters(
            patient_id=patient_id,
            keyword=keyword,
            created_from=created_from,
            created_to=created_to,
            limit=count,
            offset=offset,
        ),
    )
    return _fhir(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": page.total,
            "entry": [
                {
                    "fullUrl": _location(view.id),
                    "resource": document_reference(view, patient_id),
                    "search": {"mode": "match"},
                }
                for view in page.items
            ],
        }
    )


@router.get("/DocumentReference/{archive_id}", summary="Read one archive as a DocumentReference")
def read_document_reference(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: Annotated[str, Path(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")],
) -> JSONResponse:
    return _fhir(document_reference(runtime.archives.get(principal, archive_id)))
