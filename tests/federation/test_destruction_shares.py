"""Destruction of a shared archive between two real nodes over real HTTP (in this process), on
anvil: A shares a record with C, C reads it; the record's deadline passes, A reviews it with four
eyes and destroys it. A's copy of the key wrapped for C is destroyed with A's own (the certificate
names both holders), C's next read is refused by A, and the bundle still verifies."""

from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from node.models import WrappedKey
from node.principal import Role
from node.retention import add_years
from tests.federation.conftest import Hospital, wait_for
from tests.federation.test_flows import CONTENT, grant_share


def _archive_long_ago(hospital: Hospital) -> str:
    """An outpatient record whose 15-year deadline passed a year ago, archived and registered."""
    with hospital.client() as api:
        metadata = {
            "record_class": "OUTPATIENT",
            "department": "cardiology",
            "title": "Referral letter",
            "source_system": "HIS",
            "patient_id": "MRN-4242",
            "trigger_date": add_years(date.today(), -16).isoformat(),
        }
        response = api.post(
            "/archives",
            files={"file": ("letter.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        assert response.status_code == 201, response.text
        archive_id = str(response.json()["id"])
        assert api.post(f"/archives/{archive_id}/archive").status_code == 200
        wait_for(
            lambda: api.get(f"/archives/{archive_id}").json()["chain_status"] == "registered",
            30,
            "registration on chain",
        )
    return archive_id


def test_destroying_a_shared_archive_destroys_the_grantee_copy_and_refuses_its_reads(
    hospitals: dict[str, Hospital], chain: RpcChain
) -> None:
    a, c = hospitals["A"], hospitals["C"]
    archive_id = _archive_long_ago(a)
    grant_share(a, archive_id, c)
    path = f"/shared/{a.address}/{archive_id}/content"
    with c.client() as api:
        read = api.get(path, params={"purpose": "referral"})
        assert read.status_code == 200, read.text
        assert read.content == CONTENT
    with a.runtime.db.session() as session:
        holders = set(
            session.execute(
                select(WrappedKey.holder).where(
                    WrappedKey.archive_id == archive_id, WrappedKey.blob.is_not(None)
                )
            ).scalars()
        )
    assert f"member:{c.address}" in holders
    assert len(holders) == 2

    manager = a.runtime.keys.issue(Role.RECORDS_MANAGER, "A-manager").secret
    with a.client() as api:
        assert api.post("/retention/run").is_success
        proposal = api.post(
            "/retention/proposals", json={"archive_ids": [archive_id], "reason": "expired"}
        )
        assert proposal.status_code == 201, proposal.text
        proposal_id = proposal.json()["id"]
        approved = api.post(
            f"/retention/proposals/{proposal_id}/items/{archive_id}",
            headers={"Authorization": f"Bearer {manager}"},
            json={"approve": True, "reason": "reviewed"},
        )
        assert approved.is_success, approved.text
        destroyed = api.post(f"/retention/proposals/{proposal_id}/items/{archive_id}/destroy")
        assert destroyed.status_code == 200, destroyed.text
        certificate = api.get(f"/archives/{archive_id}/certificate").json()["certificate"]
    assert certificate["method"]["key_copies_destroyed"] == 2
    assert sorted(certificate["method"]["key_holders"]) == sorted(holders)
    with a.runtime.db.session() as session:
        copies = list(
            session.execute(select(WrappedKey).where(WrappedKey.archive_id == archive_id)).scalars()
        )
    assert len(copies) == 2
    assert all(k.blob is None and k.destroyed_at is not None for k in copies)

    with c.client() as api:
        refused = api.get(path, params={"purpose": "referral"})
        assert refused.status_code == 404, refused.text
        assert refused.json()["code"] == "no_access"
    with a.client() as api:
        events = [e["type"] for e in api.get(f"/archives/{archive_id}/events").json()]
        assert events[-2:] == ["SHARE_REVOKE", "DESTROY"]  # the grant ends first
        assert api.get(f"/archives/{archive_id}/shares").json() == []
        gone = api.get(f"/archives/{archive_id}/content", params={"purpose": "operations"})
        assert (gone.status_code, gone.json()["code"]) == (410, "destroyed")
    a.runtime.worker.run_until_anchored(timeout=60)
    with a.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
