"""Alert delivery to webhooks: each new alert (an alert opened, not an open one counted again) at
or above a target's ``min_severity`` is queued, one row per target (``webhook_deliveries``), with
its body fixed at that moment; the job ``webhooks`` POSTs due rows, retrying failures with
exponential backoff (``webhook_backoff`` seconds, doubled per failure, at most an hour) and
dead-lettering a row after ``webhook_max_attempts`` attempts (kept with its last error, never
retried).

Each request carries ``Content-Type: application/json``, ``X-ArchiveChain-Delivery`` (the row id),
``X-ArchiveChain-Attempt`` and ``X-ArchiveChain-Signature: sha256=<hex HMAC-SHA256 of the body under
the target's secret>``. Bodies carry the alert (codes and counts, never PHI) and this hospital's
address. Secrets stay in the configuration, never in the database.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select

from node import crypto
from node.alerts import Severity
from node.config import NodeSettings, WebhookTarget
from node.db import Clock, Database, utc_now
from node.models import WebhookDelivery
from node.services.alerts import AlertView

log = logging.getLogger(__name__)

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 100


class DeliveryState:
    """Values of ``webhook_deliveries.state``."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass
class DeliveryReport:
    """What one pass of the job did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0


class WebhookService:
    """Queues alerts for the configured webhooks and delivers them."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        hospital: str,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.hospital = hospital
        self.clock = clock

    def targets(self) -> dict[str, WebhookTarget]:
        return {target.url: target for target in self.settings.alert_webhooks}

    def enqueue(self, alert: AlertView, new: bool) -> int:
        """Queue a newly opened alert for every target that wants its severity (an alert
        listener). Returns how many deliveries were queued."""
        if not new:
            return 0
        wanted = [
            t
            for t in self.settings.alert_webhooks
            if _RANK[alert.severity] >= _RANK[Severity(t.min_severity)]
        ]
        if not wanted:
            return 0
        now = self.clock()
        with self.db.transaction() as session:
            for target in wanted:
                row = WebhookDelivery(
                    alert_id=alert.id,
                    target=target.url,
                    body="",
                    state=DeliveryState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                session.add(row)
                session.flush()
                row.body = _body(row.id, self.hospital, alert)
        return len(wanted)

    def deliver_due(self, client: httpx.Client | None = None) -> DeliveryReport:
        """POST every pending delivery that is due; record each outcome."""
        report = DeliveryReport()
        now = self.clock()
        with self.db.session() as session:
            due = list(
                session.execute(
                    select(WebhookDelivery)
                    .where(
                        WebhookDelivery.state == DeliveryState.PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .order_by(WebhookDelivery.id)
                    .limit(BATCH)
                ).scalars()
            )
        if not due:
            return report
        targets = self.targets()
        owned = client is None
        http = client or httpx.Client(timeout=self.settings.webhook_timeout)
        try:
            for row in due:
                target = targets.get(row.target)
                error = "target_removed" if target is None else self._send(http, target, row)
                self._record(row.id, error, target is None, report)
        finally:
            if owned:
                http.close()
        return report

    def _send(self, http: httpx.Client, target: WebhookTarget, row: WebhookDelivery) -> str | None:
        body = row.body.encode("utf-8")
        signature = crypto.hmac_sha256_hex(target.secret.get_secret_value().encode("utf-8"), body)
        try:
            response = http.post(
                target.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-ArchiveChain-Delivery": str(row.id),
                    "X-ArchiveChain-Attempt": str(row.attempts + 1),
                    "X-ArchiveChain-Signature": f"sha256={signature}",
                },
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as exc:
            return f"transport_error:{type(exc).__name__}"[:200]
        if 200 <= response.status_code < 300:
            return None
        return f"http_{response.status_code}"

    def _record(self, row_id: int, error: str | None, final: bool, report: DeliveryReport) -> None:
        now = self.clock()
        with self.db.transaction() as session:
            row = session.get_one(WebhookDelivery, row_id)
            row.attempts += 1
            if error is None:
                row.state = DeliveryState.DELIVERED
                row.delivered_at = now
                row.last_error = None
                report.delivered += 1
                return
            row.last_error = error
            report.failed += 1
            if final or row.attempts >= self.settings.webhook_max_attempts:
                row.state = DeliveryState.DEAD
                report.dead += 1
                log.error(
                    "webhook delivery %d to %s dead-lettered after %d attempt(s): %s",
                    row.id, row.target, row.attempts, error,
                )  # fmt: skip
                return
            delay = min(
                self.settings.webhook_backoff * 2 ** (row.attempts - 1), MAX_BACKOFF_SECONDS
            )
            row.next_attempt_at = now + timedelta(seconds=delay)


def _body(delivery_id: int, hospital: str, alert: AlertView) -> str:
    return json.dumps(
        {
            "delivery": delivery_id,
            "hospital": hospital,
            "alert": {
                "id": alert.id,
                "kind": alert.kind,
                "subject": alert.subject,
                "severity": alert.severity.value,
                "detail": alert.detail,
                "count": alert.count,
                "first_seen": alert.first_seen.isoformat().replace("+00:00", "Z"),
                "last_seen": alert.last_seen.isoformat().replace("+00:00", "Z"),
            },
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
