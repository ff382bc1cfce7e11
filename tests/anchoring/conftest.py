"""Fixtures of the anchoring tests.

- ``raise_base_fee`` (function): ``raise_base_fee()`` mines an empty block on the session anvil whose
  base fee is far above what pending transactions offer (they can never be mined at their price);
  the base fee is put back after the test, since ``evm_revert`` does not restore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from anchoring.chain import JsonRpc, RpcChain


@pytest.fixture
def raise_base_fee(chain: RpcChain, chain_rpc: JsonRpc) -> Iterator[Callable[[], None]]:
    """See the module docstring."""
    before = int(chain_rpc.block("latest")["baseFeePerGas"], 16)

    def spike() -> None:
        chain_rpc.request("anvil_setNextBlockBaseFeePerGas", [hex(max(before, 10**9) * 100)])
        chain_rpc.request("evm_mine")

    yield spike
    chain_rpc.request("evm_setAutomine", [True])
    chain_rpc.request("anvil_setNextBlockBaseFeePerGas", [hex(before)])
    chain_rpc.request("evm_mine")
