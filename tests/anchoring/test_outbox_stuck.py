"""A stuck chain outbox is an alert: ``/healthz`` reports ``outbox_stuck`` with the age and count of
the unconfirmed transactions once the oldest waits longer than ``outbox_stuck_seconds``, ``/metrics``
has the gauges, the worker logs one line when it starts and one when it ends (never one per tick),
and everything clears once the chain mines again. A real node, app and anvil (whose mining is
switched off to hold the transactions), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from anchoring.chain import JsonRpc
from anchoring.worker import Lag, outbox_stuck
from api.main import create_app
from node.config import NodeSettings
from tests.anchoring.chain_controls import manual_mining
from tests.api.conftest import Client, issue_keys, serve
from tests.fixtures.node import MakeNode

STUCK_AFTER = 1.0


def _metrics(client: Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.fixture
def no_mining(chain_rpc: JsonRpc) -> Iterator[None]:
    with manual_mining(chain_rpc):
        yield


def test_a_stuck_outbox_is_reported_in_health_metrics_and_log_then_cleared(
    make_node: MakeNode,
    database_url: str,
    chain_rpc: JsonRpc,
    no_mining: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = make_node(
        database_url=database_url, outbox_stuck_seconds=STUCK_AFTER, anchor_interval=0.01
    )
    keys = issue_keys(node)
    archivist = {"Authorization": f"Bearer {keys['archivist']}"}
    with serve(create_app(node)) as client, caplog.at_level(logging.INFO, "anchoring.worker"):
        created = client.post(
            "/api/v1/archives",
            headers=archivist,
            files={"file": ("a.txt", b"discharge summary", "text/plain")},
            data={
                "metadata": '{"record_class": "LAB", "department": "lab", "title": "t", '
                '"patient_id": "p", "source_system": "LIS"}'
            },
        )
        assert created.status_code == 201, created.text
        archive_id = created.json()["id"]

        # The register and the checkpoint are sent; the chain mines nothing.
        deadline = time.monotonic() + 30
        while True:
            node.worker.tick()
            health = client.get("/healthz").json()
            if "outbox_stuck" in health["problems"]:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        for _ in range(5):  # more passes while stuck: no more log lines
            node.worker.tick()
        assert health["status"] == "degraded"
        assert health["anchoring"]["pending_transactions"] == 2  # key rotation, checkpoint
        assert health["anchoring"]["oldest_unconfirmed_seconds"] > STUCK_AFTER
        stuck = _metrics(client)
        assert stuck["archivechain_chain_outbox_stuck"] == 1
        assert stuck["archivechain_chain_outbox_oldest_unconfirmed_seconds"] > STUCK_AFTER
        assert stuck["archivechain_chain_transactions_pending"] == 2
        proof = client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
        assert proof.status_code == 409
        assert proof.json()["code"] == "proof_pending"

        chain_rpc.request("evm_setAutomine", [True])
        chain_rpc.request("evm_mine")
        node.worker.run_until_anchored(timeout=30)
        cleared = client.get("/healthz").json()
        assert cleared["status"] == "ok"
        assert cleared["problems"] == []
        assert cleared["anchoring"]["oldest_unconfirmed_seconds"] == 0
        assert cleared["anchoring"]["pending_transactions"] == 0
        after = _metrics(client)
        assert after["archivechain_chain_outbox_stuck"] == 0
        assert after["archivechain_chain_outbox_oldest_unconfirmed_seconds"] == 0
        assert (
            client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist).status_code == 200
        )

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "outbox" in r.getMessage()]
    assert len(lines) == 2, lines
    (level, started), (cleared_level, ended) = lines
    assert level == logging.ERROR
    assert started.startswith("chain outbox stuck: 2 transaction(s) unconfirmed")
    assert (cleared_level, ended) == (logging.INFO, "chain outbox no longer stuck")


def test_stuck_means_something_waits_longer_than_the_threshold() -> None:
    def lag(pending: int, oldest: float) -> Lag:
        return Lag(10, 5, 5, 3.0, pending, oldest)

    assert outbox_stuck(lag(2, 301.0), 300.0) is True
    assert outbox_stuck(lag(2, 300.0), 300.0) is False
    assert outbox_stuck(lag(2, 12.0), 300.0) is False
    assert outbox_stuck(lag(0, 0.0), 0.001) is False


def test_the_stuck_threshold_must_be_positive() -> None:
    assert NodeSettings(mode="dev", outbox_stuck_seconds=60).outbox_stuck_seconds == 60
    with pytest.raises(ValidationError):
        NodeSettings(mode="dev", outbox_stuck_seconds=0)
