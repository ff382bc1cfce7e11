"""De-identified derivatives (issue 12 §5). Rules live in ``node.services.derivatives``."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import ArchiveOut, DerivativeIn

router = APIRouter(tags=["archives"])


@router.post(
    "/archives/{archive_id}/derivatives",
    status_code=201,
    response_model=ArchiveOut,
    summary="Create a de-identified derivative of an archive",
    description=(
        "Reads the content for `purpose` (ACCESS on the original), de-identifies it with "
        "`profile` and creates a new archive followed by DERIVE (original commitment → "
        "derivative commitment, profile, purpose, recipient). A format without a profile is "
        "refused (400 `no_deid_profile`), never passed through; `profile_mismatch`, "
        "`unknown_profile`, `deidentification_failed` likewise. Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 410, 422, 503),
)
def create_derivative(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: DerivativeIn
) -> ArchiveOut:
    view = runtime.derivatives.derive(
        principal, archive_id, body.profile, body.purpose, body.recipient
    )
    return ArchiveOut.of(view)
