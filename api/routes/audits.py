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
from node.services.quality import QcAuditReport, QcReport, QcResultView

__all__ = [
    "FixityAuditIn",
    "FixityReportOut",
    "LogAuditReportOut",
    "QcAuditReportOut",
    "QcResultOut",
    "router",
]

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
    replicas_verified: int = Field(
        description="Replicas of the passed versions at peer hospitals that answered their "
        "challenge (a hash over a random byte range with a fresh nonce; docs/recovery.md §1)."
    )
    replicas_failed: int = Field(
        description="Replicas that answered wrong, refused or sent other bytes: each a REPLICA "
        "`failed` event and a `replica_failed` alert, and the replica moves to another peer."
    )
    replicas_unavailable: int = Field(
        0,
        description="Replicas whose holder could not answer now (no answer, 502, 503 or 504, "
        "e.g. its chain is down): no event, no alert, challenged again at the next step.",
    )

    @classmethod
    def of(cls, report: FixityReport) -> FixityReportOut:
        return cls(
            checked=report.checked,
            passed=report.passed,
            failed=report.failed,
            skipped=report.skipped,
            bytes_read=report.bytes_read,
            seconds=round(report.seconds, 6),
            replicas_verified=report.replicas_verified,
            replicas_failed=report.replicas_failed,
            replicas_unavailable=report.replicas_unavailable,
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
        "(`fixity_mismatch`, `blob_missing`); a failed version is repaired from a replica. "
        "The replicas of the passed versions at peer hospitals are challenged through the peer "
        "API (`replicas_verified`, `replicas_failed`, `replicas_unavailable`). Reads at most "
        "`fixity_max_bytes_per_second`. Role: archivist."
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


class QcCheckOut(BaseModel):
    """One failed 四性检测 check."""

    dimension: Literal["authenticity", "integrity", "usability", "security"]
    code: str = Field(examples=["pdf_unreadable"])


class QcResultOut(BaseModel):
    """The latest 四性检测 of one archive version."""

    archive_id: str
    version: int
    checked_at: str
    ok: bool
    failed: list[QcCheckOut]
    trigger: Literal["archiving", "audit"]

    @classmethod
    def of(cls, view: QcResultView) -> QcResultOut:
        checked = view.checked_at
        return cls(
            archive_id=view.archive_id,
            version=view.version,
            checked_at=checked.isoformat().replace("+00:00", "Z")
            if hasattr(checked, "isoformat")
            else str(checked),
            ok=view.ok,
            failed=[QcCheckOut(dimension=c.dimension, code=c.code) for c in view.failed],
            trigger=view.trigger,
        )


class QcFailureOut(BaseModel):
    """One archive that failed."""

    archive_id: str
    failed: list[QcCheckOut]

    @classmethod
    def of(cls, report: QcReport) -> QcFailureOut:
        return cls(
            archive_id=report.archive_id,
            failed=[QcCheckOut(dimension=c.dimension, code=c.code) for c in report.failed],
        )


class QcAuditReportOut(BaseModel):
    """What the QC audit checked and found."""

    ok: bool
    archives: int = Field(description="Archives checked.")
    passed: int
    seconds: float
    failures: list[QcFailureOut]
    plaintext: list[str] = Field(
        description=(
            "Scope `all` only: readable files under the data directory "
            "(`file:<path>:<kind>`) and unexpected unbounded database columns "
            "(`column:<table>.<column>`); each is also a `plaintext_found` alert."
        )
    )

    @classmethod
    def of(cls, report: QcAuditReport) -> QcAuditReportOut:
        return cls(
            ok=not report.failures and not report.plaintext,
            archives=report.archives,
            passed=report.passed,
            seconds=round(report.seconds, 6),
            failures=[QcFailureOut.of(f) for f in report.failures],
            plaintext=report.plaintext,
        )


@router.post(
    "/quality",
    response_model=QcAuditReportOut,
    summary="Run 四性检测 now",
    description=(
        "Re-runs the four checks (authenticity, integrity, usability, security) on the current "
        "version of every archive in scope (held in CREATED, ARCHIVED or DISPOSITION_REVIEW), "
        "stores each result (shown by `GET /archives/{id}/quality`) and raises `qc_failed` per "
        "failing archive. Same body as `POST /audits/fixity`. Role: archivist."
    ),
    responses=error_responses(400, 401, 403, 422, 503),
)
def run_quality_audit(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: Annotated[FixityAuditIn, Body(examples=[{"scope": "all"}])],
) -> QcAuditReportOut:
    return QcAuditReportOut.of(runtime.quality.audit(principal, body.to_scope()))
