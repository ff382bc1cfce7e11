"""The read-only view of the chain that the verifier and the worker need.

Kept as a small protocol so the verification core stays pure: ``anchoring.chain.RpcChain`` (the
node's, web3) and ``anchoring.rpcview.NotaryReader`` (the verifier's, standard library only)
implement it over JSON-RPC; nothing else in the verifier knows how the chain is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class CustodyState(IntEnum):
    """On-chain custody states of an archive (``ArchiveNotary``)."""

    NONE = 0
    ARCHIVED = 1
    TRANSFER_PENDING = 2
    DESTROYED = 3


@dataclass(frozen=True, slots=True)
class OnChainCheckpoint:
    """One anchored checkpoint of a hospital's log, as the notary contract returns it."""

    hospital: str
    index: int
    size: int
    root: bytes
    anchored_at: int  # unix seconds (block timestamp)


@dataclass(frozen=True, slots=True)
class CustodyRecord:
    """The custody record of one archive, as ``ArchiveNotary.archive(id)`` returns it."""

    archive_id: str  # ULID string
    custodian: str  # checksummed address; zero address when state is NONE
    state: CustodyState
    on_hold: bool
    hold_by_regulator: bool
    record_class: int
    retention_deadline: int  # unix seconds
    commitment: bytes
    pending_recipient: str  # zero address unless TRANSFER_PENDING
    certificate_hash: bytes  # zero unless DESTROYED


class ChainReader(Protocol):
    """What the verifier may ask of the chain. Implementations raise ``ChainError`` when
    unreachable, ``NotANotaryError`` when the notary address answers unlike an ArchiveNotary."""

    def chain_id(self) -> int: ...

    def notary_address(self) -> str: ...

    def checkpoint_count(self, hospital: str) -> int: ...

    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint: ...

    def custody(self, archive_id: str) -> CustodyRecord: ...
