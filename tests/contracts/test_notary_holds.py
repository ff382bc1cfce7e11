"""Who releases a regulator's hold (on anvil): the notary records which regulator placed a hold
(``holdPlacedBy``; zero for the custodian's own); a regulator's hold is released only by that regulator while it is an active
regulator, by any active regulator once it is not, and never by a hospital
(docs/contracts.md "Legal holds")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, RpcChain, TxReceipt
from tests.contracts.helpers import (
    OLD_TRIGGER,
    ONE_YEAR,
    ZERO32,
    ZERO_ADDRESS,
    h,
    latest_time,
    new_archive,
    reverts,
)
from tests.fixtures.chain import Consortium, admit_through_governance

Writer = Callable[[LocalAccount], ContractWriter]
ROLE_REGULATOR = 2


def notary(writer: Writer, account: LocalAccount, function: str, *args: Any) -> TxReceipt:
    return writer(account).transact(function, list(args))


def _archived(chain: RpcChain, writer: Writer, hospital: LocalAccount) -> tuple[str, bytes]:
    archive_id, key = new_archive()
    deadline = latest_time(chain) + ONE_YEAR
    notary(writer, hospital, "register", key, 2, OLD_TRIGGER, deadline, h("content"), ZERO32)
    return archive_id, key


def _second_regulator(chain: RpcChain, consortium: Consortium) -> LocalAccount:
    a = consortium.accounts
    admit_through_governance(
        chain, a.hospital_a, [a.hospital_b], a.outsider, ROLE_REGULATOR, "Second Regulator"
    )
    return a.outsider


def _suspend(writer: Writer, consortium: Consortium, member: LocalAccount) -> None:
    a = consortium.accounts
    receipt = writer(a.hospital_a).transact(
        "proposeSuspension", [member.address], contract="ConsortiumRegistry"
    )
    pid = receipt.event("ProposalCreated").args["id"]
    writer(a.hospital_b).transact("approve", [pid], contract="ConsortiumRegistry")
    writer(a.hospital_a).transact("execute", [pid], contract="ConsortiumRegistry")


def test_only_the_placing_regulator_releases_its_hold(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    other = _second_regulator(chain, consortium)
    archive_id, key = _archived(chain, writer, a.hospital_a)
    assert chain.hold_placed_by(archive_id) == ZERO_ADDRESS
    notary(writer, a.regulator, "placeHold", key, h("court order"))
    assert chain.hold_placed_by(archive_id) == a.regulator.address
    with reverts("NotaryHoldPlacedByAnother", key, a.regulator.address):
        notary(writer, other, "releaseHold", key, h("not yours"))
    with reverts("NotaryAlreadyOnHold", key, True):
        notary(writer, other, "placeHold", key, h("mine now"))
    with reverts("NotaryUnauthorized", a.hospital_a.address, ROLE_REGULATOR):
        notary(writer, a.hospital_a, "releaseHold", key, h("custodian"))
    released = notary(writer, a.regulator, "releaseHold", key, h("lifted"))
    assert released.event("HoldReleased").args["by"] == a.regulator.address
    assert chain.hold_placed_by(archive_id) == ZERO_ADDRESS
    assert chain.custody(archive_id).on_hold is False


def test_a_hold_whose_regulator_left_is_released_by_another_regulator(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    other = _second_regulator(chain, consortium)
    archive_id, key = _archived(chain, writer, a.hospital_a)
    notary(writer, a.regulator, "placeHold", key, h("court order"))
    _suspend(writer, consortium, a.regulator)
    notary(writer, other, "releaseHold", key, h("orphaned hold lifted"))
    assert chain.custody(archive_id).on_hold is False


def test_a_custodian_hold_records_no_regulator_and_a_takeover_records_it(
    chain: RpcChain, writer: Writer, consortium: Consortium
) -> None:
    a = consortium.accounts
    other = _second_regulator(chain, consortium)
    archive_id, key = _archived(chain, writer, a.hospital_a)
    notary(writer, a.hospital_a, "placeHold", key, h("own"))
    assert chain.hold_placed_by(archive_id) == ZERO_ADDRESS  # the custodian's own hold
    notary(writer, a.regulator, "placeHold", key, h("takeover"))
    assert chain.hold_placed_by(archive_id) == a.regulator.address
    with reverts("NotaryHoldPlacedByAnother", key, a.regulator.address):
        notary(writer, other, "releaseHold", key, h("x"))
    notary(writer, a.regulator, "releaseHold", key, h("done"))
    notary(writer, a.hospital_a, "placeHold", key, h("own again"))
    notary(writer, a.hospital_a, "releaseHold", key, h("own done"))
    assert chain.hold_placed_by(archive_id) == ZERO_ADDRESS
