"""anvil's own knobs used by the re-planning tests (nothing is faked: the worker talks to the real
anvil throughout). The base-fee spike is the ``raise_base_fee`` fixture in this folder's conftest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from anchoring.chain import JsonRpc


@contextmanager
def manual_mining(rpc: JsonRpc) -> Iterator[None]:
    """Transactions wait in anvil's pool until ``evm_mine``."""
    rpc.request("evm_setAutomine", [False])
    try:
        yield
    finally:
        rpc.request("evm_setAutomine", [True])
