"""ConsortiumRegistry on a real anvil: bootstrap, governance (quorum, expiry, double approval),
membership changes, key rotation, reads — every success path and every revert with its arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import (
    ContractCodec,
    ContractRevertError,
    ContractWriter,
    MemberStatus,
    Role,
    RpcChain,
    TxReceipt,
    decode_revert,
)
from tests.contracts.helpers import ZERO_ADDRESS, advance_time, reverts
from tests.fixtures.chain import PROPOSAL_LIFETIME, Consortium, public_key_of

Writer = Callable[[LocalAccount], ContractWriter]
STATE_OPEN, STATE_EXECUTED, STATE_EXPIRED = 1, 2, 3
KIND_ADMIT, KIND_SUSPEND, KIND_REINSTATE, KIND_CHANGE_ROLE = 1, 2, 3, 4


def reg(writer: Writer, account: LocalAccount, function: str, *args: Any) -> TxReceipt:
    """Send a registry transaction."""
    return writer(account).transact(function, list(args), contract="ConsortiumRegistry")


def read(chain: RpcChain, function: str, *args: Any) -> Any:
    """Call a registry view and unwrap a single return value."""
    values = chain.call("ConsortiumRegistry", function, list(args))
    return values[0] if len(values) == 1 else values


def proposal_id(receipt: TxReceipt) -> int:
    """Id of the proposal a propose* transaction created."""
    return int(receipt.event("ProposalCreated").args["id"])


def passed(
    writer: Writer, proposer: LocalAccount, approver: LocalAccount, receipt: TxReceipt
) -> int:
    """Approve a fresh proposal with a second hospital and execute it (quorum 2 of 3)."""
    pid = proposal_id(receipt)
    reg(writer, approver, "approve", pid)
    reg(writer, proposer, "execute", pid)
    return pid


# --------------------------------------------------------------------------------------------
# State built by the fixture, reads


def test_consortium_members_roles_and_keys(chain: RpcChain, consortium: Consortium) -> None:
    accounts = consortium.accounts
    members = chain.members()
    expected = [
        (accounts.hospital_a, Role.HOSPITAL, "Hospital A"),
        (accounts.hospital_b, Role.HOSPITAL, "Hospital B"),
        (accounts.hospital_c, Role.HOSPITAL, "Hospital C"),
        (accounts.regulator, Role.REGULATOR, "Health Regulator"),
        (accounts.insurer, Role.INSURER, "Insurer"),
        (accounts.auditor, Role.AUDITOR, "Auditor"),
    ]
    assert [(m.address, m.role, m.name) for m in members] == [
        (a.address, role, name) for a, role, name in expected
    ]
    for member, (account, _, _) in zip(members, expected, strict=True):
        assert member.status is MemberStatus.ACTIVE
        assert member.public_key == public_key_of(account)
        assert member.joined_at > 0
    assert read(chain, "memberCount") == 6
    assert read(chain, "activeHospitalCount") == 3
    assert read(chain, "quorum") == 2
    assert read(chain, "bootstrapping") is False
    assert read(chain, "deployer") == accounts.deployer.address
    assert read(chain, "proposalLifetime") == PROPOSAL_LIFETIME
    assert read(chain, "proposalCount") == 3


def test_is_active_checks_role_and_status(chain: RpcChain, consortium: Consortium) -> None:
    accounts = consortium.accounts
    assert chain.is_active(accounts.hospital_a.address, Role.HOSPITAL)
    assert not chain.is_active(accounts.hospital_a.address, Role.REGULATOR)
    assert chain.is_active(accounts.regulator.address, Role.REGULATOR)
    assert not chain.is_active(accounts.outsider.address, Role.HOSPITAL)
    assert not read(chain, "isActive", accounts.hospital_a.address, 0)
    assert not read(chain, "isActive", accounts.outsider.address, 0)


def test_member_of_non_member_is_empty(chain: RpcChain, outsider: LocalAccount) -> None:
    record = chain.member(outsider.address)
    assert (record.role, record.status, record.joined_at, record.name, record.public_key) == (
        Role.NONE,
        MemberStatus.NONE,
        0,
        "",
        b"",
    )


def test_member_at_out_of_range(chain: RpcChain) -> None:
    with reverts("RegistryIndexOutOfRange", 6, 6):
        chain.call("ConsortiumRegistry", "memberAt", [6])


def test_unknown_proposal_reads(chain: RpcChain) -> None:
    assert read(chain, "proposalState", 0) == 0
    assert read(chain, "proposalState", 99) == 0
    with reverts("RegistryUnknownProposal", 99):
        chain.call("ConsortiumRegistry", "proposal", [99])
    with reverts("RegistryUnknownProposal", 0):
        chain.call("ConsortiumRegistry", "approvalCount", [0])


# --------------------------------------------------------------------------------------------
# Bootstrap


def test_bootstrap_admits_hospitals_then_closes(
    bootstrapping_chain: RpcChain, writer: Writer, deployer: LocalAccount, hospital_a: LocalAccount
) -> None:
    chain = bootstrapping_chain
    w = ContractWriter(chain, deployer)
    assert read(chain, "bootstrapping") is True
    receipt = w.transact(
        "bootstrapHospital",
        [hospital_a.address, "Hospital A", public_key_of(hospital_a)],
        contract="ConsortiumRegistry",
    )
    event = receipt.event("MemberAdmitted")
    assert event.args == {
        "account": hospital_a.address,
        "role": 1,
        "name": "Hospital A",
        "publicKey": public_key_of(hospital_a),
        "proposalId": 0,
    }
    assert read(chain, "activeHospitalCount") == 1
    assert read(chain, "quorum") == 1
    finished = w.transact("finishBootstrap", [], contract="ConsortiumRegistry")
    assert finished.event("BootstrapFinished").args == {"hospitalCount": 1}
    assert read(chain, "bootstrapping") is False
    with reverts("RegistryBootstrapFinished"):
        w.transact("finishBootstrap", [], contract="ConsortiumRegistry")


def test_bootstrap_refusals(
    bootstrapping_chain: RpcChain,
    deployer: LocalAccount,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
    outsider: LocalAccount,
) -> None:
    chain = bootstrapping_chain
    w = ContractWriter(chain, deployer)
    key = public_key_of(hospital_a)

    def boot(account: str, name: str, public_key: bytes, by: ContractWriter = w) -> TxReceipt:
        return by.transact(
            "bootstrapHospital", [account, name, public_key], contract="ConsortiumRegistry"
        )

    with reverts("RegistryNoHospitals"):
        w.transact("finishBootstrap", [], contract="ConsortiumRegistry")
    with reverts("RegistryNotDeployer", outsider.address):
        boot(hospital_a.address, "A", key, by=ContractWriter(chain, outsider))
    with reverts("RegistryNotDeployer", outsider.address):
        ContractWriter(chain, outsider).transact(
            "finishBootstrap", [], contract="ConsortiumRegistry"
        )
    with reverts("RegistryZeroAddress"):
        boot(ZERO_ADDRESS, "A", key)
    with reverts("RegistryInvalidName", 0):
        boot(hospital_a.address, "", key)
    with reverts("RegistryInvalidName", 65):
        boot(hospital_a.address, "x" * 65, key)
    with reverts("RegistryInvalidPublicKey", key[:32]):
        boot(hospital_a.address, "A", key[:32])
    bad_prefix = b"\x04" + key[1:]
    with reverts("RegistryInvalidPublicKey", bad_prefix):
        boot(hospital_a.address, "A", bad_prefix)
    boot(hospital_a.address, "x" * 64, key)  # 64 bytes is the longest name allowed
    with reverts("RegistryAlreadyMember", hospital_a.address):
        boot(hospital_a.address, "A again", key)
    with reverts("RegistryBootstrapNotFinished"):
        ContractWriter(chain, hospital_a).transact(
            "proposeSuspension", [hospital_b.address], contract="ConsortiumRegistry"
        )


def test_deployer_is_powerless_after_bootstrap(
    chain: RpcChain, writer: Writer, deployer: LocalAccount, outsider: LocalAccount
) -> None:
    with reverts("RegistryBootstrapFinished"):
        reg(writer, deployer, "bootstrapHospital", outsider.address, "X", public_key_of(outsider))
    with reverts("RegistryUnauthorized", deployer.address, 1):
        reg(writer, deployer, "proposeAdmission", outsider.address, 1, "X", public_key_of(outsider))


def test_constructor_refuses_zero_lifetime(chain: RpcChain, deployer: LocalAccount) -> None:
    from anchoring.artifacts import load_artifact

    artifact = load_artifact("ConsortiumRegistry")
    codec = ContractCodec(artifact.name, artifact.abi)
    with pytest.raises(ContractRevertError) as info:
        chain.rpc.estimate_gas(
            deployer.address, None, artifact.bytecode + codec.encode_constructor([0])
        )
    assert decode_revert(info.value.data, [codec]) == ("RegistryInvalidLifetime", ())


# --------------------------------------------------------------------------------------------
# Governance


def test_admission_needs_quorum_then_executes(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    newcomer = a.outsider
    receipt = reg(writer, a.hospital_a, "proposeAdmission", newcomer.address, 1, "Hospital D",
                  public_key_of(newcomer))  # fmt: skip
    pid = proposal_id(receipt)
    created = receipt.event("ProposalCreated").args
    assert created["kind"] == KIND_ADMIT
    assert created["subject"] == newcomer.address
    assert created["proposer"] == a.hospital_a.address
    assert created["role"] == 1
    proposal = read(chain, "proposal", pid)
    (kind, role, executed, created_at, expires_at, proposer, subject, name, key, approvers) = (
        proposal
    )
    assert (kind, role, executed, proposer, subject, name, key, approvers) == (
        KIND_ADMIT, 1, False, a.hospital_a.address, newcomer.address, "Hospital D",
        public_key_of(newcomer), (a.hospital_a.address,),
    )  # fmt: skip
    assert expires_at == created_at + PROPOSAL_LIFETIME == created["expiresAt"]
    assert read(chain, "proposalState", pid) == STATE_OPEN
    assert read(chain, "approvalCount", pid) == 1
    assert read(chain, "hasApproved", pid, a.hospital_a.address) is True
    assert read(chain, "hasApproved", pid, a.hospital_b.address) is False

    with reverts("RegistryQuorumNotReached", pid, 1, 2):
        reg(writer, a.hospital_a, "execute", pid)
    approved = reg(writer, a.hospital_b, "approve", pid)
    assert approved.event("ProposalApproved").args == {"id": pid, "approver": a.hospital_b.address}
    executed = reg(writer, a.hospital_c, "execute", pid)  # any active hospital may execute
    assert [e.name for e in executed.events] == ["MemberAdmitted", "ProposalExecuted"]
    assert executed.event("MemberAdmitted").args["proposalId"] == pid
    assert executed.event("ProposalExecuted").args == {"id": pid, "executor": a.hospital_c.address}
    assert chain.is_active(newcomer.address, Role.HOSPITAL)
    assert read(chain, "activeHospitalCount") == 4
    assert read(chain, "quorum") == 3  # strict majority of 4
    assert read(chain, "proposalState", pid) == STATE_EXECUTED
    with reverts("RegistryProposalAlreadyExecuted", pid):
        reg(writer, a.hospital_a, "execute", pid)
    with reverts("RegistryProposalAlreadyExecuted", pid):
        reg(writer, a.hospital_c, "approve", pid)


def test_strict_majority_of_four_needs_three(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    d = a.outsider
    passed(writer, a.hospital_a, a.hospital_b,
           reg(writer, a.hospital_a, "proposeAdmission", d.address, 1, "D", public_key_of(d)))  # fmt: skip
    pid = proposal_id(reg(writer, a.hospital_a, "proposeSuspension", a.insurer.address))
    reg(writer, a.hospital_b, "approve", pid)
    with reverts("RegistryQuorumNotReached", pid, 2, 3):
        reg(writer, a.hospital_a, "execute", pid)
    reg(writer, d, "approve", pid)
    reg(writer, a.hospital_a, "execute", pid)
    assert chain.member(a.insurer.address).status is MemberStatus.SUSPENDED


def test_double_approval_reverts(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    pid = proposal_id(reg(writer, a.hospital_a, "proposeSuspension", a.auditor.address))
    with reverts("RegistryAlreadyApproved", pid, a.hospital_a.address):
        reg(writer, a.hospital_a, "approve", pid)
    reg(writer, a.hospital_b, "approve", pid)
    with reverts("RegistryAlreadyApproved", pid, a.hospital_b.address):
        reg(writer, a.hospital_b, "approve", pid)


def test_expired_proposal_cannot_be_approved_or_executed(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    receipt = reg(writer, a.hospital_a, "proposeSuspension", a.auditor.address)
    pid = proposal_id(receipt)
    expires_at = receipt.event("ProposalCreated").args["expiresAt"]
    reg(writer, a.hospital_b, "approve", pid)  # quorum reached, but nobody executes in time
    advance_time(chain.rpc, PROPOSAL_LIFETIME + 1)
    assert read(chain, "proposalState", pid) == STATE_EXPIRED
    with reverts("RegistryProposalExpired", pid, expires_at):
        reg(writer, a.hospital_a, "execute", pid)
    with reverts("RegistryProposalExpired", pid, expires_at):
        reg(writer, a.hospital_c, "approve", pid)
    assert chain.member(a.auditor.address).status is MemberStatus.ACTIVE


def test_only_active_hospitals_govern(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    pid = proposal_id(reg(writer, a.hospital_a, "proposeSuspension", a.auditor.address))
    for account in (a.regulator, a.insurer, a.auditor, a.outsider):
        with reverts("RegistryUnauthorized", account.address, 1):
            reg(writer, account, "proposeSuspension", a.hospital_b.address)
        with reverts("RegistryUnauthorized", account.address, 1):
            reg(writer, account, "approve", pid)
        with reverts("RegistryUnauthorized", account.address, 1):
            reg(writer, account, "execute", pid)
    with reverts("RegistryUnknownProposal", 77):
        reg(writer, a.hospital_b, "approve", 77)
    with reverts("RegistryUnknownProposal", 77):
        reg(writer, a.hospital_b, "execute", 77)


def test_suspension_and_reinstatement(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    c = a.hospital_c
    suspended = reg(writer, a.hospital_a, "proposeSuspension", c.address)
    pid = proposal_id(suspended)
    reg(writer, a.hospital_b, "approve", pid)
    receipt = reg(writer, a.hospital_a, "execute", pid)
    assert receipt.event("MemberSuspended").args == {"account": c.address, "proposalId": pid}
    assert chain.member(c.address).status is MemberStatus.SUSPENDED
    assert not chain.is_active(c.address, Role.HOSPITAL)
    assert read(chain, "activeHospitalCount") == 2
    assert read(chain, "quorum") == 2
    with reverts("RegistryUnauthorized", c.address, 1):  # a suspended hospital cannot govern
        reg(writer, c, "proposeSuspension", a.hospital_b.address)
    with reverts("RegistryUnexpectedStatus", c.address, 2, 1):
        reg(writer, a.hospital_a, "proposeSuspension", c.address)
    with reverts("RegistryUnexpectedStatus", a.hospital_b.address, 1, 2):
        reg(writer, a.hospital_a, "proposeReinstatement", a.hospital_b.address)

    back = reg(writer, a.hospital_b, "proposeReinstatement", c.address)
    passed(writer, a.hospital_b, a.hospital_a, back)
    assert chain.member(c.address).status is MemberStatus.ACTIVE
    assert chain.is_active(c.address, Role.HOSPITAL)
    assert read(chain, "activeHospitalCount") == 3


def test_reinstatement_event(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    passed(
        writer,
        a.hospital_a,
        a.hospital_b,
        reg(writer, a.hospital_a, "proposeSuspension", a.insurer.address),
    )
    pid = proposal_id(reg(writer, a.hospital_a, "proposeReinstatement", a.insurer.address))
    reg(writer, a.hospital_b, "approve", pid)
    receipt = reg(writer, a.hospital_a, "execute", pid)
    assert receipt.event("MemberReinstated").args == {
        "account": a.insurer.address,
        "proposalId": pid,
    }


def test_approvals_of_suspended_hospitals_do_not_count(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    pending = proposal_id(reg(writer, a.hospital_c, "proposeSuspension", a.auditor.address))
    reg(writer, a.hospital_b, "approve", pending)
    assert read(chain, "approvalCount", pending) == 2
    passed(
        writer,
        a.hospital_a,
        a.hospital_b,
        reg(writer, a.hospital_a, "proposeSuspension", a.hospital_c.address),
    )
    assert read(chain, "approvalCount", pending) == 1  # C's approval no longer counts
    with reverts("RegistryQuorumNotReached", pending, 1, 2):
        reg(writer, a.hospital_b, "execute", pending)
    reg(writer, a.hospital_a, "approve", pending)
    reg(writer, a.hospital_b, "execute", pending)
    assert chain.member(a.auditor.address).status is MemberStatus.SUSPENDED


def test_role_change(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    receipt = reg(writer, a.hospital_a, "proposeRoleChange", a.insurer.address, 4)
    assert receipt.event("ProposalCreated").args["kind"] == KIND_CHANGE_ROLE
    pid = proposal_id(receipt)
    reg(writer, a.hospital_b, "approve", pid)
    done = reg(writer, a.hospital_a, "execute", pid)
    assert done.event("MemberRoleChanged").args == {
        "account": a.insurer.address,
        "previousRole": 3,
        "newRole": 4,
        "proposalId": pid,
    }
    assert chain.is_active(a.insurer.address, Role.AUDITOR)
    # a hospital turned regulator leaves the electorate; a regulator turned hospital joins it
    passed(
        writer,
        a.hospital_a,
        a.hospital_b,
        reg(writer, a.hospital_a, "proposeRoleChange", a.hospital_c.address, 2),
    )
    assert read(chain, "activeHospitalCount") == 2
    passed(
        writer,
        a.hospital_a,
        a.hospital_b,
        reg(writer, a.hospital_a, "proposeRoleChange", a.regulator.address, 1),
    )
    assert read(chain, "activeHospitalCount") == 3
    assert chain.is_active(a.regulator.address, Role.HOSPITAL)


def test_proposal_validation(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    o = a.outsider
    key = public_key_of(o)
    with reverts("RegistryAlreadyMember", a.insurer.address):
        reg(writer, a.hospital_a, "proposeAdmission", a.insurer.address, 3, "Insurer", key)
    with reverts("RegistryInvalidRole", 0):
        reg(writer, a.hospital_a, "proposeAdmission", o.address, 0, "X", key)
    with reverts("RegistryInvalidRole", 5):
        reg(writer, a.hospital_a, "proposeAdmission", o.address, 5, "X", key)
    with reverts("RegistryZeroAddress"):
        reg(writer, a.hospital_a, "proposeAdmission", ZERO_ADDRESS, 1, "X", key)
    with reverts("RegistryInvalidName", 0):
        reg(writer, a.hospital_a, "proposeAdmission", o.address, 1, "", key)
    with reverts("RegistryInvalidPublicKey", key + b"\x00"):
        reg(writer, a.hospital_a, "proposeAdmission", o.address, 1, "X", key + b"\x00")
    with reverts("RegistryNotMember", o.address):
        reg(writer, a.hospital_a, "proposeSuspension", o.address)
    with reverts("RegistryNotMember", o.address):
        reg(writer, a.hospital_a, "proposeReinstatement", o.address)
    with reverts("RegistryNotMember", o.address):
        reg(writer, a.hospital_a, "proposeRoleChange", o.address, 2)
    with reverts("RegistrySameRole", a.insurer.address, 3):
        reg(writer, a.hospital_a, "proposeRoleChange", a.insurer.address, 3)
    with reverts("RegistryInvalidRole", 9):
        reg(writer, a.hospital_a, "proposeRoleChange", a.insurer.address, 9)


def test_execution_revalidates(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    o = a.outsider
    first = proposal_id(
        reg(writer, a.hospital_a, "proposeAdmission", o.address, 3, "X", public_key_of(o))
    )
    second = proposal_id(
        reg(writer, a.hospital_b, "proposeAdmission", o.address, 4, "Y", public_key_of(o))
    )
    reg(writer, a.hospital_b, "approve", first)
    reg(writer, a.hospital_a, "approve", second)
    reg(writer, a.hospital_a, "execute", first)
    with reverts("RegistryAlreadyMember", o.address):
        reg(writer, a.hospital_a, "execute", second)
    assert chain.member(o.address).role is Role.INSURER


def test_last_hospital_cannot_be_removed(
    bootstrapping_chain: RpcChain, deployer: LocalAccount, hospital_a: LocalAccount
) -> None:
    chain = bootstrapping_chain
    boss = ContractWriter(chain, deployer)
    boss.transact("bootstrapHospital", [hospital_a.address, "A", public_key_of(hospital_a)],
                  contract="ConsortiumRegistry")  # fmt: skip
    boss.transact("finishBootstrap", [], contract="ConsortiumRegistry")
    w = ContractWriter(chain, hospital_a)
    with reverts("RegistryLastHospital", hospital_a.address):
        w.transact("proposeSuspension", [hospital_a.address], contract="ConsortiumRegistry")
    with reverts("RegistryLastHospital", hospital_a.address):
        w.transact("proposeRoleChange", [hospital_a.address, 2], contract="ConsortiumRegistry")


def test_single_hospital_quorum_is_itself(
    bootstrapping_chain: RpcChain,
    deployer: LocalAccount,
    hospital_a: LocalAccount,
    regulator: LocalAccount,
) -> None:
    chain = bootstrapping_chain
    boss = ContractWriter(chain, deployer)
    boss.transact("bootstrapHospital", [hospital_a.address, "A", public_key_of(hospital_a)],
                  contract="ConsortiumRegistry")  # fmt: skip
    boss.transact("finishBootstrap", [], contract="ConsortiumRegistry")
    w = ContractWriter(chain, hospital_a)
    receipt = w.transact("proposeAdmission", [regulator.address, 2, "R", public_key_of(regulator)],
                         contract="ConsortiumRegistry")  # fmt: skip
    w.transact("execute", [proposal_id(receipt)], contract="ConsortiumRegistry")
    assert chain.is_active(regulator.address, Role.REGULATOR)


def test_rotate_public_key(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    new_key = public_key_of(a.outsider)
    receipt = reg(writer, a.regulator, "rotatePublicKey", new_key)
    assert receipt.event("PublicKeyRotated").args == {
        "account": a.regulator.address,
        "publicKey": new_key,
    }
    assert chain.member(a.regulator.address).public_key == new_key
    with reverts("RegistryInvalidPublicKey", b"\x05" * 33):
        reg(writer, a.regulator, "rotatePublicKey", b"\x05" * 33)
    with reverts("RegistryUnexpectedStatus", a.outsider.address, 0, 1):
        reg(writer, a.outsider, "rotatePublicKey", new_key)
    passed(
        writer,
        a.hospital_a,
        a.hospital_b,
        reg(writer, a.hospital_a, "proposeSuspension", a.auditor.address),
    )
    with reverts("RegistryUnexpectedStatus", a.auditor.address, 2, 1):
        reg(writer, a.auditor, "rotatePublicKey", new_key)
