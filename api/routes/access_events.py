"""``POST /access-events``: bulk ingest of reads reported by hospital systems (HIS, PACS viewers).

A batch of up to ``MAX_ACCESS_BATCH`` reports becomes one ACCESS event per report, recorded by
``ArchiveService.record_accesses`` in one unit of work: all or nothing, so a single unknown archive
or an archive in transit refuses the whole batch and nothing is logged. A report's ``staff_id`` (the
reporting system's own user id) reaches the log only as a keyed pseudonym; without one, the event's
actor is the calling key's pseudonym. The answer comes once the batch is durably committed.

The body may be large (about 1.5 MB for a full batch): its limit is set in ``api.limits``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.dataclasses import dataclass

from anchoring.events import AccessScope, Purpose
from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.limits import ACCESS_EVENTS_BODY_BYTES
from api.schemas import ARCHIVE_ID_PATTERN, NO_CONTROL_PATTERN
from node.services.archives import MAX_ACCESS_BATCH, ReportedAccess

__all__ = ["AccessBatchIn", "AccessRecordedOut", "AccessReportIn", "router"]

MAX_STAFF_ID_LENGTH = 64

StaffId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=MAX_STAFF_ID_LENGTH,
        pattern=NO_CONTROL_PATTERN,
    ),
]

router = APIRouter(tags=["access events"])


# A pydantic dataclass *subclassing* the service's ``ReportedAccess``: validated reports go to
# the service as they are, with no copy (copying 10,000 reports costs as much as validating them).
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class AccessReportIn(ReportedAccess):
    """One read that happened in a hospital system."""

    archive_id: Annotated[
        str,
        Field(
            pattern=ARCHIVE_ID_PATTERN,
            description="The archive that was read (ULID, 26 characters).",
            examples=["01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"],
        ),
    ]
    purpose: Annotated[Purpose, Field(description="Purpose of use, written into the ACCESS event.")]
    scope: Annotated[
        AccessScope, Field(description="What was read: content, metadata or proof.")
    ] = AccessScope.CONTENT
    staff_id: Annotated[
        StaffId | None,
        Field(
            description=(
                "The reporting system's user id of the reader. Only its keyed pseudonym is "
                "logged; absent: the event's actor is the calling key."
            ),
            examples=["pacs-user-0042"],
        ),
    ] = None


class AccessBatchIn(BaseModel):
    """A batch of reported reads, recorded all or nothing."""

    model_config = ConfigDict(extra="forbid")

    reports: list[AccessReportIn] = Field(
        min_length=1,
        max_length=MAX_ACCESS_BATCH,
        description=f"1 to {MAX_ACCESS_BATCH:,} reports.",
    )


class AccessRecordedOut(BaseModel):
    """How many ACCESS events the batch added to the log."""

    recorded: int = Field(examples=[2])


ACCESS_BATCH_EXAMPLE = {
    "reports": [
        {
            "archive_id": "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A",
            "purpose": "treatment",
            "scope": "content",
            "staff_id": "pacs-user-0042",
        },
        {"archive_id": "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", "purpose": "quality", "scope": "metadata"},
    ]
}


@router.post(
    "/access-events",
    status_code=201,
    response_model=AccessRecordedOut,
    summary="Record a batch of reported reads (ACCESS events)",
    description=(
        f"Body: `{{reports: [{{archive_id, purpose, scope, staff_id}}]}}`, 1 to "
        f"{MAX_ACCESS_BATCH:,} reports (at most {ACCESS_EVENTS_BODY_BYTES // (1024 * 1024)} MiB). "
        "Each report becomes one ACCESS event; the batch is one transaction, so any refused "
        "report (an unknown archive: 404; an archive in transit or no longer held: 409) "
        "refuses the whole batch and nothing is logged. `staff_id` is logged only as a keyed "
        "pseudonym. Answers once the events are durable. Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def record_access_events(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: Annotated[AccessBatchIn, Body(examples=[ACCESS_BATCH_EXAMPLE])],
) -> AccessRecordedOut:
    reports: list[ReportedAccess] = list(body.reports)
    return AccessRecordedOut(recorded=runtime.archives.record_accesses(principal, reports))
