"""Gas targets of issue 2 §6, measured on a real anvil (hardfork shanghai): ``register`` ≤ 80k,
``registerBatch`` ≤ 50k per archive at 100 archives (with issue 10's floor check), ``anchorCheckpoint``
≤ 120k with a consistency
proof into a log of 10^6 entries; ``destroyBatch`` ≤ 35k per archive at 100 (issue 10); and the gas report covers every state-changing function."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anchoring.artifacts import load_artifact
from anchoring.chain import ContractCodec, JsonRpc
from tests.contracts.gas import GasRow, measure
from tests.fixtures.chain import Consortium, TestAccounts


@pytest.fixture(scope="module")
def rows(
    consortium: Consortium, chain_rpc: JsonRpc, test_accounts: TestAccounts
) -> Iterator[list[GasRow]]:
    """All measurements, on the session anvil, reverted afterwards."""
    snapshot = chain_rpc.request("evm_snapshot")
    try:
        yield measure(chain_rpc, test_accounts)
    finally:
        assert chain_rpc.request("evm_revert", [snapshot]) is True


def gas_of(rows: list[GasRow], function: str, case: str = "") -> int:
    found = [r.gas for r in rows if r.function == function and r.case.startswith(case)]
    assert found, f"no measurement of {function} {case}"
    return max(found)


# Issue 2 set register ≤ 80k and registerBatch ≤ 50k per archive at 100. Issue 10's trigger date
# and retention-floor check (a registry read, the calendar arithmetic of ``minimumDeadline``, 32
# more bytes of calldata and event data) first pushed them to 80.9k / 51.4k; the notary now reads
# the role and the floors in one registry call, writes the record's first slot once and decodes
# batch entries word by word, which brings both back under issue 2's bounds (docs/contracts.md).
REGISTER_MAX = 80_000
REGISTER_BATCH_PER_ARCHIVE_MAX = 50_000


def test_register_target(rows: list[GasRow]) -> None:
    assert gas_of(rows, "register") <= REGISTER_MAX


def test_batch_register_target(rows: list[GasRow]) -> None:
    per_archive = gas_of(rows, "registerBatch", "per archive at 100")
    assert per_archive <= REGISTER_BATCH_PER_ARCHIVE_MAX
    assert gas_of(rows, "registerBatch", "100 archives") == pytest.approx(
        per_archive * 100, abs=100
    )


def test_batch_destroy_target(rows: list[GasRow]) -> None:
    """Issue 10 §3: a batched destroy costs at most 35k gas per archive at 100 archives (a single
    ``destroy`` pays the 21k transaction base alone)."""
    per_archive = gas_of(rows, "destroyBatch", "per archive at 100")
    assert per_archive <= 35_000
    assert gas_of(rows, "destroyBatch", "100 archives") == pytest.approx(per_archive * 100, abs=100)
    assert per_archive < gas_of(rows, "destroy")


def test_anchor_checkpoint_target_for_a_million_entries(rows: list[GasRow]) -> None:
    typical = gas_of(rows, "anchorCheckpoint", "998,997 -> 10^6")
    worst = gas_of(rows, "anchorCheckpoint", "524,287 -> 10^6")
    assert typical <= 120_000
    assert worst <= 120_000
    assert worst > typical  # the longer proof costs more: the proof really is verified


def test_report_covers_every_state_changing_function(rows: list[GasRow]) -> None:
    for name in ("ConsortiumRegistry", "ArchiveNotary", "AttestationRevocations"):
        codec = ContractCodec(name, load_artifact(name).abi)
        writes = {f for f in codec.function_names() if not codec.is_view(f)}
        measured = {r.function for r in rows if r.contract == name}
        assert writes <= measured, f"{name}: no gas figure for {sorted(writes - measured)}"
