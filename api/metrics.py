"""Prometheus metrics of one app: node values read at scrape time, plus HTTP request counts and
latencies. Every app has its own ``CollectorRegistry`` (several nodes, or several test apps, can
live in one process without sharing or clashing metrics).

Request metrics are labelled by the handler (the route's name, e.g. ``read_content``), never by the
raw path, so ids do not explode the label space and never reach the metrics store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.services.alerts import AlertService
from node.services.permissions import AccessGate
from node.services.status import StatusService

PREFIX = "archivechain"
UNMATCHED = "(unmatched)"
REQUEST_BEGUN = "request_begun"
"""``request.state`` key: ``time.perf_counter()`` when the request arrived (set by the
middleware; the content route times retrieval from it)."""


class NodeCollector(Collector):
    """Gauges and counters from ``StatusService.metrics()`` at every scrape."""

    def __init__(self, status: StatusService) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        snapshot = self.status.metrics()
        lag = snapshot.lag
        if lag is not None:
            yield _gauge("log_size", "Events in this node's log.", lag.log_size)
            yield _gauge(
                "anchored_size", "Events covered by a confirmed checkpoint.", lag.anchored_size
            )
            yield _gauge(
                "anchoring_lag_events", "Events not yet anchored on chain.", lag.events_behind
            )
            yield _gauge(
                "anchoring_lag_seconds",
                "Age of the oldest event not yet anchored (0 when none waits).",
                lag.seconds_behind,
            )
            yield _gauge(
                "chain_transactions_pending",
                "Chain transactions decided or sent but not yet confirmed.",
                lag.pending_transactions,
            )
            yield _gauge(
                "chain_outbox_oldest_unconfirmed_seconds",
                "Age of the oldest chain transaction not yet confirmed (0 when none waits).",
                lag.oldest_unconfirmed_seconds,
            )
        yield _gauge(
            "chain_reachable",
            "1 when the last anchoring pass reached the chain.",
            1 if snapshot.chain_reachable else 0,
        )
        yield _gauge(
            "chain_state_lost",
            "1 when the chain lost checkpoints this node anchored (re-anchor from the log).",
            1 if snapshot.chain_state_lost else 0,
        )
        yield _gauge(
            "chain_outbox_stuck",
            "1 when a chain transaction waits unconfirmed for longer than outbox_stuck_seconds.",
            1 if snapshot.outbox_stuck else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_nonce_replans",
            "Times the anchoring worker re-signed its unconfirmed transactions with fresh nonces.",
            value=snapshot.nonce_replans,
        )
        yield _gauge(
            "anchoring_consecutive_failures",
            "Anchoring passes failed in a row.",
            snapshot.anchoring_failures,
        )
        archives = GaugeMetricFamily(
            f"{PREFIX}_archives", "Archives by lifecycle state.", labels=["state"]
        )
        for state, count in sorted(snapshot.archives_by_state.items()):
            archives.add_metric([state], count)
        yield archives
        checkpoints = GaugeMetricFamily(
            f"{PREFIX}_checkpoints", "Checkpoints by anchoring state.", labels=["state"]
        )
        for state, count in sorted(snapshot.checkpoints_by_state.items()):
            checkpoints.add_metric([state], count)
        yield checkpoints
        yield CounterMetricFamily(
            f"{PREFIX}_commit_batches",
            "Database transactions committed by the group committer.",
            value=snapshot.commit_batches,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_commit_units",
            "Service calls (units of work) committed by the group committer.",
            value=snapshot.commit_units,
        )


class AlertCollector(Collector):
    """Open alerts by kind and severity, read from the alert store at every scrape."""

    def __init__(self, alerts: AlertService) -> None:
        self.alerts = alerts

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            f"{PREFIX}_alerts_open",
            "Open (unacknowledged) alerts by kind and severity.",
            labels=["kind", "severity"],
        )
        for (kind, severity), count in sorted(self.alerts.open_counts().items()):
            gauge.add_metric([kind, severity], count)
        yield gauge


class DenialCollector(Collector):
    """Reads refused by the access policy, by role, action and deciding rule, counted from the
    ``access_denials`` table at every scrape (so the count survives restarts)."""

    def __init__(self, gate: AccessGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            f"{PREFIX}_access_denials",
            "Reads refused by the access policy, by role, action and rule.",
            labels=["role", "action", "rule"],
        )
        for (role, action, rule), count in sorted(self.gate.denial_counts().items()):
            counter.add_metric([role, action, rule], count)
        yield counter


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


@dataclass(frozen=True)
class AppMetrics:
    """The registry of one app and its request instruments."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    content_first_byte: Histogram
    content_last_byte: Histogram
    content_reads: Counter


def build_metrics(
    status: StatusService, alerts: AlertService | None = None, gate: AccessGate | None = None
) -> AppMetrics:
    """A fresh registry with the node collector (and the alert and denial collectors, given the
    alert store and the access gate) and the HTTP request instruments."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(status))
    if alerts is not None:
        registry.register(AlertCollector(alerts))
    if gate is not None:
        registry.register(DenialCollector(gate))
    requests = Counter(
        f"{PREFIX}_http_requests",
        "HTTP requests answered, by method, handler and status.",
        ["method", "handler", "status"],
        registry=registry,
    )
    latency = Histogram(
        f"{PREFIX}_http_request_duration_seconds",
        "Time to the first response byte, by method and handler.",
        ["method", "handler"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    )
    retrieval_buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
    content_first_byte = Histogram(
        f"{PREFIX}_content_first_byte_seconds",
        "Content reads: request arrival to the first body byte, by record class.",
        ["record_class"],
        registry=registry,
        buckets=retrieval_buckets,
    )
    content_last_byte = Histogram(
        f"{PREFIX}_content_last_byte_seconds",
        "Completed content reads: request arrival to the last body byte, by record class.",
        ["record_class"],
        registry=registry,
        buckets=retrieval_buckets,
    )
    content_reads = Counter(
        f"{PREFIX}_content_reads",
        "Content reads served, by record class and purpose of use.",
        ["record_class", "purpose"],
        registry=registry,
    )
    return AppMetrics(
        registry, requests, latency, content_first_byte, content_last_byte, content_reads
    )


class RequestMetricsMiddleware:
    """Counts requests and times them to the response start (pure ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        scope.setdefault("state", {})[REQUEST_BEGUN] = begun
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.latency.labels(_method(scope), _handler(scope)).observe(
                    time.perf_counter() - begun
                )
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            self.metrics.requests.labels(_method(scope), _handler(scope), str(status)).inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "OTHER"


def _handler(scope: Scope) -> str:
    name = getattr(scope.get("route"), "name", None)
    return name if isinstance(name, str) and name else UNMATCHED
