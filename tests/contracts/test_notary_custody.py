"""ArchiveNotary custody state machine on a real anvil: every function's success path and events,
and every refusal (role, suspension, state, custodian/recipient, hold, retention) with its arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractRevertError, ContractWriter, RpcChain, TxReceipt
from anchoring.chainview import CustodyState
from tests.contracts.helpers import (
    OLD_TRIGGER,
    ONE_YEAR,
    ZERO32,
    ZERO_ADDRESS,
    advance_time,
    h,
    latest_time,
    new_archive,
    reverts,
)
from tests.fixtures.chain import Consortium, TestAccounts

Writer = Callable[[LocalAccount], ContractWriter]
NONE, ARCHIVED, PENDING, DESTROYED = 0, 1, 2, 3


def notary(writer: Writer, account: LocalAccount, function: str, *args: Any) -> TxReceipt:
    """Send a notary transaction."""
    return writer(account).transact(function, list(args))


def suspend(writer: Writer, accounts: TestAccounts, member: LocalAccount) -> None:
    """Suspend ``member`` through governance (A proposes, B approves, A executes)."""
    receipt = writer(accounts.hospital_a).transact(
        "proposeSuspension", [member.address], contract="ConsortiumRegistry"
    )
    pid = receipt.event("ProposalCreated").args["id"]
    writer(accounts.hospital_b).transact("approve", [pid], contract="ConsortiumRegistry")
    writer(accounts.hospital_a).transact("execute", [pid], contract="ConsortiumRegistry")


@pytest.fixture
def archived(chain: RpcChain, writer: Writer, hospital_a: LocalAccount) -> tuple[str, bytes, int]:
    """An archive registered by hospital A: (ULID, key, retention deadline a year ahead)."""
    archive_id, key = new_archive()
    deadline = latest_time(chain) + ONE_YEAR
    notary(writer, hospital_a, "register", key, 2, OLD_TRIGGER, deadline, h("content"), ZERO32)
    return archive_id, key, deadline


# --------------------------------------------------------------------------------------------
# register / registerBatch / archive


def test_register_records_custody(
    chain: RpcChain, writer: Writer, hospital_a: LocalAccount
) -> None:
    archive_id, key = new_archive()
    deadline = latest_time(chain) + ONE_YEAR
    receipt = notary(writer, hospital_a, "register", key, 4, OLD_TRIGGER, deadline, h("c"), ZERO32)
    assert [e.name for e in receipt.events] == ["ArchiveRegistered"]
    assert receipt.event("ArchiveRegistered").args == {
        "id": key,
        "custodian": hospital_a.address,
        "recordClass": 4,
        "triggerDate": OLD_TRIGGER,
        "retentionDeadline": deadline,
        "commitment": h("c"),
    }
    record = chain.custody(archive_id)
    assert record.archive_id == archive_id
    assert record.custodian == hospital_a.address
    assert record.state is CustodyState.ARCHIVED
    assert (record.on_hold, record.hold_by_regulator) == (False, False)
    assert (record.record_class, record.retention_deadline, record.commitment) == (
        4,
        deadline,
        h("c"),
    )
    assert record.pending_recipient == ZERO_ADDRESS
    assert record.certificate_hash == ZERO32


def test_register_on_hold_records_the_custodians_hold_in_the_same_transaction(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    archive_id, key = new_archive()
    deadline = latest_time(chain) + ONE_YEAR
    receipt = notary(
        writer, a.hospital_a, "register", key, 2, OLD_TRIGGER, deadline, h("c"), h("litigation")
    )
    assert [e.name for e in receipt.events] == ["ArchiveRegistered", "HoldPlaced"]
    assert receipt.event("HoldPlaced").args == {
        "id": key,
        "by": a.hospital_a.address,
        "byRegulator": False,
        "reasonHash": h("litigation"),
    }
    record = chain.custody(archive_id)
    assert (record.state, record.on_hold, record.hold_by_regulator) == (
        CustodyState.ARCHIVED,
        True,
        False,
    )
    # It is the custodian's own hold: it blocks transfer-out, the custodian may release it, and a
    # regulator may take it over.
    with reverts("NotaryOnHold", key, False):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    notary(writer, a.regulator, "placeHold", key, h("regulator"))
    assert chain.custody(archive_id).hold_by_regulator is True
    with reverts("NotaryUnauthorized", a.hospital_a.address, 2):
        notary(writer, a.hospital_a, "releaseHold", key, h("custodian"))

    other_id, other = new_archive()
    batch = [
        (other, 0, OLD_TRIGGER, deadline, h("1"), h("held")),
        (new_archive()[1], 0, OLD_TRIGGER, deadline, h("2"), ZERO32),
    ]
    receipt = notary(writer, a.hospital_a, "registerBatch", batch)
    assert [e.name for e in receipt.events] == [
        "ArchiveRegistered",
        "HoldPlaced",
        "ArchiveRegistered",
    ]
    assert chain.custody(other_id).on_hold is True
    notary(writer, a.hospital_a, "releaseHold", other, h("released"))
    assert chain.custody(other_id).on_hold is False


def test_unknown_archive_reads_as_none(chain: RpcChain) -> None:
    archive_id, _ = new_archive()
    record = chain.custody(archive_id)
    assert record.state is CustodyState.NONE
    assert record.custodian == ZERO_ADDRESS
    assert (record.retention_deadline, record.commitment) == (0, ZERO32)


def test_register_refusals(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    _, key = new_archive()
    deadline = latest_time(chain) + 100
    for account in (a.regulator, a.insurer, a.auditor, a.outsider, a.deployer):
        with reverts("NotaryUnauthorized", account.address, 1):
            notary(writer, account, "register", key, 0, OLD_TRIGGER, deadline, h("c"), ZERO32)
    with reverts("NotaryUnexpectedState", archived[1], ARCHIVED, NONE):
        notary(
            writer, a.hospital_b, "register", archived[1], 0, OLD_TRIGGER, deadline, h("c"), ZERO32
        )
    with reverts("NotaryInvalidRecordClass", key, 7):
        notary(writer, a.hospital_a, "register", key, 7, OLD_TRIGGER, deadline, h("c"), ZERO32)
    with reverts("NotaryInvalidRetentionDeadline", key):
        notary(writer, a.hospital_a, "register", key, 0, OLD_TRIGGER, 0, h("c"), ZERO32)
    with reverts("NotaryMissingCommitment", key):
        notary(writer, a.hospital_a, "register", key, 0, OLD_TRIGGER, deadline, ZERO32, ZERO32)
    notary(
        writer, a.hospital_a, "register", key, 6, OLD_TRIGGER, deadline, h("c"), ZERO32
    )  # last class


def test_suspended_hospital_cannot_act(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    suspend(writer, a, a.hospital_a)
    _, key = new_archive()
    with reverts("NotaryUnauthorized", a.hospital_a.address, 1):
        notary(
            writer,
            a.hospital_a,
            "register",
            key,
            0,
            OLD_TRIGGER,
            latest_time(chain) + 10,
            h("c"),
            ZERO32,
        )
    with reverts("NotaryUnauthorized", a.hospital_a.address, 1):
        notary(writer, a.hospital_a, "offerTransfer", archived[1], a.hospital_b.address)
    with reverts("NotaryUnauthorized", a.hospital_a.address, 1):
        notary(writer, a.hospital_a, "extendRetention", archived[1], archived[2] + 10)
    with reverts("NotaryUnauthorized", a.hospital_a.address, 2):
        notary(writer, a.hospital_a, "placeHold", archived[1], h("r"))
    with reverts("NotaryUnauthorized", a.hospital_a.address, 1):
        notary(writer, a.hospital_a, "anchorCheckpoint", 1, h("root"), [])


def test_register_batch(chain: RpcChain, writer: Writer, hospital_a: LocalAccount) -> None:
    deadline = latest_time(chain) + ONE_YEAR
    archives = [new_archive() for _ in range(3)]
    items = [
        (key, i, OLD_TRIGGER, deadline + i, h(f"c{i}"), ZERO32)
        for i, (_, key) in enumerate(archives)
    ]
    receipt = notary(writer, hospital_a, "registerBatch", items)
    assert [e.args["id"] for e in receipt.events] == [key for _, key in archives]
    assert all(e.name == "ArchiveRegistered" for e in receipt.events)
    for i, (archive_id, _) in enumerate(archives):
        record = chain.custody(archive_id)
        assert (record.custodian, record.record_class, record.retention_deadline, record.commitment) == (
            hospital_a.address, i, deadline + i, h(f"c{i}"),
        )  # fmt: skip


def test_register_batch_is_all_or_nothing(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    deadline = latest_time(chain) + 100
    fresh_id, fresh = new_archive()
    with reverts("NotaryEmptyBatch"):
        notary(writer, a.hospital_a, "registerBatch", [])
    with reverts("NotaryUnexpectedState", fresh, ARCHIVED, NONE):
        notary(
            writer,
            a.hospital_a,
            "registerBatch",
            [
                (fresh, 0, OLD_TRIGGER, deadline, h("1"), ZERO32),
                (fresh, 0, OLD_TRIGGER, deadline, h("2"), ZERO32),
            ],
        )
    with reverts("NotaryUnexpectedState", archived[1], ARCHIVED, NONE):
        notary(
            writer,
            a.hospital_a,
            "registerBatch",
            [
                (fresh, 0, OLD_TRIGGER, deadline, h("1"), ZERO32),
                (archived[1], 0, OLD_TRIGGER, deadline, h("2"), ZERO32),
            ],
        )
    with reverts("NotaryInvalidRecordClass", fresh, 9):
        notary(
            writer,
            a.hospital_a,
            "registerBatch",
            [(fresh, 9, OLD_TRIGGER, deadline, h("1"), ZERO32)],
        )
    with reverts("NotaryUnauthorized", a.regulator.address, 1):
        notary(
            writer,
            a.regulator,
            "registerBatch",
            [(fresh, 0, OLD_TRIGGER, deadline, h("1"), ZERO32)],
        )
    assert chain.custody(fresh_id).state is CustodyState.NONE


# --------------------------------------------------------------------------------------------
# Transfers


def test_offer_and_accept_moves_custody(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, _ = archived
    offered = notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    assert offered.event("TransferOffered").args == {
        "id": key, "from": a.hospital_a.address, "to": a.hospital_b.address,
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.state, record.pending_recipient, record.custodian) == (
        CustodyState.TRANSFER_PENDING, a.hospital_b.address, a.hospital_a.address,
    )  # fmt: skip
    accepted = notary(writer, a.hospital_b, "acceptTransfer", key)
    assert accepted.event("TransferAccepted").args == {
        "id": key, "from": a.hospital_a.address, "to": a.hospital_b.address,
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.state, record.pending_recipient, record.custodian) == (
        CustodyState.ARCHIVED, ZERO_ADDRESS, a.hospital_b.address,
    )  # fmt: skip
    with reverts("NotaryUnexpectedState", key, ARCHIVED, PENDING):  # double accept
        notary(writer, a.hospital_b, "acceptTransfer", key)
    with reverts("NotaryNotCustodian", key, a.hospital_a.address, a.hospital_b.address):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_c.address)


def test_offer_refusals(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    _, key, _ = archived
    _, unknown = new_archive()
    with reverts("NotaryUnauthorized", a.regulator.address, 1):
        notary(writer, a.regulator, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryUnexpectedState", unknown, NONE, ARCHIVED):
        notary(writer, a.hospital_a, "offerTransfer", unknown, a.hospital_b.address)
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "offerTransfer", key, a.hospital_c.address)
    for recipient in (a.outsider, a.regulator, a.insurer, a.hospital_a):
        with reverts("NotaryInvalidRecipient", key, recipient.address):
            notary(writer, a.hospital_a, "offerTransfer", key, recipient.address)
    with reverts("NotaryInvalidRecipient", key, ZERO_ADDRESS):
        notary(writer, a.hospital_a, "offerTransfer", key, ZERO_ADDRESS)
    suspend(writer, a, a.hospital_c)
    with reverts("NotaryInvalidRecipient", key, a.hospital_c.address):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_c.address)
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryUnexpectedState", key, PENDING, ARCHIVED):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)


def test_hold_blocks_offer_and_accept(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    _, key, _ = archived
    notary(writer, a.hospital_a, "placeHold", key, h("own"))
    with reverts("NotaryOnHold", key, False):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    notary(writer, a.hospital_a, "releaseHold", key, h("done"))
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    notary(writer, a.regulator, "placeHold", key, h("court order"))  # hold while pending
    with reverts("NotaryOnHold", key, True):
        notary(writer, a.hospital_b, "acceptTransfer", key)
    notary(writer, a.hospital_a, "cancelTransfer", key)  # the custodian can still withdraw


def test_accept_refusals(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    _, key, _ = archived
    with reverts("NotaryUnexpectedState", key, ARCHIVED, PENDING):
        notary(writer, a.hospital_b, "acceptTransfer", key)
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryNotRecipient", key, a.hospital_c.address, a.hospital_b.address):
        notary(writer, a.hospital_c, "acceptTransfer", key)
    with reverts("NotaryNotRecipient", key, a.hospital_a.address, a.hospital_b.address):
        notary(writer, a.hospital_a, "acceptTransfer", key)
    with reverts("NotaryUnauthorized", a.outsider.address, 1):
        notary(writer, a.outsider, "acceptTransfer", key)
    suspend(writer, a, a.hospital_b)
    with reverts("NotaryUnauthorized", a.hospital_b.address, 1):
        notary(writer, a.hospital_b, "acceptTransfer", key)


def test_cancel_transfer(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, _ = archived
    with reverts("NotaryUnexpectedState", key, ARCHIVED, PENDING):
        notary(writer, a.hospital_a, "cancelTransfer", key)
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "cancelTransfer", key)
    receipt = notary(writer, a.hospital_a, "cancelTransfer", key)
    assert receipt.event("TransferCancelled").args == {
        "id": key, "from": a.hospital_a.address, "to": a.hospital_b.address,
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.state, record.custodian, record.pending_recipient) == (
        CustodyState.ARCHIVED, a.hospital_a.address, ZERO_ADDRESS,
    )  # fmt: skip


def test_reject_transfer(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, _ = archived
    with reverts("NotaryUnexpectedState", key, ARCHIVED, PENDING):
        notary(writer, a.hospital_b, "rejectTransfer", key, h("no room"))
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryNotRecipient", key, a.hospital_a.address, a.hospital_b.address):
        notary(writer, a.hospital_a, "rejectTransfer", key, h("no room"))
    receipt = notary(writer, a.hospital_b, "rejectTransfer", key, h("no room"))
    assert receipt.event("TransferRejected").args == {
        "id": key, "from": a.hospital_a.address, "to": a.hospital_b.address,
        "reasonHash": h("no room"),
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.state, record.custodian, record.pending_recipient) == (
        CustodyState.ARCHIVED, a.hospital_a.address, ZERO_ADDRESS,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Holds


def test_custodian_hold_and_release(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, _ = archived
    placed = notary(writer, a.hospital_a, "placeHold", key, h("audit"))
    assert placed.event("HoldPlaced").args == {
        "id": key, "by": a.hospital_a.address, "byRegulator": False, "reasonHash": h("audit"),
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.on_hold, record.hold_by_regulator) == (True, False)
    with reverts("NotaryAlreadyOnHold", key, False):
        notary(writer, a.hospital_a, "placeHold", key, h("again"))
    with reverts("NotaryNotCustodian", key, a.regulator.address, a.hospital_a.address):
        notary(
            writer, a.regulator, "releaseHold", key, h("x")
        )  # a custodian hold is the custodian's
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "releaseHold", key, h("x"))
    released = notary(writer, a.hospital_a, "releaseHold", key, h("done"))
    assert released.event("HoldReleased").args == {
        "id": key, "by": a.hospital_a.address, "reasonHash": h("done"),
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.on_hold, record.hold_by_regulator) == (False, False)
    with reverts("NotaryNotOnHold", key):
        notary(writer, a.hospital_a, "releaseHold", key, h("x"))


def test_regulator_hold_takes_over_and_only_regulator_releases(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, _ = archived
    notary(writer, a.hospital_a, "placeHold", key, h("own"))
    upgraded = notary(writer, a.regulator, "placeHold", key, h("court"))
    assert upgraded.event("HoldPlaced").args == {
        "id": key, "by": a.regulator.address, "byRegulator": True, "reasonHash": h("court"),
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert (record.on_hold, record.hold_by_regulator) == (True, True)
    with reverts("NotaryAlreadyOnHold", key, True):
        notary(writer, a.regulator, "placeHold", key, h("again"))
    with reverts("NotaryAlreadyOnHold", key, True):
        notary(writer, a.hospital_a, "placeHold", key, h("mine"))
    with reverts("NotaryUnauthorized", a.hospital_a.address, 2):
        notary(writer, a.hospital_a, "releaseHold", key, h("x"))
    notary(writer, a.regulator, "releaseHold", key, h("lifted"))
    assert chain.custody(archive_id).on_hold is False


def test_hold_refusals(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    _, key, _ = archived
    _, unknown = new_archive()
    for account in (a.insurer, a.auditor, a.outsider, a.deployer):
        with reverts("NotaryUnauthorized", account.address, 2):
            notary(writer, account, "placeHold", key, h("r"))
        with reverts("NotaryUnauthorized", account.address, 2):
            notary(writer, account, "releaseHold", key, h("r"))
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "placeHold", key, h("r"))
    with reverts("NotaryUnexpectedState", unknown, NONE, ARCHIVED):
        notary(writer, a.regulator, "placeHold", unknown, h("r"))
    with reverts("NotaryUnexpectedState", unknown, NONE, ARCHIVED):
        notary(writer, a.regulator, "releaseHold", unknown, h("r"))


# --------------------------------------------------------------------------------------------
# Retention and destruction


def test_extend_retention(
    chain: RpcChain, writer: Writer, consortium: Consortium, archived: tuple[str, bytes, int]
) -> None:
    a = consortium.accounts
    archive_id, key, deadline = archived
    receipt = notary(writer, a.hospital_a, "extendRetention", key, deadline + 10)
    assert receipt.event("RetentionExtended").args == {
        "id": key, "custodian": a.hospital_a.address, "previousDeadline": deadline,
        "newDeadline": deadline + 10,
    }  # fmt: skip
    assert chain.custody(archive_id).retention_deadline == deadline + 10
    with reverts("NotaryRetentionNotExtended", key, deadline + 10, deadline + 10):
        notary(writer, a.hospital_a, "extendRetention", key, deadline + 10)
    with reverts("NotaryRetentionNotExtended", key, deadline + 10, deadline):
        notary(writer, a.hospital_a, "extendRetention", key, deadline)
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "extendRetention", key, deadline + 20)
    with reverts("NotaryUnauthorized", a.regulator.address, 1):
        notary(writer, a.regulator, "extendRetention", key, deadline + 20)
    notary(writer, a.regulator, "placeHold", key, h("court"))
    notary(writer, a.hospital_a, "extendRetention", key, deadline + 30)  # allowed under hold
    notary(writer, a.regulator, "releaseHold", key, h("lifted"))
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    notary(writer, a.hospital_a, "extendRetention", key, deadline + 40)  # and while pending
    assert chain.custody(archive_id).retention_deadline == deadline + 40


def test_destroy_after_retention(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    archive_id, key = new_archive()
    deadline = latest_time(chain) + 1000
    notary(writer, a.hospital_a, "register", key, 1, OLD_TRIGGER, deadline, h("c"), ZERO32)
    with pytest.raises(ContractRevertError) as info:
        notary(writer, a.hospital_a, "destroy", key, h("certificate"))
    assert info.value.error_name == "NotaryRetentionNotReached"
    assert info.value.error_args[:2] == (key, deadline)
    assert info.value.error_args[2] < deadline
    advance_time(chain.rpc, 1000)
    with reverts("NotaryMissingCertificate", key):
        notary(writer, a.hospital_a, "destroy", key, ZERO32)
    with reverts("NotaryNotCustodian", key, a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "destroy", key, h("certificate"))
    with reverts("NotaryUnauthorized", a.regulator.address, 1):
        notary(writer, a.regulator, "destroy", key, h("certificate"))
    receipt = notary(writer, a.hospital_a, "destroy", key, h("certificate"))
    assert receipt.event("ArchiveDestroyed").args == {
        "id": key, "custodian": a.hospital_a.address, "certificateHash": h("certificate"),
    }  # fmt: skip
    record = chain.custody(archive_id)
    assert record.state is CustodyState.DESTROYED
    assert record.certificate_hash == h("certificate")
    assert (record.custodian, record.commitment) == (a.hospital_a.address, h("c"))  # evidence stays
    # terminal: nothing applies any more
    with reverts("NotaryUnexpectedState", key, DESTROYED, ARCHIVED):
        notary(writer, a.hospital_a, "destroy", key, h("certificate"))
    with reverts("NotaryUnexpectedState", key, DESTROYED, ARCHIVED):
        notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_b.address)
    with reverts("NotaryUnexpectedState", key, DESTROYED, ARCHIVED):
        notary(writer, a.regulator, "placeHold", key, h("r"))
    with reverts("NotaryUnexpectedState", key, DESTROYED, ARCHIVED):
        notary(writer, a.hospital_a, "extendRetention", key, deadline + 5000)
    with reverts("NotaryUnexpectedState", key, DESTROYED, NONE):
        notary(
            writer, a.hospital_a, "register", key, 1, OLD_TRIGGER, deadline + 5000, h("c"), ZERO32
        )


def test_destroy_blocked_by_hold_and_pending_transfer(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    _, key = new_archive()
    notary(
        writer,
        a.hospital_a,
        "register",
        key,
        1,
        OLD_TRIGGER,
        latest_time(chain) + 10,
        h("c"),
        ZERO32,
    )
    advance_time(chain.rpc, 100)
    notary(writer, a.regulator, "placeHold", key, h("litigation"))
    with reverts("NotaryOnHold", key, True):
        notary(writer, a.hospital_a, "destroy", key, h("certificate"))
    notary(writer, a.regulator, "releaseHold", key, h("settled"))
    notary(writer, a.hospital_a, "offerTransfer", key, a.hospital_c.address)
    with reverts("NotaryUnexpectedState", key, PENDING, ARCHIVED):
        notary(writer, a.hospital_a, "destroy", key, h("certificate"))
    notary(writer, a.hospital_c, "acceptTransfer", key)
    notary(writer, a.hospital_c, "destroy", key, h("certificate"))  # the new custodian may


def test_registry_link(chain: RpcChain, consortium: Consortium) -> None:
    (linked,) = chain.call("ArchiveNotary", "registry")
    assert linked == consortium.deployment.registry.address
