"""Retention floors on chain (issue 10 §1) and the batched destroy (§3), on a real anvil.

The registry holds a minimum retention in years per record class (the legal floors from
deployment on), changed only by governance; ``register``/``registerBatch`` take the trigger date
and refuse a deadline earlier than trigger + floor (calendar years) or a trigger in the future;
``destroyBatch`` destroys many archives in one transaction, all or nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from anchoring.chain import ContractRevertError, ContractWriter, RpcChain, RpcError, TxReceipt
from anchoring.chainview import CustodyState
from anchoring.events import RecordClass
from node.retention import DEFAULT_RETENTION_YEARS, LEGAL_FLOOR_YEARS, RetentionPolicies
from tests.contracts.helpers import (
    OLD_TRIGGER,
    ONE_YEAR,
    ZERO32,
    advance_time,
    h,
    latest_time,
    new_archive,
    reverts,
)
from tests.fixtures.chain import Consortium

Writer = Callable[[LocalAccount], ContractWriter]
REG = "ConsortiumRegistry"
DAY = 86_400


def notary(writer: Writer, account: LocalAccount, function: str, *args: Any) -> TxReceipt:
    return writer(account).transact(function, list(args))


def midnight(day: date) -> int:
    return int(datetime.combine(day, time(), UTC).timestamp())


def today(chain: RpcChain) -> int:
    now = latest_time(chain)
    return now - now % DAY


def add_years(day: date, years: int) -> date:
    """The reference: the same calendar day ``years`` later, 29 February → 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def minimum(chain: RpcChain, record_class: int, trigger: int) -> int:
    (value,) = chain.call("ArchiveNotary", "minimumDeadline", [record_class, trigger])
    return int(value)


def pass_proposal(writer: Writer, consortium: Consortium, receipt: TxReceipt) -> TxReceipt:
    a = consortium.accounts
    pid = receipt.event("ProposalCreated").args["id"]
    writer(a.hospital_b).transact("approve", [pid], contract=REG)
    return writer(a.hospital_a).transact("execute", [pid], contract=REG)


# --------------------------------------------------------------------------------------------
# floors


def test_the_registry_starts_with_the_legal_floors(chain: RpcChain) -> None:
    (floors,) = chain.call(REG, "retentionFloors")
    expected = [LEGAL_FLOOR_YEARS.get(c.value, 1) for c in RecordClass]
    assert list(floors) == expected == [15, 15, 30, 1, 1, 1, 1]
    for record_class in RecordClass:
        (one,) = chain.call(REG, "retentionFloor", [record_class.chain_code])
        assert one == expected[record_class.chain_code]
    with pytest.raises(ContractRevertError) as info:
        chain.call(REG, "retentionFloor", [7])
    assert (info.value.error_name, info.value.error_args) == ("RegistryInvalidRecordClass", (7,))


@pytest.mark.parametrize(
    "trigger",
    [
        date(2026, 12, 2),
        date(2024, 2, 29),  # leap day → 28 February in a common year
        date(2028, 2, 29),  # … and stays 29 February when the target year is leap (2028 + 30)
        date(2090, 3, 1),  # 2100 is not a leap year: the span holds one leap day fewer
        date(2085, 12, 31),
        date(1970, 1, 1),
        date(2096, 2, 29),  # the last leap day before 2100 (2096 + 4 is not leap)
        date(2099, 2, 28),
        date(2399, 12, 31),  # across the 400-year cycle (2400 is leap)
    ],
)
def test_minimum_deadline_counts_calendar_years_as_the_node_does(
    chain: RpcChain, trigger: date
) -> None:
    policies = RetentionPolicies(dict(DEFAULT_RETENTION_YEARS))
    for record_class in (RecordClass.OUTPATIENT, RecordClass.INPATIENT, RecordClass.LAB):
        code = record_class.chain_code
        floor = LEGAL_FLOOR_YEARS.get(record_class.value, 1)
        expected = midnight(add_years(trigger, floor))
        # any time within the trigger's day counts from its 00:00 UTC
        assert minimum(chain, code, midnight(trigger)) == expected
        assert minimum(chain, code, midnight(trigger) + DAY - 1) == expected
        if record_class is not RecordClass.LAB:  # the node's default is the floor itself
            node_deadline = policies.of(record_class).deadline(trigger)
            assert int(node_deadline.timestamp()) == expected


def test_register_refuses_a_deadline_below_trigger_plus_floor(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    trigger = today(chain)
    for record_class, floor in ((0, 15), (1, 15), (2, 30), (5, 1)):
        least = minimum(chain, record_class, trigger)
        archive_id, key = new_archive()
        with reverts("NotaryRetentionBelowFloor", key, record_class, floor, least, least - 1):
            notary(writer, a.hospital_a, "register", key, record_class, trigger, least - 1,
                   h("c"), ZERO32)  # fmt: skip
        assert chain.custody(archive_id).state is CustodyState.NONE
        receipt = notary(writer, a.hospital_a, "register", key, record_class, trigger, least,
                         h("c"), ZERO32)  # fmt: skip
        assert receipt.event("ArchiveRegistered").args["triggerDate"] == trigger
        assert chain.custody(archive_id).retention_deadline == least
    # 30 inpatient years are not 15: an inpatient record with an outpatient deadline is refused
    _, key = new_archive()
    outpatient = minimum(chain, 0, trigger)
    with reverts("NotaryRetentionBelowFloor", key, 2, 30, minimum(chain, 2, trigger), outpatient):
        notary(writer, a.hospital_a, "register", key, 2, trigger, outpatient, h("c"), ZERO32)


def test_register_batch_refuses_below_the_floor_all_or_nothing(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    trigger = today(chain)
    least = minimum(chain, 0, trigger)
    (good_id, good), (_, bad) = new_archive(), new_archive()
    batch = [
        (good, 0, trigger, least, h("1"), ZERO32),
        (bad, 0, trigger, least - DAY, h("2"), ZERO32),
    ]
    with reverts("NotaryRetentionBelowFloor", bad, 0, 15, least, least - DAY):
        notary(writer, a.hospital_a, "registerBatch", batch)
    assert chain.custody(good_id).state is CustodyState.NONE
    with reverts("NotaryInvalidRecordClass", bad, 7):
        notary(writer, a.hospital_a, "registerBatch", [(bad, 7, trigger, least, h("2"), ZERO32)])


def test_register_refuses_a_trigger_in_the_future(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    now = latest_time(chain)
    far = now + 2 * DAY
    _, key = new_archive()
    deadline = far + 31 * ONE_YEAR
    with pytest.raises(ContractRevertError) as info:
        notary(writer, a.hospital_a, "register", key, 2, far, deadline, h("c"), ZERO32)
    assert info.value.error_name == "NotaryTriggerInFuture"
    assert info.value.error_args[:2] == (key, far)
    assert now <= info.value.error_args[2] < far - DAY  # the block time it was compared with
    with pytest.raises(ContractRevertError) as info:
        notary(writer, a.hospital_a, "registerBatch", [(key, 2, far, deadline, h("c"), ZERO32)])
    assert info.value.error_name == "NotaryTriggerInFuture"
    # A date that has begun in a time zone east of UTC (00:00 UTC of it is a few hours ahead).
    tomorrow = today(chain) + DAY
    notary(writer, a.hospital_a, "register", key, 2, tomorrow, minimum(chain, 2, tomorrow),
           h("c"), ZERO32)  # fmt: skip


def test_only_governance_changes_a_floor(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    for account in (a.regulator, a.insurer, a.auditor, a.outsider, a.deployer):
        with reverts("RegistryUnauthorized", account.address, 1):
            writer(account).transact("proposeRetentionFloor", [0, 20], contract=REG)
    with reverts("RegistryInvalidRecordClass", 7):
        writer(a.hospital_a).transact("proposeRetentionFloor", [7, 20], contract=REG)
    with reverts("RegistryInvalidRetentionFloor", 0, 0, 200):
        writer(a.hospital_a).transact("proposeRetentionFloor", [0, 0], contract=REG)
    with reverts("RegistryInvalidRetentionFloor", 0, 201, 200):
        writer(a.hospital_a).transact("proposeRetentionFloor", [0, 201], contract=REG)
    with reverts("RegistrySameRetentionFloor", 0, 15):
        writer(a.hospital_a).transact("proposeRetentionFloor", [0, 15], contract=REG)

    proposed = writer(a.hospital_a).transact("proposeRetentionFloor", [0, 20], contract=REG)
    pid = proposed.event("ProposalCreated").args["id"]
    assert proposed.event("RetentionFloorProposed").args == {
        "id": pid, "recordClass": 0, "floorYears": 20,
    }  # fmt: skip
    assert chain.call(REG, "proposedRetentionFloor", [pid]) == (20,)
    with reverts("RegistryQuorumNotReached", pid, 1, 2):  # the proposer alone is no majority
        writer(a.hospital_a).transact("execute", [pid], contract=REG)
    assert chain.call(REG, "retentionFloor", [0]) == (15,)
    executed = pass_proposal(writer, consortium, proposed)
    assert executed.event("RetentionFloorChanged").args == {
        "recordClass": 0, "previousYears": 15, "floorYears": 20, "proposalId": pid,
    }  # fmt: skip
    assert chain.call(REG, "retentionFloor", [0]) == (20,)

    # The notary applies the new floor at once: 15 years after the trigger is no longer enough.
    trigger = today(chain)
    fifteen = midnight(add_years(datetime.fromtimestamp(trigger, UTC).date(), 15))
    twenty = midnight(add_years(datetime.fromtimestamp(trigger, UTC).date(), 20))
    assert minimum(chain, 0, trigger) == twenty
    _, key = new_archive()
    with reverts("NotaryRetentionBelowFloor", key, 0, 20, twenty, fifteen):
        notary(writer, a.hospital_a, "register", key, 0, trigger, fifteen, h("c"), ZERO32)
    notary(writer, a.hospital_a, "register", key, 0, trigger, twenty, h("c"), ZERO32)


# --------------------------------------------------------------------------------------------
# destroyBatch


def _registered(
    chain: RpcChain, writer: Writer, account: LocalAccount, n: int, deadline: int
) -> list[tuple[str, bytes]]:
    archives = [new_archive() for _ in range(n)]
    items = [(key, 3, OLD_TRIGGER, deadline, h(f"c{i}"), ZERO32)
             for i, (_, key) in enumerate(archives)]  # fmt: skip
    notary(writer, account, "registerBatch", items)
    return archives


def test_destroy_batch(chain: RpcChain, writer: Writer, consortium: Consortium) -> None:
    a = consortium.accounts
    deadline = latest_time(chain) + 1000
    archives = _registered(chain, writer, a.hospital_a, 3, deadline)
    items = [(key, h(f"certificate {i}")) for i, (_, key) in enumerate(archives)]
    with pytest.raises(ContractRevertError) as info:  # not before the deadline
        notary(writer, a.hospital_a, "destroyBatch", items)
    assert info.value.error_name == "NotaryRetentionNotReached"
    advance_time(chain.rpc, 1000)
    receipt = notary(writer, a.hospital_a, "destroyBatch", items)
    assert [e.name for e in receipt.events] == ["ArchiveDestroyed"] * 3
    assert [e.args for e in receipt.events] == [
        {"id": key, "custodian": a.hospital_a.address, "certificateHash": cert}
        for key, cert in items
    ]
    for (archive_id, _), (_, cert) in zip(archives, items, strict=True):
        record = chain.custody(archive_id)
        assert (record.state, record.certificate_hash) == (CustodyState.DESTROYED, cert)


def test_destroy_batch_is_all_or_nothing(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    deadline = latest_time(chain) + 10
    archives = _registered(chain, writer, a.hospital_a, 3, deadline)
    advance_time(chain.rpc, 100)
    keys = [key for _, key in archives]
    items = [(key, h("certificate")) for key in keys]
    with reverts("NotaryEmptyBatch"):
        notary(writer, a.hospital_a, "destroyBatch", [])
    for account in (a.regulator, a.outsider):
        with reverts("NotaryUnauthorized", account.address, 1):
            notary(writer, account, "destroyBatch", items)
    with reverts("NotaryNotCustodian", keys[0], a.hospital_b.address, a.hospital_a.address):
        notary(writer, a.hospital_b, "destroyBatch", items)
    with reverts("NotaryMissingCertificate", keys[1]):
        notary(writer, a.hospital_a, "destroyBatch", [items[0], (keys[1], ZERO32)])
    notary(writer, a.regulator, "placeHold", keys[2], h("court"))  # the last one is on hold
    with reverts("NotaryOnHold", keys[2], True):
        notary(writer, a.hospital_a, "destroyBatch", items)
    unknown = new_archive()[1]
    with reverts("NotaryUnexpectedState", unknown, 0, 1):
        notary(writer, a.hospital_a, "destroyBatch", [items[0], (unknown, h("x"))])
    for archive_id, _ in archives:  # nothing was destroyed by the refused batches
        assert chain.custody(archive_id).state is CustodyState.ARCHIVED
    with reverts("NotaryUnexpectedState", keys[0], 3, 1):  # the same archive twice
        notary(writer, a.hospital_a, "destroyBatch", [items[0], items[0]])
    notary(writer, a.hospital_a, "destroyBatch", items[:2])
    assert [chain.custody(i).state for i, _ in archives] == [
        CustodyState.DESTROYED, CustodyState.DESTROYED, CustodyState.ARCHIVED,
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# the registration path's reads and decoding (gas work of issue 2)


def test_active_with_floors_is_is_active_and_the_floors_word(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    """``activeWithFloors`` answers as ``isActive`` does and packs ``retentionFloors`` into one
    word (class c in bits 16c..16c+15), also after governance changed a floor."""
    a = consortium.accounts

    def packed() -> int:
        (floors,) = chain.call(REG, "retentionFloors")
        return sum(int(years) << (16 * c) for c, years in enumerate(floors))

    for account, role in (
        (a.hospital_a, 1),
        (a.hospital_a, 2),
        (a.regulator, 2),
        (a.regulator, 1),
        (a.outsider, 1),
        (a.hospital_a, 0),
    ):
        (expected,) = chain.call(REG, "isActive", [account.address, role])
        assert chain.call(REG, "activeWithFloors", [account.address, role]) == (expected, packed())
    assert chain.call(REG, "activeWithFloors", [a.hospital_a.address, 1])[0] is True
    assert chain.call(REG, "activeWithFloors", [a.outsider.address, 1])[0] is False
    pass_proposal(
        writer,
        consortium,
        writer(a.hospital_a).transact("proposeRetentionFloor", [4, 30], contract=REG),
    )
    (_, floors) = chain.call(REG, "activeWithFloors", [a.hospital_a.address, 1])
    assert (floors >> 64) & 0xFFFF == 30
    assert floors == packed()


def test_register_batch_refuses_out_of_range_words(chain: RpcChain, consortium: Consortium) -> None:
    """``registerBatch`` reads each entry's words directly: a record class above 255 or a time
    above 2^64 - 1 (not a valid ``uint8``/``uint64`` encoding) is refused as the ABI decoder
    refuses it, with no error data; the same entry in range is accepted."""
    a = consortium.accounts
    trigger = today(chain)
    least = minimum(chain, 0, trigger)
    _, key = new_archive()
    selector = keccak(text="registerBatch((bytes32,uint8,uint64,uint64,bytes32,bytes32)[])")[:4]
    words = "(bytes32,uint256,uint256,uint256,bytes32,bytes32)[]"

    def call(record_class: int, trig: int, deadline: int) -> Any:
        data = selector + abi_encode(
            [words], [[(key, record_class, trig, deadline, h("c"), ZERO32)]]
        )
        return chain.rpc.request(
            "eth_call",
            [{"from": a.hospital_a.address, "to": consortium.deployment.notary.address,
              "data": "0x" + data.hex()}, "latest"],
        )  # fmt: skip

    assert call(0, trigger, least) == "0x"  # in range: registered (in this call)
    for dirty in ((256, trigger, least), (0, trigger + (1 << 64), least), (0, trigger, 1 << 64)):
        with pytest.raises((ContractRevertError, RpcError)) as info:
            call(*dirty)
        if isinstance(info.value, ContractRevertError):  # no custom error: the decoder's refusal
            assert info.value.data == b""
        else:
            assert "revert" in str(info.value).lower()
