"""Sharing with other hospitals: grant, revoke and list grants; read and prove records another
hospital shared with this one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from anchoring.events import Purpose
from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import ProofBundleDocument
from node.readback import primed
from node.services.shares import ShareView

router = APIRouter(tags=["shares"])

AddressPath = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")]


class ShareIn(BaseModel):
    """Grant another hospital read access for a purpose until a time."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=64, description="Grantee address or name.")
    purpose: Purpose
    expires_at: datetime = Field(description="RFC 3339 with a timezone.")


class ShareOut(BaseModel):
    """One share grant."""

    grantee: str
    purpose: str
    expires_at: datetime
    grant_hash: str
    active: bool

    @classmethod
    def of(cls, view: ShareView) -> ShareOut:
        return cls.model_validate(view, from_attributes=True)


@router.post(
    "/archives/{archive_id}/shares",
    status_code=201,
    response_model=ShareOut,
    summary="Grant another hospital read access",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def grant_share(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: ShareIn
) -> ShareOut:
    view = runtime.shares.grant(principal, archive_id, body.to, body.purpose, body.expires_at)
    return ShareOut.of(view)


@router.get(
    "/archives/{archive_id}/shares",
    response_model=list[ShareOut],
    summary="Share grants of an archive",
    responses=error_responses(401, 403, 404, 422),
)
def list_shares(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> list[ShareOut]:
    return [ShareOut.of(v) for v in runtime.shares.shares(principal, archive_id)]


@router.delete(
    "/archives/{archive_id}/shares/{grantee}",
    status_code=204,
    summary="Revoke a share grant",
    responses=error_responses(400, 401, 403, 404, 409, 422),
)
def revoke_share(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, grantee: AddressPath
) -> Response:
    runtime.shares.revoke(principal, archive_id, grantee)
    return Response(status_code=204)


@router.get(
    "/shared/{custodian}/{archive_id}/content",
    response_class=StreamingResponse,
    summary="Read a record another hospital shared with this one (logged here)",
    responses={
        200: {
            "description": "The decrypted content, streamed; the read is logged first.",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 403, 404, 409, 422, 503),
    },
)
def read_shared(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    custodian: AddressPath,
    archive_id: ArchiveIdPath,
    purpose: Annotated[Purpose, Query()],
) -> StreamingResponse:
    content = runtime.shares.read_shared(principal, custodian, archive_id, purpose)
    return StreamingResponse(
        primed(content.chunks),
        media_type=content.media_type,
        headers={"Content-Length": str(content.size)},
    )


@router.get(
    "/shared/{custodian}/{archive_id}/proof",
    response_class=Response,
    summary="Proof bundle of a shared record: the custodian's events and this node's reads",
    responses={
        200: {"model": ProofBundleDocument, "description": "An `archivechain.proof/v1` bundle."},
        **error_responses(401, 403, 404, 422, 503),
    },
)
def shared_proof(
    runtime: RuntimeDep, principal: PrincipalDep, custodian: AddressPath, archive_id: ArchiveIdPath
) -> Response:
    document = runtime.shares.shared_bundle(principal, custodian, archive_id)
    return Response(content=document, media_type="application/json")
