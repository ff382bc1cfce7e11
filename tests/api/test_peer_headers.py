"""Node-to-node authentication headers in every malformed shape are refused with 401
``peer_refused``, never a 500: huge or non-ASCII timestamps, absurd nonces, badly encoded
signatures, malformed senders (both databases). A well-formed request signed by a member gets past
authentication, so the refusals are the headers' doing; the refusal log never echoes a malformed
sender."""

from __future__ import annotations

import logging

import pytest
from eth_account.signers.local import LocalAccount

from node.peers import NONCE, SENDER, SIGNATURE, TIMESTAMP, sign_headers
from tests.api.conftest import Api

ARCHIVE_ID = "01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"
TARGET = f"/peer/v1/archives/{ARCHIVE_ID}/bundle"

MALFORMED: dict[str, tuple[str, str | bytes]] = {
    "400-digit timestamp": (TIMESTAMP, "9" * 400),
    "negative timestamp": (TIMESTAMP, "-1700000000"),
    "non-digit timestamp": (TIMESTAMP, "yesterday"),
    "exponent timestamp": (TIMESTAMP, "1.7e9"),
    "underscored timestamp": (TIMESTAMP, "1_700_000_000"),
    "padded timestamp": (TIMESTAMP, " 1700000000 "),
    "arabic-indic digits": (TIMESTAMP, "١٧٠٠٠٠٠٠٠٠".encode()),
    "absurd nonce": (NONCE, "n" * 8000),
    "short nonce": (NONCE, "abc"),
    "nonce with punctuation": (NONCE, "0123456789abcdef-!"),
    "non-ASCII nonce": (NONCE, ("é" * 20).encode()),
    "signature not hex": (SIGNATURE, "0x" + "zz" * 65),
    "signature too short": (SIGNATURE, "0x" + "00" * 10),
    "signature absurdly long": (SIGNATURE, "0x" + "ab" * 4000),
    "signature with spaces": (SIGNATURE, "0x" + "ab " * 65),
    "sender not an address": (SENDER, "hospital-b"),
    "sender absurdly long": (SENDER, "0x" + "A" * 8000),
    "sender non-ASCII": (SENDER, ("0x" + "é" * 40).encode()),
}


def signed(account: LocalAccount, api: Api) -> dict[str, str | bytes]:
    return dict(sign_headers(account, "GET", TARGET, b"", api.node.hospital))


def test_a_well_formed_request_from_a_member_is_authenticated(
    api: Api, hospital_b: LocalAccount
) -> None:
    response = api.client.get(TARGET, headers=signed(hospital_b, api))
    # Past authentication: the answer is about the archive (B holds no grant on an archive this
    # node does not know), not the signature's 401.
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "archive_not_found"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_headers_are_401(
    api: Api, hospital_b: LocalAccount, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    header, value = MALFORMED[case]
    caplog.set_level(logging.WARNING)
    headers = signed(hospital_b, api) | {header: value}
    response = api.client.get(TARGET, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "peer_refused"
    assert response.json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    if header == SENDER:
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "(malformed sender)" in logged
        assert str(value)[:40] not in logged


@pytest.mark.parametrize("header", [SENDER, TIMESTAMP, NONCE, SIGNATURE])
def test_missing_headers_are_401(api: Api, hospital_b: LocalAccount, header: str) -> None:
    headers = {k: v for k, v in signed(hospital_b, api).items() if k != header}
    response = api.client.get(TARGET, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "peer_refused"


def test_a_forged_signature_of_the_right_shape_is_401(api: Api, hospital_b: LocalAccount) -> None:
    headers = signed(hospital_b, api) | {SIGNATURE: "0x" + "11" * 65}
    response = api.client.get(TARGET, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "peer_refused"
