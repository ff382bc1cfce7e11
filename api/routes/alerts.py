"""``GET /alerts`` and ``POST /alerts/{id}/ack``: conditions a person must look at (fixity and log
audit failures, quality-control failures, …), deduplicated by kind and subject (see
``node.services.alerts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from node.alerts import Severity
from node.services.alerts import MAX_ALERT_PAGE, AlertState, AlertView

__all__ = ["AlertOut", "AlertPageOut", "AlertQuery", "router"]

MAX_ALERT_ID = 2**53 - 1

router = APIRouter(prefix="/alerts", tags=["monitoring"])


class AlertQuery(BaseModel):
    """Query of ``GET /alerts``."""

    model_config = ConfigDict(extra="forbid")

    state: AlertState = Field(
        default=AlertState.OPEN, description="`open` (default), `acknowledged` or `all`."
    )
    kind: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        description="Only alerts of this kind, e.g. `fixity_mismatch`.",
    )
    limit: int = Field(default=100, ge=1, le=MAX_ALERT_PAGE)
    offset: int = Field(default=0, ge=0, le=10**9)


class AlertOut(BaseModel):
    """One alert: a condition of one kind about one subject, counted while open."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(examples=["fixity_mismatch"])
    subject: str = Field(
        description="What it is about: an archive id, a checkpoint, a job (never PHI).",
        examples=["01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"],
    )
    severity: Severity
    detail: dict[str, Any] = Field(description="Codes and counts of the last occurrence.")
    count: int = Field(description="Times raised while open.")
    first_seen: datetime
    last_seen: datetime
    acknowledged_by: str | None = Field(description="Pseudonym of the staff member who acked.")
    acknowledged_at: datetime | None

    @classmethod
    def of(cls, view: AlertView) -> AlertOut:
        return cls.model_validate(view)


class AlertPageOut(BaseModel):
    """One page of alerts, most recently seen first."""

    items: list[AlertOut]
    total: int
    limit: int
    offset: int


@router.get(
    "",
    response_model=AlertPageOut,
    summary="Alerts, most recently seen first",
    description=(
        "Open alerts by default (`state=acknowledged` or `all` for the others). An open alert "
        "raised again is counted on the same row. Roles: archivist, auditor, admin."
    ),
    responses=error_responses(400, 401, 403, 422, 503),
)
def list_alerts(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[AlertQuery, Query()]
) -> AlertPageOut:
    items, total = runtime.alert_store.list(
        principal, state=query.state, kind=query.kind, limit=query.limit, offset=query.offset
    )
    return AlertPageOut(
        items=[AlertOut.of(view) for view in items],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


@router.post(
    "/{alert_id}/ack",
    response_model=AlertOut,
    summary="Acknowledge an alert",
    description=(
        "Closes the alert (idempotent: acknowledging it again changes nothing). The same "
        "condition raised afterwards opens a new alert. No body. Role: archivist."
    ),
    responses=error_responses(401, 403, 404, 422, 503),
)
def acknowledge_alert(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    alert_id: Annotated[int, Path(ge=1, le=MAX_ALERT_ID, description="The alert's id.")],
) -> AlertOut:
    return AlertOut.of(runtime.alert_store.acknowledge(principal, alert_id))
