"""``POST /verify``: check a proof bundle against this node's chain.

The bundle is parsed strictly (``anchoring.bundle.parse_bundle``: 422 naming the field when
malformed) and verified by ``anchoring.verifier.verify_bundle`` against ``runtime.chain``, whose
notary address and chain id come from this node's deployment, never from the bundle. A bundle
naming another notary or chain is therefore answered with an *invalid* report
(``notary_mismatch`` / ``chain_id_mismatch``), like any other evidence that does not hold here.
Valid and invalid reports are 200; a chain that cannot be read is 503 ``chain_unavailable``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from anchoring.bundle import parse_bundle
from anchoring.verifier import Report, Status, verify_bundle
from api.deps import RuntimeDep, get_principal
from api.errors import error_responses
from api.schemas import ProofBundleDocument, VerifyQuery, VerifyReportOut
from node.errors import UnavailableError
from node.runtime import NodeRuntime

MAX_VERIFY_BODY_BYTES = 16 * 1024 * 1024
"""Largest bundle this endpoint reads (a bundle of ~10,000 events)."""

router = APIRouter(tags=["evidence"])


def _verify(runtime: NodeRuntime, raw: bytes, check_custody: bool) -> Report:
    bundle = parse_bundle(raw, max_bytes=MAX_VERIFY_BODY_BYTES)
    return verify_bundle(bundle, runtime.chain, check_custody=check_custody, now=datetime.now(UTC))


@router.post(
    "/verify",
    response_model=VerifyReportOut,
    summary="Verify a proof bundle against this node's chain",
    description=(
        "Body: an `archivechain.proof/v1` document. Checks every entry's inclusion proof, that "
        "each checkpoint is anchored on chain for its hospital, the per-archive hash chain, the "
        "lifecycle rules and (unless `check_custody=false`) the current on-chain custody record. "
        "The notary and chain id are this node's; a bundle naming others is invalid. "
        "Any authenticated role."
    ),
    responses=error_responses(401, 413, 422, 503),
    dependencies=[Depends(get_principal)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ProofBundleDocument"}}
            },
        }
    },
)
async def verify(
    request: Request,
    runtime: RuntimeDep,
    query: Annotated[VerifyQuery, Query()],
) -> VerifyReportOut:
    raw = await request.body()
    report = await run_in_threadpool(_verify, runtime, raw, query.check_custody)
    if report.status is Status.CHAIN_UNAVAILABLE:
        raise UnavailableError(
            "the chain could not be read, so the bundle could not be checked; retry later",
            code="chain_unavailable",
        )
    return VerifyReportOut.model_validate(report.to_json())


__all__ = ["MAX_VERIFY_BODY_BYTES", "ProofBundleDocument", "router"]
