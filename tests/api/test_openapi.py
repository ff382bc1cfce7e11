"""The OpenAPI document is complete: every operation documents a success response with its schema,
its errors with the error schema, and the bearer security it needs; FastAPI's default validation
schema (which does not match this API's answers) appears nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/auth/challenge"),  # member sign-in: the signature authenticates
    ("POST", "/api/v1/auth/verify"),
}
ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The document does not depend on the database: one backend is enough here."""
    return sqlite_url


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_identity_and_security_scheme(document: dict[str, Any]) -> None:
    assert document["info"]["title"] == "ArchiveChain hospital node API"
    assert document["info"]["version"]
    assert "Bearer" in document["info"]["description"]
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "description": scheme["description"],
    }


def test_every_operation_documents_success_errors_and_security(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        label = f"{method} {path}"
        responses = operation["responses"]
        successes = [status for status in responses if status.startswith("2")]
        assert successes, label
        for status in successes:
            if status != "204":  # No Content
                assert responses[status].get("content"), (label, status)
        assert operation.get("summary"), label
        if (method, path) in PUBLIC:
            assert "security" not in operation, label
            continue
        assert operation["security"] == [{"ApiKey": []}], label
        assert "401" in responses, label
        assert "403" in responses or path == "/api/v1/verify", label
        assert "422" in responses, label
        if "requestBody" in operation:
            assert "413" in responses, label
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (label, status)


def test_fastapis_default_validation_schema_is_not_used(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert set(schemas["ErrorOut"]["required"]) == {"code", "message"}


def test_upload_documents_its_metadata_part(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/v1/archives"]["post"]["requestBody"]
    multipart = body["content"]["multipart/form-data"]
    assert multipart["encoding"] == {"metadata": {"contentType": "application/json"}}
    archive_in = document["components"]["schemas"]["ArchiveIn"]
    assert archive_in["additionalProperties"] is False
    assert "patient_id" in archive_in["required"]
    archive_out = document["components"]["schemas"]["ArchiveOut"]
    assert "patient_id" not in archive_out["properties"]
    assert "patient_pseudonym" in archive_out["properties"]


def test_proof_and_verify_document_the_bundle(document: dict[str, Any]) -> None:
    proof = document["paths"]["/api/v1/archives/{archive_id}/proof"]["get"]["responses"]["200"]
    assert proof["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProofBundleDocument"
    }
    assert "X-Unanchored-Events" in proof["headers"]
    verify = document["paths"]["/api/v1/verify"]["post"]
    assert verify["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProofBundleDocument"
    }
