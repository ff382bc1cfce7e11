"""The access policy through the real app and node: the whole matrix of roles (API keys and
signed-in members) × sensitivity × department relation × purpose × action on local records,
denials recorded and counted, purposes carried into ACCESS events, and break-glass (reason,
BREAK_GLASS event, alert, time box, report). Transferred and shared records:
tests/federation/test_policy_origins.py."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select

from anchoring import storage
from anchoring.events import parse_event
from node.models import AccessDenial, Alert
from node.principal import Role
from node.runtime import NodeRuntime
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api
from tests.api.members import bearer, sign_in
from tests.fixtures.node import MakeNode
from tests.policy_table import PURPOSES, SENSITIVITIES, expected_status, is_policy_denial

CALLERS = {  # caller -> (role in the table, department relation to a cardiology record)
    "archivist": ("archivist", "none"),
    "cardiologist": ("clinician", "own"),
    "oncologist": ("clinician", "other"),
    "auditor": ("auditor", "none"),
    "records_manager": ("records_manager", "none"),
    "admin": ("admin", "none"),
    "regulator": ("regulator", "none"),
    "insurer": ("insurer", "none"),
}
REASON = "Unconscious patient in the emergency department, cardiac history needed"


@pytest.fixture
def api_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    """Both databases: denials and break-glass windows are rows PostgreSQL checks strictly."""
    return make_node(
        database_url=database_url, max_upload_bytes=UPLOAD_LIMIT, chunk_size=CHUNK_SIZE
    )


def _headers(api: Api, caller: str, tokens: dict[str, str]) -> dict[str, str]:
    return bearer(tokens[caller]) if caller in tokens else api.auth(caller)


def _read(api: Api, headers: dict[str, str], archive_id: str, purpose: str, action: str) -> Any:
    url = f"/api/v1/archives/{archive_id}" + ("/content" if action == "read_content" else "")
    return api.client.get(url, params={"purpose": purpose}, headers=headers)


def test_the_whole_matrix_on_local_records(
    api: Api, regulator: LocalAccount, insurer: LocalAccount
) -> None:
    api.keys["records_manager"] = api.node.keys.issue(Role.RECORDS_MANAGER, "rm-1").secret
    tokens = {"regulator": sign_in(api, regulator), "insurer": sign_in(api, insurer, "insurer")}
    archives = {s: api.create(sensitivity=s)["id"] for s in SENSITIVITIES}
    mismatches: list[str] = []
    denials = 0
    for caller, sensitivity, purpose, action in itertools.product(
        CALLERS, SENSITIVITIES, PURPOSES, ("read_content", "read_metadata")
    ):
        role, rel = CALLERS[caller]
        want = expected_status(role, sensitivity, rel, purpose, action)
        got = _read(api, _headers(api, caller, tokens), archives[sensitivity], purpose, action)
        if got.status_code != want:
            mismatches.append(
                f"{caller} {sensitivity} {purpose} {action}: {got.status_code}≠{want}"
            )
        elif want == 403:
            code = got.json()["code"]
            policy = is_policy_denial(role, sensitivity, rel, purpose, action)
            if code != ("policy_denied" if policy else "forbidden"):
                mismatches.append(f"{caller} {sensitivity} {purpose} {action}: code {code}")
        denials += is_policy_denial(role, sensitivity, rel, purpose, action)
    assert mismatches == []
    with api.node.db.session() as session:
        recorded = session.execute(select(func.count()).select_from(AccessDenial)).scalar_one()
    assert recorded == denials > 0
    metrics = api.client.get("/metrics").text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("archivechain_access_denials_total{")
    )
    assert counted == denials


def test_content_reads_need_a_purpose_and_carry_it_into_the_access_event(api: Api) -> None:
    archive_id = api.create()["id"]
    missing = api.client.get(
        f"/api/v1/archives/{archive_id}/content", headers=api.auth("cardiologist")
    )
    assert missing.status_code == 422
    read = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": "referral"},
        headers=api.auth("cardiologist"),
    )
    assert read.status_code == 200
    access = _last_access(api.node, archive_id)
    assert (access.data.purpose.value, access.data.scope.value, access.data.break_glass) == (
        "referral",
        "content",
        False,
    )


def _last_access(node: NodeRuntime, archive_id: str) -> Any:
    with node.db.session() as session:
        entries = storage.entries_for_archive(session, archive_id)
        events = [parse_event(e.event) for e in entries]
    return [e for e in events if e.type == "ACCESS"][-1]


def test_denials_are_listed_for_auditors_not_clinicians(api: Api) -> None:
    archive_id = api.create(sensitivity="HIGHLY_SENSITIVE")["id"]
    refused = _read(api, api.auth("cardiologist"), archive_id, "research", "read_content")
    assert refused.status_code == 403
    assert refused.json()["code"] == "policy_denied"
    listed = api.client.get(
        "/api/v1/access/denials", params={"archive_id": archive_id}, headers=api.auth("auditor")
    )
    assert listed.status_code == 200
    [row] = listed.json()
    assert row | {"id": 0, "time": ""} == {
        "id": 0,
        "time": "",
        "actor": api.node.pseudonyms.staff("dr-heart"),
        "role": "clinician",
        "department": "cardiology",
        "archive_id": archive_id,
        "action": "read_content",
        "purpose": "research",
        "sensitivity": "HIGHLY_SENSITIVE",
        "relation": "own",
        "origin": "local",
        "rule": "no-research-on-restricted",
    }
    for who in ("cardiologist", "admin"):
        assert api.client.get("/api/v1/access/denials", headers=api.auth(who)).status_code == 403
    table = api.client.get("/api/v1/access/policy", headers=api.auth("auditor")).json()
    assert table[0]["id"] == "no-research-on-restricted"


def test_break_glass_opens_a_logged_alerted_time_boxed_window(api: Api) -> None:
    archive_id = api.create(sensitivity="HIGHLY_SENSITIVE")["id"]
    onco = api.auth("oncologist")
    assert _read(api, onco, archive_id, "treatment", "read_content").status_code == 404
    url = f"/api/v1/archives/{archive_id}/break-glass"
    refused = (
        ({}, 422),
        ({"reason": "urgent"}, 422),
        ({"reason": " " * 20}, 400),
        # an escaped NUL: refused with the body (invalid_encoding); PostgreSQL: a 500 before
        ({"reason": "unconscious\x00 patient in ED"}, 400),
    )
    for body, status in refused:
        assert api.client.post(url, json=body, headers=onco).status_code == status, body
    for who in ("auditor", "archivist", "admin"):
        assert (
            api.client.post(url, json={"reason": REASON}, headers=api.auth(who)).status_code == 403
        )
    opened = api.client.post(url, json={"reason": REASON}, headers=onco)
    assert opened.status_code == 201, opened.text
    window = opened.json()
    assert window["purpose"] == "treatment"
    assert window["reason_hash"] == hashlib.sha256(REASON.encode()).hexdigest()

    # the BREAK_GLASS event, and an alert for the privacy officer
    with api.node.db.session() as session:
        events = [parse_event(e.event) for e in storage.entries_for_archive(session, archive_id)]
        alert = session.execute(select(Alert).where(Alert.kind == "break_glass")).scalar_one()
    glass = [e for e in events if e.type == "BREAK_GLASS"]
    assert len(glass) == 1
    assert glass[0].actor == api.node.pseudonyms.staff("dr-onco")
    assert glass[0].data.reason_hash == window["reason_hash"]
    assert alert.subject == archive_id
    assert REASON not in json.dumps(alert.detail)

    # reads in the window: allowed, logged as break-glass with the reason's hash
    read = _read(api, onco, archive_id, "treatment", "read_content")
    assert read.status_code == 200
    access = _last_access(api.node, archive_id)
    assert access.data.break_glass is True
    assert access.data.reason_hash == window["reason_hash"]
    # only for the window's purpose, and only for the caller who opened it
    assert _read(api, onco, archive_id, "research", "read_content").status_code == 404
    assert (
        _read(api, api.auth("cardiologist"), archive_id, "research", "read_content").status_code
        == 403
    )

    report = api.client.get("/api/v1/access/break-glass", headers=api.auth("auditor"))
    assert report.status_code == 200
    [row] = report.json()
    assert (row["archive_id"], row["reads"], row["reason"]) == (archive_id, 1, REASON)
    assert api.client.get("/api/v1/access/break-glass", headers=onco).status_code == 403


def test_break_glass_windows_close(make_node: MakeNode, sqlite_url: str) -> None:
    from api.main import create_app
    from tests.api.conftest import issue_keys, serve

    # The node's clock is the wall clock moved forward by the test: a window of real seconds
    # closed under the test on a loaded machine (a stall between opening it and the first read).
    clock = _SteppedClock()
    node = make_node(database_url=sqlite_url, break_glass_hours=1.0, clock=clock)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archive_id = api.create()["id"]
        onco = api.auth("oncologist")
        opened = api.client.post(
            f"/api/v1/archives/{archive_id}/break-glass", json={"reason": REASON}, headers=onco
        )
        assert opened.status_code == 201
        assert _read(api, onco, archive_id, "treatment", "read_content").status_code == 200
        clock.offset = timedelta(minutes=59)  # still inside the hour
        assert _read(api, onco, archive_id, "treatment", "read_content").status_code == 200
        clock.offset = timedelta(hours=1, seconds=1)  # the hour is over
        assert _read(api, onco, archive_id, "treatment", "read_content").status_code == 404


class _SteppedClock:
    """The node's clock: real time, moved forward by ``offset``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset
