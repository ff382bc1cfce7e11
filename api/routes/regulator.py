"""Regulator routes (signed-in regulators only, ``RegulatorDep``): the access audit and legal
holds relayed from the regulator's own signed transactions. docs/regulators.md."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ArchiveIdPath, RegulatorDep, RuntimeDep
from api.errors import error_responses
from api.schemas import AccessPageOut, AccessQueryIn, HoldOut, RelayOut, SignedHoldIn

router = APIRouter(prefix="/regulator", tags=["regulator"])


@router.post(
    "/access-events",
    response_model=AccessPageOut,
    summary="Access events by archive, patient, actor and time, each with its inclusion proof",
    description=(
        "Regulators signed in with their member key. Filters in the body (the patient id never "
        "in a URL; the node computes its pseudonym and never returns it)."
    ),
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
def access_events(
    runtime: RuntimeDep, principal: RegulatorDep, body: AccessQueryIn
) -> AccessPageOut:
    page = runtime.regulator.access_events(
        principal,
        archive_id=body.archive_id,
        patient_id=body.patient_id,
        actor=body.actor,
        staff_id=body.staff_id,
        since=body.since,
        until=body.until,
        after=body.after,
        limit=body.limit,
    )
    return AccessPageOut.model_validate(page)


@router.get(
    "/holds",
    response_model=list[HoldOut],
    summary="Archives held here that are on legal hold, and who placed each hold",
    responses=error_responses(401, 403, 422, 503),
)
def holds(runtime: RuntimeDep, principal: RegulatorDep) -> list[HoldOut]:
    return [HoldOut.model_validate(h) for h in runtime.regulator.holds(principal)]


@router.post(
    "/holds/{archive_id}",
    status_code=202,
    response_model=RelayOut,
    summary="Place a regulator hold: relay the regulator's own signed placeHold transaction",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def place_hold(
    runtime: RuntimeDep, principal: RegulatorDep, archive_id: ArchiveIdPath, body: SignedHoldIn
) -> RelayOut:
    tx_hash = runtime.regulator.relay_hold(
        principal, archive_id, body.signed_transaction, place=True
    )
    return RelayOut(tx_hash=tx_hash)


@router.post(
    "/holds/{archive_id}/release",
    status_code=202,
    response_model=RelayOut,
    summary="Release a regulator hold: relay the regulator's own signed releaseHold transaction",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def release_hold(
    runtime: RuntimeDep, principal: RegulatorDep, archive_id: ArchiveIdPath, body: SignedHoldIn
) -> RelayOut:
    tx_hash = runtime.regulator.relay_hold(
        principal, archive_id, body.signed_transaction, place=False
    )
    return RelayOut(tx_hash=tx_hash)
