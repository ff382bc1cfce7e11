"""Catalogue search filtered row by row through the access policy (issue 13 §3, issue 12 §2): the
whole table of callers × purposes over records of every sensitivity in the caller's department
and another one, on both databases. A record the caller may not read (metadata) is neither listed
nor counted; a break-glass window opens exactly its archive. Expected answers come from
tests/policy_table.py, written independently of node.policy."""

from __future__ import annotations

import itertools
from typing import Any

from eth_account.signers.local import LocalAccount

from node.principal import Role
from node.services.archives import SEARCH_TOTAL_CAP
from tests.api.conftest import Api
from tests.api.members import bearer, sign_in
from tests.policy_table import PURPOSES, SENSITIVITIES, expected_status

CALLERS = {  # caller -> (role, department or None)
    "archivist": ("archivist", None),
    "cardiologist": ("clinician", "cardiology"),
    "oncologist": ("clinician", "oncology"),
    "auditor": ("auditor", None),
    "records_manager": ("records_manager", None),
    "admin": ("admin", None),
    "regulator": ("regulator", None),
}
DEPARTMENTS = ("cardiology", "oncology")
WORD = "溶血性贫血 zyxwordq"


def _relation(department: str | None, record_department: str) -> str:
    if department is None:
        return "none"
    return "own" if department == record_department else "other"


def _search(api: Api, headers: dict[str, str], purpose: str, **params: Any) -> Any:
    return api.client.get(
        "/api/v1/archives", params={"text": WORD, "purpose": purpose, **params}, headers=headers
    )


def test_search_lists_and_counts_only_what_the_policy_lets_the_caller_read(
    api: Api, regulator: LocalAccount
) -> None:
    api.keys["records_manager"] = api.node.keys.issue(Role.RECORDS_MANAGER, "rm-1").secret
    tokens = {"regulator": sign_in(api, regulator)}
    records: dict[str, tuple[str, str]] = {}  # id -> (sensitivity, department)
    for sensitivity, department in itertools.product(SENSITIVITIES, DEPARTMENTS):
        body = api.create(
            sensitivity=sensitivity, department=department, title=f"{WORD} {sensitivity}"
        )
        records[body["id"]] = (sensitivity, department)
    api.create(title="unrelated 出院小结")  # not matching: never listed
    mismatches: list[str] = []
    # Without a department filter, and with each department as a filter: a department-bound
    # caller's own, and another one, whose relation the query knows before it runs.
    for caller, purpose, scope in itertools.product(CALLERS, PURPOSES, (None, *DEPARTMENTS)):
        role, department = CALLERS[caller]
        headers = bearer(tokens[caller]) if caller in tokens else api.auth(caller)
        expected = {
            archive_id
            for archive_id, (sensitivity, record_department) in records.items()
            if scope in (None, record_department)
            and expected_status(
                role,
                sensitivity,
                _relation(department, record_department),
                purpose,
                "read_metadata",
            )
            == 200
        }
        params = {} if scope is None else {"department": scope}
        label = f"{caller} {purpose} department={scope}"
        got = _search(api, headers, purpose, **params)
        if role == "admin":  # no metadata reads at all: refused before any row is looked at
            if got.status_code != 403 or got.json()["code"] != "forbidden":
                mismatches.append(f"{label}: {got.status_code}")
            continue
        if got.status_code != 200:
            mismatches.append(f"{label}: {got.status_code} {got.text[:80]}")
            continue
        page = got.json()
        listed = {item["id"] for item in page["items"]}
        if listed != expected or page["total"] != len(expected) or not page["total_exact"]:
            mismatches.append(
                f"{label}: listed {sorted(records[i] for i in listed)} total "
                f"{page['total']}, expected {sorted(records[i] for i in expected)}"
            )
        # The catalogue answers the same rows (and its CSV the same count).
        catalogue = api.client.get(
            "/api/v1/catalogue",
            params={"text": WORD, "purpose": purpose, **params},
            headers=headers,
        )
        if catalogue.status_code == 200 and catalogue.json()["total"] != len(expected):
            mismatches.append(f"{label}: catalogue total {catalogue.json()['total']}")
    assert mismatches == []


def test_a_break_glass_window_opens_its_archive_to_search_and_nothing_else(api: Api) -> None:
    restricted = api.create(
        sensitivity="HIGHLY_SENSITIVE", department="cardiology", title=f"{WORD} a"
    )["id"]
    other = api.create(sensitivity="HIGHLY_SENSITIVE", department="cardiology", title=f"{WORD} b")[
        "id"
    ]
    headers = api.auth("oncologist")  # another department, and restricted records
    before = _search(api, headers, "referral").json()
    assert (before["total"], before["items"]) == (0, [])
    opened = api.client.post(
        f"/api/v1/archives/{restricted}/break-glass",
        json={
            "purpose": "referral",
            "reason": "Unconscious patient in the emergency department, cardiac history needed",
        },
        headers=headers,
    )
    assert opened.status_code in (200, 201), opened.text
    after = _search(api, headers, "referral").json()
    assert [item["id"] for item in after["items"]] == [restricted]
    assert after["total"] == 1
    # Only for the purpose of the window.
    assert _search(api, headers, "quality").json()["total"] == 0
    assert other not in {item["id"] for item in after["items"]}
    # A department filter outside the caller's own department lists the window's archive
    # (the query starts from the caller's windows), in its department only, with or without
    # text.
    for params in ({"department": "cardiology"}, {"department": "cardiology", "text": None}):
        query = {"text": WORD, "purpose": "referral", **params}
        found = api.client.get(
            "/api/v1/archives",
            params={k: v for k, v in query.items() if v is not None},
            headers=headers,
        ).json()
        assert [item["id"] for item in found["items"]] == [restricted], params
        assert found["total"] == 1
    for department in ("oncology", "pediatrics"):
        found = _search(api, headers, "referral", department=department).json()
        assert (found["total"], found["items"]) == (0, []), department


def test_frequent_words_are_counted_up_to_the_cap_and_paged_newest_first(api: Api) -> None:
    ids = [api.create(title=f"{WORD} {n}")["id"] for n in range(5)]
    page = _search(api, api.auth("archivist"), "operations", limit=2, offset=1).json()
    assert [item["id"] for item in page["items"]] == [ids[3], ids[2]]
    assert (page["total"], page["total_exact"]) == (5, True)
    assert SEARCH_TOTAL_CAP >= 1000
