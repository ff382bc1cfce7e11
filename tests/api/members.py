"""Helpers for member sign-in in API tests: build, sign and submit EIP-4361 messages the way an
independent client would (docs/regulators.md), with any field overridden to test refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, RpcChain
from node.siwe import SiweMessage, format_time, sign_message
from tests.api.conftest import Api


def challenge(api: Api) -> dict[str, Any]:
    """``POST /auth/challenge`` (asserting 200)."""
    response = api.client.post("/api/v1/auth/challenge")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def message_for(
    api: Api, account: LocalAccount, role: str = "regulator", **overrides: Any
) -> SiweMessage:
    """A message answering a fresh challenge, as a correct client writes it."""
    c = challenge(api)
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "domain": c["domain"],
        "address": account.address,
        "statement": c["statement"],
        "uri": c["uri"],
        "chain_id": c["chain_id"],
        "nonce": c["nonce"],
        "issued_at": format_time(now),
        "expiration_time": format_time(now + timedelta(minutes=5)),
        "resources": (f"urn:archivechain:role:{role}",),
    }
    fields.update(overrides)
    return SiweMessage(**fields)


def submit(api: Api, message: SiweMessage | str, signer: LocalAccount) -> httpx.Response:
    """``POST /auth/verify`` with ``message`` signed by ``signer``."""
    text = message if isinstance(message, str) else message.text()
    signature = sign_message(text, bytes(signer.key))
    return api.client.post("/api/v1/auth/verify", json={"message": text, "signature": signature})


def sign_in(api: Api, account: LocalAccount, role: str = "regulator") -> str:
    """A member token for ``account`` (asserting success)."""
    response = submit(api, message_for(api, account, role), account)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def suspend(chain: RpcChain, proposer: LocalAccount, approver: LocalAccount, target: str) -> None:
    """Suspend ``target`` through governance (propose → approve → execute)."""
    proposing = ContractWriter(chain, proposer)
    receipt = proposing.transact("proposeSuspension", [target], contract="ConsortiumRegistry")
    proposal = int(receipt.event("ProposalCreated").args["id"])
    ContractWriter(chain, approver).transact("approve", [proposal], contract="ConsortiumRegistry")
    proposing.transact("execute", [proposal], contract="ConsortiumRegistry")
