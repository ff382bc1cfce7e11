"""Consent and insurer-attestation routes (docs/attestations.md). Rules live in
``node.services.attestations``; these routes only translate HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import (
    AttestationRequestIn,
    AttestationRevokedOut,
    ConsentIn,
    ConsentOut,
    ConsentRevokeIn,
)

router = APIRouter(tags=["attestations"])

COMMAND_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 503)

ConsentIdPath = Annotated[
    str, Path(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", description="Consent id (a ULID).")
]
AttestationIdPath = Annotated[
    str, Path(pattern=r"^(0x)?[0-9a-f]{64}$", description="Attestation id (32 bytes, hex).")
]


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOut,
    summary="Record a patient's consent to insurer attestations",
    description=(
        "Logs CONSENT_GRANT, opening a consent subject (docs/proof-format.md §8.1). The insurer "
        "must be an active insurer member (409 `not_active_insurer`). Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def grant_consent(runtime: RuntimeDep, principal: PrincipalDep, body: ConsentIn) -> ConsentOut:
    view = runtime.attestations.grant_consent(
        principal,
        patient_id=body.patient_id,
        insurer=body.insurer,
        purpose=body.purpose,
        record_classes=body.record_classes,
        facts=body.facts,
        period_start=body.period_start,
        period_end=body.period_end,
        expires_at=body.expires_at,
        document_hash=body.document_hash,
    )
    return ConsentOut.model_validate(view)


@router.post(
    "/consents/{consent_id}/revoke",
    response_model=ConsentOut,
    summary="Revoke a consent",
    description="Logs CONSENT_REVOKE; no attestation is issued under it afterwards. Role: archivist.",
    responses=COMMAND_ERRORS,
)
def revoke_consent(
    runtime: RuntimeDep, principal: PrincipalDep, consent_id: ConsentIdPath, body: ConsentRevokeIn
) -> ConsentOut:
    return ConsentOut.model_validate(
        runtime.attestations.revoke_consent(principal, consent_id, body.reason)
    )


@router.post(
    "/attestations",
    status_code=201,
    summary="Ask for a signed attestation about a consenting patient",
    description=(
        "Returns an `archivechain.attestation/v1` document (EIP-712 signed by this hospital) "
        "stating only the consented facts of the patient's records in the claim period, logged "
        "as ATTEST. Refusals (403): `no_consent`, `consent_revoked`, `consent_expired`, "
        "`out_of_scope`, `not_active_insurer`. Role: insurer."
    ),
    responses=COMMAND_ERRORS,
)
def request_attestation(
    runtime: RuntimeDep, principal: PrincipalDep, body: AttestationRequestIn
) -> dict[str, Any]:
    return runtime.attestations.request(
        principal,
        patient_id=body.patient_id,
        claim_start=body.claim_start,
        claim_end=body.claim_end,
        facts=body.facts,
        record_classes=body.record_classes,
    )


@router.get(
    "/attestations/{attestation_id}",
    summary="An attestation with its ATTEST inclusion evidence",
    description=(
        "The document, plus `evidence` (the ATTEST event, its inclusion proof and the anchored "
        "checkpoint) once a confirmed checkpoint covers it. Roles: the insurer it was issued to, "
        "archivist."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
)
def get_attestation(
    runtime: RuntimeDep, principal: PrincipalDep, attestation_id: AttestationIdPath
) -> dict[str, Any]:
    return runtime.attestations.get(principal, attestation_id)


@router.post(
    "/attestations/{attestation_id}/revoke",
    response_model=AttestationRevokedOut,
    summary="Revoke an attestation on chain",
    description=(
        "Queues `AttestationRevocations.revoke(id)` signed by this node's key (409 "
        "`already_revoked`). Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def revoke_attestation(
    runtime: RuntimeDep, principal: PrincipalDep, attestation_id: AttestationIdPath
) -> AttestationRevokedOut:
    revoked_at = runtime.attestations.revoke(principal, attestation_id)
    return AttestationRevokedOut(
        id=attestation_id.lower().removeprefix("0x"), revoked_at=revoked_at
    )
