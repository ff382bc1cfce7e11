"""Catalogue reads are logged (issue 8, item 16): titles and metadata may hold PHI, so a metadata
read (``GET /archives/{id}``) and every archive a search lists become ACCESS events (scope
metadata) with the caller's purpose, committed before the answer; a repeat within the node's
window is logged once. Both databases, real anvil."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount

from tests.api.conftest import Api


def _access_events(api: Api, archive_id: str) -> list[dict[str, Any]]:
    events = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    ).json()
    return [e["event"] for e in events if e["type"] == "ACCESS"]


def test_a_metadata_read_is_logged_once_per_caller_and_purpose_within_the_window(api: Api) -> None:
    archive_id = api.create()["id"]
    url = f"/api/v1/archives/{archive_id}"
    first = api.client.get(url, headers=api.auth("archivist"))
    assert first.status_code == 200
    assert first.json()["event_count"] == 2  # CREATE and this read
    reads = _access_events(api, archive_id)
    assert len(reads) == 1
    assert reads[0]["data"]["scope"] == "metadata"
    assert reads[0]["data"]["purpose"] == "operations"  # archive staff's default
    assert reads[0]["actor"] == api.node.keys.authenticate(api.keys["archivist"]).actor

    api.client.get(url, headers=api.auth("archivist"))  # same caller, purpose: within the window
    assert len(_access_events(api, archive_id)) == 1
    api.client.get(url, headers=api.auth("archivist"), params={"purpose": "legal"})
    api.client.get(url, headers=api.auth("auditor"))  # another caller: audit by default
    api.client.get(url, headers=api.auth("cardiologist"))  # a clinician: treatment
    purposes = [e["data"]["purpose"] for e in _access_events(api, archive_id)]
    assert purposes == ["operations", "legal", "audit", "treatment"]

    refused = api.client.get(url, headers=api.auth("oncologist"))  # another department
    assert refused.status_code == 404
    assert len(_access_events(api, archive_id)) == 4  # a refused read logs nothing

    bad = api.client.get(url, headers=api.auth("archivist"), params={"purpose": "gossip"})
    assert bad.status_code == 422
    assert len(_access_events(api, archive_id)) == 4


def test_every_read_is_logged_when_the_window_is_zero(api: Api) -> None:
    api.node.settings.metadata_read_log_window = 0
    archive_id = api.create()["id"]
    for _ in range(3):
        api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("auditor"))
    assert len(_access_events(api, archive_id)) == 3


def test_a_search_logs_a_metadata_read_of_every_listed_archive(api: Api) -> None:
    listed = [api.create(title=f"Radiology report {n}")["id"] for n in range(3)]
    unlisted = api.create(title="Nursing note")["id"]
    page = api.client.get(
        "/api/v1/archives",
        headers=api.auth("auditor"),
        params={"q": "radiology", "purpose": "quality"},
    )
    assert page.status_code == 200
    items = page.json()["items"]
    assert sorted(item["id"] for item in items) == sorted(listed)
    assert all(item["event_count"] == 2 for item in items)  # their reads included
    for archive_id in listed:
        reads = _access_events(api, archive_id)
        assert [(e["data"]["scope"], e["data"]["purpose"]) for e in reads] == [
            ("metadata", "quality")
        ]
    assert _access_events(api, unlisted) == []


def test_an_archive_in_transit_is_answered_but_its_frozen_chain_gets_no_read(
    api: Api, hospital_b: LocalAccount
) -> None:
    """While a transfer is pending the custodian's chain accepts only custody events, so a read
    cannot be logged there: it is answered (the catalogue stays usable) and not logged."""
    archive_id = api.create()["id"]
    archivist = api.auth("archivist")
    assert api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist).is_success
    offered = api.client.post(
        f"/api/v1/archives/{archive_id}/transfers",
        headers=archivist,
        json={"to": hospital_b.address},
    )
    assert offered.status_code == 202, offered.text
    before = api.footprint().log_size
    answer = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("auditor"))
    assert answer.status_code == 200
    assert answer.json()["state"] == "TRANSFER_PENDING"
    listed = api.client.get("/api/v1/archives", headers=api.auth("auditor"))
    assert archive_id in [item["id"] for item in listed.json()["items"]]
    assert api.footprint().log_size == before
