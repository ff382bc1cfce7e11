"""A record put on the custodian's legal hold before it is archived is registered on chain *on
hold*, in the same transaction: chain, log and bundle agree (issue 8, item 2). Both databases,
real anvil."""

from __future__ import annotations

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.chainview import CustodyState
from anchoring.verifier import verify_bundle
from tests.api.conftest import Api


def test_archiving_a_held_record_registers_it_on_hold(api: Api, chain: RpcChain) -> None:
    archivist = api.auth("archivist")
    archive_id = api.create()["id"]
    held = api.client.post(
        f"/api/v1/archives/{archive_id}/hold", headers=archivist, json={"reason": "litigation"}
    )
    assert held.status_code == 200, held.text
    archived = api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist)
    assert archived.status_code == 200, archived.text
    assert archived.json()["on_hold"] is True
    api.node.worker.run_until_anchored(timeout=30)

    custody = chain.custody(archive_id)
    assert custody.state is CustodyState.ARCHIVED
    assert custody.on_hold is True
    assert custody.hold_by_regulator is False

    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert proof.status_code == 200, proof.text
    report = verify_bundle(parse_bundle(proof.content), chain)
    assert report.ok, report.to_text()  # custody compared: on_hold agrees
    assert report.final_state is not None
    assert report.final_state.on_hold

    # The hold registered at archiving is a real hold: the custodian releases it on chain too.
    released = api.client.request(
        "DELETE",
        f"/api/v1/archives/{archive_id}/hold",
        headers=archivist,
        params={"reason": "settled"},
    )
    assert released.status_code == 200, released.text
    api.node.worker.run_until_anchored(timeout=30)
    assert chain.custody(archive_id).on_hold is False
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert verify_bundle(parse_bundle(proof.content), chain).ok


def test_archiving_an_unheld_record_registers_it_without_a_hold(api: Api, chain: RpcChain) -> None:
    archivist = api.auth("archivist")
    archive_id = api.create()["id"]
    api.client.post(
        f"/api/v1/archives/{archive_id}/hold", headers=archivist, json={"reason": "check"}
    )
    api.client.request(
        "DELETE", f"/api/v1/archives/{archive_id}/hold", headers=archivist, params={"reason": "ok"}
    )
    assert api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=archivist).is_success
    api.node.worker.run_until_anchored(timeout=30)
    assert chain.custody(archive_id).on_hold is False
    proof = api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=archivist)
    assert verify_bundle(parse_bundle(proof.content), chain).ok
