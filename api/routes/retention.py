"""Retention routes: extend a deadline, report encounters, list due archives, run the disposition
job, propose disposition lists and decide on them (four eyes). Rules live in
``node.services.retention``; these routes only translate HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import (
    ArchiveOut,
    BatchDestructionOut,
    CertificateOut,
    DecisionIn,
    DestructionOut,
    DispositionRunOut,
    DueOut,
    DueQuery,
    EncounterIn,
    ItemOut,
    NoticeOut,
    NoticeQuery,
    ProposalIn,
    ProposalOut,
    RetentionExtendIn,
)

router = APIRouter(tags=["retention"])

COMMAND_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 503)
READ_ERRORS = error_responses(400, 401, 403, 422, 503)

PatientIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The hospital's patient id (turned into the node's keyed pseudonym; never "
        "stored in clear).",
    ),
]
NoticeIdPath = Annotated[
    int, Path(ge=1, le=2**53 - 1, description="Destruction notice id (from the list).")
]
ProposalIdPath = Annotated[
    str, Path(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", description="Disposition list id.")
]


@router.post(
    "/archives/{archive_id}/retention",
    response_model=ArchiveOut,
    summary="Extend an archive's retention",
    description=(
        "Moves the deadline later (RETENTION_EXTEND, `extendRetention` on chain); the reason stays "
        "on this node. A deadline not after the current one answers 409 `retention_shortened`. "
        "Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def extend_retention(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: RetentionExtendIn
) -> ArchiveOut:
    view = runtime.retention.extend(principal, archive_id, body.new_deadline, body.reason)
    return ArchiveOut.of(view)


@router.post(
    "/patients/{patient_id}/encounters",
    status_code=204,
    summary="Report a visit, admission or discharge",
    description=(
        "A visit restarts the retention clock of the patient's outpatient and emergency records, "
        "a discharge that of the inpatient and nursing records: deadlines only move later "
        "(RETENTION_EXTEND). An encounter in the future answers 400 `trigger_in_future`. "
        "Role: archivist (hospital systems use an archivist key)."
    ),
    responses=COMMAND_ERRORS,
)
def report_encounter(
    runtime: RuntimeDep, principal: PrincipalDep, patient_id: PatientIdPath, body: EncounterIn
) -> None:
    runtime.retention.accept_encounter(principal, body.to_report(patient_id))


@router.get(
    "/retention/due",
    response_model=list[DueOut],
    summary="Archives due for disposition",
    description=(
        "Archives held here (ARCHIVED or in review) whose deadline has passed or falls within "
        "`within` (ISO 8601 duration, default `P30D`), earliest first. Roles: archivist, "
        "records manager."
    ),
    responses=READ_ERRORS,
)
def due(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[DueQuery, Query()]
) -> list[DueOut]:
    views = runtime.retention.due(principal, query.within, query.limit)
    return [DueOut.model_validate(v) for v in views]


@router.post(
    "/retention/run",
    response_model=DispositionRunOut,
    summary="Run the disposition job now",
    description=(
        "Moves every archive whose deadline has passed, not on hold and not in transfer, to "
        "DISPOSITION_REVIEW (DISPOSITION_START), then raises a `disposition_overdue` alert for "
        "each archive still undisposed more than `disposition_overdue_days` after its deadline, "
        "as the daily job does. Roles: archivist, records manager."
    ),
    responses=COMMAND_ERRORS,
)
def run_disposition(runtime: RuntimeDep, principal: PrincipalDep) -> DispositionRunOut:
    moved = runtime.retention.start_dispositions(principal)  # checks the role first
    return DispositionRunOut(moved_to_review=moved, overdue_alerted=runtime.retention.overdue())


@router.post(
    "/retention/proposals",
    status_code=201,
    response_model=ProposalOut,
    summary="Propose a disposition list",
    description=(
        "Archives in DISPOSITION_REVIEW, none on hold, none on another open list. Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def propose(runtime: RuntimeDep, principal: PrincipalDep, body: ProposalIn) -> ProposalOut:
    return ProposalOut.of(runtime.retention.propose(principal, body.archive_ids, body.reason))


@router.get(
    "/retention/proposals/{proposal_id}",
    response_model=ProposalOut,
    summary="A disposition list and its decisions",
    responses=error_responses(401, 403, 404, 422, 503),
)
def get_proposal(
    runtime: RuntimeDep, principal: PrincipalDep, proposal_id: ProposalIdPath
) -> ProposalOut:
    return ProposalOut.of(runtime.retention.proposal(principal, proposal_id))


@router.post(
    "/retention/proposals/{proposal_id}/items/{archive_id}",
    response_model=ItemOut,
    summary="Approve or reject one archive of a disposition list",
    description=(
        "Four eyes: a records manager who is not the proposer. Approval is valid for "
        "`disposition_approval_days`; a hold blocks it (409 `on_hold`). Rejection keeps the "
        "archive until `new_deadline` (RETENTION_EXTEND). Role: records manager."
    ),
    responses=COMMAND_ERRORS,
)
def decide(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    proposal_id: ProposalIdPath,
    archive_id: ArchiveIdPath,
    body: DecisionIn,
) -> ItemOut:
    view = runtime.retention.decide(
        principal,
        proposal_id,
        archive_id,
        approve=body.approve,
        reason=body.reason,
        new_deadline=body.new_deadline,
    )
    return ItemOut.model_validate(view)


@router.post(
    "/retention/proposals/{proposal_id}/items/{archive_id}/destroy",
    response_model=DestructionOut,
    summary="Destroy an approved archive (crypto-shredding)",
    description=(
        "Destroys every copy of the archive's key, erases descriptive metadata, signs the "
        "destruction certificate, logs DESTROY with its hash and queues `destroy(id, "
        "certificateHash)` on chain; then deletes the ciphertext. Needs an unexpired approval "
        "and no hold. Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def destroy(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    proposal_id: ProposalIdPath,
    archive_id: ArchiveIdPath,
) -> DestructionOut:
    view = runtime.retention.destroy(principal, proposal_id, archive_id)
    return DestructionOut.model_validate(view)


@router.post(
    "/retention/proposals/{proposal_id}/destroy",
    response_model=BatchDestructionOut,
    summary="Destroy every approved archive of a disposition list",
    description=(
        "As the single-item form, 200 archives per transaction; items that cannot be executed "
        "now (not approved, expired, on hold, not in review) are skipped and listed with their "
        "code. Role: archivist."
    ),
    responses=COMMAND_ERRORS,
)
def destroy_list(
    runtime: RuntimeDep, principal: PrincipalDep, proposal_id: ProposalIdPath
) -> BatchDestructionOut:
    return BatchDestructionOut.of(runtime.retention.destroy_approved(principal, proposal_id))


@router.get(
    "/archives/{archive_id}/certificate",
    response_model=CertificateOut,
    summary="An archive's destruction certificate",
    description="Roles: archivist, auditor, records manager.",
    responses=error_responses(401, 403, 404, 422, 503),
)
def certificate(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> CertificateOut:
    return CertificateOut.of(runtime.retention.certificate(principal, archive_id))


@router.get(
    "/retention/notices",
    response_model=list[NoticeOut],
    summary="Destruction notices to grantees",
    description=(
        "The notices this node queued when it destroyed a shared archive, one per grantee past "
        "or present, newest first; `state` filters (`pending`, `delivered`, `refused`). A notice "
        "a grantee refused for good (401/403/404) also raises a `destruction_notice_refused` "
        "alert. Roles: archivist, records manager, admin."
    ),
    responses=READ_ERRORS,
)
def list_notices(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[NoticeQuery, Query()]
) -> list[NoticeOut]:
    views = runtime.notices.list_notices(principal, query.state, query.limit)
    return [NoticeOut.model_validate(v) for v in views]


@router.post(
    "/retention/notices/{notice_id}/resend",
    response_model=NoticeOut,
    summary="Send a refused destruction notice again",
    description=(
        "Back to `pending`, due at once (the notice job sends it within 30 s, with the usual "
        "backoff). Only a `refused` notice: others answer 409 `notice_not_refused`; an unknown "
        "id 404 `notice_not_found`. No body. Roles: records manager, admin."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
)
def resend_notice(
    runtime: RuntimeDep, principal: PrincipalDep, notice_id: NoticeIdPath
) -> NoticeOut:
    return NoticeOut.model_validate(runtime.notices.resend(principal, notice_id))
