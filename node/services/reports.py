"""The compliance report (``GET /reports/compliance``): what a hospital reports about its archive,
computed from the catalogue, the fixity summary, the alerts and the anchoring lag.

Definitions (exact; tests compute them independently):

- ``window``: archives this node holds (not ``INCOMING``/``TRANSFERRED``) created in
  ``[from, to)``; ``by_class_and_state`` counts them.
- ``on_time_archiving`` (归档率), per class and in total, over the window: an archive is
  *eligible* once it is archived or its archiving deadline (``created_at`` +
  ``archiving_deadline_days[class]`` days) has passed at ``as_of``; it is *on time* when
  ``archived_at - created_at`` ≤ that many days; *late* when archived after it; *overdue* when
  eligible and not archived. ``rate`` = on time ÷ eligible (null when nothing is eligible).
- point-in-time figures (at ``as_of``, over every archive held, not only the window): ``holds``
  (archives on hold, and how many of those by a regulator), ``dispositions``: ``overdue`` (ARCHIVED,
  retention deadline passed, not on hold: disposition review should have started) and ``in_review``
  (DISPOSITION_REVIEW); ``fixity``: versions whose latest check passed, failed, or that were never
  checked (auditable versions only) and the oldest latest check; ``open_alerts`` by kind;
  ``anchoring``: events and seconds not yet anchored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from anchoring.worker import Lag
from node.config import NodeSettings
from node.db import Clock, Database, utc_now
from node.errors import InputError
from node.models import NOT_HELD, Alert, Archive, ArchiveVersion, CatalogueState, FixityStatus
from node.principal import Action, Principal
from node.services.audits import AUDITABLE_STATES


@dataclass
class OnTime:
    """On-time archiving of one class (or all)."""

    eligible: int = 0
    on_time: int = 0
    late: int = 0
    overdue: int = 0

    @property
    def rate(self) -> float | None:
        return self.on_time / self.eligible if self.eligible else None


@dataclass
class ComplianceReport:
    """See the module docstring for every definition."""

    hospital: str
    as_of: datetime
    window_from: datetime
    window_to: datetime
    by_class_and_state: dict[str, dict[str, int]] = field(default_factory=dict)
    on_time_by_class: dict[str, OnTime] = field(default_factory=dict)
    on_time_total: OnTime = field(default_factory=OnTime)
    holds: dict[str, int] = field(default_factory=dict)
    dispositions: dict[str, int] = field(default_factory=dict)
    fixity: dict[str, Any] = field(default_factory=dict)
    open_alerts: dict[str, int] = field(default_factory=dict)
    anchoring: dict[str, float | int | None] = field(default_factory=dict)


class ReportService:
    """Builds reports from the node's database."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        hospital: str,
        lag: Callable[[], Lag | None],
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.hospital = hospital
        self.lag = lag
        self.clock = clock

    def compliance(
        self, principal: Principal, window_from: datetime, window_to: datetime
    ) -> ComplianceReport:
        principal.require(Action.READ_REPORTS)
        if window_to <= window_from:
            raise InputError("'to' must be after 'from'", code="invalid_window")
        now = self.clock()
        report = ComplianceReport(self.hospital, now, window_from, window_to)
        held = and_(Archive.custodian == self.hospital, Archive.state.not_in(NOT_HELD))
        with self.db.session() as session:
            rows = session.execute(
                select(
                    Archive.record_class, Archive.state, Archive.created_at, Archive.archived_at
                ).where(held, Archive.created_at >= window_from, Archive.created_at < window_to)
            ).all()
            for record_class, state, created, archived in rows:
                counts = report.by_class_and_state.setdefault(record_class, {})
                counts[state] = counts.get(state, 0) + 1
                days = timedelta(days=self.settings.archiving_deadline_days[record_class])
                per_class = report.on_time_by_class.setdefault(record_class, OnTime())
                for tally in (per_class, report.on_time_total):
                    if archived is not None:
                        tally.eligible += 1
                        if archived - created <= days:
                            tally.on_time += 1
                        else:
                            tally.late += 1
                    elif now - created > days:
                        tally.eligible += 1
                        tally.overdue += 1
            report.holds = {
                "on_hold": _count(session, held, Archive.on_hold.is_(True)),
                "by_regulator": _count(session, held, Archive.hold_by_regulator.is_(True)),
            }
            report.dispositions = {
                "overdue": _count(
                    session,
                    held,
                    Archive.state == CatalogueState.ARCHIVED.value,
                    Archive.retention_deadline < now,
                    Archive.on_hold.is_(False),
                ),
                "in_review": _count(
                    session, held, Archive.state == CatalogueState.DISPOSITION_REVIEW.value
                ),
            }
            auditable = (
                select(ArchiveVersion.id)
                .join(Archive, Archive.id == ArchiveVersion.archive_id)
                .where(
                    held,
                    Archive.state.in_(AUDITABLE_STATES),
                    ArchiveVersion.blob_deleted_at.is_(None),
                )
                .subquery()
            )
            checked = session.execute(
                select(FixityStatus.ok, func.count(), func.min(FixityStatus.checked_at))
                .where(FixityStatus.version_id.in_(select(auditable.c.id)))
                .group_by(FixityStatus.ok)
            ).all()
            total = session.execute(select(func.count()).select_from(auditable)).scalar_one()
            passed = sum(int(n) for ok, n, _ in checked if ok)
            failed = sum(int(n) for ok, n, _ in checked if not ok)
            oldest = min((when for _, _, when in checked if when is not None), default=None)
            report.fixity = {
                "versions": int(total),
                "passed": passed,
                "failed": failed,
                "never_checked": int(total) - passed - failed,
                "oldest_check": oldest,
            }
            report.open_alerts = {
                kind: int(n)
                for kind, n in session.execute(
                    select(Alert.kind, func.count())
                    .where(Alert.open_key.is_not(None))
                    .group_by(Alert.kind)
                )
            }
        lag = self.lag()
        report.anchoring = {
            "events_behind": lag.events_behind if lag else None,
            "seconds_behind": round(lag.seconds_behind, 3) if lag else None,
        }
        return report


def _count(session: Any, *conditions: Any) -> int:
    return int(
        session.execute(select(func.count()).select_from(Archive).where(*conditions)).scalar_one()
    )


def compliance_rows(report: ComplianceReport) -> list[tuple[str, str, str, str]]:
    """The report as ``(section, key, measure, value)`` rows (the CSV form)."""
    rows: list[tuple[str, str, str, str]] = [
        ("report", "hospital", "", report.hospital),
        ("report", "as_of", "", report.as_of.isoformat()),
        ("report", "from", "", report.window_from.isoformat()),
        ("report", "to", "", report.window_to.isoformat()),
    ]
    for record_class, states in sorted(report.by_class_and_state.items()):
        for state, count in sorted(states.items()):
            rows.append(("archives", record_class, state, str(count)))
    for record_class, tally in [
        *sorted(report.on_time_by_class.items()),
        ("ALL", report.on_time_total),
    ]:
        for measure in ("eligible", "on_time", "late", "overdue"):
            rows.append(("on_time_archiving", record_class, measure, str(getattr(tally, measure))))
        rows.append(
            (
                "on_time_archiving",
                record_class,
                "rate",
                "" if tally.rate is None else f"{tally.rate:.6f}",
            )
        )
    for section, values in (
        ("holds", report.holds),
        ("dispositions", report.dispositions),
        ("fixity", report.fixity),
        ("open_alerts", report.open_alerts),
        ("anchoring", report.anchoring),
    ):
        for key, value in sorted(values.items()):
            text = (
                value.isoformat()
                if isinstance(value, datetime)
                else ""
                if value is None
                else str(value)
            )
            rows.append((section, key, "", text))
    return rows
