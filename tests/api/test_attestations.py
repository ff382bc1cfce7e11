"""Consents and insurer attestations end to end on a real anvil chain: the hospital records a
consent, the insurer (an API key bound to its member address) asks, the signed document is
anchored, verified by the CLI and the pure verifier with only the RPC endpoint and the notary
address — and every refusal: no consent, revoked or expired consent, out-of-scope class, period or
fact, wrong insurer, tampered, revoked, expired attestation, non-member signer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32

from anchoring.attestation import (
    EIP712_TYPES,
    parse_attestation,
    records_hash,
    typed_digest,
    verify_attestation,
)
from anchoring.chain import RpcChain
from anchoring.errors import ChainError
from anchoring.events import jcs
from anchoring.rpcview import AttestationReader
from api.main import create_app
from archivechain import main as cli_main
from node.errors import InputError
from node.principal import Role
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api, issue_keys, serve
from tests.fixtures.chain import Consortium, admit_through_governance
from tests.fixtures.node import MakeNode

PATIENT = "MRN-0001"
CONSENT_DOC = "ab" * 32


class SteppedClock:
    """The node's clock: real time, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def iapi(
    make_node: MakeNode, database_url: str, clock: SteppedClock, insurer: LocalAccount
) -> Iterator[Api]:
    node = make_node(
        database_url=database_url,
        max_upload_bytes=UPLOAD_LIMIT,
        chunk_size=CHUNK_SIZE,
        clock=clock,
    )
    app = create_app(node)
    with serve(app) as client:
        keys = issue_keys(node)
        keys["insurer"] = node.keys.issue(
            Role.INSURER, "acme-insurance", member=insurer.address
        ).secret
        yield Api(node=node, app=app, client=client, keys=keys)


def _archive(api: Api, record_class: str, trigger: str, patient: str = PATIENT) -> str:
    archive_id: str = api.create(
        record_class=record_class, trigger_date=trigger, patient_id=patient
    )["id"]
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    return archive_id


def _consent(api: Api, insurer: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": PATIENT,
        "insurer": insurer,
        "record_classes": ["INPATIENT"],
        "facts": ["commitment", "dates", "record_class", "state"],
        "period_start": "2024-01-01",
        "period_end": "2024-12-31",
        "expires_at": (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "document_hash": CONSENT_DOC,
    }
    body.update(overrides)
    response = api.client.post("/api/v1/consents", json=body, headers=api.auth("archivist"))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _ask(api: Api, who: str = "insurer", **overrides: Any) -> Any:
    body: dict[str, Any] = {
        "patient_id": PATIENT,
        "claim_start": "2024-03-01",
        "claim_end": "2024-09-30",
        "facts": ["dates", "record_class", "state"],
    }
    body.update(overrides)
    return api.client.post("/api/v1/attestations", json=body, headers=api.auth(who))


def _refused(response: Any, code: str, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


def _anchored_document(api: Api, attestation_id: str) -> dict[str, Any]:
    api.node.worker.run_until_anchored(timeout=30)
    response = api.client.get(f"/api/v1/attestations/{attestation_id}", headers=api.auth("insurer"))
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    assert "evidence" in document
    return document


def _verify(consortium: Consortium, document: dict[str, Any], now: int | None = None) -> Any:
    reader = AttestationReader(consortium.rpc_url, consortium.deployment.notary.address)
    moment = now if now is not None else int(datetime.now(UTC).timestamp())
    return verify_attestation(parse_attestation(jcs(document)), reader, moment)


def _cli(consortium: Consortium, document: dict[str, Any], tmp_path: Path) -> int:
    file = tmp_path / "attestation.json"
    file.write_bytes(jcs(document))
    return cli_main(
        [
            "attest",
            "verify",
            str(file),
            "--rpc",
            consortium.rpc_url,
            "--notary",
            consortium.deployment.notary.address,
        ]
    )


def test_consented_attestation_states_only_allowed_facts_and_verifies(
    iapi: Api, chain: RpcChain, consortium: Consortium, insurer: LocalAccount, tmp_path: Path
) -> None:
    inpatient = _archive(iapi, "INPATIENT", "2024-05-02")
    _archive(iapi, "OUTPATIENT", "2024-05-03")  # class not asked for
    _archive(iapi, "INPATIENT", "2023-05-02")  # outside the claim period
    _archive(iapi, "INPATIENT", "2024-05-02", patient="MRN-0002")  # another patient
    consent = _consent(iapi, insurer.address)
    assert consent["revoked_at"] is None

    response = _ask(iapi)
    assert response.status_code == 201, response.text
    document = response.json()
    message = document["message"]
    assert message["issuer"] == iapi.node.hospital
    assert message["insurer"] == insurer.address
    assert message["facts"] == "dates,record_class,state"
    assert message["consentHash"] == "0x" + consent["grant_hash"]
    assert document["records"] == [
        {
            "exists": True,
            "record_class": "INPATIENT",
            "state": "ARCHIVED",
            "dates": {
                "record_date": "2024-05-02",
                "archived_on": message_date(message),
                "admitted_on": None,  # created without an encounter: no stay known
                "discharged_on": None,
            },
        }
    ]
    text = json.dumps(document)
    assert PATIENT not in text
    assert "Discharge summary" not in text
    assert inpatient not in text
    patient_pseudonym = iapi.node.pseudonyms.patient(PATIENT)
    assert patient_pseudonym not in text
    assert message["patientRef"] == "0x" + iapi.node.pseudonyms.insurer_reference(
        patient_pseudonym, insurer.address
    )
    assert message["patientRef"] != "0x" + iapi.node.pseudonyms.insurer_reference(
        patient_pseudonym, consortium.accounts.auditor.address
    )

    # The digest is standard EIP-712: eth-account's encoder agrees with the hand-written one.
    signable = encode_typed_data(
        full_message={
            "types": EIP712_TYPES,
            "primaryType": "Attestation",
            "domain": document["domain"],
            "message": message,
        }
    )
    assert typed_digest(document["domain"], message) == _eip712_hash(signable)

    # Before anchoring: no evidence, the verifier says so.
    pending = iapi.client.get(
        f"/api/v1/attestations/{message['attestationId']}", headers=iapi.auth("insurer")
    )
    assert "evidence" not in pending.json()
    assert _verify(consortium, pending.json()).code == "evidence_missing"

    anchored = _anchored_document(iapi, message["attestationId"])
    report = _verify(consortium, anchored)
    assert report.ok, report
    assert report.checks == [
        "domain",
        "records",
        "signature",
        "membership",
        "expiry",
        "revocation",
        "inclusion",
    ]
    assert _cli(consortium, anchored, tmp_path) == 0

    # Expired: judged at its expiry.
    assert _verify(consortium, anchored, now=message["expiresAt"]).code == "expired"

    # Tampered: a record's fact, then a signed field.
    tampered = json.loads(json.dumps(anchored))
    tampered["records"][0]["state"] = "DESTROYED"
    assert _verify(consortium, tampered).code == "records_mismatch"
    assert _cli(consortium, tampered, tmp_path) == 1
    tampered = json.loads(json.dumps(anchored))
    tampered["message"]["expiresAt"] += 86400
    assert _verify(consortium, tampered).code == "bad_signature"
    tampered = json.loads(json.dumps(anchored))
    tampered["evidence"]["proof"][0] = "00" * 32 if tampered["evidence"]["proof"] else None
    if anchored["evidence"]["proof"]:
        assert _verify(consortium, tampered).code == "inclusion_failed"

    # Revoked on chain by the issuing hospital: one read says so.
    revoked = iapi.client.post(
        f"/api/v1/attestations/{message['attestationId']}/revoke", headers=iapi.auth("archivist")
    )
    assert revoked.status_code == 200, revoked.text
    again = iapi.client.post(
        f"/api/v1/attestations/{message['attestationId']}/revoke", headers=iapi.auth("archivist")
    )
    _refused(again, "already_revoked", 409)
    iapi.node.worker.run_until_anchored(timeout=30)
    _wait_outbox_empty(iapi)
    assert _verify(consortium, anchored).code == "revoked"
    assert _cli(consortium, anchored, tmp_path) == 1


def message_date(message: dict[str, Any]) -> str:
    """The archiving date the test's archive got (today, UTC, at issuance)."""
    return datetime.fromtimestamp(message["issuedAt"], UTC).date().isoformat()


def _eip712_hash(signable: Any) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


def _wait_outbox_empty(api: Api) -> None:
    import time

    from sqlalchemy import func, select

    from anchoring.storage import OutboxItem, OutboxState

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        api.node.worker.tick()
        with api.node.db.session() as session:
            open_rows = session.execute(
                select(func.count())
                .select_from(OutboxItem)
                .where(OutboxItem.state != OutboxState.CONFIRMED)
            ).scalar_one()
        if open_rows == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the outbox did not drain")


def test_a_non_member_signature_is_refused(
    iapi: Api, chain: RpcChain, consortium: Consortium, insurer: LocalAccount
) -> None:
    _archive(iapi, "INPATIENT", "2024-05-02")
    _consent(iapi, insurer.address)
    response = _ask(iapi)
    assert response.status_code == 201, response.text
    document = _anchored_document(iapi, response.json()["message"]["attestationId"])
    outsider = consortium.accounts.outsider
    forged = json.loads(json.dumps(document))
    forged["message"]["issuer"] = outsider.address
    digest = typed_digest(forged["domain"], forged["message"])
    forged["signature"] = "0x" + bytes(outsider.unsafe_sign_hash(Hash32(digest)).signature).hex()
    report = _verify(consortium, forged)
    assert report.code == "signer_not_member", report
    # An insurer (a member, but not a hospital) is refused alike.
    forged["message"]["issuer"] = insurer.address
    digest = typed_digest(forged["domain"], forged["message"])
    forged["signature"] = "0x" + bytes(insurer.unsafe_sign_hash(Hash32(digest)).signature).hex()
    assert _verify(consortium, forged).code == "signer_not_member"
    # A wrong notary in the domain is refused before anything else.
    forged["domain"]["chainId"] += 1
    assert _verify(consortium, forged).code == "domain_mismatch"


def test_no_consent_no_attestation_and_every_scope_refusal(
    iapi: Api, chain: RpcChain, insurer: LocalAccount
) -> None:
    _archive(iapi, "INPATIENT", "2024-05-02")
    log_size = iapi.footprint().log_size
    _refused(_ask(iapi), "no_consent")
    assert iapi.footprint().log_size == log_size  # a refusal logs nothing

    consent = _consent(iapi, insurer.address)
    _refused(_ask(iapi, record_classes=["OUTPATIENT"]), "out_of_scope")
    _refused(_ask(iapi, claim_start="2023-12-01"), "out_of_scope")
    _refused(_ask(iapi, claim_end="2025-01-01"), "out_of_scope")
    _refused(_ask(iapi, facts=["custodian"]), "out_of_scope")
    _refused(_ask(iapi, claim_start="2024-09-30", claim_end="2024-03-01"), "invalid_period", 400)
    _refused(_ask(iapi, who="archivist"), "forbidden")

    revoked = iapi.client.post(
        f"/api/v1/consents/{consent['id']}/revoke",
        json={"reason": "withdrawn"},
        headers=iapi.auth("archivist"),
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    _refused(_ask(iapi), "consent_revoked")
    twice = iapi.client.post(
        f"/api/v1/consents/{consent['id']}/revoke", json={}, headers=iapi.auth("archivist")
    )
    _refused(twice, "consent_revoked", 409)


def test_an_expired_consent_gives_no_attestation(
    iapi: Api, chain: RpcChain, clock: SteppedClock, insurer: LocalAccount
) -> None:
    _archive(iapi, "INPATIENT", "2024-05-02")
    expires = datetime.now(UTC) + timedelta(days=2)
    _consent(iapi, insurer.address, expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    issued = _ask(iapi)
    assert issued.status_code == 201, issued.text
    # The attestation never outlives its consent.
    assert issued.json()["message"]["expiresAt"] <= int(expires.timestamp())
    clock.offset = timedelta(days=3)
    _refused(_ask(iapi), "consent_expired")


def test_another_insurer_gets_nothing_from_this_consent(
    iapi: Api,
    chain: RpcChain,
    consortium: Consortium,
    insurer: LocalAccount,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> None:
    rival = consortium.accounts.outsider
    admit_through_governance(chain, hospital_a, [hospital_b], rival, 3, "Rival Insurance")
    iapi.keys["rival"] = iapi.node.keys.issue(Role.INSURER, "rival", member=rival.address).secret
    # An insurer key is issued only for an active insurer; one whose member is not (or no longer)
    # one (e.g. suspended since) is refused at each request: issued here as if it still were.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(iapi.node.keys.members, "is_active", lambda address, role: True)
        iapi.keys["stranger"] = iapi.node.keys.issue(
            Role.INSURER, "stranger", member=consortium.accounts.auditor.address
        ).secret
    _archive(iapi, "INPATIENT", "2024-05-02")
    _consent(iapi, insurer.address)
    _refused(_ask(iapi, who="rival"), "no_consent")
    # A key bound to a member that is not an insurer is refused whatever the consents say.
    _refused(_ask(iapi, who="stranger"), "not_active_insurer")
    # The rival cannot read the insurer's attestation either.
    issued = _ask(iapi)
    assert issued.status_code == 201, issued.text
    other = iapi.client.get(
        f"/api/v1/attestations/{issued.json()['message']['attestationId']}",
        headers=iapi.auth("rival"),
    )
    _refused(other, "attestation_not_found", 404)


def test_consent_input_is_checked(iapi: Api, chain: RpcChain, insurer: LocalAccount) -> None:
    auditor = iapi.node.members.me  # a hospital, not an insurer
    bad = iapi.client.post(
        "/api/v1/consents",
        json={
            "patient_id": PATIENT,
            "insurer": auditor,
            "record_classes": ["INPATIENT"],
            "facts": ["state"],
            "period_start": "2024-01-01",
            "period_end": "2024-12-31",
            "expires_at": "2030-01-01T00:00:00Z",
            "document_hash": CONSENT_DOC,
        },
        headers=iapi.auth("archivist"),
    )
    _refused(bad, "not_active_insurer", 409)
    backwards = iapi.client.post(
        "/api/v1/consents",
        json={
            "patient_id": PATIENT,
            "insurer": insurer.address,
            "record_classes": ["INPATIENT"],
            "facts": ["state"],
            "period_start": "2024-12-31",
            "period_end": "2024-01-01",
            "expires_at": "2030-01-01T00:00:00Z",
            "document_hash": CONSENT_DOC,
        },
        headers=iapi.auth("archivist"),
    )
    _refused(backwards, "invalid_consent", 400)
    clinician = iapi.client.post(
        "/api/v1/consents",
        json={
            "patient_id": PATIENT,
            "insurer": insurer.address,
            "record_classes": ["INPATIENT"],
            "facts": ["state"],
            "period_start": "2024-01-01",
            "period_end": "2024-12-31",
            "expires_at": "2030-01-01T00:00:00Z",
            "document_hash": CONSENT_DOC,
        },
        headers=iapi.auth("cardiologist"),
    )
    _refused(clinician, "forbidden")
    # Insurer keys name a member address; no other key does.
    for role, member, code in (
        (Role.INSURER, None, "member_required"),
        (Role.INSURER, "not-an-address", "member_required"),
        (Role.AUDITOR, insurer.address, "member_not_allowed"),
    ):
        with pytest.raises(InputError) as caught:
            iapi.node.keys.issue(role, "key-check", member=member)
        assert caught.value.code == code
    issued = iapi.client.post(
        "/api/v1/keys",
        json={"role": "insurer", "name": "acme-2", "member": insurer.address.lower()},
        headers=iapi.auth("admin"),
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["key"]["member"] == insurer.address  # stored EIP-55


def test_insurer_keys_are_issued_only_for_active_insurers(
    iapi: Api,
    consortium: Consortium,
    insurer: LocalAccount,
    regulator: LocalAccount,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``POST /keys`` with role insurer checks the member on chain at issue time: a stranger,
    the regulator, a hospital (this one or another) and the auditor get 409
    ``not_active_insurer`` and no key; the insurer gets its key; a registry that cannot be read
    is a 503 (fail closed). Before, any address got a key."""

    def issue(member: str, name: str = "claims") -> Any:
        return iapi.client.post(
            "/api/v1/keys",
            json={"role": "insurer", "name": name, "member": member},
            headers=iapi.auth("admin"),
        )

    before = len(iapi.node.keys.list(iapi.node.keys.authenticate(iapi.keys["admin"])))
    accounts = consortium.accounts
    for member in (
        accounts.outsider.address,
        "0x" + "11" * 20,
        regulator.address,
        hospital_a.address,
        hospital_b.address,
        accounts.auditor.address,
    ):
        refused = issue(member)
        _refused(refused, "not_active_insurer", 409)
        assert member in refused.json()["message"]
    after = len(iapi.node.keys.list(iapi.node.keys.authenticate(iapi.keys["admin"])))
    assert after == before  # nothing was stored

    def registry_down(*_: object) -> bool:
        raise ChainError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(iapi.node.chain, "is_active", registry_down)
        _refused(issue(insurer.address), "unavailable", 503)
    issued = issue(insurer.address)
    assert issued.status_code == 201, issued.text
    assert issued.json()["key"]["member"] == insurer.address
    secret = issued.json()["secret"]
    whoami = iapi.client.get("/api/v1/auth/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert whoami.status_code == 200, whoami.text


def test_records_hash_is_sha256_of_the_jcs_array() -> None:
    import hashlib

    records = [{"exists": True, "state": "ARCHIVED"}]
    assert records_hash(records) == hashlib.sha256(b'[{"exists":true,"state":"ARCHIVED"}]').digest()


def test_admission_and_discharge_dates_are_attested_from_the_encounter(
    iapi: Api, chain: RpcChain, consortium: Consortium, insurer: LocalAccount, tmp_path: Path
) -> None:
    """An admission reported through the encounters API, a record ingested for that encounter,
    then its discharge (which archives the encounter's records): the attestation's ``dates``
    states the admission and discharge days; a FHIR Encounter's ``period`` does the same for
    another stay. Without ``dates`` in the request nothing of it is stated."""
    from tests.api.conftest import real_pdf

    url = f"/api/v1/patients/{PATIENT}/encounters"
    archivist = iapi.auth("archivist")
    admitted = {"kind": "admission", "at": "2024-04-20T08:00:00+08:00", "encounter_id": "V-77"}
    assert iapi.client.post(url, json=admitted, headers=archivist).status_code == 204
    metadata = {
        "patient_id": PATIENT,
        "source_system": "HIS",
        "message_id": "DOC-77",
        "title": "Operative note",
        "record_class": "INPATIENT",
        "encounter_id": "V-77",
    }
    ingested = iapi.client.post(
        "/api/v1/ingest/documents",
        files={"file": ("note.pdf", real_pdf(), "application/pdf")},
        data={"metadata": json.dumps(metadata)},
        headers=archivist,
    )
    assert ingested.status_code == 201, ingested.text
    discharged = {**admitted, "kind": "discharge", "at": "2024-05-02T10:00:00+08:00"}
    assert iapi.client.post(url, json=discharged, headers=archivist).status_code == 204
    view = iapi.client.get(
        f"/api/v1/archives/{ingested.json()['archive_id']}",
        params={"purpose": "operations"},
        headers=archivist,
    )
    assert view.json()["state"] == "ARCHIVED", view.text  # the discharge closed the encounter

    # a second stay, reported as a finished FHIR Encounter (admission = period.start)
    encounter = {
        "resourceType": "Encounter",
        "identifier": [{"system": "urn:his:visit", "value": "V-78"}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "period": {"start": "2024-06-03T09:00:00Z", "end": "2024-06-09T11:00:00Z"},
    }
    document = {**metadata, "message_id": "DOC-78", "encounter_id": "urn:his:visit|V-78"}
    ingested = iapi.client.post(
        "/api/v1/ingest/documents",
        files={"file": ("note.pdf", real_pdf(), "application/pdf")},
        data={"metadata": json.dumps(document)},
        headers=archivist,
    )
    assert ingested.status_code == 201, ingested.text
    posted = iapi.client.post(
        "/fhir/r4/Encounter",
        content=json.dumps(encounter).encode(),
        headers={"Content-Type": "application/fhir+json", **archivist},
    )
    assert posted.status_code == 201, posted.text

    _consent(iapi, insurer.address)
    response = _ask(iapi)
    assert response.status_code == 201, response.text
    dates = [record["dates"] for record in response.json()["records"]]
    # the later discharge restarted both inpatient records' retention clock (record_date), but
    # each record keeps the stay it was ingested for
    assert sorted((d["record_date"], d["admitted_on"], d["discharged_on"]) for d in dates) == [
        ("2024-06-09", "2024-04-20", "2024-05-02"),
        ("2024-06-09", "2024-06-03", "2024-06-09"),
    ]
    document = _anchored_document(iapi, response.json()["message"]["attestationId"])
    assert _cli(consortium, document, tmp_path) == 0
    unasked = _ask(iapi, facts=["record_class"])
    assert unasked.status_code == 201
    assert all("dates" not in record for record in unasked.json()["records"])


def test_membership_before_the_registry_existed_is_false_not_unavailable(
    consortium: Consortium, hospital_a: LocalAccount
) -> None:
    """``isActive`` at a block before the registry was deployed answers nothing: that is "not a
    member" (an attestation claiming such an ``issuedBlock`` is ``signer_not_member``), not an
    unreachable chain (before: ``ChainError``, exit 3 "chain unavailable" for a forged one)."""
    reader = AttestationReader(consortium.rpc_url, consortium.deployment.notary.address)
    assert reader.is_active_at(hospital_a.address, 1, 0) is False
    assert reader.is_active_at(hospital_a.address, 1, reader.latest_block()) is True
