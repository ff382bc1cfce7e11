"""The FastAPI app of a hospital node: ``create_app(runtime)``.

The caller owns the runtime (opens, starts and closes it); the app only serves it. Resource routes
live under ``/api/v1``; ``/healthz`` and ``/metrics`` are at the root (where load balancers and
Prometheus look) and are not mirrored. Middleware, outermost first: request metrics, body-size
limits (``api.limits``), authentication before any body is read (``api.authfirst``), the JSON body
check (``api.jsonbody``: UTF-8, nesting depth), last-resort 500; then FastAPI's exception handlers
from ``api.errors``. ``api.server`` serves the app over HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from api.authfirst import AuthenticateFirstMiddleware
from api.deps import single_valued_query
from api.errors import ERROR_DESCRIPTIONS, FhirOutcomeMiddleware, install_error_handlers
from api.jsonbody import MAX_JSON_DEPTH, JsonBodyMiddleware
from api.limits import BodyLimitMiddleware, LimitFor
from api.metrics import RequestMetricsMiddleware, build_metrics
from api.routes import (
    access,
    access_events,
    alerts,
    archives,
    attestations,
    audits,
    auth,
    catalogue,
    checkpoints,
    derivatives,
    dicomweb,
    fhir,
    health,
    ingest,
    keys,
    peer,
    regulator,
    reports,
    retention,
    shares,
    tags,
    transfers,
    verify,
)
from api.schemas import ArchiveIn, ErrorOut
from api.web import assets as web_assets
from api.web import console as web_console
from api.web import console_member as web_console_member
from api.web import console_ops as web_console_ops
from api.web import docs as web_docs
from api.web import public as web_public
from node.runtime import NodeRuntime

API_PREFIX = "/api/v1"
API_VERSION = "1.0.0"
MULTIPART_ALLOWANCE = 256 * 1024
"""Room for the multipart envelope and the metadata field on top of the upload limit."""
SMALL_BODY_BYTES = 64 * 1024
"""Limit for every JSON body other than uploads and bundles."""
METADATA_FIELD_BYTES = 64 * 1024
"""Largest non-file multipart field (the metadata JSON)."""

DESCRIPTION = """\
ArchiveChain hospital node: encrypted, content-addressed custody of medical archives whose every
lifecycle event is logged in an RFC 6962 Merkle log anchored on the consortium chain.

Authenticate with `Authorization: Bearer <api key>`. Roles: **admin** (API keys), **archivist**
(everything on archives), **clinician** (upload, amend and read content of their department),
**auditor** (metadata, events, proofs — never content). An archive outside the caller's scope
answers 404, as if it did not exist.

Errors are JSON `{"code", "message"}` (plus `details` for validation and bundle errors).
"""

_UPLOAD_PATH = re.compile(
    rf"^(?:{API_PREFIX}/(?:archives(?:/[^/]+/amend)?|ingest/documents(?:/batch)?)"
    r"|/console/(?:upload|archives/[^/]+/amend))/?$"
)
_VERIFY_PATH = re.compile(rf"^{API_PREFIX}/verify/?$")


def is_upload(method: str, path: str) -> bool:
    """Whether the request is a multipart upload (streamed to disk, never buffered as JSON)."""
    return method == "POST" and _UPLOAD_PATH.match(path) is not None


_REPLICA_PUT = re.compile(r"^/peer/v1/replicas/[^/]+/versions/[0-9]+/?$")
_LOG_SHIP = re.compile(r"^/peer/v1/log/entries/?$")
LOG_SHIP_BODY_BYTES = 16 * 1024 * 1024
"""Body limit of a log shipment (10,000 entries of a few hundred bytes, base64 in JSON)."""


def is_replica_put(method: str, path: str) -> bool:
    """Whether the request stores a replica (ciphertext body: never JSON-checked)."""
    return method == "PUT" and _REPLICA_PUT.match(path) is not None


def is_binary_body(method: str, path: str) -> bool:
    """Whether a request's body is not JSON (uploads, STOW-RS): never checked as JSON."""
    return is_upload(method, path) or dicomweb.is_stow(method, path) or is_replica_put(method, path)


def body_limits(max_upload_bytes: int) -> LimitFor:
    """The body limit of each request: uploads, bundles, and small JSON bodies."""
    upload_limit = max_upload_bytes + MULTIPART_ALLOWANCE
    fhir_limit = fhir.fhir_body_limit(max_upload_bytes)
    stow_limit = dicomweb.stow_body_limit(max_upload_bytes)

    def limit_for(method: str, path: str) -> int:
        if is_upload(method, path):
            return upload_limit
        if method == "POST" and path.startswith(fhir.FHIR_PREFIX):
            return fhir_limit
        if dicomweb.is_stow(method, path):
            return stow_limit
        if method == "POST" and _VERIFY_PATH.match(path):
            return verify.MAX_VERIFY_BODY_BYTES
        if is_replica_put(method, path):
            return upload_limit
        if method == "POST" and _LOG_SHIP.match(path):
            return LOG_SHIP_BODY_BYTES
        return SMALL_BODY_BYTES

    return limit_for


def create_app(runtime: NodeRuntime) -> FastAPI:
    """The API of ``runtime`` (stored on ``app.state``; the caller starts and stops it)."""
    app = FastAPI(
        title="ArchiveChain hospital node API",
        version=API_VERSION,
        description=DESCRIPTION,
        form_limits={"max_files": 1, "max_fields": 4, "max_part_size": METADATA_FIELD_BYTES},
        dependencies=[Depends(single_valued_query)],
        docs_url=None,  # api.web.docs serves /docs from local assets (the default uses a CDN)
        redoc_url=None,  # ReDoc is CDN-only: not served
    )
    status = runtime.status
    app.state.runtime = runtime
    app.state.status = status
    app.state.metrics = build_metrics(status, runtime.alert_store, runtime.gate)

    for router in (
        catalogue.batch_router,
        archives.router,
        catalogue.router,
        ingest.router,
        access_events.router,
        checkpoints.router,
        verify.router,
        keys.router,
        transfers.router,
        shares.router,
        alerts.router,
        audits.router,
        reports.router,
        retention.router,
        auth.router,
        access.router,
        regulator.router,
        attestations.router,
        derivatives.router,
        tags.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(fhir.router)
    app.include_router(dicomweb.router)
    app.include_router(peer.router)
    app.include_router(health.router)
    app.include_router(web_docs.router)
    app.include_router(web_assets.router)
    app.include_router(web_public.router)
    app.include_router(web_console.router)
    app.include_router(web_console_ops.router)
    app.include_router(web_console_member.router)

    install_error_handlers(app)
    app.add_middleware(JsonBodyMiddleware, streamed=is_binary_body)
    app.add_middleware(AuthenticateFirstMiddleware, runtime=runtime)
    app.add_middleware(
        BodyLimitMiddleware, limit_for=body_limits(runtime.settings.max_upload_bytes)
    )
    app.add_middleware(FhirOutcomeMiddleware)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document(app: FastAPI) -> dict[str, Any]:
    """The generated OpenAPI document, completed where FastAPI cannot know better:

    - the upload's ``metadata`` part is a JSON-encoded ``ArchiveIn`` object, not any string;
    - every error, on every route, is answered by ``api.errors`` in the ``ErrorOut`` shape, so
      FastAPI's default 422 schema is replaced by it; every route documents the 422 of a repeated
      query parameter, every route that needs a key its 401, every route with a body its 413, every
      route with a JSON body the 400 of the body check (``api.jsonbody``).
    """
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    archive_in = ArchiveIn.model_json_schema(ref_template=f"{_SCHEMA_REF}{{model}}")
    schemas.update(archive_in.pop("$defs", {}))
    schemas["ArchiveIn"] = archive_in
    upload = document["paths"][f"{API_PREFIX}/archives"]["post"]["requestBody"]["content"]
    multipart = upload["multipart/form-data"]
    body = schemas[multipart["schema"]["$ref"].rsplit("/", 1)[-1]]
    body["properties"]["metadata"] = {
        "$ref": f"{_SCHEMA_REF}ArchiveIn",
        "description": "The archive's metadata, a JSON object sent as a form part.",
    }
    multipart["encoding"] = {"metadata": {"contentType": "application/json"}}
    _errors_in_one_shape(document)
    return document


_SCHEMA_REF = "#/components/schemas/"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"{_SCHEMA_REF}ErrorOut"}}},
    }


_JSON_BODY_REFUSALS = (
    "A JSON body that is not UTF-8 (`invalid_encoding`: byte-order mark, NUL, invalid UTF-8, lone "
    f"surrogate) or nests deeper than {MAX_JSON_DEPTH} levels (`json_too_deep`)."
)


def _document_json_body_refusals(responses: dict[str, Any]) -> None:
    """The 400 of ``api.jsonbody``, on every operation with a JSON body."""
    if "400" not in responses:
        responses["400"] = {**_error_response(400), "description": _JSON_BODY_REFUSALS}
    elif _JSON_BODY_REFUSALS not in responses["400"]["description"]:
        responses["400"]["description"] += " " + _JSON_BODY_REFUSALS


def _errors_in_one_shape(document: dict[str, Any]) -> None:
    default_422 = f"{_SCHEMA_REF}HTTPValidationError"
    for item in document["paths"].values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            schema = (responses.get("422", {}).get("content", {}).get("application/json", {})).get(
                "schema", {}
            )
            if schema.get("$ref") == default_422 or "422" not in responses:
                responses["422"] = _error_response(422)  # every route refuses repeated parameters
            if operation.get("security") and "401" not in responses:
                responses["401"] = _error_response(401)
            if "requestBody" in operation and "413" not in responses:
                responses["413"] = _error_response(413)  # every body has a size limit
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                _document_json_body_refusals(responses)
    schemas = document["components"]["schemas"]
    if "ErrorOut" not in schemas:
        schemas["ErrorOut"] = ErrorOut.model_json_schema(ref_template=f"{_SCHEMA_REF}{{model}}")
    for name in _FASTAPI_VALIDATION_SCHEMAS:  # dropped once nothing refers to them any more
        if f'"{_SCHEMA_REF}{name}"' not in json.dumps(document):
            schemas.pop(name, None)
