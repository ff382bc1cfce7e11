"""The monitor job on a real node (real anvil, SQLite and PostgreSQL): health problems become
alerts of the same code (anchoring lag over the configured threshold, a chain that lost this
node's checkpoints, a chain watcher that has failed for longer than ``watcher_stall_seconds``),
and one actor reading the content of more distinct patients' records than
allowed within the window is an ``access_anomaly`` alert naming the actor's pseudonym."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from anchoring.chain import JsonRpc, RpcChain
from api.main import create_app
from node.alerts import AlertNotice
from node.ports import free_port
from node.runtime import NodeRuntime
from node.watcher import WatcherStatus
from tests.api.conftest import Api, issue_keys, serve
from tests.fixtures.node import MakeNode


@contextmanager
def _api(node: NodeRuntime) -> Iterator[Api]:
    app = create_app(node)
    with serve(app) as client:
        yield Api(node=node, app=app, client=client, keys=issue_keys(node))


def _kinds(notices: list[AlertNotice]) -> set[tuple[str, str]]:
    return {(n.kind, n.subject) for n in notices}


def test_anchoring_lag_and_lost_chain_state_are_alerts(
    make_node: MakeNode, database_url: str, chain_rpc: JsonRpc
) -> None:
    node = make_node(database_url=database_url, anchoring_lag_alert_seconds=0.05)
    with _api(node) as api:
        before = chain_rpc.request("evm_snapshot")
        api.create()
        time.sleep(0.1)
        assert ("anchoring_lag", "node") in _kinds(node.monitor.tick())
        assert "anchoring_lag" in api.client.get("/healthz").json()["problems"]

        node.worker.run_until_anchored(timeout=30)
        assert node.monitor.tick() == []  # nothing wrong any more
        lag = node.alert_store.open_for(["anchoring_lag"])
        assert [(a.subject, a.count, a.severity.value) for a in lag] == [("node", 1, "warning")]
        assert lag[0].detail["events_behind"] == 1

        assert chain_rpc.request("evm_revert", [before]) is True  # the chain forgets
        assert ("chain_state_lost", "node") in _kinds(node.monitor.tick())
        lost = node.alert_store.open_for(["chain_state_lost"])
        assert [(a.count, a.severity.value) for a in lost] == [(1, "critical")]


def test_reading_too_many_patients_is_an_access_anomaly(
    make_node: MakeNode, database_url: str
) -> None:
    node = make_node(database_url=database_url, access_anomaly_max_patients=2)
    with _api(node) as api:
        ids = [api.create(patient_id=f"MRN-{i}")["id"] for i in range(3)]
        same_patient = api.create(patient_id="MRN-0")["id"]

        def read(who: str, archive_id: str) -> None:
            response = api.client.get(
                f"/api/v1/archives/{archive_id}/content",
                params={"purpose": "treatment"},
                headers=api.auth(who),
            )
            assert response.status_code == 200

        for archive_id in ids:  # three patients: over the limit of two
            read("cardiologist", archive_id)
        for archive_id in (ids[0], ids[1], same_patient):  # two patients, three records
            read("archivist", archive_id)
        for archive_id in ids:  # metadata reads are not content reads
            assert (
                api.client.get(
                    f"/api/v1/archives/{archive_id}", headers=api.auth("auditor")
                ).status_code
                == 200
            )
        reported = api.client.post(
            "/api/v1/access-events",
            headers=api.auth("archivist"),
            json={
                "reports": [
                    {"archive_id": a, "purpose": "treatment", "staff_id": "pacs-7"} for a in ids
                ]
            },
        )
        assert reported.status_code == 201

        cardiologist = node.keys.authenticate(api.keys["cardiologist"]).actor
        pacs_user = node.pseudonyms.staff("pacs-7")
        found = node.monitor.tick()
        assert {(n.kind, n.subject) for n in found if n.kind == "access_anomaly"} == {
            ("access_anomaly", cardiologist),
            ("access_anomaly", pacs_user),
        }
        alerts = api.client.get(
            "/api/v1/alerts", params={"kind": "access_anomaly"}, headers=api.auth("auditor")
        ).json()["items"]
        assert sorted((a["subject"], a["detail"]["patients"]) for a in alerts) == sorted(
            [(cardiologist, 3), (pacs_user, 3)]
        )
        assert all(a["severity"] == "warning" for a in alerts)

        later = datetime.now(UTC) + timedelta(hours=2)
        node.monitor.clock = lambda: later  # the reads are out of the window
        assert node.monitor.access_anomalies() == []


def test_a_watcher_failing_longer_than_the_threshold_is_a_health_problem_and_an_alert(
    make_node: MakeNode, database_url: str, chain_rpc: JsonRpc
) -> None:
    """The watcher's chain RPC answers nobody (a port nobody listens on; the health probe's own
    client still reaches the chain): each tick fails and keeps its cursor. Within
    ``watcher_stall_seconds`` that is not yet a problem; after it, ``/healthz`` says
    ``watcher_stalled`` (degraded) and the monitor raises the critical alert; once a tick
    succeeds again the problem is gone."""
    node = make_node(database_url=database_url, watcher_stall_seconds=0.5)
    with _api(node) as api:
        watcher = node.watcher
        watcher.tick()  # the consortium's setup events
        cursor = watcher.status.cursor
        assert cursor is not None
        healthy = api.client.get("/healthz").json()
        assert healthy["watcher"] == {"stalled": False, "cursor": cursor}
        assert "watcher_stalled" not in healthy["problems"]

        reachable = watcher.chain
        watcher.chain = RpcChain(f"http://127.0.0.1:{free_port()}", node.deployment, timeout=1)
        chain_rpc.request("evm_mine")
        assert watcher.tick() == 0  # ChainError: logged, the range read again next time
        assert watcher.status.last_error is not None
        assert "watcher_stalled" not in api.client.get("/healthz").json()["problems"]
        time.sleep(0.6)
        assert watcher.tick() == 0  # still failing: the failure began at the first tick
        stalled = api.client.get("/healthz")
        assert stalled.status_code == 200
        body = stalled.json()
        assert body["status"] == "degraded"
        assert body["problems"] == ["watcher_stalled"]
        assert body["watcher"] == {"stalled": True, "cursor": cursor}
        assert ("watcher_stalled", "node") in _kinds(node.monitor.tick())
        alert = node.alert_store.open_for(["watcher_stalled"])
        assert [(a.subject, a.severity.value) for a in alert] == [("node", "critical")]

        watcher.chain = reachable
        watcher.tick()
        assert watcher.status.last_error is None
        recovered = api.client.get("/healthz").json()
        assert recovered["problems"] == []
        assert recovered["watcher"]["stalled"] is False
        assert recovered["watcher"]["cursor"] > cursor


def test_a_watcher_tick_that_never_returns_counts_as_stalled() -> None:
    """A tick stuck on a chain that never answers has not failed yet, but the watcher has not
    moved either: stalled once the tick has lasted the threshold."""
    status = WatcherStatus(tick_started=100.0)
    assert not status.stalled(300, now=399.0)
    assert status.stalled(300, now=400.0)
    failing = WatcherStatus(failing_since=100.0, tick_started=350.0)
    assert failing.stalled(300, now=400.0)  # the first failure is what counts
    assert not WatcherStatus().stalled(300, now=10_000.0)  # never ticked, or last tick succeeded
