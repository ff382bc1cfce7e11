"""The access policy on records that arrived from another hospital: received by transfer (now
held here) and read here under another hospital's share. Same table as for local records
(tests/policy_table.py): a grantee's clinician of another department is refused like a local one,
and break-glass never opens a shared record."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import httpx

from node.principal import Role
from tests.federation.conftest import Hospital, wait_for
from tests.federation.test_flows import transfer_state
from tests.policy_table import PURPOSES, SENSITIVITIES, expected_status

CALLERS = {"archivist": ("archivist", "none"), "cardio": ("clinician", "own"),
           "onco": ("clinician", "other"), "auditor": ("auditor", "none")}  # fmt: skip


def _archive(hospital: Hospital, sensitivity: str) -> str:
    with hospital.client() as api:
        metadata = {
            "record_class": "INPATIENT",
            "sensitivity": sensitivity,
            "department": "cardiology",
            "title": "Ward notes",
            "source_system": "HIS",
            "patient_id": "MRN-77",
        }
        made = api.post(
            "/archives",
            files={"file": ("notes.txt", b"ward notes " * 50, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        assert made.status_code == 201, made.text
        archive_id = str(made.json()["id"])
        assert api.post(f"/archives/{archive_id}/archive").status_code == 200
        wait_for(
            lambda: api.get(f"/archives/{archive_id}").json()["chain_status"] == "registered",
            30,
            "registration",
        )
    return archive_id


def _clients(hospital: Hospital) -> dict[str, httpx.Client]:
    node = hospital.runtime
    secrets = {
        "archivist": hospital.keys["archivist"],
        "auditor": hospital.keys["auditor"],
        "cardio": node.keys.issue(Role.CLINICIAN, f"{hospital.name}-cardio", "cardiology").secret,
        "onco": node.keys.issue(Role.CLINICIAN, f"{hospital.name}-onco", "oncology").secret,
    }
    return {
        who: httpx.Client(
            base_url=hospital.url + "/api/v1",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        for who, secret in secrets.items()
    }


def test_transferred_and_shared_records_follow_the_same_table(
    hospitals: dict[str, Hospital],
) -> None:
    a, b = hospitals["A"], hospitals["B"]
    moved = {s: _archive(a, s) for s in SENSITIVITIES}
    shared = {s: _archive(a, s) for s in SENSITIVITIES}
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with a.client() as api:
        for archive_id in moved.values():
            offered = api.post(f"/archives/{archive_id}/transfers", json={"to": b.address})
            assert offered.status_code == 202, offered.text
        for archive_id in shared.values():
            granted = api.post(
                f"/archives/{archive_id}/shares",
                json={"to": b.address, "purpose": "treatment", "expires_at": expires},
            )
            assert granted.status_code == 201, granted.text
    for archive_id in moved.values():
        wait_for(lambda i=archive_id: transfer_state(b, i, "in") == "accepted", 60, "accept")

    clients = _clients(b)
    mismatches: list[str] = []
    try:
        for who, sensitivity, purpose in itertools.product(CALLERS, SENSITIVITIES, PURPOSES):
            role, rel = CALLERS[who]
            want = expected_status(role, sensitivity, rel, purpose, "read_content")
            api = clients[who]
            got = api.get(f"/archives/{moved[sensitivity]}/content", params={"purpose": purpose})
            if got.status_code != want:
                mismatches.append(
                    f"transfer {who} {sensitivity} {purpose}: {got.status_code}≠{want}"
                )
            # shared: the policy first, then the grant's purpose (treatment) must match
            want_shared = 409 if want == 200 and purpose != "treatment" else want
            got = api.get(
                f"/shared/{a.address}/{shared[sensitivity]}/content", params={"purpose": purpose}
            )
            if got.status_code != want_shared:
                mismatches.append(
                    f"share {who} {sensitivity} {purpose}: {got.status_code}≠{want_shared}"
                )
        assert mismatches == []

        # break-glass cannot open a shared record (the custodian holds it), only a held one
        onco = clients["onco"]
        reason = {"reason": "cardiac arrest on the oncology ward, history needed now"}
        opened = onco.post(f"/archives/{moved['NORMAL']}/break-glass", json=reason)
        assert opened.status_code == 201, opened.text
        read = onco.get(f"/archives/{moved['NORMAL']}/content", params={"purpose": "treatment"})
        assert read.status_code == 200
        refused = onco.post(f"/archives/{shared['NORMAL']}/break-glass", json=reason)
        assert refused.status_code == 404  # not catalogued here: the custodian is A
        path = f"/shared/{a.address}/{shared['NORMAL']}/content"
        assert onco.get(path, params={"purpose": "treatment"}).status_code == 404
        denials = clients["auditor"].get("/access/denials", params={"limit": 1000}).json()
        assert {d["origin"] for d in denials} == {"local", "shared"}
    finally:
        for client in clients.values():
            client.close()
