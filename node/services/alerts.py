"""The alert store: the ``AlertSink`` the node runs with (see ``node.alerts``).

An alert is one row per open condition, deduplicated by kind and subject: raised again while open,
its count grows and its last-seen time (and severity, if higher) moves; once acknowledged it stays
as a record, and the same condition raised later opens a new alert. ``raise_alert`` writes in a
short transaction of its own and never raises (a database problem is logged): call it outside a
unit of work, e.g. from ``UnitOfWork.after_commit``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from node.alerts import AlertNotice, Severity
from node.db import Clock, Database, UnitOfWork, UnitRunner, utc_now
from node.errors import InputError, NotFoundError
from node.models import Alert
from node.principal import Action, Principal

log = logging.getLogger(__name__)

MAX_ALERT_PAGE = 500
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_SEPARATOR = "\x1f"


class AlertState(StrEnum):
    """Which alerts a listing shows."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as callers see it."""

    id: int
    kind: str
    subject: str
    severity: Severity
    detail: dict[str, Any]
    count: int
    first_seen: datetime
    last_seen: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None

    @classmethod
    def of(cls, row: Alert) -> AlertView:
        return cls(
            id=row.id,
            kind=row.kind,
            subject=row.subject,
            severity=Severity(row.severity),
            detail=dict(row.detail),
            count=row.count,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            acknowledged_by=row.acknowledged_by,
            acknowledged_at=row.acknowledged_at,
        )


def open_key(kind: str, subject: str) -> str:
    """The dedup key of an open alert."""
    return f"{kind}{_SEPARATOR}{subject}"


class AlertService:
    """Keeps alerts in the database; lists and acknowledges them."""

    def __init__(self, *, db: Database, units: UnitRunner, clock: Clock = utc_now) -> None:
        self.db = db
        self.units = units
        self.clock = clock
        self.listeners: list[Any] = []
        """Callables ``(AlertView, new: bool)`` told of every alert recorded (webhooks)."""

    # -- AlertSink -----------------------------------------------------------------------------

    def raise_alert(self, notice: AlertNotice) -> None:
        """Record ``notice`` (or count it again); never raises."""
        level = logging.ERROR if notice.severity is Severity.CRITICAL else logging.WARNING
        log.log(level, "alert %s on %s (%s) %s", notice.kind, notice.subject, notice.severity,
                notice.detail)  # fmt: skip
        try:
            self.record(notice)
        except Exception:
            log.exception("alert %s on %s could not be stored", notice.kind, notice.subject)

    def record(self, notice: AlertNotice) -> AlertView:
        """Store ``notice``: a new open alert, or the open one of its kind and subject seen again."""
        kind, subject = notice.kind[:64], notice.subject[:128]
        key = open_key(kind, subject)
        for _attempt in range(3):  # a concurrent first raise of the same alert: count on it
            now = self.clock()
            try:
                with self.db.transaction() as session:
                    row = session.execute(
                        select(Alert).where(Alert.open_key == key).with_for_update()
                    ).scalar_one_or_none()
                    if row is None:
                        row = Alert(
                            kind=kind,
                            subject=subject,
                            severity=notice.severity.value,
                            detail=dict(notice.detail),
                            count=1,
                            first_seen=now,
                            last_seen=now,
                            open_key=key,
                        )
                        session.add(row)
                    else:
                        row.count += 1
                        row.last_seen = max(now, row.last_seen)
                        row.detail = dict(notice.detail)
                        if _RANK[notice.severity] > _RANK[Severity(row.severity)]:
                            row.severity = notice.severity.value
                    session.flush()
                    view = AlertView.of(row)
            except IntegrityError:
                continue
            for listener in self.listeners:
                try:
                    listener(view, view.count == 1)
                except Exception:
                    log.exception("alert listener failed")
            return view
        raise RuntimeError(f"alert {kind} on {subject} could not be stored")  # pragma: no cover

    # -- staff ---------------------------------------------------------------------------------

    def list(
        self,
        principal: Principal,
        *,
        state: AlertState = AlertState.OPEN,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[AlertView], int]:
        """Alerts, most recently seen first, and how many match in all."""
        principal.require(Action.READ_ALERTS)
        if not 1 <= limit <= MAX_ALERT_PAGE or offset < 0:
            raise InputError(
                f"limit must be 1 to {MAX_ALERT_PAGE} and offset not negative",
                code="invalid_page",
            )
        query = select(Alert)
        if state is AlertState.OPEN:
            query = query.where(Alert.open_key.is_not(None))
        elif state is AlertState.ACKNOWLEDGED:
            query = query.where(Alert.open_key.is_(None))
        if kind:
            query = query.where(Alert.kind == kind)
        with self.db.session() as session:
            total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = session.execute(
                query.order_by(Alert.last_seen.desc(), Alert.id.desc()).limit(limit).offset(offset)
            ).scalars()
            return [AlertView.of(row) for row in rows], int(total)

    def acknowledge(self, principal: Principal, alert_id: int) -> AlertView:
        """Mark an alert as seen by ``principal`` (idempotent: a second ack changes nothing)."""
        principal.require(Action.ACK_ALERTS)

        def unit(uow: UnitOfWork) -> AlertView:
            row = uow.session.execute(
                select(Alert).where(Alert.id == alert_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise NotFoundError(f"alert {alert_id} not found", code="alert_not_found")
            if row.open_key is not None:
                row.open_key = None
                row.acknowledged_by = principal.actor
                row.acknowledged_at = uow.now
                uow.session.flush()
            return AlertView.of(row)

        return self.units.run(unit)

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open alerts by (kind, severity), for the metrics."""
        with self.db.session() as session:
            rows = session.execute(
                select(Alert.kind, Alert.severity, func.count())
                .where(Alert.open_key.is_not(None))
                .group_by(Alert.kind, Alert.severity)
            ).all()
        return {(kind, severity): int(count) for kind, severity, count in rows}

    def open_for(self, kinds: Iterable[str]) -> builtins.list[AlertView]:
        """Open alerts of these kinds (tests, reports)."""
        with self.db.session() as session:
            rows = session.execute(
                select(Alert)
                .where(Alert.open_key.is_not(None), Alert.kind.in_(list(kinds)))
                .order_by(Alert.id)
            ).scalars()
            return [AlertView.of(row) for row in rows]
