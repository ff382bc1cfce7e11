"""The custody claim (§3.3, §7.4 step 3) on bundles a real node produces.

The node's ``ProofService`` (and so ``GET /archives/{id}/proof``) writes no custody claim, which is
what verifiers see in practice; a producer that states one must state the truth. These tests take
real bundles (real node, real anvil, real database and HTTP through the ASGI app), verify them as
produced, with the genuine claim added, and with each field of the claim falsified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anchoring.bundle import parse_bundle
from anchoring.chainview import CustodyRecord
from anchoring.events import Purpose, RecordClass, Sensitivity
from anchoring.ids import ZERO_ADDRESS
from anchoring.rpcview import NotaryReader
from anchoring.verifier import Code, Report, Status, verify_bundle
from api.main import create_app
from archivechain import main
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from tests.api.conftest import Client, serve
from tests.fixtures.chain import Consortium
from tests.fixtures.node import MakeNode

Document = dict[str, Any]


@dataclass
class Hospital:
    """A running node, an archivist of it, the API over it, and a reader of the chain."""

    node: NodeRuntime
    archivist: Principal
    client: Client
    headers: dict[str, str]
    reader: NotaryReader

    def new_archive(self, *, archive: bool = True) -> str:
        view = self.node.archives.create(
            self.archivist,
            NewArchive(
                record_class=RecordClass.INPATIENT,
                sensitivity=Sensitivity.NORMAL,
                department="cardiology",
                title="Discharge summary",
                patient_id="MRN-0042",
                source_system="HIS",
                media_type="text/plain",
            ),
            [b"Discharge summary: stable."],
        )
        if archive:
            self.node.archives.archive(self.archivist, view.id)
        b"".join(self.node.archives.open_content(self.archivist, view.id, Purpose.TREATMENT).chunks)
        self.node.worker.run_until_anchored(timeout=30)
        return view.id

    def bundle(self, archive_id: str) -> Document:
        """The bundle as ``GET /api/v1/archives/{id}/proof`` serves it."""
        response = self.client.get(f"/api/v1/archives/{archive_id}/proof", headers=self.headers)
        assert response.status_code == 200, response.text
        document: Document = response.json()
        return document

    def verify(self, document: Document) -> Report:
        return verify_bundle(parse_bundle(json.dumps(document)), self.reader)


@pytest.fixture
def hospital(make_node: MakeNode, consortium: Consortium) -> Iterator[Hospital]:
    node = make_node()
    key = node.keys.issue(Role.ARCHIVIST, "claims")
    with serve(create_app(node)) as client:
        yield Hospital(
            node=node,
            archivist=node.keys.authenticate(key.secret),
            client=client,
            headers={"Authorization": f"Bearer {key.secret}"},
            reader=NotaryReader(consortium.rpc_url, consortium.deployment.notary.address),
        )


def claim_of(record: CustodyRecord) -> Document:
    """What an honest producer states: the custody record as the chain holds it."""
    return {
        "custodian": record.custodian,
        "state": record.state.name,
        "on_hold": record.on_hold,
        "commitment": record.commitment.hex() if any(record.commitment) else None,
    }


def failure_code(report: Report) -> str | None:
    return report.failure.code.value if report.failure else None


def test_the_node_writes_no_claim_and_its_bundles_verify(hospital: Hospital) -> None:
    archive_id = hospital.new_archive()
    document = hospital.bundle(archive_id)
    assert "custody" not in document
    assert json.loads(hospital.node.proofs.bundle(hospital.archivist, archive_id).document) == (
        document
    )
    report = hospital.verify(document)
    assert report.ok, report.to_text()
    assert report.custody_checked


def test_a_genuine_claim_verifies_and_every_falsified_field_is_caught(
    hospital: Hospital, consortium: Consortium
) -> None:
    archive_id = hospital.new_archive()
    document = hospital.bundle(archive_id)
    claim = claim_of(hospital.reader.custody(archive_id))
    assert claim["state"] == "ARCHIVED"
    assert claim["custodian"] == hospital.node.hospital
    assert hospital.verify({**document, "custody": claim}).ok

    other = consortium.accounts.hospital_b.address
    falsified = {
        "custodian": {"custodian": other},
        "zero custodian": {"custodian": ZERO_ADDRESS},
        "state": {"state": "TRANSFER_PENDING"},
        "state NONE": {"state": "NONE"},
        "on_hold": {"on_hold": True},
        "commitment": {"commitment": "ab" * 32},
        "no commitment": {"commitment": None},
    }
    for name, change in falsified.items():
        report = hospital.verify({**document, "custody": {**claim, **change}})
        assert report.status is Status.INVALID, name
        assert failure_code(report) == "custody_claim_mismatch", (name, report.to_text())
        assert report.failure is not None
        assert report.failure.entry is None
        field = next(iter(change))
        assert f"{field}: events say" in report.failure.message, (name, report.failure.message)
        assert all(e.verdict.value == "ok" for e in report.entries), name
        # The claim is judged from the events alone: no chain needed to catch it.
        offline = verify_bundle(
            parse_bundle(json.dumps({**document, "custody": {**claim, **change}})),
            hospital.reader,
            check_custody=False,
        )
        assert failure_code(offline) == "custody_claim_mismatch", name


def test_a_claim_for_an_archive_not_yet_archived(hospital: Hospital) -> None:
    """CREATED: the chain knows nothing yet, so the claim is NONE, zero custodian, no commitment."""
    archive_id = hospital.new_archive(archive=False)
    document = hospital.bundle(archive_id)
    none = {"custodian": ZERO_ADDRESS, "state": "NONE", "on_hold": False, "commitment": None}
    assert claim_of(hospital.reader.custody(archive_id)) == none
    assert hospital.verify({**document, "custody": none}).ok
    itself = {**none, "custodian": hospital.node.hospital}
    report = hospital.verify({**document, "custody": itself})
    assert failure_code(report) == "custody_claim_mismatch"


def test_a_claim_true_when_built_but_overtaken_by_a_hold(hospital: Hospital) -> None:
    """The claim agrees with the bundle's events; the chain moved on (a hold placed since):
    the claim check passes and the custody record check fails, by design (§7.4)."""
    archive_id = hospital.new_archive()
    document = hospital.bundle(archive_id)
    claim = claim_of(hospital.reader.custody(archive_id))
    hospital.node.archives.place_hold(hospital.archivist, archive_id, "litigation 2024-17")
    hospital.node.worker.run_until_anchored(timeout=30)
    report = hospital.verify({**document, "custody": claim})
    assert failure_code(report) == "custody_mismatch", report.to_text()
    assert [f.code for f in report.failures] == [Code.CUSTODY_MISMATCH]

    fresh = hospital.bundle(archive_id)
    fresh_claim = claim_of(hospital.reader.custody(archive_id))
    assert fresh_claim["on_hold"] is True
    assert hospital.verify({**fresh, "custody": fresh_claim}).ok
    report = hospital.verify({**fresh, "custody": claim})  # the stale claim on the new bundle
    assert failure_code(report) == "custody_claim_mismatch"


def test_claims_through_the_api_and_the_cli(
    hospital: Hospital,
    consortium: Consortium,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive_id = hospital.new_archive()
    document = hospital.bundle(archive_id)
    claim = claim_of(hospital.reader.custody(archive_id))
    genuine = {**document, "custody": claim}
    forged = {**document, "custody": {**claim, "on_hold": True}}

    for bundle, status, code in (
        (genuine, "valid", None),
        (forged, "invalid", "custody_claim_mismatch"),
    ):
        answer = hospital.client.post("/api/v1/verify", headers=hospital.headers, json=bundle)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
        assert (answer.json()["failure"] or {}).get("code") == code

    paths = []
    for name, bundle in (("genuine", genuine), ("forged", forged), ("as-produced", document)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(bundle))
    trust = ["--rpc", consortium.rpc_url, "--deployment", str(consortium.deployment_file)]
    code = main(["verify", *(str(p) for p in paths), *trust, "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [(line["status"], (line["failure"] or {}).get("code")) for line in lines] == [
        ("valid", None),
        ("invalid", "custody_claim_mismatch"),
        ("valid", None),
    ]
