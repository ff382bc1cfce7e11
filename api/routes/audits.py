"""``POST /audits/fixity``: run a fixity audit now over all held archives, some archive ids, or
one record class (see ``node.services.audits``). The answer comes when the audit is done; its
FIXITY_CHECK events are committed and its failures raised as alerts by then."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from anchoring.events import RecordClass
from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import ARCHIVE_ID_PATTERN
from node.services.audits import MAX_AUDIT_ARCHIVES, AuditScope, FixityReport, ScopeKind
from node.services.logaudit import LogAuditReport

__all__ = ["FixityAuditIn", "FixityReportOut", "LogAuditReportOut", "router"]

router = APIRouter(prefix="/audits", tags=["monitoring"])

ArchiveId = Annotated[str, Field(pattern=ARCHIVE_ID_PATTERN)]


class FixityAuditIn(BaseModel):
    """What to audit."""

    model_config = ConfigDict(extra="forbid")

    scope: ScopeKind = Field(
        default=ScopeKind.ALL,
        description="`all` held archives, the `archives` named, or one record `class`.",
    )
    archive_ids: list[ArchiveId] = Field(
        default_factory=list,
        max_length=MAX_AUDIT_ARCHIVES,
        description=f"With scope `archives`: 1 to {MAX_AUDIT_ARCHIVES} archive ids.",
    )
    record_class: RecordClass | None = Field(default=None, description="With scope `class`.")

    def to_scope(self) -> AuditScope:
        return AuditScope(
            kind=self.scope, archive_ids=tuple(self.archive_ids), record_class=self.record_class
        )


class FixityFailureOut(BaseModel):
    """One version that failed."""

    archive_id: str
    version: int
    problem: Literal["hash_mismatch", "size_mismatch", "blob_missing", "blob_unreadable"]


class FixityReportOut(BaseModel):
    """What the audit did."""

    checked: int = Field(description="Versions checked (one FIXITY_CHECK event each).")
    passed: int
    failed: int
    skipped: int = Field(description="Versions not checked (archive changed or inconsistent).")
    bytes_read: int
    seconds: float
    failures: list[FixityFailureOut]

    @classmethod
    def of(cls, report: FixityReport) -> FixityReportOut:
        return cls(
            checked=report.checked,
            passed=report.passed,
            failed=report.failed,
            skipped=report.skipped,
            bytes_read=report.bytes_read,
            seconds=round(report.seconds, 6),
            failures=[
                FixityFailureOut(
                    archive_id=f.archive_id,
                    version=f.version,
                    problem=f.problem,
                )
                for f in report.failures
            ],
        )


@router.post(
    "/fixity",
    response_model=FixityReportOut,
    summary="Run a fixity audit now",
    description=(
        "Re-reads every stored blob in scope (archives held in CREATED, ARCHIVED or "
        "DISPOSITION_REVIEW), compares its SHA-256 with the hash its CREATE/AMEND event "
        "recorded, logs one FIXITY_CHECK event per version and raises an alert per failure "
        "(`fixity_mismatch`, `blob_missing`). Reads at most `fixity_max_bytes_per_second`. "
        "Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 422, 503),
)
def run_fixity_audit(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: Annotated[FixityAuditIn, Body(examples=[{"scope": "class", "record_class": "LAB"}])],
) -> FixityReportOut:
    return FixityReportOut.of(runtime.fixity.audit(principal, body.to_scope()))


class LogFindingOut(BaseModel):
    """One problem found (also raised as an alert of the same kind and subject)."""

    kind: str = Field(examples=["log_entry_tampered"])
    subject: str = Field(examples=["01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"])
    detail: dict[str, str | int | bool] = Field(examples=[{"log_index": 17}])


class LogAuditReportOut(BaseModel):
    """What the log audit checked and found."""

    ok: bool
    entries: int = Field(description="Log entries re-hashed.")
    checkpoints: int = Field(description="On-chain checkpoints compared.")
    archives: int = Field(description="Archive hash chains replayed.")
    seconds: float
    findings: list[LogFindingOut]

    @classmethod
    def of(cls, report: LogAuditReport) -> LogAuditReportOut:
        return cls(
            ok=report.ok,
            entries=report.entries,
            checkpoints=report.checkpoints,
            archives=report.archives,
            seconds=round(report.seconds, 6),
            findings=[
                LogFindingOut(kind=f.kind, subject=f.subject, detail=f.detail)
                for f in report.findings
            ],
        )


@router.post(
    "/log",
    response_model=LogAuditReportOut,
    summary="Run a log audit now",
    description=(
        "Re-hashes every stored event, recomputes the log root at every checkpoint size the "
        "chain holds for this hospital and compares it with the anchored root, and replays each "
        "held archive's hash chain against its catalogue row. Each finding is also an alert "
        "(`log_entry_tampered`, `log_root_mismatch`, `log_head_mismatch`, `log_entry_missing`, "
        "`hash_chain_broken`, `catalogue_mismatch`). No body. 503 when the chain cannot be read. "
        "Role: archivist."
    ),
    responses=error_responses(401, 403, 422, 503),
)
def run_log_audit(runtime: RuntimeDep, principal: PrincipalDep) -> LogAuditReportOut:
    return LogAuditReportOut.of(runtime.log_audit.audit(principal))
