"""The alert store through the API: dedup by kind and subject, counts, first/last seen, severity
escalation, acknowledgement, the roles that may list and ack, refused queries, and the Prometheus
gauge of open alerts per kind (both databases)."""

from __future__ import annotations

import time

from sqlalchemy import text

from node.alerts import AlertNotice, Severity
from tests.api.conftest import Api

ARCHIVE_A = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
ARCHIVE_B = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1B"


def _raise(api: Api, kind: str, subject: str, severity: Severity = Severity.WARNING) -> None:
    api.node.alerts.raise_alert(AlertNotice(kind, subject, severity, {"version": 1}))


def test_the_node_keeps_alerts_deduplicated_by_kind_and_subject(api: Api) -> None:
    _raise(api, "fixity_mismatch", ARCHIVE_A)
    time.sleep(0.01)
    _raise(api, "fixity_mismatch", ARCHIVE_A, Severity.CRITICAL)
    _raise(api, "fixity_mismatch", ARCHIVE_B, Severity.INFO)
    _raise(api, "blob_missing", ARCHIVE_A)

    response = api.client.get("/api/v1/alerts", headers=api.auth("auditor"))
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 3
    by_key = {(a["kind"], a["subject"]): a for a in page["items"]}
    assert set(by_key) == {
        ("fixity_mismatch", ARCHIVE_A),
        ("fixity_mismatch", ARCHIVE_B),
        ("blob_missing", ARCHIVE_A),
    }
    twice = by_key[("fixity_mismatch", ARCHIVE_A)]
    assert twice["count"] == 2
    assert twice["severity"] == "critical"  # escalated by the second occurrence
    assert twice["last_seen"] > twice["first_seen"]
    assert twice["detail"] == {"version": 1}
    assert twice["acknowledged_by"] is None
    assert by_key[("fixity_mismatch", ARCHIVE_B)]["severity"] == "info"

    only = api.client.get(
        "/api/v1/alerts", params={"kind": "blob_missing"}, headers=api.auth("admin")
    ).json()
    assert [(a["kind"], a["count"]) for a in only["items"]] == [("blob_missing", 1)]


def test_acknowledging_closes_an_alert_and_a_new_occurrence_opens_another(api: Api) -> None:
    _raise(api, "fixity_mismatch", ARCHIVE_A)
    alert = api.client.get("/api/v1/alerts", headers=api.auth("archivist")).json()["items"][0]

    acked = api.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=api.auth("archivist"))
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_by"] is not None
    assert acked.json()["acknowledged_at"] is not None
    again = api.client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=api.auth("archivist"))
    assert again.status_code == 200
    assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]  # idempotent

    assert api.client.get("/api/v1/alerts", headers=api.auth("archivist")).json()["total"] == 0
    done = api.client.get(
        "/api/v1/alerts", params={"state": "acknowledged"}, headers=api.auth("archivist")
    ).json()
    assert [a["id"] for a in done["items"]] == [alert["id"]]

    _raise(api, "fixity_mismatch", ARCHIVE_A)
    open_now = api.client.get("/api/v1/alerts", headers=api.auth("archivist")).json()["items"]
    assert len(open_now) == 1
    assert open_now[0]["id"] != alert["id"]
    assert open_now[0]["count"] == 1
    every = api.client.get(
        "/api/v1/alerts", params={"state": "all"}, headers=api.auth("archivist")
    ).json()
    assert every["total"] == 2


def test_alert_routes_refuse_the_wrong_callers_and_bad_input(api: Api) -> None:
    _raise(api, "fixity_mismatch", ARCHIVE_A)
    alert_id = api.client.get("/api/v1/alerts", headers=api.auth("auditor")).json()["items"][0][
        "id"
    ]
    assert api.client.get("/api/v1/alerts").status_code == 401
    listed = api.client.get("/api/v1/alerts", headers=api.auth("cardiologist"))
    assert listed.status_code == 403
    assert listed.json()["code"] == "forbidden"
    for who in ("auditor", "admin", "cardiologist"):
        refused = api.client.post(f"/api/v1/alerts/{alert_id}/ack", headers=api.auth(who))
        assert refused.status_code == 403, who
    assert api.client.post(f"/api/v1/alerts/{alert_id}/ack").status_code == 401
    missing = api.client.post("/api/v1/alerts/999999/ack", headers=api.auth("archivist"))
    assert missing.status_code == 404
    assert missing.json()["code"] == "alert_not_found"
    for params in (
        {"state": "closed"},
        {"limit": "0"},
        {"limit": "501"},
        {"offset": "-1"},
        {"kind": "DROP TABLE"},
        {"unknown": "1"},
    ):
        bad = api.client.get("/api/v1/alerts", params=params, headers=api.auth("auditor"))
        assert bad.status_code == 422, params
    repeated = api.client.get("/api/v1/alerts?limit=1&limit=2", headers=api.auth("auditor"))
    assert repeated.status_code == 422
    for path in ("/api/v1/alerts/0/ack", "/api/v1/alerts/abc/ack", f"/api/v1/alerts/{2**60}/ack"):
        assert api.client.post(path, headers=api.auth("archivist")).status_code == 422, path
    # nothing was acknowledged by any refused request
    still = api.client.get("/api/v1/alerts", headers=api.auth("auditor")).json()
    assert [a["id"] for a in still["items"]] == [alert_id]


def test_open_alerts_are_a_prometheus_gauge_per_kind(api: Api) -> None:
    _raise(api, "fixity_mismatch", ARCHIVE_A, Severity.CRITICAL)
    _raise(api, "fixity_mismatch", ARCHIVE_B, Severity.CRITICAL)
    _raise(api, "blob_missing", ARCHIVE_A, Severity.CRITICAL)
    text = api.client.get("/metrics").text
    assert 'archivechain_alerts_open{kind="fixity_mismatch",severity="critical"} 2.0' in text
    assert 'archivechain_alerts_open{kind="blob_missing",severity="critical"} 1.0' in text
    first = api.client.get(
        "/api/v1/alerts", params={"kind": "blob_missing"}, headers=api.auth("archivist")
    ).json()["items"][0]
    api.client.post(f"/api/v1/alerts/{first['id']}/ack", headers=api.auth("archivist"))
    text = api.client.get("/metrics").text
    assert 'archivechain_alerts_open{kind="blob_missing"' not in text
    assert 'archivechain_alerts_open{kind="fixity_mismatch",severity="critical"} 2.0' in text


def test_raise_alert_never_raises_when_the_alert_cannot_be_stored(api: Api) -> None:
    with api.node.db.transaction() as session:
        session.execute(text("DROP TABLE alerts"))
    _raise(api, "fixity_mismatch", ARCHIVE_A)  # logged, not raised
