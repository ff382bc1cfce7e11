"""The chain's word before an irreversible step: destroying an archive's keys, or wrapping its key
to another hospital in a transfer offer.

The node mirrors a regulator's on-chain hold into its log only once its chain watcher has seen the
``HoldPlaced`` event (confirmations plus a pass). A destruction or an offer in that window passed
the local checks, destroyed the keys (or wrapped one to the recipient) and then saw its contract
call revert: content gone while the chain still shows the archive held. So these steps first read
the archive's custody record on chain (``ArchiveNotary.archive(id)``) and refuse when the chain
says it is on hold, not archived, or not ours. A chain that cannot be read refuses them too
(503): nothing irreversible happens on a guess.

What remains: a hold mined between this read and the contract call (one outbox round, seconds)
still makes the call revert after the keys were destroyed; the chain watcher then reports the
hold it cannot apply."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import select

from anchoring.chainview import CustodyRecord, CustodyState
from anchoring.errors import ChainError
from node.db import Database
from node.errors import ConflictError, UnavailableError
from node.models import NOT_HELD, Archive, ChainStatus

__all__ = ["CustodyReader", "chain_refusal", "chain_refusals", "read_custody"]

CustodyReader = Callable[[str], CustodyRecord]
"""``RpcChain.custody``: an archive's custody record on chain (``ChainError`` when unreadable)."""


def read_custody(custody: CustodyReader, archive_id: str, what: str) -> CustodyRecord:
    """The archive's custody record; ``UnavailableError`` (503) when the chain cannot be read,
    naming ``what`` was not done."""
    try:
        return custody(archive_id)
    except ChainError as exc:
        raise UnavailableError(
            f"the chain cannot be read to confirm archive {archive_id} is free of holds "
            f"({exc.code}); {what} was not done"
        ) from None


def chain_refusal(record: CustodyRecord, hospital: str) -> ConflictError | None:
    """Why the chain forbids destroying or offering the archive now, or None: on hold (a
    regulator's hold this node may not have mirrored yet), not ARCHIVED, or held by another
    hospital."""
    archive_id = record.archive_id
    if record.on_hold:
        placed_by = "a regulator" if record.hold_by_regulator else "its custodian"
        return ConflictError(
            f"archive {archive_id} is on hold on chain (placed by {placed_by})", code="on_hold"
        )
    if record.state is not CustodyState.ARCHIVED or record.custodian.lower() != hospital.lower():
        return ConflictError(
            f"archive {archive_id} is {record.state.name} on chain with custodian "
            f"{record.custodian}, not ARCHIVED here",
            code="chain_custody_mismatch",
        )
    return None


def chain_refusals(
    db: Database, custody: CustodyReader, hospital: str, archive_ids: Sequence[str], what: str
) -> dict[str, ConflictError]:
    """``chain_refusal`` of each archive of ``archive_ids`` held here and registered on chain
    (the others are left to the caller's own checks), with why; ``UnavailableError`` when the
    chain cannot be read (``what`` names what was not done)."""
    with db.session() as session:
        registered = set(
            session.execute(
                select(Archive.id).where(
                    Archive.id.in_(archive_ids),
                    Archive.state.not_in(NOT_HELD),
                    Archive.chain_status == ChainStatus.REGISTERED,
                )
            ).scalars()
        )
    refused: dict[str, ConflictError] = {}
    for archive_id in archive_ids:
        if archive_id in registered:
            refusal = chain_refusal(read_custody(custody, archive_id, what), hospital)
            if refusal is not None:
                refused[archive_id] = refusal
    return refused
