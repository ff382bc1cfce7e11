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

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from anchoring.events import AccessEvent, EventType, parse_event
from anchoring.storage import LogEntry
from anchoring.worker import Lag
from node.config import NodeSettings
from node.db import Clock, Database, utc_now
from node.errors import InputError
from node.models import (
    NOT_HELD,
    Alert,
    Archive,
    ArchiveVersion,
    CatalogueState,
    ContentRead,
    FixityStatus,
    QcResult,
    Transfer,
)
from node.principal import Action, Principal
from node.services.audits import AUDITABLE_STATES
from node.services.tiers import note_access


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
    qc: dict[str, Any] = field(default_factory=dict)


def nearest_rank(values: list[float], q: float) -> float | None:
    """The ``q`` quantile by nearest rank: the value at rank ``ceil(q * n)`` (1-based) of the
    ascending values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Retrieval:
    """Retrieval times of the content reads of one class (or all), in seconds."""

    reads: int = 0
    completed: int = 0
    first_byte: list[float] = field(default_factory=list)
    last_byte: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "reads": self.reads,
            "completed": self.completed,
            "first_byte_p50": nearest_rank(self.first_byte, 0.5),
            "first_byte_p95": nearest_rank(self.first_byte, 0.95),
            "last_byte_p50": nearest_rank(self.last_byte, 0.5),
            "last_byte_p95": nearest_rank(self.last_byte, 0.95),
        }


@dataclass
class UtilisationReport:
    """See docs/monitoring.md (utilisation report) for every definition."""

    hospital: str
    as_of: datetime
    window_from: datetime
    window_to: datetime
    retrieval_by_class: dict[str, Retrieval] = field(default_factory=dict)
    retrieval_total: Retrieval = field(default_factory=Retrieval)
    retrieval_by_tier: dict[str, Retrieval] = field(default_factory=dict)
    archives_read: int = 0
    archives_held: int = 0
    sharing: dict[str, int] = field(default_factory=dict)
    reads_by_purpose: dict[str, int] = field(default_factory=dict)

    @property
    def utilisation_rate(self) -> float | None:
        return self.archives_read / self.archives_held if self.archives_held else None


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
            report.qc = _qc(session, held)
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

    def ingest_per_day(
        self, principal: Principal, window_from: datetime, window_to: datetime
    ) -> dict[str, int]:
        """Archives created here per UTC day (``YYYY-MM-DD``) in the window (console chart)."""
        principal.require(Action.READ_REPORTS)
        if window_to <= window_from:
            raise InputError("'to' must be after 'from'", code="invalid_window")
        days: dict[str, int] = {}
        with self.db.session() as session:
            for (created,) in session.execute(
                select(Archive.created_at).where(
                    Archive.created_at >= window_from, Archive.created_at < window_to
                )
            ):
                day = created.strftime("%Y-%m-%d")
                days[day] = days.get(day, 0) + 1
        return dict(sorted(days.items()))

    def record_read(
        self,
        *,
        archive_id: str,
        version: int,
        record_class: str,
        purpose: str,
        first_byte_seconds: float,
        last_byte_seconds: float | None,
        bytes_sent: int,
        read_at: datetime | None = None,
    ) -> None:
        """Store the timing of one content read (its own small transaction, after the body), with
        the storage tier it was served from, and keep the archive's last access (the tier policy
        moves archives not read for a while to the cold tier, and read ones back)."""
        now = read_at or self.clock()
        with self.db.transaction() as session:
            tier_row = note_access(session, archive_id, now)
            session.add(
                ContentRead(
                    archive_id=archive_id,
                    version=version,
                    record_class=record_class,
                    purpose=purpose,
                    read_at=now,
                    first_byte_seconds=first_byte_seconds,
                    last_byte_seconds=last_byte_seconds,
                    bytes_sent=bytes_sent,
                    completed=last_byte_seconds is not None,
                    tier=tier_row.tier,
                )
            )

    def utilisation(
        self, principal: Principal, window_from: datetime, window_to: datetime
    ) -> UtilisationReport:
        principal.require(Action.READ_REPORTS)
        if window_to <= window_from:
            raise InputError("'to' must be after 'from'", code="invalid_window")
        report = UtilisationReport(self.hospital, self.clock(), window_from, window_to)
        held = and_(Archive.custodian == self.hospital, Archive.state.not_in(NOT_HELD))
        in_window = and_(ContentRead.read_at >= window_from, ContentRead.read_at < window_to)
        with self.db.session() as session:
            reads = session.execute(
                select(
                    ContentRead.record_class,
                    ContentRead.purpose,
                    ContentRead.first_byte_seconds,
                    ContentRead.last_byte_seconds,
                    ContentRead.tier,
                ).where(in_window)
            ).all()
            for record_class, purpose, first, last, tier in reads:
                per_class = report.retrieval_by_class.setdefault(record_class, Retrieval())
                per_tier = report.retrieval_by_tier.setdefault(tier or "hot", Retrieval())
                for tally in (per_class, per_tier, report.retrieval_total):
                    tally.reads += 1
                    tally.first_byte.append(float(first))
                    if last is not None:
                        tally.completed += 1
                        tally.last_byte.append(float(last))
                report.reads_by_purpose[purpose] = report.reads_by_purpose.get(purpose, 0) + 1
            report.archives_held = _count(session, held)
            report.archives_read = int(
                session.execute(
                    select(func.count(func.distinct(ContentRead.archive_id)))
                    .join(Archive, Archive.id == ContentRead.archive_id)
                    .where(in_window, held)
                ).scalar_one()
            )
            log_window = and_(LogEntry.time >= window_from, LogEntry.time < window_to)
            grants = session.execute(
                select(func.count())
                .select_from(LogEntry)
                .where(log_window, LogEntry.event_type == EventType.SHARE_GRANT.value)
            ).scalar_one()
            shared_reads = 0
            for (raw,) in session.execute(
                select(LogEntry.event).where(
                    log_window, LogEntry.event_type == EventType.ACCESS.value
                )
            ):
                event = parse_event(bytes(raw))
                if isinstance(event, AccessEvent) and event.data.grant is not None:
                    shared_reads += 1
            transfers: dict[str, int] = {
                direction: int(n)
                for direction, n in session.execute(
                    select(Transfer.direction, func.count())
                    .where(Transfer.created_at >= window_from, Transfer.created_at < window_to)
                    .group_by(Transfer.direction)
                )
            }
            report.sharing = {
                "grants": int(grants),
                "shared_reads": shared_reads,
                "transfers_out": int(transfers.get("out", 0)),
                "transfers_in": int(transfers.get("in", 0)),
            }
        return report


QC_DIMENSIONS = ("authenticity", "integrity", "usability", "security")


def _qc(session: Any, held: Any) -> dict[str, Any]:
    """QC failure rate by dimension over the current versions of auditable held archives."""
    archives = _count(session, held, Archive.state.in_(AUDITABLE_STATES))
    results = session.execute(
        select(QcResult.failed)
        .join(Archive, Archive.id == QcResult.archive_id)
        .where(
            held,
            Archive.state.in_(AUDITABLE_STATES),
            QcResult.version == Archive.current_version,
        )
    ).all()
    checked = len(results)
    by_dimension: dict[str, dict[str, float | int | None]] = {}
    for dimension in QC_DIMENSIONS:
        failed = sum(
            1 for (text,) in results if any(c.startswith(dimension + ".") for c in text.split(","))
        )
        by_dimension[dimension] = {
            "failed": failed,
            "rate": failed / checked if checked else None,
        }
    failed_any = sum(1 for (text,) in results if text)
    return {
        "archives": archives,
        "checked": checked,
        "never_checked": archives - checked,
        "failed": failed_any,
        "rate": failed_any / checked if checked else None,
        "by_dimension": by_dimension,
    }


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
    for measure in ("archives", "checked", "never_checked", "failed", "rate"):
        value = report.qc.get(measure)
        text = f"{value:.6f}" if isinstance(value, float) else "" if value is None else str(value)
        rows.append(("qc", "ALL", measure, text))
    for dimension, figures in report.qc.get("by_dimension", {}).items():
        for measure, value in figures.items():
            text = (
                f"{value:.6f}" if isinstance(value, float) else "" if value is None else str(value)
            )
            rows.append(("qc", dimension, measure, text))
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


def utilisation_rows(report: UtilisationReport) -> list[tuple[str, str, str, str]]:
    """The utilisation report as ``(section, key, measure, value)`` rows (the CSV form)."""

    def text(value: float | int | None) -> str:
        if value is None:
            return ""
        return f"{value:.6f}" if isinstance(value, float) else str(value)

    rows: list[tuple[str, str, str, str]] = [
        ("report", "hospital", "", report.hospital),
        ("report", "as_of", "", report.as_of.isoformat()),
        ("report", "from", "", report.window_from.isoformat()),
        ("report", "to", "", report.window_to.isoformat()),
    ]
    for record_class, tally in [
        *sorted(report.retrieval_by_class.items()),
        ("ALL", report.retrieval_total),
    ]:
        for measure, value in tally.summary().items():
            rows.append(("retrieval_seconds", record_class, measure, text(value)))
    for tier, tally in sorted(report.retrieval_by_tier.items()):
        for measure, value in tally.summary().items():
            rows.append(("retrieval_seconds_by_tier", tier, measure, text(value)))
    rows.append(("utilisation", "archives_read", "", str(report.archives_read)))
    rows.append(("utilisation", "archives_held", "", str(report.archives_held)))
    rows.append(("utilisation", "rate", "", text(report.utilisation_rate)))
    for key, count in sorted(report.sharing.items()):
        rows.append(("sharing", key, "", str(count)))
    for purpose, count in sorted(report.reads_by_purpose.items()):
        rows.append(("reads_by_purpose", purpose, "", str(count)))
    return rows
