"""AttestationRevocations on a real anvil: only active hospitals revoke, each only in its own
namespace, once; a verifier's one read (`revokedAt`) answers; the list names its notary."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractRevertError, ContractWriter, RpcChain
from anchoring.rpcview import AttestationReader
from tests.contracts.helpers import h
from tests.fixtures.chain import Consortium

CONTRACT = "AttestationRevocations"


def _revoked_at(chain: RpcChain, issuer: str, attestation_id: bytes) -> int:
    (value,) = chain.call(CONTRACT, "revokedAt", [issuer, attestation_id])
    return int(value)


def test_a_hospital_revokes_its_own_attestation_once(
    chain: RpcChain,
    writer: Callable[[LocalAccount], ContractWriter],
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
    consortium: Consortium,
) -> None:
    attestation = h("attestation-1")
    assert _revoked_at(chain, hospital_a.address, attestation) == 0
    receipt = writer(hospital_a).transact("revoke", [attestation], contract=CONTRACT)
    event = receipt.event("AttestationRevoked")
    assert event.args["issuer"] == hospital_a.address
    assert bytes(event.args["attestationId"]) == attestation
    at = _revoked_at(chain, hospital_a.address, attestation)
    assert at == event.args["revokedAt"] > 0
    # Another hospital's namespace is untouched: it cannot revoke A's attestation.
    assert _revoked_at(chain, hospital_b.address, attestation) == 0
    with pytest.raises(ContractRevertError) as again:
        writer(hospital_a).transact("revoke", [attestation], contract=CONTRACT)
    assert again.value.error_name == "RevocationsAlreadyRevoked"
    # The verifier's standard-library reader sees the same, and the list names its notary.
    reader = AttestationReader(consortium.rpc_url, consortium.deployment.notary.address)
    assert reader.revoked_at(chain.addresses[CONTRACT], hospital_a.address, attestation) == at
    assert reader.revocations_notary(chain.addresses[CONTRACT]) == (
        consortium.deployment.notary.address
    )
    assert reader.revocations_notary(consortium.deployment.registry.address) != (
        consortium.deployment.notary.address
    )


@pytest.mark.parametrize("who", ["insurer", "regulator", "outsider"])
def test_only_active_hospitals_revoke(
    who: str,
    chain: RpcChain,
    writer: Callable[[LocalAccount], ContractWriter],
    consortium: Consortium,
) -> None:
    account = consortium.accounts.by_name()[who]
    with pytest.raises(ContractRevertError) as refused:
        writer(account).transact("revoke", [h("x")], contract=CONTRACT)
    assert refused.value.error_name == "RevocationsUnauthorized"


def test_the_zero_id_is_refused(
    chain: RpcChain, writer: Callable[[LocalAccount], ContractWriter], hospital_a: LocalAccount
) -> None:
    with pytest.raises(ContractRevertError) as refused:
        writer(hospital_a).transact("revoke", [bytes(32)], contract=CONTRACT)
    assert refused.value.error_name == "RevocationsZeroId"
