"""``GET /reports/compliance`` and ``GET /reports/utilisation``: the reports as JSON or CSV
(definitions in ``node.services.reports`` and docs/monitoring.md)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from node.services.reports import (
    ComplianceReport,
    UtilisationReport,
    compliance_rows,
    utilisation_rows,
)

router = APIRouter(prefix="/reports", tags=["monitoring"])

EARLIEST = date(1970, 1, 1)
LATEST = date(9999, 12, 30)


class ComplianceQuery(BaseModel):
    """Query of ``GET /reports/compliance``."""

    model_config = ConfigDict(extra="forbid")

    from_: date = Field(
        default=EARLIEST, alias="from", ge=EARLIEST, le=LATEST, description="First day (UTC)."
    )
    to: date | None = Field(
        default=None, ge=EARLIEST, le=LATEST, description="Day after the last (default: tomorrow)."
    )
    format: Literal["json", "csv"] = "json"


def _json(report: ComplianceReport) -> dict[str, Any]:
    def on_time(tally: Any) -> dict[str, Any]:
        return {
            "eligible": tally.eligible,
            "on_time": tally.on_time,
            "late": tally.late,
            "overdue": tally.overdue,
            "rate": tally.rate,
        }

    fixity = dict(report.fixity)
    if isinstance(fixity.get("oldest_check"), datetime):
        fixity["oldest_check"] = fixity["oldest_check"].isoformat().replace("+00:00", "Z")
    return {
        "hospital": report.hospital,
        "as_of": report.as_of.isoformat().replace("+00:00", "Z"),
        "from": report.window_from.date().isoformat(),
        "to": report.window_to.date().isoformat(),
        "archives": report.by_class_and_state,
        "on_time_archiving": {
            "by_class": {c: on_time(t) for c, t in sorted(report.on_time_by_class.items())},
            "total": on_time(report.on_time_total),
        },
        "holds": report.holds,
        "dispositions": report.dispositions,
        "fixity": fixity,
        "open_alerts": report.open_alerts,
        "anchoring": report.anchoring,
        "qc": report.qc,
    }


@router.get(
    "/compliance",
    summary="Compliance report (JSON or CSV)",
    description=(
        "Archives created in `[from, to)` (dates, UTC) by class and state, and their on-time "
        "archiving rate (archived within `archiving_deadline_days[class]` days of creation ÷ "
        "archives archived or past that deadline); at report time: holds, overdue dispositions, "
        "fixity status of stored versions, QC (四性检测) failure rate by dimension, open "
        "alerts by kind, anchoring lag. `format=csv` "
        "answers `section,key,measure,value` rows. Definitions: docs/monitoring.md. Roles: "
        "archivist, auditor."
    ),
    responses={
        200: {
            "description": "The report.",
            "content": {"application/json": {}, "text/csv": {}},
        },
        **error_responses(400, 401, 403, 422, 503),
    },
)
def compliance_report(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[ComplianceQuery, Query()]
) -> Response:
    window_from, window_to = _window(query)
    report = runtime.reports.compliance(principal, window_from, window_to)
    if query.format == "csv":
        return _csv(compliance_rows(report))
    return JSONResponse(_json(report))


def _window(query: ComplianceQuery) -> tuple[datetime, datetime]:
    end = query.to or (datetime.now(UTC).date() + timedelta(days=1))
    return datetime.combine(query.from_, time(), UTC), datetime.combine(end, time(), UTC)


def _csv(rows: list[tuple[str, str, str, str]]) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "key", "measure", "value"])
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8")


def _utilisation_json(report: UtilisationReport) -> dict[str, Any]:
    return {
        "hospital": report.hospital,
        "as_of": report.as_of.isoformat().replace("+00:00", "Z"),
        "from": report.window_from.date().isoformat(),
        "to": report.window_to.date().isoformat(),
        "retrieval_seconds": {
            "by_class": {c: t.summary() for c, t in sorted(report.retrieval_by_class.items())},
            "by_tier": {t: s.summary() for t, s in sorted(report.retrieval_by_tier.items())},
            "total": report.retrieval_total.summary(),
        },
        "utilisation": {
            "archives_read": report.archives_read,
            "archives_held": report.archives_held,
            "rate": report.utilisation_rate,
        },
        "sharing": report.sharing,
        "reads_by_purpose": dict(sorted(report.reads_by_purpose.items())),
    }


@router.get(
    "/utilisation",
    summary="Utilisation report (JSON or CSV)",
    description=(
        "Over `[from, to)` (dates, UTC): retrieval time of content reads (request arrival to "
        "first and to last body byte) p50/p95 by nearest rank, by class and in total; "
        "utilisation rate (distinct archives read in the window and still held ÷ archives held "
        "now); sharing volume (SHARE_GRANT events, ACCESS events naming a grant, transfers by "
        "direction); content reads by purpose. `format=csv` answers `section,key,measure,value` "
        "rows. Definitions: docs/monitoring.md. Roles: archivist, auditor."
    ),
    responses={
        200: {
            "description": "The report.",
            "content": {"application/json": {}, "text/csv": {}},
        },
        **error_responses(400, 401, 403, 422, 503),
    },
)
def utilisation_report(
    runtime: RuntimeDep, principal: PrincipalDep, query: Annotated[ComplianceQuery, Query()]
) -> Response:
    window_from, window_to = _window(query)
    report = runtime.reports.utilisation(principal, window_from, window_to)
    if query.format == "csv":
        return _csv(utilisation_rows(report))
    return JSONResponse(_utilisation_json(report))
