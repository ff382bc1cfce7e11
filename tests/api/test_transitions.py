"""Every illegal lifecycle transition reachable through the API answers 409 with its code, and
leaves the archive, its events and the log exactly as they were. Both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api

Step = Callable[[Api, str], httpx.Response]


def _archive(api: Api, archive_id: str) -> httpx.Response:
    return api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist"))


def _amend(api: Api, archive_id: str) -> httpx.Response:
    return api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        headers=api.auth("archivist"),
        files={"file": ("v2.txt", b"second version", "text/plain")},
    )


def _hold(api: Api, archive_id: str) -> httpx.Response:
    return api.client.post(
        f"/api/v1/archives/{archive_id}/hold",
        headers=api.auth("archivist"),
        json={"reason": "litigation 2024-17"},
    )


def _release(api: Api, archive_id: str) -> httpx.Response:
    return api.client.delete(
        f"/api/v1/archives/{archive_id}/hold",
        params={"reason": "case closed"},
        headers=api.auth("archivist"),
    )


# (setup steps that must succeed, the refused step, its code)
ILLEGAL: dict[str, tuple[list[Step], Step, str]] = {
    "amend after archive": ([_archive], _amend, "illegal_transition"),
    "archive twice": ([_archive], _archive, "illegal_transition"),
    "release a hold never placed": ([], _release, "illegal_transition"),
    "release a hold already released": ([_hold, _release], _release, "illegal_transition"),
    "place a hold twice": ([_hold], _hold, "illegal_transition"),
    "place a hold twice once archived": ([_archive, _hold], _hold, "illegal_transition"),
}


def _snapshot(api: Api, archive_id: str) -> tuple[dict[str, Any], list[Any], Any]:
    archive = api.client.get(f"/api/v1/archives/{archive_id}", headers=api.auth("archivist"))
    events = api.client.get(f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist"))
    return archive.json(), events.json(), api.footprint()


@pytest.mark.parametrize("scenario", sorted(ILLEGAL))
def test_illegal_transition_is_409_and_changes_nothing(api: Api, scenario: str) -> None:
    setup, refused, code = ILLEGAL[scenario]
    archive_id = api.create()["id"]
    for step in setup:
        response = step(api, archive_id)
        assert response.status_code == 200, response.text
    before = _snapshot(api, archive_id)

    response = refused(api, archive_id)

    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    assert set(body) <= {"code", "message", "details"}
    assert _snapshot(api, archive_id) == before


def test_hold_place_and_release_are_logged(api: Api) -> None:
    archive_id = api.create()["id"]
    held = _hold(api, archive_id)
    assert held.status_code == 200
    assert held.json()["on_hold"] is True
    released = _release(api, archive_id)
    assert released.status_code == 200
    assert released.json()["on_hold"] is False
    events = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    ).json()
    assert [e["type"] for e in events] == ["CREATE", "HOLD_PLACE", "HOLD_RELEASE"]
    # The reason stays on the node: events carry only its hash.
    assert "litigation" not in str(events)


def test_blank_hold_reason_is_refused(api: Api) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/hold",
        headers=api.auth("archivist"),
        json={"reason": "   "},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "reason_required"
    assert api.footprint() == before
