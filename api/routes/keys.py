"""Admin routes for API keys: issue (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import MAX_KEY_ID, KeyIn, KeyIssuedOut, KeyOut

router = APIRouter(prefix="/keys", tags=["admin"])


@router.post(
    "",
    status_code=201,
    response_model=KeyIssuedOut,
    summary="Issue an API key",
    description=(
        "The secret is returned once and stored only as a hash. An insurer key names its member "
        "address, which must be an active INSURER member on chain (409 `not_active_insurer`; "
        "503 when the registry cannot be read). Role: admin."
    ),
    responses=error_responses(400, 401, 403, 409, 422, 503),
)
def issue_key(runtime: RuntimeDep, principal: PrincipalDep, body: KeyIn) -> KeyIssuedOut:
    return KeyIssuedOut.of(
        runtime.keys.issue_as(principal, body.role, body.name, body.department, body.member)
    )


@router.get(
    "",
    response_model=list[KeyOut],
    summary="List API keys (newest first, secrets never shown)",
    description="Role: admin.",
    responses=error_responses(401, 403, 503),
)
def list_keys(runtime: RuntimeDep, principal: PrincipalDep) -> list[KeyOut]:
    return [KeyOut.of(view) for view in runtime.keys.list(principal)]


@router.delete(
    "/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key (idempotent)",
    description="An admin cannot revoke the key it is using. Role: admin.",
    responses=error_responses(400, 401, 403, 404, 422, 503),
)
def revoke_key(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    key_id: Annotated[int, Path(ge=1, le=MAX_KEY_ID, description="The key's id.")],
) -> KeyOut:
    return KeyOut.of(runtime.keys.revoke(principal, key_id))
