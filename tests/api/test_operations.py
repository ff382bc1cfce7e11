"""Operations: ``/healthz`` (ok, degraded on an unreachable chain or one that lost this node's
checkpoints, down without a database), ``/metrics``, ``/checkpoints``, and the error shape of
everything that is not a business refusal (unknown routes and methods, a broken blob, an
unexpected exception). Real parts throughout: a chain RPC port nobody listens on, a chain reverted
to before the checkpoint, a database address nobody answers, a corrupted blob file."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from anchoring.chain import JsonRpc
from api.errors import UnhandledErrorMiddleware
from api.main import create_app
from node.blobstore.local import LocalBlobStore
from node.db import Database
from node.ports import free_port
from node.runtime import NodeRuntime
from node.services.status import HEALTH_PROBE_TIMEOUT, PROBE_STALE_AFTER, Problem
from tests.api.conftest import Api, issue_keys, serve
from tests.fixtures.chain import Consortium
from tests.fixtures.node import build_node


def _metrics(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_health_reports_anchoring_lag_until_anchored(api: Api) -> None:
    fresh = api.client.get("/healthz")
    assert fresh.status_code == 200
    assert fresh.json()["status"] == "ok"
    assert fresh.json()["anchoring"]["log_size"] == 0

    api.create()
    waiting = api.client.get("/healthz").json()
    assert waiting["status"] == "ok"
    assert waiting["database"] == {"reachable": True}
    assert waiting["chain"] == {"reachable": True, "state_lost": False}
    assert waiting["anchoring"]["log_size"] == 1
    assert waiting["anchoring"]["events_behind"] == 1
    assert waiting["anchoring"]["seconds_behind"] >= 0
    assert waiting["hospital"] == api.node.hospital
    assert waiting["notary"] == api.node.deployment.notary.address

    api.node.worker.run_until_anchored(timeout=30)
    anchored = api.client.get("/healthz").json()
    assert anchored["anchoring"]["events_behind"] == 0
    assert anchored["anchoring"]["anchored_size"] == 1
    assert anchored["anchoring"]["last_checkpoint_at"] is not None
    assert anchored["problems"] == []


def test_health_degrades_when_anchoring_lags(api: Api) -> None:
    api.create()
    api.app.state.status.max_lag_seconds = 0.0
    lagging = api.client.get("/healthz")
    assert lagging.status_code == 200
    assert lagging.json()["status"] == "degraded"
    assert lagging.json()["problems"] == ["anchoring_lag"]


def test_health_reports_a_chain_that_lost_this_nodes_checkpoints(
    api: Api, chain_rpc: JsonRpc
) -> None:
    before_anchoring = chain_rpc.request("evm_snapshot")
    api.create()
    api.node.worker.run_until_anchored(timeout=30)
    assert api.client.get("/healthz").json()["status"] == "ok"

    assert chain_rpc.request("evm_revert", [before_anchoring]) is True  # the chain forgets
    lost = api.client.get("/healthz")
    assert lost.status_code == 200
    body = lost.json()
    assert body["status"] == "degraded"
    assert body["chain"] == {"reachable": True, "state_lost": True}
    assert "chain_state_lost" in body["problems"]


@pytest.fixture
def unreachable_chain_node(
    consortium: Consortium, database_url: str, tmp_path: Path
) -> Iterator[NodeRuntime]:
    """A node whose chain RPC port has nobody listening."""
    dead = dataclasses.replace(consortium, rpc_url=f"http://127.0.0.1:{free_port()}")
    runtime = build_node(
        dead, consortium.accounts.hospital_a, tmp_path / "dead", database_url=database_url
    )
    try:
        yield runtime
    finally:
        runtime.close()


def test_unreachable_chain_degrades_health_and_refuses_verification(
    unreachable_chain_node: NodeRuntime,
) -> None:
    keys = issue_keys(unreachable_chain_node)
    with serve(create_app(unreachable_chain_node)) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded"
        assert body["chain"]["reachable"] is False
        assert body["problems"] == ["chain_unreachable"]

        # Archives are still accepted (events wait for the chain) …
        upload = client.post(
            "/api/v1/archives",
            headers={"Authorization": f"Bearer {keys['archivist']}"},
            files={"file": ("a.txt", b"hello", "text/plain")},
            data={
                "metadata": '{"record_class": "LAB", "department": "lab", "title": "t", '
                '"patient_id": "p", "source_system": "LIS"}'
            },
        )
        assert upload.status_code == 201, upload.text
        # … but nothing can be verified against a chain nobody answers for.
        document = {
            "format": "archivechain.proof/v1",
            "chain_id": 31337,
            "notary": unreachable_chain_node.deployment.notary.address,
            "archive_id": upload.json()["id"],
            "entries": [
                {
                    "hospital": unreachable_chain_node.hospital,
                    "log_index": 0,
                    "event": "e30=",
                    "proof": [],
                    "checkpoint": {
                        "hospital": unreachable_chain_node.hospital,
                        "index": 0,
                        "size": 1,
                        "root": "00" * 32,
                    },
                }
            ],
        }
        verify = client.post(
            "/api/v1/verify",
            headers={"Authorization": f"Bearer {keys['auditor']}"},
            json=document,
        )
        assert verify.status_code in {200, 503}
        if verify.status_code == 503:
            assert verify.json()["code"] == "chain_unavailable"
        else:  # the bogus event is refused before the chain is even asked
            assert verify.json()["status"] == "invalid"


@pytest.fixture
def frozen_chain_node(
    consortium: Consortium, database_url: str, tmp_path: Path
) -> Iterator[NodeRuntime]:
    """A node whose chain RPC accepts connections and never answers (an anvil under SIGSTOP, a
    hung endpoint): the kernel completes the handshakes, nobody reads."""
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(64)
        port = frozen.getsockname()[1]
        hung = dataclasses.replace(consortium, rpc_url=f"http://127.0.0.1:{port}")
        runtime = build_node(
            hung, consortium.accounts.hospital_a, tmp_path / "frozen", database_url=database_url
        )
        try:
            yield runtime
        finally:
            runtime.close()


def test_a_frozen_chain_degrades_health_within_the_probe_timeout(
    frozen_chain_node: NodeRuntime,
) -> None:
    """The probe gives up after HEALTH_PROBE_TIMEOUT, not the node client's 10 s: a load
    balancer's health check (often 5 s) must not take a node that still accepts records for
    dead. Probes that arrive while one waits are answered from its last result."""
    assert HEALTH_PROBE_TIMEOUT < 5
    with serve(create_app(frozen_chain_node)) as client:
        begun = time.monotonic()
        health = client.get("/healthz", timeout=30)
        elapsed = time.monotonic() - begun
        assert health.status_code == 200
        assert health.json()["problems"] == ["chain_unreachable"]
        assert elapsed < 9, elapsed  # the node's own client would have waited 10 s
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.get("/healthz", timeout=30), range(8)))
        assert {a.json()["status"] for a in answers} == {"degraded"}


class GatedProbe:
    """The node's real probe client (real anvil), whose ``checkpoint_count`` waits at a gate the
    test opens: a probe held mid-read while others arrive."""

    def __init__(self, probe: Any) -> None:
        self.probe = probe
        self.entered = threading.Event()
        self.gate = threading.Event()

    def has_contract_code(self) -> bool:
        return bool(self.probe.has_contract_code())

    def checkpoint_count(self, hospital: str) -> int:
        self.entered.set()
        self.gate.wait(60)
        return int(self.probe.checkpoint_count(hospital))


def test_a_probe_answered_from_another_probes_read_never_says_checkpoints_were_lost(
    api: Api,
) -> None:
    """A probe that reuses the last probe's chain read (another probe is waiting on the chain)
    must not compare that older count with a newer local one: a checkpoint confirmed in between
    read as "the chain lost checkpoints" (critical ``chain_state_lost``, found in review). And a
    probe that has waited longer than a probe may makes the others say the chain is
    unreachable instead of repeating the last answer."""
    status = api.node.status
    api.create()
    api.node.worker.run_until_anchored(timeout=30)
    assert status.health().problems == ()
    gated = GatedProbe(status.probe)
    status.probe = gated  # type: ignore[assignment]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(status.health)
        assert gated.entered.wait(30)
        api.create()  # a newer checkpoint, confirmed while the first probe is held
        api.node.worker.run_until_anchored(timeout=30)
        assert status.health().problems == ()  # the last read, not "state lost"
        time.sleep(PROBE_STALE_AFTER + 0.5)
        assert status.health().problems == (Problem.CHAIN_UNREACHABLE,)
        gated.gate.set()
        assert held.result(60).problems == ()
    assert status.health().problems == ()


def test_unreachable_chain_makes_verification_of_sound_evidence_503(
    api: Api, unreachable_chain_node: NodeRuntime
) -> None:
    archive_id = api.create()["id"]
    api.node.worker.run_until_anchored(timeout=30)
    sound = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=api.auth("archivist"))
    assert sound.status_code == 200
    keys = issue_keys(unreachable_chain_node)
    with serve(create_app(unreachable_chain_node)) as client:
        response = client.post(
            "/api/v1/verify",
            headers={"Authorization": f"Bearer {keys['auditor']}"},
            content=sound.content,
        )
    assert response.status_code == 503
    assert response.json()["code"] == "chain_unavailable"


def test_health_is_down_without_a_database(api: Api) -> None:
    status = api.node.status  # health reads the database it was given: swap it for a dead one
    working = status.db
    status.db = Database.connect(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        down = api.client.get("/healthz")
    finally:
        status.db.dispose()
        status.db = working
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "down"
    assert body["database"] == {"reachable": False}
    assert body["anchoring"] is None
    assert "database_unreachable" in body["problems"]
    assert api.client.get("/healthz").json()["status"] == "ok"


def test_metrics_follow_the_node(api: Api) -> None:
    initial = _metrics(api)
    assert initial[("archivechain_log_size", ())] == 0
    archive_id = api.create()["id"]
    api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist"))
    api.create()
    api.client.get("/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", headers=api.auth("archivist"))

    values = _metrics(api)
    assert values[("archivechain_archives", (("state", "ARCHIVED"),))] == 1
    assert values[("archivechain_archives", (("state", "CREATED"),))] == 1
    assert values[("archivechain_log_size", ())] == 3
    assert values[("archivechain_anchoring_lag_events", ())] == 3
    assert values[("archivechain_chain_state_lost", ())] == 0
    created = (
        "archivechain_http_requests_total",
        (("handler", "create_archive"), ("method", "POST"), ("status", "201")),
    )
    assert values[created] == 2
    not_found = (
        "archivechain_http_requests_total",
        (("handler", "get_archive"), ("method", "GET"), ("status", "404")),
    )
    assert values[not_found] == 1
    assert "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A" not in api.client.get("/metrics").text

    api.node.worker.run_until_anchored(timeout=30)
    anchored = _metrics(api)
    assert anchored[("archivechain_anchoring_lag_events", ())] == 0
    assert anchored[("archivechain_checkpoints", (("state", "confirmed"),))] >= 1


def test_each_app_has_its_own_registry(api: Api) -> None:
    with serve(create_app(api.node)) as other:
        other.get("/healthz")
        other.get("/healthz")
        api.client.get("/healthz")
        key = (
            "archivechain_http_requests_total",
            (("handler", "healthz"), ("method", "GET"), ("status", "200")),
        )
        mine = _metrics(api)[key]
        theirs = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(other.get("/metrics").text)
            for s in f.samples
        }[key]
    assert (mine, theirs) == (1, 2)


def test_checkpoints_list_what_was_anchored(api: Api) -> None:
    auditor = api.auth("auditor")
    empty = api.client.get("/api/v1/checkpoints", headers=auditor).json()
    assert empty["total"] == 0
    assert empty["hospital"] == api.node.hospital
    api.create()
    api.node.worker.run_until_anchored(timeout=30)
    api.create()
    api.node.worker.run_until_anchored(timeout=30)

    page = api.client.get("/api/v1/checkpoints", headers=auditor).json()
    assert page["total"] == 2
    assert [c["size"] for c in page["items"]] == [2, 1]  # newest first
    assert [c["chain_index"] for c in page["items"]] == [1, 0]
    assert all(c["state"] == "confirmed" and c["tx_hash"] for c in page["items"])
    on_chain = api.node.chain.checkpoint_at(api.node.hospital, 1)
    assert page["items"][0]["root"] == on_chain.root.hex()

    first_only = api.client.get(
        "/api/v1/checkpoints", params={"limit": 1, "offset": 1}, headers=auditor
    ).json()
    assert [c["size"] for c in first_only["items"]] == [1]
    planned = api.client.get(
        "/api/v1/checkpoints", params={"state": "planned"}, headers=auditor
    ).json()
    assert planned["total"] == 0


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    missing = api.client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {
        "code": "not_found",
        "message": "no such resource: /api/v1/nothing-here",
    }
    wrong = api.client.put("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def _stored_blob(api: Api, archive: dict[str, Any]) -> Path:
    store = api.node.blobs
    assert isinstance(store, LocalBlobStore)
    return store.path_of(archive["versions"][0]["cid"])


def _corrupt(blob: Path, offset: int) -> None:
    data = bytearray(blob.read_bytes())
    data[offset] ^= 0x40
    blob.write_bytes(bytes(data))


def test_a_corrupted_blob_is_a_500_without_details(api: Api) -> None:
    archive = api.create()
    _corrupt(_stored_blob(api, archive), 100)  # inside the first encrypted chunk
    response = api.client.get(
        f"/api/v1/archives/{archive['id']}/content",
        params={"purpose": "treatment"},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 500
    assert response.json() == {
        "code": "crypto_error",
        "message": "the node could not complete the request",
    }


def test_corruption_found_mid_stream_aborts_the_transfer(api: Api) -> None:
    archive = api.create()
    blob = _stored_blob(api, archive)
    _corrupt(blob, blob.stat().st_size - 100)  # inside the last chunk: the 200 has started
    with pytest.raises(RuntimeError):
        api.client.get(
            f"/api/v1/archives/{archive['id']}/content",
            params={"purpose": "treatment"},
            headers=api.auth("archivist"),
        )


def test_a_missing_blob_is_a_500_without_details(api: Api) -> None:
    archive = api.create()
    blob = _stored_blob(api, archive)
    blob.unlink()
    response = api.client.get(
        f"/api/v1/archives/{archive['id']}/content",
        params={"purpose": "treatment"},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 500
    assert response.json()["code"] == "blob_not_found"
    assert str(blob.name) not in response.text
    assert archive["versions"][0]["cid"] not in response.text


def _failing_app() -> UnhandledErrorMiddleware:
    """A bare ASGI app that fails before answering (``/crash``) or half way through a stream."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first part", "more_body": True})
        raise RuntimeError("patient Jane Roe, MRN-777")

    return UnhandledErrorMiddleware(app)


def test_unexpected_exceptions_are_500_internal_error_without_their_text() -> None:
    with serve(_failing_app()) as client:
        response = client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {"code": "internal_error", "message": "internal error"}
    assert "Jane" not in response.text


def test_a_stream_that_fails_midway_is_aborted_not_completed() -> None:
    transport = httpx.ASGITransport(app=_failing_app())

    async def fetch() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/stream")

    with pytest.raises(RuntimeError, match="Jane"):
        anyio.run(fetch)
