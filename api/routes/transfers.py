"""Custody transfers to other hospitals: offer, cancel, list."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from node.models import TransferDirection, TransferState
from node.services.transfers import TransferView

router = APIRouter(tags=["transfers"])


class TransferIn(BaseModel):
    """Offer custody of an archive to another hospital."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(
        min_length=1,
        max_length=64,
        description="The recipient hospital: its address or its registered name.",
    )


class TransferOut(BaseModel):
    """A transfer seen from this node."""

    archive_id: str
    direction: TransferDirection = Field(
        description="`out`: offered by this node; `in`: offered to it."
    )
    peer: str
    state: TransferState
    expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: TransferView) -> TransferOut:
        return cls.model_validate(view, from_attributes=True)


@router.post(
    "/archives/{archive_id}/transfers",
    status_code=202,
    response_model=TransferOut,
    summary="Offer custody to another hospital",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def offer_transfer(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: TransferIn
) -> TransferOut:
    return TransferOut.of(runtime.transfers.offer(principal, archive_id, body.to))


@router.post(
    "/archives/{archive_id}/transfers/cancel",
    response_model=TransferOut,
    summary="Withdraw a pending offer",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
def cancel_transfer(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> TransferOut:
    return TransferOut.of(runtime.transfers.cancel(principal, archive_id))


@router.get(
    "/transfers",
    response_model=list[TransferOut],
    summary="Transfers seen by this node, newest first",
    responses=error_responses(401, 403, 422),
)
def list_transfers(runtime: RuntimeDep, principal: PrincipalDep) -> list[TransferOut]:
    return [TransferOut.of(view) for view in runtime.transfers.transfers(principal)]
