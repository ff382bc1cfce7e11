"""The access policy and its exceptions: the policy table, recorded denials (for auditors),
break-glass windows (opened by clinicians, reported to the privacy officer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import (
    NO_CONTROL_PATTERN,
    BreakGlassIn,
    BreakGlassOut,
    DenialOut,
    PolicyRuleOut,
    UtcDateTime,
)
from node.principal import Action

router = APIRouter(tags=["access policy"])


class WindowQuery(BaseModel):
    """A time window (RFC 3339 with offset); unknown query parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    since: UtcDateTime | None = None
    until: UtcDateTime | None = None


class DenialQuery(WindowQuery):
    """Filters of the denial list."""

    actor: str | None = Field(default=None, max_length=80, pattern=NO_CONTROL_PATTERN)
    archive_id: str | None = Field(default=None, max_length=26, pattern=NO_CONTROL_PATTERN)
    limit: int = Field(default=100, ge=1, le=1000)


@router.get(
    "/access/policy",
    response_model=list[PolicyRuleOut],
    summary="The access policy table this node enforces",
    description="Roles: auditor, records manager, archivist.",
    responses=error_responses(401, 403, 422, 503),
)
def policy(runtime: RuntimeDep, principal: PrincipalDep) -> list[PolicyRuleOut]:
    principal.require(Action.READ_DENIALS)
    return [PolicyRuleOut.model_validate(rule) for rule in runtime.gate.policy.rules]


@router.get(
    "/access/denials",
    response_model=list[DenialOut],
    summary="Reads the access policy refused (newest first)",
    description="Roles: auditor, records manager, archivist. Never chain events.",
    responses=error_responses(400, 401, 403, 422, 503),
)
def denials(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[DenialQuery, Query()]
) -> list[DenialOut]:
    rows = runtime.gate.denials(
        principal,
        since=query.since,
        until=query.until,
        actor=query.actor,
        archive_id=query.archive_id,
        limit=query.limit,
    )
    return [DenialOut.model_validate(row) for row in rows]


@router.post(
    "/archives/{archive_id}/break-glass",
    status_code=201,
    response_model=BreakGlassOut,
    summary="Open a break-glass window: reads outside the policy, time-boxed, alerted",
    description=(
        "Role: clinician. A mandatory reason (10-2000 characters); logs a BREAK_GLASS event, "
        "raises a `break_glass` alert and allows the caller's reads of this archive for the "
        "purpose until `expires_at` (`break_glass_hours`, default 4), each logged as a "
        "break-glass ACCESS."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def open_break_glass(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: BreakGlassIn
) -> BreakGlassOut:
    window = runtime.gate.open_break_glass(principal, archive_id, body.reason, body.purpose)
    return BreakGlassOut.model_validate(window)


@router.get(
    "/access/break-glass",
    response_model=list[BreakGlassOut],
    summary="Break-glass report: windows opened (newest first) with their read counts",
    description="Roles: auditor (the privacy officer), records manager, archivist.",
    responses=error_responses(400, 401, 403, 422, 503),
)
def break_glass_report(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[WindowQuery, Query()]
) -> list[BreakGlassOut]:
    windows = runtime.gate.break_glass_report(principal, query.since, query.until)
    return [BreakGlassOut.model_validate(w) for w in windows]
