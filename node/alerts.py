"""Alerts: how any part of the node says "a person must look at this" (a fixity failure, a
retention deadline, a break-glass read, a stuck outbox …).

Services receive an ``AlertSink`` and call ``raise_alert``; they never know where alerts go. The
composition root decides: ``LoggingAlertSink`` (below) writes them to the node log; the monitoring
service keeps them (deduplicated by kind and subject, acknowledged by staff, exported as metrics,
delivered to webhooks). Alerts never carry PHI: subjects are archive ids, pseudonyms, member
addresses or job names, details are codes and counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One occurrence of a condition. The same ``kind`` and ``subject`` raised again is the same
    alert seen again (its count grows), not a new one."""

    kind: str  # a stable code, e.g. "fixity_mismatch", "retention_due", "break_glass"
    subject: str  # what it is about: an archive id, a pseudonym, a member address, a job
    severity: Severity
    detail: dict[str, str | int | bool] = field(default_factory=dict)  # codes and counts only


class AlertSink(Protocol):
    """Where alerts go."""

    def raise_alert(self, notice: AlertNotice) -> None:
        """Record (or count again) this alert; never raises for a delivery problem."""


class LoggingAlertSink:
    """Alerts as log lines (the default until an alert store is wired in)."""

    def raise_alert(self, notice: AlertNotice) -> None:
        level = logging.ERROR if notice.severity is Severity.CRITICAL else logging.WARNING
        log.log(level, "alert %s on %s (%s) %s", notice.kind, notice.subject, notice.severity,
                notice.detail)  # fmt: skip
