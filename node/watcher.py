"""The chain watcher: follows ``ArchiveNotary`` and ``ConsortiumRegistry`` events and reacts.

It reads logs from the block after its stored cursor up to ``latest - confirmations``, in bounded
ranges, dispatches each event to an idempotent handler, then stores the new cursor. A crash between
the handlers and the cursor update replays those blocks; every handler checks the current state
first, so replaying changes nothing (restart-safe).

Reactions: incoming transfer offers (to the federation service), acceptance/rejection/cancellation
of transfers, holds placed or released by regulators on archives this node holds (logged as
HOLD_PLACE/HOLD_RELEASE with the regulator's address as actor), and member admissions, suspensions
and key rotations (the peer verifier's cache is dropped).

One event never stops the watcher. An event this node cannot apply, and never will by trying
again — the lifecycle refuses it for the archive's state here (a ``LifecycleError`` other than
``time_order`` and ``prev_mismatch``), or a regulator's hold names an archive this node has
destroyed while the chain still has it live — is a critical ``chain_event_unapplied`` alert
(subject: the archive id; detail: event, block, log index, reason code), logged, and passed
over: the cursor moves on. Anything else a handler raises (the chain or the database
unavailable, this node's clock too far behind: ``time_order``, a concurrent writer:
``prev_mismatch``, an unexpected error) may pass, so the whole range is read again at the next
tick without moving the cursor. ``WatcherStatus`` records since when the watcher has been failing
(or stuck in one tick); once that has lasted ``stall_seconds`` (``watcher_stall_seconds``) the
watcher is ``stalled``: ``/healthz`` reports ``watcher_stalled`` and the monitor raises it as an
alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from anchoring.chain import DecodedEvent, RpcChain, hex_to_bytes
from anchoring.chainview import CustodyState
from anchoring.deployment import Deployment
from anchoring.errors import (
    AnchoringError,
    EventTimeOrderError,
    LifecycleError,
    PrevHashMismatchError,
)
from anchoring.events import HoldPlaceData, HoldPlaceEvent, HoldReleaseData, HoldReleaseEvent
from anchoring.ids import IdentifierError, archive_id_from_key, normalize_address
from node.alerts import AlertNotice, AlertSink, LoggingAlertSink, Severity
from node.db import Database, UnitOfWork, UnitRunner
from node.ledger import Ledger
from node.models import Archive, CatalogueState, ChainCursor
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


UNAPPLIED_ALERT = "chain_event_unapplied"
"""Alert kind of a chain event this node could not apply (subject: the archive id)."""
DEFAULT_STALL_SECONDS = 300.0
"""Seconds of failing ticks (or of one tick not returning) after which the watcher is stalled."""


class Unapplied(Exception):
    """A chain event this node cannot apply, and never will by trying again; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WatcherStatus:
    """What ``/healthz`` shows about the watcher. Times are ``time.monotonic()`` seconds."""

    cursor: int | None = None
    last_error: str | None = None
    events_seen: int = 0
    events_unapplied: int = 0
    failing_since: float | None = None
    """Start of the current run of failed ticks (None after a tick that succeeded)."""
    tick_started: float | None = None
    """Start of the tick under way (None between ticks)."""

    def stalled(self, after: float, now: float | None = None) -> bool:
        """Whether the watcher has not moved for ``after`` seconds: its ticks have failed since
        then, or one tick has not returned since then (a chain that never answers)."""
        now = time.monotonic() if now is None else now
        since = [t for t in (self.failing_since, self.tick_started) if t is not None]
        return bool(since) and now - min(since) >= after


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
        alerts: AlertSink | None = None,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> None:
        self.deployment = deployment
        self.chain = chain
        self.db = db
        self.units = units
        self.ledger = ledger
        self.transfers = transfers
        self.membership_changed = membership_changed
        self.confirmations = confirmations
        self.alerts: AlertSink = alerts if alerts is not None else LoggingAlertSink()
        self.stall_seconds = stall_seconds
        self.status = WatcherStatus()

    def stalled(self) -> bool:
        """Whether the watcher has not moved for ``stall_seconds`` (``/healthz``)."""
        return self.status.stalled(self.stall_seconds)

    def tick(self) -> int:
        """Process one range of confirmed blocks; returns the number of events handled. A failure
        (the chain or the database unavailable …) leaves the cursor where it was: the same range
        is read again at the next tick. An ``AnchoringError`` is logged here; anything else is
        re-raised (the scheduler logs it with its traceback)."""
        status = self.status
        status.tick_started = time.monotonic()
        try:
            handled = self._tick()
        except Exception as exc:
            if status.failing_since is None:
                status.failing_since = status.tick_started
            status.last_error = str(exc) or type(exc).__name__
            if not isinstance(exc, AnchoringError):
                raise
            log.warning("chain watcher: %s", exc)
            return 0
        finally:
            status.tick_started = None
        status.failing_since = None
        status.last_error = None
        return handled

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
        try:
            self._handle(event, archive_id, me)
        except (EventTimeOrderError, PrevHashMismatchError):
            raise  # this node's clock is behind, or another writer moved the archive: retried
        except LifecycleError as exc:
            self._unapplied(event, archive_id, exc.code, str(exc))
        except Unapplied as exc:
            self._unapplied(event, archive_id, exc.code, str(exc))

    def _unapplied(self, event: DecodedEvent, archive_id: str, code: str, message: str) -> None:
        """An event this node cannot apply: a critical alert, and the watcher goes on."""
        self.status.events_unapplied += 1
        log.error(
            "chain watcher: %s of archive %s (block %d, log %d) not applied: %s",
            event.name, archive_id, event.block_number, event.log_index, message,
        )  # fmt: skip
        detail: dict[str, str | int | bool] = {
            "event": event.name,
            "block": event.block_number,
            "log_index": event.log_index,
            "reason": code,
        }
        self.alerts.raise_alert(AlertNotice(UNAPPLIED_ALERT, archive_id, Severity.CRITICAL, detail))

    def _handle(self, event: DecodedEvent, archive_id: str, me: str) -> None:
        args = event.args
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

        def unit(uow: UnitOfWork) -> bool:
            """Logs what is due; True when the archive is DESTROYED here."""
            archive = uow.session.get(Archive, archive_id)
            if archive is None or not self.ledger.holds(archive):
                return False  # unknown, arriving, or another hospital's now (it mirrors the hold)
            if not self.ledger.holds_live(archive):
                return True
            state = self.ledger.state(uow.session, archive)
            if place and not (state.on_hold and state.hold_by_regulator):
                data: Any = HoldPlaceData(reason_hash=reason.hex(), by_regulator=True)
                self.ledger.record(uow, archive, state, HoldPlaceEvent, by, data)
            elif not place and state.on_hold and state.hold_by_regulator:
                data = HoldReleaseData(reason_hash=reason.hex())
                self.ledger.record(uow, archive, state, HoldReleaseEvent, by, data)
            return False

        if not self.units.run(unit):
            return
        # Destroyed here. Once the chain has it DESTROYED too, the event is history (a replay:
        # the hold was released before the destruction, which the contract refuses on hold).
        # Still live on chain, its DESTROY not mined yet: the hold cannot be logged, and the
        # chain and this node disagree about the archive (read outside the unit of work).
        if self.chain.custody(archive_id).state is CustodyState.DESTROYED:
            return
        raise Unapplied(
            "archive_destroyed",
            f"{'HOLD_PLACE' if place else 'HOLD_RELEASE'} refused: the archive is "
            f"{CatalogueState.DESTROYED.value} here and live on chain",
        )

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
