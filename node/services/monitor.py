"""Alert sources that watch the node as a whole (scheduled job ``monitor``):

- the health problems of ``StatusService.health`` (anchoring lag over ``anchoring_lag_alert_seconds``,
  chain unreachable, chain state lost, outbox stuck, database unreachable, chain watcher stalled
  for ``watcher_stall_seconds``), each an alert whose kind
  is the problem's code and whose subject is ``node``;
- the access-anomaly rule: one actor (an API key's pseudonym, or the pseudonym of a staff id
  reported with an access event) reading the content of more than
  ``access_anomaly_max_patients`` distinct patients' records within the last
  ``access_anomaly_window`` seconds is an ``access_anomaly`` alert naming the actor's pseudonym.

The rule reads the ACCESS events of the window from the log (found by a binary search on the log
index, events being appended in time order; content reads of archives this node has a catalogue
row for; the patient is the row's pseudonym): its cost grows with the number of events in the
window.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.events import AccessScope, EventType
from anchoring.storage import LogEntry
from node.alerts import AlertNotice, AlertSink, Severity
from node.config import NodeSettings
from node.db import Clock, Database, utc_now
from node.models import Archive
from node.services.status import Health, Problem

_SEVERITY = {
    Problem.DATABASE_UNREACHABLE: Severity.CRITICAL,
    Problem.CHAIN_UNREACHABLE: Severity.WARNING,
    Problem.CHAIN_STATE_LOST: Severity.CRITICAL,
    Problem.ANCHORING_LAG: Severity.WARNING,
    Problem.OUTBOX_STUCK: Severity.CRITICAL,
    Problem.WATCHER_STALLED: Severity.CRITICAL,
}


class MonitorService:
    """Turns node health problems and anomalous reading into alerts."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        health: Callable[[], Health],
        alerts: AlertSink,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.health = health
        self.alerts = alerts
        self.clock = clock

    def tick(self) -> list[AlertNotice]:
        """Check once; raise and return the alerts found."""
        notices = self.health_alerts() + self.access_anomalies()
        for notice in notices:
            self.alerts.raise_alert(notice)
        return notices

    def health_alerts(self) -> list[AlertNotice]:
        """One alert per current health problem."""
        health = self.health()
        notices = []
        for problem in health.problems:
            detail: dict[str, str | int | bool] = {"status": health.status.value}
            if health.lag is not None:
                detail["events_behind"] = health.lag.events_behind
                detail["seconds_behind"] = int(health.lag.seconds_behind)
                detail["pending_transactions"] = health.lag.pending_transactions
            notices.append(AlertNotice(problem.value, "node", _SEVERITY[problem], detail))
        return notices

    def access_anomalies(self) -> list[AlertNotice]:
        """Actors who read more distinct patients' records than allowed within the window."""
        window = self.settings.access_anomaly_window
        limit = self.settings.access_anomaly_max_patients
        since = self.clock() - timedelta(seconds=window)
        readers: dict[str, set[str]] = {}
        with self.db.session() as session:
            first = _first_index_since(session, since)
            reads = session.execute(
                select(LogEntry.archive_id, LogEntry.event).where(
                    LogEntry.index >= first,
                    LogEntry.event_type == EventType.ACCESS.value,
                    LogEntry.time >= since,
                )
            ).all()
            archives = {read.archive_id for read in reads}
            patients = {
                archive_id: patient
                for archive_id, patient in session.execute(
                    select(Archive.id, Archive.patient_pseudonym).where(Archive.id.in_(archives))
                ).tuples()
            }
        for archive_id, raw in reads:
            patient = patients.get(archive_id)
            if patient is None:
                continue
            event = json.loads(raw)
            if event.get("data", {}).get("scope") != AccessScope.CONTENT.value:
                continue
            readers.setdefault(str(event.get("actor")), set()).add(patient)
        return [
            AlertNotice(
                "access_anomaly",
                actor,
                Severity.WARNING,
                {"patients": len(seen), "limit": limit, "window_seconds": int(window)},
            )
            for actor, seen in sorted(readers.items())
            if len(seen) > limit
        ]


def _first_index_since(session: Session, since: datetime) -> int:
    """The first log index whose time is at or after ``since`` (events are appended in time
    order), by binary search on the primary key: O(log n) row reads, no time index needed."""
    lo, hi = 0, storage.current_size(session)
    while lo < hi:
        mid = (lo + hi) // 2
        entry = session.get(LogEntry, mid)
        if entry is not None and entry.time < since:
            lo = mid + 1
        else:
            hi = mid
    return lo
