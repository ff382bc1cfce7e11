"""The chain watcher: follows ``ArchiveNotary`` and ``ConsortiumRegistry`` events and reacts.

It reads logs from the block after its stored cursor up to ``latest - confirmations``, in bounded
ranges, dispatches each event to an idempotent handler, then stores the new cursor. A crash between
the handlers and the cursor update replays those blocks; every handler checks the current state
first, so replaying changes nothing (restart-safe).

Reactions: incoming transfer offers (to the federation service), acceptance/rejection/cancellation
of transfers, holds placed or released by regulators on archives this node holds (logged as
HOLD_PLACE/HOLD_RELEASE with the regulator's address as actor), and member admissions, suspensions
and key rotations (the peer verifier's cache is dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from anchoring.chain import DecodedEvent, RpcChain, hex_to_bytes
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError
from anchoring.events import HoldPlaceData, HoldPlaceEvent, HoldReleaseData, HoldReleaseEvent
from anchoring.ids import IdentifierError, archive_id_from_key, normalize_address
from node.db import Database, UnitOfWork, UnitRunner
from node.ledger import Ledger
from node.models import Archive, ChainCursor
from node.services.transfers import TransferService

log = logging.getLogger(__name__)

CURSOR = "contracts"
MAX_RANGE = 2_000
MEMBER_EVENTS = frozenset(
    {
        "MemberAdmitted",
        "MemberSuspended",
        "MemberReinstated",
        "MemberRoleChanged",
        "PublicKeyRotated",
    }
)


@dataclass
class WatcherStatus:
    """What ``/healthz`` shows about the watcher."""

    cursor: int | None = None
    last_error: str | None = None
    events_seen: int = 0


class ChainWatcher:
    """Follows contract events from the last processed block."""

    def __init__(
        self,
        *,
        deployment: Deployment,
        chain: RpcChain,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        transfers: TransferService,
        membership_changed: Callable[[], None],
        confirmations: int,
    ) -> None:
        self.deployment = deployment
        self.chain = chain
        self.db = db
        self.units = units
        self.ledger = ledger
        self.transfers = transfers
        self.membership_changed = membership_changed
        self.confirmations = confirmations
        self.status = WatcherStatus()

    def tick(self) -> int:
        """Process one range of confirmed blocks; returns the number of events handled."""
        try:
            return self._tick()
        except AnchoringError as exc:
            self.status.last_error = str(exc)
            log.warning("chain watcher: %s", exc)
            return 0

    def _tick(self) -> int:
        rpc = self.chain.rpc
        safe = rpc.block_number() - self.confirmations
        cursor = self._cursor()
        if safe <= cursor:
            self.status.cursor = cursor
            return 0
        until = min(safe, cursor + MAX_RANGE)
        addresses = [self.deployment.notary.address, self.deployment.registry.address]
        logs = rpc.request(
            "eth_getLogs",
            [{"fromBlock": hex(cursor + 1), "toBlock": hex(until), "address": addresses}],
        )
        events = self.chain.notary.decode_logs(logs, addresses[0])
        events += self.chain.registry.decode_logs(logs, addresses[1])
        events.sort(key=lambda e: (e.block_number, e.log_index))
        for event in events:
            self._dispatch(event)
        self._save_cursor(until)
        self.status.cursor = until
        self.status.last_error = None
        self.status.events_seen += len(events)
        return len(events)

    # -- handlers ------------------------------------------------------------------------------

    def _dispatch(self, event: DecodedEvent) -> None:
        me = self.ledger.hospital
        args = event.args
        if event.name in MEMBER_EVENTS:
            self.membership_changed()
            return
        if event.address != self.deployment.notary.address or "id" not in args:
            return
        try:
            archive_id = archive_id_from_key(_bytes(args["id"]))
        except IdentifierError:
            return  # not an id this software issues
        if event.name == "TransferOffered" and _addr(args["to"]) == me:
            self.transfers.offer_seen(
                archive_id, _addr(args["from"]), f"{event.block_number}:{event.log_index}"
            )
        elif event.name == "TransferAccepted" and _addr(args["from"]) == me:
            self.transfers.offer_accepted(archive_id, _addr(args["to"]))
        elif event.name == "TransferRejected" and _addr(args["from"]) == me:
            self.transfers.offer_rejected(archive_id, _addr(args["to"]), _bytes(args["reasonHash"]))
        elif event.name == "TransferCancelled" and _addr(args["to"]) == me:
            self.transfers.offer_withdrawn(archive_id)
        elif event.name == "HoldPlaced" and bool(args["byRegulator"]):
            self._regulator_hold(archive_id, _addr(args["by"]), _bytes(args["reasonHash"]), True)
        elif event.name == "HoldReleased" and _addr(args["by"]) != me:
            self._regulator_hold(archive_id, _addr(args["by"]), _bytes(args["reasonHash"]), False)

    def _regulator_hold(self, archive_id: str, by: str, reason: bytes, place: bool) -> None:
        """Mirror a regulator's hold (or its release) into this node's log, once."""

        def unit(uow: UnitOfWork) -> None:
            archive = uow.session.get(Archive, archive_id)
            if archive is None or not self.ledger.holds(archive):
                return
            state = self.ledger.state(uow.session, archive)
            if place and not (state.on_hold and state.hold_by_regulator):
                data: Any = HoldPlaceData(reason_hash=reason.hex(), by_regulator=True)
                self.ledger.record(uow, archive, state, HoldPlaceEvent, by, data)
            elif not place and state.on_hold and state.hold_by_regulator:
                data = HoldReleaseData(reason_hash=reason.hex())
                self.ledger.record(uow, archive, state, HoldReleaseEvent, by, data)

        self.units.run(unit)

    # -- cursor --------------------------------------------------------------------------------

    def _cursor(self) -> int:
        with self.db.session() as session:
            row = session.get(ChainCursor, CURSOR)
            if row is not None:
                return int(row.block)
        return max(0, self.deployment.deploy_block - 1)

    def _save_cursor(self, block: int) -> None:
        def unit(uow: UnitOfWork) -> None:
            _store_cursor(uow.session, block)

        self.units.run(unit)


def _store_cursor(session: Session, block: int) -> None:
    row = session.get(ChainCursor, CURSOR)
    now = datetime.now(UTC)
    if row is None:
        session.add(ChainCursor(name=CURSOR, block=block, updated_at=now))
    else:
        row.block = max(row.block, block)
        row.updated_at = now


def _addr(value: Any) -> str:
    return normalize_address(value if isinstance(value, str) else "0x" + bytes(value).hex())


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else hex_to_bytes(str(value))
