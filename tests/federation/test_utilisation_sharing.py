"""The utilisation report's sharing volume on real nodes (three hospitals over real HTTP, on
anvil): A shares one record with C, C reads it twice, A transfers another record to B. Each node
counts what its own log and transfer table hold (definitions in docs/monitoring.md)."""

from __future__ import annotations

from typing import Any

from tests.federation.conftest import Hospital, wait_for
from tests.federation.test_flows import CONTENT, grant_share, transfer_state, upload_and_archive


def _sharing(hospital: Hospital) -> dict[str, Any]:
    with hospital.client("auditor") as api:
        response = api.get("/reports/utilisation")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
    return body


def test_sharing_volume_counts_grants_shared_reads_and_transfers(
    hospitals: dict[str, Hospital],
) -> None:
    a, b, c = hospitals["A"], hospitals["B"], hospitals["C"]
    shared = upload_and_archive(a)
    moved = upload_and_archive(a)
    grant_share(a, shared, c)
    with c.client() as api:
        for _ in range(2):
            read = api.get(f"/shared/{a.address}/{shared}/content", params={"purpose": "referral"})
            assert read.status_code == 200, read.text
            assert read.content == CONTENT
    with a.client() as api:
        offered = api.post(f"/archives/{moved}/transfers", json={"to": b.address})
        assert offered.status_code == 202, offered.text
    wait_for(lambda: transfer_state(b, moved, "in") == "accepted", 60, "B to accept")

    at_a, at_b, at_c = _sharing(a), _sharing(b), _sharing(c)
    # A: one grant, two disclosures (ACCESS naming the grant), one transfer out
    assert at_a["sharing"] == {
        "grants": 1,
        "shared_reads": 2,
        "transfers_out": 1,
        "transfers_in": 0,
    }
    # C logged its own two reads of the shared record (the grant's side chain)
    assert at_c["sharing"] == {
        "grants": 0,
        "shared_reads": 2,
        "transfers_out": 0,
        "transfers_in": 0,
    }
    assert at_b["sharing"] == {
        "grants": 0,
        "shared_reads": 0,
        "transfers_out": 0,
        "transfers_in": 1,
    }
    # grantee reads are not content reads of the grantee's own holdings
    assert at_c["retrieval_seconds"]["total"]["reads"] == 0
    assert at_a["utilisation"] == {"archives_read": 0, "archives_held": 1, "rate": 0.0}
    assert at_b["utilisation"]["archives_held"] == 1
