"""``GET /checkpoints``: the tree heads this node planned and anchored (evidence readers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, RuntimeDep, StatusDep
from api.errors import error_responses
from api.schemas import CheckpointOut, CheckpointPageOut, CheckpointQuery

router = APIRouter(prefix="/checkpoints", tags=["evidence"])


@router.get(
    "",
    response_model=CheckpointPageOut,
    summary="This node's checkpoints, newest first",
    description=(
        "Each confirmed checkpoint is `checkpointAt(hospital, chain_index)` on the notary. "
        "Roles: archivist, auditor."
    ),
    responses=error_responses(400, 401, 403, 422, 503),
)
def list_checkpoints(
    runtime: RuntimeDep,
    status: StatusDep,
    principal: PrincipalDep,
    query: Annotated[CheckpointQuery, Query()],
) -> CheckpointPageOut:
    page = status.checkpoints(principal, query.state, query.limit, query.offset)
    return CheckpointPageOut(
        hospital=runtime.hospital,
        chain_id=runtime.deployment.chain_id,
        notary=runtime.deployment.notary.address,
        items=[CheckpointOut.of(view) for view in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )
