"""Member sign-in (EIP-4361) over the real app, node, anvil registry and both databases: the
happy path, every refusal of the message and of the registry, and the token's life (expiry,
revocation, suspension and key rotation after sign-in), and nonces consumed once across a
restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, RpcChain
from api.main import create_app
from node.errors import InputError
from node.principal import Role
from node.runtime import NodeRuntime
from node.siwe import SiweFormatError, format_time, parse_message
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api, serve
from tests.api.members import bearer, challenge, message_for, sign_in, submit, suspend
from tests.fixtures.chain import Consortium, public_key_of
from tests.fixtures.node import MakeNode, build_node


@pytest.fixture
def api_node(make_node: MakeNode, sqlite_url: str) -> NodeRuntime:
    """SQLite only in this module (the token and nonce tables are plain rows); the nonce test
    below runs on both databases."""
    return make_node(database_url=sqlite_url, max_upload_bytes=UPLOAD_LIMIT, chunk_size=CHUNK_SIZE)


def test_a_nonce_is_consumed_once_on_both_databases(
    make_node: MakeNode, database_url: str, regulator: LocalAccount
) -> None:
    node = make_node(database_url=database_url)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client)
        message = message_for(api, regulator)
        assert submit(api, message, regulator).status_code == 200
        assert submit(api, message, regulator).json()["code"] == "nonce_used"


def test_a_regulator_signs_in_and_the_token_carries_its_claims(
    api: Api, regulator: LocalAccount
) -> None:
    c = challenge(api)
    assert c["chain_id"] == api.node.chain.chain_id()
    assert c["audience"] == api.node.keystore.address
    assert "urn:archivechain:role:regulator" in c["resources"]
    response = submit(api, message_for(api, regulator), regulator)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token"].startswith("acm_")
    assert token["sub"] == regulator.address
    assert token["role"] == "REGULATOR"
    assert token["aud"] == api.node.keystore.address
    iat = datetime.fromisoformat(token["iat"])
    exp = datetime.fromisoformat(token["exp"])
    assert exp - iat <= timedelta(minutes=5)  # capped by the message's expiration time
    me = api.client.get("/api/v1/auth/whoami", headers=bearer(token["token"]))
    assert me.status_code == 200
    assert me.json() | {"name": None} == {
        "name": None,
        "role": "regulator",
        "actor": regulator.address,
        "department": None,
        "member": regulator.address,
        "member_role": "REGULATOR",
        "token_id": token["jti"],
    }


def test_the_token_lasts_fifteen_minutes_by_default(api: Api, regulator: LocalAccount) -> None:
    message = message_for(
        api,
        regulator,
        expiration_time=format_time(datetime.now(UTC) + timedelta(hours=1)),
    )
    token = submit(api, message, regulator).json()
    lifetime = datetime.fromisoformat(token["exp"]) - datetime.fromisoformat(token["iat"])
    assert lifetime == timedelta(minutes=15)


def _past() -> str:
    return format_time(datetime.now(UTC) - timedelta(seconds=1))


REFUSALS: dict[str, tuple[dict[str, Any], int, str]] = {
    "expired message": ({"expiration_time": "PAST"}, 401, "message_expired"),
    "wrong domain": ({"domain": "evil.example:8600"}, 401, "wrong_domain"),
    "wrong chain id": ({"chain_id": 1}, 401, "wrong_chain"),
    "wrong uri": ({"uri": "https://evil.example/"}, 401, "wrong_uri"),
    "unknown nonce": ({"nonce": "abcdefgh12345678"}, 401, "unknown_nonce"),
    "not yet valid": ({"not_before": "FUTURE"}, 401, "message_not_yet_valid"),
    "no expiration": ({"expiration_time": None}, 400, "expiration_required"),
    "no role resource": ({"resources": ()}, 400, "role_required"),
    "two role resources": (
        {"resources": ("urn:archivechain:role:regulator", "urn:archivechain:role:insurer")},
        400,
        "role_required",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_messages_are_refused_and_issue_nothing(
    api: Api, regulator: LocalAccount, case: str
) -> None:
    overrides, status, code = REFUSALS[case]
    overrides = {
        k: _past()
        if v == "PAST"
        else format_time(datetime.now(UTC) + timedelta(minutes=3))
        if v == "FUTURE"
        else v
        for k, v in overrides.items()
    }
    response = submit(api, message_for(api, regulator, **overrides), regulator)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert api.node.signin.tokens(_admin(api)) == []


def _admin(api: Api) -> Any:
    return api.node.keys.authenticate(api.keys["admin"])


def test_a_signature_by_another_key_is_refused(
    api: Api, regulator: LocalAccount, insurer: LocalAccount
) -> None:
    response = submit(api, message_for(api, regulator), insurer)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"


def test_malformed_messages_and_signatures_are_400_or_422(
    api: Api, regulator: LocalAccount
) -> None:
    text = message_for(api, regulator).text()
    for bad in (
        text.replace("\n", "\r\n"),
        text + "\n",
        "hello",
        text.replace("Version: 1", "Version: 2"),
    ):
        response = submit(api, bad, regulator)
        assert response.status_code == 400, bad
        assert response.json()["code"] == "invalid_siwe_message"
    lower = text.replace(regulator.address, regulator.address.lower())
    assert submit(api, lower, regulator).json()["code"] == "invalid_siwe_message"
    short = api.client.post("/api/v1/auth/verify", json={"message": text, "signature": "0x1234"})
    assert short.status_code == 422


def test_a_nonce_is_consumed_once(api: Api, regulator: LocalAccount) -> None:
    message = message_for(api, regulator)
    assert submit(api, message, regulator).status_code == 200
    again = submit(api, message, regulator)
    assert again.status_code == 401
    assert again.json()["code"] == "nonce_used"
    # a fresh message with the used nonce (different times) is refused the same way
    later = replace(message, issued_at=format_time(datetime.now(UTC)))
    assert submit(api, later, regulator).json()["code"] == "nonce_used"


def test_a_nonce_stays_consumed_after_a_restart(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a: LocalAccount,
    regulator: LocalAccount,
) -> None:
    first = build_node(consortium, hospital_a, tmp_path / "node")
    try:
        with serve(create_app(first)) as client:
            api = Api(node=first, app=create_app(first), client=client)
            message = message_for(api, regulator)
            unused = message_for(api, regulator)
            assert submit(api, message, regulator).status_code == 200
    finally:
        first.close()
    second = build_node(consortium, hospital_a, tmp_path / "node")
    try:
        with serve(create_app(second)) as client:
            api = Api(node=second, app=create_app(second), client=client)
            assert submit(api, message, regulator).json()["code"] == "nonce_used"
            assert submit(api, unused, regulator).status_code == 200  # issued before, still good
    finally:
        second.close()


@pytest.mark.parametrize(
    ("who", "role", "code"),
    [
        ("insurer", "regulator", "wrong_role"),  # claims a role it does not hold
        ("regulator", "insurer", "wrong_role"),
        ("auditor", "auditor", "wrong_role"),  # holds it, but this node admits no auditors
        ("hospital_b", "hospital", "wrong_role"),  # hospitals use the signed peer API
        ("outsider", "regulator", "not_member"),
    ],
)
def test_members_without_the_right_role_are_refused(
    api: Api, consortium: Consortium, who: str, role: str, code: str
) -> None:
    account = consortium.accounts.by_name()[who]
    response = submit(api, message_for(api, account, role), account)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == code


def test_an_insurer_signs_in_as_insurer(api: Api, insurer: LocalAccount) -> None:
    token = sign_in(api, insurer, "insurer")
    me = api.client.get("/api/v1/auth/whoami", headers=bearer(token)).json()
    assert (me["role"], me["member_role"]) == ("insurer", "INSURER")


def test_a_suspended_member_cannot_sign_in_and_its_tokens_stop(
    api: Api,
    chain: RpcChain,
    regulator: LocalAccount,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> None:
    token = sign_in(api, regulator)
    waiting = message_for(api, regulator)
    suspend(chain, hospital_a, hospital_b, regulator.address)
    refused = submit(api, waiting, regulator)
    assert refused.status_code == 403
    assert refused.json()["code"] == "member_not_active"
    used = api.client.get("/api/v1/auth/whoami", headers=bearer(token))
    assert used.status_code == 401
    assert used.json()["code"] == "member_not_active"


def test_a_rotated_key_invalidates_the_token(
    api: Api, chain: RpcChain, regulator: LocalAccount, outsider: LocalAccount
) -> None:
    token = sign_in(api, regulator)
    assert api.client.get("/api/v1/auth/whoami", headers=bearer(token)).status_code == 200
    ContractWriter(chain, regulator).transact(
        "rotatePublicKey", [public_key_of(outsider)], contract="ConsortiumRegistry"
    )
    used = api.client.get("/api/v1/auth/whoami", headers=bearer(token))
    assert used.status_code == 401
    assert used.json()["code"] == "key_rotated"
    fresh = sign_in(api, regulator)  # signing in again works with the new registry key
    assert api.client.get("/api/v1/auth/whoami", headers=bearer(fresh)).status_code == 200


def test_revoked_tokens_are_refused(api: Api, regulator: LocalAccount) -> None:
    mine, other = sign_in(api, regulator), sign_in(api, regulator)
    assert api.client.post("/api/v1/auth/logout", headers=bearer(mine)).status_code == 204
    refused = api.client.get("/api/v1/auth/whoami", headers=bearer(mine))
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    # an admin revokes by token id
    jti = api.client.get("/api/v1/auth/whoami", headers=bearer(other)).json()["token_id"]
    listed = api.client.get("/api/v1/auth/tokens", headers=api.auth("admin")).json()
    assert {t["id"] for t in listed} >= {jti}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    revoke = f"/api/v1/auth/tokens/{jti}"
    assert api.client.delete(revoke, headers=api.auth("archivist")).status_code == 403
    assert api.client.delete(revoke, headers=api.auth("admin")).status_code == 204
    refused = api.client.get("/api/v1/auth/whoami", headers=bearer(other))
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    # an API key cannot "log out"
    assert api.client.post("/api/v1/auth/logout", headers=api.auth("admin")).status_code == 400


def test_an_expired_token_is_refused(api: Api, regulator: LocalAccount) -> None:
    # The message expires long before the 15-minute token would (a few real seconds could run
    # out on a loaded host before it was even submitted); the node's sign-in clock then moves.
    expires = datetime.now(UTC) + timedelta(minutes=2)
    message = message_for(api, regulator, expiration_time=format_time(expires))
    issued = submit(api, message, regulator).json()
    token, exp = issued["token"], datetime.fromisoformat(issued["exp"])
    assert exp <= expires  # never outlives the message
    assert api.client.get("/api/v1/auth/whoami", headers=bearer(token)).status_code == 200
    api.node.signin.clock = lambda: exp + timedelta(seconds=1)
    refused = api.client.get("/api/v1/auth/whoami", headers=bearer(token))
    assert (refused.status_code, refused.json()["code"]) == (401, "token_expired")


def test_unknown_tokens_are_refused(api: Api) -> None:
    refused = api.client.get("/api/v1/auth/whoami", headers=bearer("acm_" + "A" * 43))
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")


def test_regulators_get_no_api_keys_and_insurer_keys_name_their_member(api: Api) -> None:
    with pytest.raises(InputError) as caught:
        api.node.keys.issue(Role.REGULATOR, "not-allowed")
    assert caught.value.code == "member_role"
    # An insurer's claim system may use an API key, but only one bound to its member address.
    with pytest.raises(InputError) as caught:
        api.node.keys.issue(Role.INSURER, "no-member")
    assert caught.value.code == "member_required"


def test_a_member_token_does_not_open_content(api: Api, regulator: LocalAccount) -> None:
    archive = api.create()
    token = sign_in(api, regulator)
    response = api.client.get(
        f"/api/v1/archives/{archive['id']}/content",
        params={"purpose": "audit"},
        headers=bearer(token),
    )
    assert response.status_code == 403


def test_the_message_format_round_trips() -> None:
    text = (
        "node.example:8600 wants you to sign in with your Ethereum account:\n"
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\n\n"  # no statement: EIP-4361's ABNF
        "URI: https://node.example:8600\nVersion: 1\nChain ID: 31337\nNonce: abcdefgh1234\n"
        "Issued At: 2026-12-02T07:00:00Z\nExpiration Time: 2026-12-02T07:05:00Z\n"
        "Resources:\n- urn:archivechain:role:regulator"
    )
    message = parse_message(text)
    assert message.statement is None
    assert message.resources == ("urn:archivechain:role:regulator",)
    assert message.text() == text
    with pytest.raises(SiweFormatError):
        parse_message(text.replace("Nonce: abcdefgh1234", "Nonce: short"))
    with pytest.raises(SiweFormatError):  # one blank line only: the siwe package's ABNF refuses
        parse_message(text.replace("BeAed\n\n\n", "BeAed\n\n"))
    with_statement = text.replace("BeAed\n\n\n", "BeAed\n\nSign in.\n\n")
    assert parse_message(with_statement).statement == "Sign in."


def test_open_challenges_are_bounded(
    api: Api, regulator: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.services.signin.MAX_OPEN_CHALLENGES", 2)
    first = message_for(api, regulator)
    challenge(api)
    refused = api.client.post("/api/v1/auth/challenge")
    assert (refused.status_code, refused.json()["code"]) == (503, "too_many_challenges")
    assert submit(api, first, regulator).status_code == 200  # answering one frees a place
    challenge(api)
