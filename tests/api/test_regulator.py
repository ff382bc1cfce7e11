"""Regulator audit and holds: access events by archive, patient, actor and time with inclusion
proofs checked against the chain; only signed-in regulators; holds relayed from the regulator's
own signed transactions (refusals for anything else); the ``login`` and ``regulator`` CLI against
a live node."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from anchoring import merkle
from anchoring.chain import ContractWriter, RpcChain
from anchoring.events import parse_event
from anchoring.ids import archive_key
from archivechain import main
from node.keystore import Keystore
from node.runtime import NodeRuntime
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api
from tests.api.members import bearer, sign_in
from tests.federation.conftest import listen, start_hospital, wait_for
from tests.fixtures.chain import Consortium
from tests.fixtures.node import MakeNode

QUERY = "/api/v1/regulator/access-events"


@pytest.fixture
def api_node(make_node: MakeNode, sqlite_url: str) -> NodeRuntime:
    return make_node(
        database_url=sqlite_url,
        max_upload_bytes=UPLOAD_LIMIT,
        chunk_size=CHUNK_SIZE,
        watcher_confirmations=0,
    )


def _read(api: Api, who: str, archive_id: str, purpose: str = "treatment") -> None:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params={"purpose": purpose}, headers=api.auth(who)
    )
    assert response.status_code == 200, response.text


def _query(api: Api, token: str, **filters: Any) -> dict[str, Any]:
    response = api.client.post(QUERY, json=filters, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_access_events_by_archive_patient_actor_and_time_are_provable(
    api: Api, chain: RpcChain, regulator: LocalAccount
) -> None:
    first = api.create(patient_id="MRN-0001")["id"]
    second = api.create(patient_id="MRN-0002")["id"]
    _read(api, "cardiologist", first)
    _read(api, "archivist", first, "operations")
    _read(api, "cardiologist", second)
    api.node.worker.run_until_anchored(timeout=30)
    token = sign_in(api, regulator)

    by_archive = _query(api, token, archive_id=first)
    rows = by_archive["rows"]
    assert [r["archive_id"] for r in rows] == [first, first]
    assert [r["purpose"] for r in rows] == ["treatment", "operations"]
    assert by_archive["hospital"] == api.node.keystore.address
    for row in rows:  # every row proves itself against the chain
        event_bytes = base64.b64decode(row["event"])
        assert parse_event(event_bytes).type == "ACCESS"
        leaf = merkle.leaf_hash(event_bytes)
        assert leaf.hex() == row["leaf_hash"]
        proof = row["proof"]
        on_chain = chain.checkpoint_at(by_archive["hospital"], proof["checkpoint_index"])
        assert (on_chain.size, on_chain.root.hex()) == (proof["tree_size"], proof["root"])
        merkle.verify_inclusion(
            row["log_index"],
            proof["tree_size"],
            leaf,
            [bytes.fromhex(h) for h in proof["hashes"]],
            on_chain.root,
        )
        assert row["bundle"] == f"/api/v1/archives/{first}/proof"
    bundle = api.client.get(rows[0]["bundle"], headers=bearer(token))  # regulators read bundles
    assert bundle.status_code == 200, bundle.text

    by_patient = api.client.post(QUERY, json={"patient_id": "MRN-0002"}, headers=bearer(token))
    assert [r["archive_id"] for r in by_patient.json()["rows"]] == [second]
    assert "MRN-0002" not in by_patient.text

    heart = api.node.pseudonyms.staff("dr-heart")
    by_actor = _query(api, token, actor=heart)
    assert {r["archive_id"] for r in by_actor["rows"]} == {first, second}
    assert _query(api, token, staff_id="dr-heart")["rows"] == by_actor["rows"]
    assert _query(api, token, actor=heart, patient_id="MRN-0001")["rows"] == by_actor["rows"][:1]

    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert _query(api, token, until=earlier)["rows"] == []
    assert len(_query(api, token, since=earlier)["rows"]) >= 3
    page = _query(api, token, limit=1)
    assert len(page["rows"]) == 1
    assert page["next_after"] == page["rows"][0]["log_index"]
    rest = _query(api, token, after=page["next_after"])
    assert page["rows"][0]["log_index"] < rest["rows"][0]["log_index"]


def test_only_signed_in_regulators_audit(
    api: Api, insurer: LocalAccount, regulator: LocalAccount
) -> None:
    for headers in (
        api.auth("auditor"),
        api.auth("archivist"),
        bearer(sign_in(api, insurer, "insurer")),
    ):
        for method, path in (("POST", QUERY), ("GET", "/api/v1/regulator/holds")):
            response = api.client.request(method, path, json={}, headers=headers)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["code"] == "member_required"
    assert api.client.post(QUERY, json={}).status_code == 401
    token = sign_in(api, regulator)
    bad = api.client.post(QUERY, json={"actor": "dr-heart"}, headers=bearer(token))
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_actor")
    both = api.client.post(QUERY, json={"actor": "a" * 64, "staff_id": "x"}, headers=bearer(token))
    assert both.status_code == 400
    extra = api.client.post(QUERY, json={"patient": "x"}, headers=bearer(token))
    assert extra.status_code == 422


def _archived(api: Api) -> str:
    archive_id: str = api.create()["id"]
    done = api.client.post(f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist"))
    assert done.status_code == 200, done.text
    api.node.worker.run_until_anchored(timeout=30)
    return archive_id


def _signed(chain: RpcChain, account: LocalAccount, function: str, archive_id: str) -> str:
    writer = ContractWriter(chain, account)
    reason = hashlib.sha256(b"court order 17").digest()
    signed = writer.sign_call(function, [archive_key(archive_id), reason], writer.pending_nonce())
    return "0x" + signed.raw.hex()


def test_holds_relayed_from_the_regulators_own_signature(
    api: Api, chain: RpcChain, regulator: LocalAccount, insurer: LocalAccount
) -> None:
    archive_id = _archived(api)
    other = _archived(api)
    token = sign_in(api, regulator)
    url = f"/api/v1/regulator/holds/{archive_id}"
    refusals = {
        "wrong_signer": _signed(chain, insurer, "placeHold", archive_id),
        "wrong_call": _signed(chain, regulator, "placeHold", other),
        "invalid_transaction": "0x1234",
    }
    for code, raw in refusals.items():
        refused = api.client.post(url, json={"signed_transaction": raw}, headers=bearer(token))
        assert (refused.status_code, refused.json()["code"]) == (400, code), refused.text
    release_on_place = _signed(chain, regulator, "releaseHold", archive_id)
    refused = api.client.post(
        url, json={"signed_transaction": release_on_place}, headers=bearer(token)
    )
    assert refused.json()["code"] == "wrong_call"
    assert chain.custody(archive_id).on_hold is False

    placed = api.client.post(
        url,
        json={"signed_transaction": _signed(chain, regulator, "placeHold", archive_id)},
        headers=bearer(token),
    )
    assert placed.status_code == 202, placed.text
    wait_for(lambda: chain.custody(archive_id).on_hold, 30, "the hold on chain")
    assert chain.hold_placed_by(archive_id) == regulator.address
    api.node.watcher.tick()  # the chain watcher logs the regulator's hold
    listed = api.client.get("/api/v1/regulator/holds", headers=bearer(token)).json()
    assert len(listed) == 1
    listed = listed[0]
    assert listed == {
        "archive_id": archive_id,
        "state": "ARCHIVED",
        "by_regulator": True,
        "placed_by": regulator.address,
    }
    released = api.client.post(
        f"{url}/release",
        json={"signed_transaction": _signed(chain, regulator, "releaseHold", archive_id)},
        headers=bearer(token),
    )
    assert released.status_code == 202
    wait_for(lambda: not chain.custody(archive_id).on_hold, 30, "the release on chain")


def _envelope(
    chain: RpcChain,
    account: LocalAccount,
    function: str,
    archive_id: str,
    kind: str,
    *,
    chain_id: int | None = None,
    to: str | None = None,
) -> str:
    """``function(archive, reason)`` signed by ``account`` in a legacy (EIP-155 or, with kind
    ``pre155``, without chain id), EIP-2930 or EIP-1559 envelope."""
    codec = chain.codec("ArchiveNotary")
    reason = hashlib.sha256(b"court order 17").digest()
    gas_price = int(chain.rpc.request("eth_gasPrice", []), 16) * 2
    tx: dict[str, Any] = {
        "to": to or chain.notary_address(),
        "data": "0x" + codec.encode_call(function, [archive_key(archive_id), reason]).hex(),
        "value": 0,
        "gas": 300_000,
        "nonce": int(
            chain.rpc.request("eth_getTransactionCount", [account.address, "pending"]), 16
        ),
    }
    cid = chain.chain_id() if chain_id is None else chain_id
    if kind == "legacy":
        tx.update(gasPrice=gas_price, chainId=cid)
    elif kind == "pre155":
        tx.update(gasPrice=gas_price)
    elif kind == "eip2930":
        tx.update(type=1, gasPrice=gas_price, chainId=cid, accessList=[])
    else:
        tx.update(type=2, maxFeePerGas=gas_price, maxPriorityFeePerGas=1, chainId=cid)
    return "0x" + account.sign_transaction(tx).raw_transaction.hex()


@pytest.mark.parametrize("kind", ["legacy", "eip2930", "eip1559"])
def test_holds_relayed_in_every_signed_envelope(
    api: Api, chain: RpcChain, regulator: LocalAccount, insurer: LocalAccount, kind: str
) -> None:
    """Legacy (EIP-155), EIP-2930 and EIP-1559 transactions are relayed with the same checks and
    mined on anvil; a legacy transaction without chain id, an unsigned one and another typed
    envelope are refused with their own code."""
    import rlp

    archive_id = _archived(api)
    other = _archived(api)
    token = sign_in(api, regulator)
    url = f"/api/v1/regulator/holds/{archive_id}"
    raw = _envelope(chain, regulator, "placeHold", archive_id, kind)
    refusals = {
        "wrong_signer": _envelope(chain, insurer, "placeHold", archive_id, kind),
        "wrong_call": _envelope(chain, regulator, "placeHold", other, kind),
        "wrong_chain": _envelope(chain, regulator, "placeHold", archive_id, kind, chain_id=1),
        "wrong_target": _envelope(
            chain, regulator, "placeHold", archive_id, kind, to=regulator.address
        ),
        "unprotected_transaction": _envelope(chain, regulator, "placeHold", archive_id, "pre155"),
        "unsupported_transaction_type": "0x03" + raw[4:],
        "invalid_transaction": "0x" + raw[2:-10],  # truncated
    }
    if kind == "legacy":
        fields = rlp.decode(bytes.fromhex(raw[2:]))
        refusals["invalid_transaction"] = "0x" + rlp.encode(fields[:6]).hex()  # never signed
    for code, body in refusals.items():
        refused = api.client.post(url, json={"signed_transaction": body}, headers=bearer(token))
        assert (refused.status_code, refused.json()["code"]) == (400, code), (code, refused.text)
    assert chain.custody(archive_id).on_hold is False

    placed = api.client.post(url, json={"signed_transaction": raw}, headers=bearer(token))
    assert placed.status_code == 202, placed.text
    tx_hash = placed.json()["tx_hash"]
    wait_for(lambda: chain.custody(archive_id).on_hold, 30, "the hold on chain")
    mined = chain.rpc.transaction(tx_hash)
    assert mined is not None
    assert int(mined["type"], 16) == {"legacy": 0, "eip2930": 1, "eip1559": 2}[kind]
    assert chain.hold_placed_by(archive_id) == regulator.address
    released = api.client.post(
        f"{url}/release",
        json={"signed_transaction": _envelope(chain, regulator, "releaseHold", archive_id, kind)},
        headers=bearer(token),
    )
    assert released.status_code == 202, released.text
    wait_for(lambda: not chain.custody(archive_id).on_hold, 30, "the release on chain")


def test_login_refuses_a_node_that_is_not_an_http_url_in_one_line(
    tmp_path: Path, regulator: LocalAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    keystore = tmp_path / "regulator.json"
    keystore.write_text(json.dumps(Account.encrypt(regulator.key, "regulator pass", iterations=2)))
    passphrase = tmp_path / "pass"
    passphrase.write_text("regulator pass\n")
    tokens = tmp_path / "tokens.json"
    common = ["--keystore", str(keystore), "--passphrase-file", str(passphrase)]
    for node in ("notaurl", "ftp://hospital.example", "http://"):
        code = main(["login", *common, "--node", node, "--token-file", str(tokens)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err == f"error: --node {node!r} is not an http:// or https:// URL\n"
    assert main(["regulator", "holds", "--node", "notaurl", "--token-file", str(tokens)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not tokens.exists()


def test_login_and_regulator_cli_against_a_live_node(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a: LocalAccount,
    regulator: LocalAccount,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hospital = start_hospital("A", consortium, hospital_a, tmp_path / "A", listen(), peers={})
    try:
        keystore = tmp_path / "regulator.json"
        keystore.write_text(
            json.dumps(Account.encrypt(regulator.key, "regulator pass", iterations=2))
        )
        passphrase = tmp_path / "pass"
        passphrase.write_text("regulator pass\n")
        tokens = tmp_path / "tokens.json"
        tokens.write_text("{}\n")
        tokens.chmod(0o644)  # an existing file readable by others: the token must not be
        common = ["--keystore", str(keystore), "--passphrase-file", str(passphrase)]
        assert main(["login", *common, "--node", hospital.url, "--token-file", str(tokens)]) == 0
        stored = json.loads(tokens.read_text())[hospital.url]
        assert stored["sub"] == regulator.address
        assert stored["role"] == "REGULATOR"
        assert oct(tokens.stat().st_mode & 0o777) == "0o600"

        with hospital.client() as http:
            made = http.post(
                "/archives",
                files={"file": ("a.txt", b"record", "text/plain")},
                data={
                    "metadata": json.dumps(
                        {
                            "record_class": "LAB",
                            "department": "lab",
                            "title": "t",
                            "source_system": "LIS",
                            "patient_id": "P-1",
                        }
                    )
                },
            )
            archive_id = made.json()["id"]
            assert http.post(f"/archives/{archive_id}/archive").status_code == 200
        wait_for(lambda: chain.custody(archive_id).state != 0, 30, "registration")
        chain_args = ["--rpc", consortium.rpc_url, "--deployment", str(consortium.deployment_file)]
        hold = ["regulator", "hold", archive_id, *common, *chain_args, "--reason", "inquiry 9"]
        assert main(hold) == 0  # signed and sent by the CLI itself
        assert chain.hold_placed_by(archive_id) == regulator.address
        assert main(hold) == 1  # the notary refuses a second hold
        assert "NotaryAlreadyOnHold" in capsys.readouterr().err
        wait_for(
            lambda: (
                main(["regulator", "holds", "--node", hospital.url, "--token-file", str(tokens)])
                == 0
                and archive_id in capsys.readouterr().out
            ),
            30,
            "the watcher to log the hold",
        )
        release = ["regulator", "release", archive_id, *common, *chain_args, "--reason", "closed"]
        assert main([*release, "--node", hospital.url, "--token-file", str(tokens)]) == 0
        wait_for(lambda: not chain.custody(archive_id).on_hold, 30, "the relayed release")
        assert main(["login", *common[:2], "--node", hospital.url]) == 2  # no passphrase

        # The keystores `archivechain up` writes for its members (archivechain.keystore/v1)
        # sign in too; a wrong passphrase is one line and exit code 2.
        native = tmp_path / "members" / "regulator" / "keystore.json"
        Keystore.create(native, "native pass", scrypt_n=1 << 14, eth_private_key=regulator.key)
        native_pass = tmp_path / "native-pass"
        native_pass.write_text("native pass\n")
        tokens.unlink()
        signin = ["login", "--keystore", str(native), "--node", hospital.url]
        signin += ["--token-file", str(tokens)]
        capsys.readouterr()
        assert main([*signin, "--passphrase-file", str(passphrase)]) == 2  # not its passphrase
        refused = capsys.readouterr().err.strip().splitlines()
        assert len(refused) == 1, refused
        assert "archivechain.keystore/v1 keystore this passphrase does not open" in refused[0]
        assert not tokens.exists()
        assert main([*signin, "--passphrase-file", str(native_pass)]) == 0
        assert json.loads(tokens.read_text())[hospital.url]["sub"] == regulator.address
    finally:
        hospital.stop()
