"""Alert webhooks against a real local HTTP receiver (a ``ThreadingHTTPServer`` on loopback), on a
real node (SQLite and PostgreSQL): a new alert is POSTed with an HMAC-SHA256 signature of its body,
retried with backoff while the receiver fails, dead-lettered after the last attempt; an open alert
raised again is not sent again; targets get only the severities they asked for."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from node.alerts import AlertNotice, Severity
from node.models import WebhookDelivery
from node.ports import free_port
from node.runtime import NodeRuntime
from tests.fixtures.node import MakeNode

SECRET = "s3cret-webhook-key-0123456789"


@dataclass
class Receiver:
    """Records every request; answers with the queued statuses, then 200."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/archivechain"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _node(
    make_node: MakeNode, database_url: str, *targets: dict[str, str], **kw: Any
) -> NodeRuntime:
    return make_node(
        database_url=database_url, alert_webhooks=list(targets), webhook_backoff=10.0, **kw
    )


def _deliveries(node: NodeRuntime) -> list[WebhookDelivery]:
    with node.db.session() as session:
        return list(session.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)).scalars())


def test_a_new_alert_is_signed_retried_with_backoff_and_delivered(
    make_node: MakeNode, database_url: str, receiver: Receiver
) -> None:
    node = _node(make_node, database_url, {"url": receiver.url, "secret": SECRET})
    receiver.statuses = [500, 503]
    node.alerts.raise_alert(
        AlertNotice(
            "fixity_mismatch", "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", Severity.CRITICAL, {"version": 1}
        )
    )
    node.alerts.raise_alert(  # the same open alert again: counted, not sent again
        AlertNotice(
            "fixity_mismatch", "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", Severity.CRITICAL, {"version": 1}
        )
    )
    assert len(_deliveries(node)) == 1

    start = datetime.now(UTC)
    node.webhooks.clock = lambda: start
    first = node.webhooks.deliver_due()
    assert (first.delivered, first.failed, first.dead) == (0, 1, 0)
    assert node.webhooks.deliver_due().failed == 0  # not due again before its backoff
    assert len(receiver.received) == 1
    node.webhooks.clock = lambda: start + timedelta(seconds=10)  # first retry after 10 s
    assert node.webhooks.deliver_due().failed == 1
    node.webhooks.clock = lambda: start + timedelta(seconds=25)  # then after 20 s more
    assert node.webhooks.deliver_due().failed == 0
    node.webhooks.clock = lambda: start + timedelta(seconds=30)
    assert node.webhooks.deliver_due().delivered == 1

    assert len(receiver.received) == 3
    bodies = {body for _, body in receiver.received}
    assert len(bodies) == 1  # the same body every attempt
    body = bodies.pop()
    for attempt, (headers, sent) in enumerate(receiver.received, start=1):
        expected = hmac.new(SECRET.encode(), sent, hashlib.sha256).hexdigest()
        assert headers["x-archivechain-signature"] == f"sha256={expected}"
        assert headers["x-archivechain-attempt"] == str(attempt)
        assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["hospital"] == node.hospital
    assert document["alert"]["kind"] == "fixity_mismatch"
    assert document["alert"]["subject"] == "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
    assert document["alert"]["severity"] == "critical"
    assert document["alert"]["detail"] == {"version": 1}
    [row] = _deliveries(node)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    assert document["delivery"] == row.id
    assert node.webhooks.deliver_due().delivered == 0  # delivered rows are never sent again


def test_a_failing_target_is_dead_lettered_after_the_last_attempt(
    make_node: MakeNode, database_url: str, receiver: Receiver
) -> None:
    dead_port = free_port()
    node = _node(
        make_node,
        database_url,
        {"url": receiver.url, "secret": SECRET},
        {"url": f"http://127.0.0.1:{dead_port}/nobody", "secret": SECRET},
        webhook_max_attempts=3,
    )
    receiver.statuses = [500] * 10
    node.alerts.raise_alert(AlertNotice("blob_missing", "A" * 26, Severity.CRITICAL))
    start = datetime.now(UTC)
    for step in range(6):
        node.webhooks.clock = lambda step=step: start + timedelta(hours=step)  # type: ignore[misc]
        node.webhooks.deliver_due()
    rows = _deliveries(node)
    assert [(r.state, r.attempts) for r in rows] == [("dead", 3), ("dead", 3)]
    assert rows[0].last_error == "http_500"
    assert rows[1].last_error is not None
    assert rows[1].last_error.startswith("transport_error:")
    assert len(receiver.received) == 3  # never retried once dead


def test_targets_get_only_the_severities_they_asked_for(
    make_node: MakeNode, database_url: str, receiver: Receiver
) -> None:
    node = _node(
        make_node, database_url, {"url": receiver.url, "secret": SECRET, "min_severity": "critical"}
    )
    node.alerts.raise_alert(AlertNotice("access_anomaly", "ab" * 32, Severity.WARNING))
    assert _deliveries(node) == []
    node.alerts.raise_alert(AlertNotice("chain_state_lost", "node", Severity.CRITICAL))
    assert node.webhooks.deliver_due().delivered == 1
    [(_, body)] = receiver.received
    assert json.loads(body)["alert"]["kind"] == "chain_state_lost"


def test_webhook_settings_are_checked() -> None:
    from node.config import NodeSettings

    for bad in (
        {"url": "ftp://x", "secret": SECRET},
        {"url": "http://x", "secret": "short"},
        {"url": "http://x", "secret": SECRET, "min_severity": "loud"},
        {"url": "http://x", "secret": SECRET, "extra": 1},
    ):
        with pytest.raises(ValueError):
            NodeSettings(mode="dev", alert_webhooks=[bad])
