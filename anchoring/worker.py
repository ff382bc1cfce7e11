"""The anchoring worker: sends every chain transaction of the node's key, exactly once, in order.

Checkpoints of the log and custody calls (register, transfer, hold …) all go through one outbox
(``chain_outbox``). Each row moves ``pending → submitted → confirmed`` (or ``failed``), and every step
is committed before the next external action:

1. *plan* (one transaction): a checkpoint row (size, root of the current head) and its outbox row;
2. *sign* (one transaction): the next nonce, the raw signed transaction and its hash are recorded;
3. *broadcast* the recorded raw bytes (repeatable: the same bytes, the same hash);
4. *confirm* (one transaction): the receipt's block, time and — for checkpoints — the chain index.

A crash between any two steps is repaired on the next ``tick``: a planned row is signed, a signed row
is re-broadcast (or found mined), nothing is signed twice with two nonces. On start ``reconcile``
compares the recorded checkpoints with the chain and refuses loudly if the chain lost them.

The worker is a plain object (``tick()`` for tests and scripts); ``node`` runs it under APScheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from anchoring import storage
from anchoring.chain import ContractWriter, NonceTooLowError, SignedTx, TxReceipt
from anchoring.errors import ChainError, ChainStateLostError, LogError
from anchoring.storage import Checkpoint, CheckpointState, OutboxItem, OutboxState

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"
CALL_KIND = "call"
BATCHABLE = {"register": "registerBatch"}
"""Custody calls the worker may coalesce into one transaction (function → batch function)."""


# --------------------------------------------------------------------------------------------
# Configuration and status


@dataclass(frozen=True)
class WorkerConfig:
    """When to anchor and how patiently to talk to the chain."""

    interval: float = 1.0  # seconds between checkpoints while events arrive
    max_batch: int = 1000  # anchor as soon as this many events wait, whatever the interval
    confirmations: int = 1  # blocks (including the receipt's) before a tx counts as confirmed
    max_in_flight: int = 16  # signed, unconfirmed transactions at once
    register_batch: int = 100  # register calls coalesced into one registerBatch
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


@dataclass
class WorkerStatus:
    """What ``/healthz`` and ``/metrics`` show about anchoring."""

    log_size: int = 0
    anchored_size: int = 0
    events_behind: int = 0
    seconds_behind: float = 0.0
    pending_transactions: int = 0
    chain_reachable: bool = True
    chain_state_lost: bool = False
    last_error: str | None = None
    last_checkpoint_at: datetime | None = None
    consecutive_failures: int = 0


OutcomeHandler = Callable[[Session, OutboxItem], None]
"""Called inside the transaction that records an outbox row as confirmed or failed."""


@dataclass
class AnchoringWorker:
    """Plans checkpoints, signs and sends outbox transactions, records their outcome."""

    sessions: sessionmaker[Session]
    chain: ContractWriter
    config: WorkerConfig = field(default_factory=WorkerConfig)
    on_confirmed: dict[str, OutcomeHandler] = field(default_factory=dict)
    on_failed: dict[str, OutcomeHandler] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    fault_hook: Callable[[str], None] | None = None
    """Test seam: called at ``planned``, ``signed``, ``broadcast`` and ``recorded`` (after each
    step's commit or send) so fault-injection tests can kill the process exactly there."""
    status: WorkerStatus = field(default_factory=WorkerStatus)
    _backoff_until: float = 0.0
    _backoff: float = 0.0
    _reconciled: bool = False

    # -- public --------------------------------------------------------------------------------

    def tick(self) -> WorkerStatus:
        """One pass: reconcile (first time), plan, sign, broadcast, confirm. Never raises on
        chain trouble: it backs off and records the error in ``status``."""
        now = self.clock()
        if now < self._backoff_until:
            self._refresh_lag()
            return self.status
        try:
            if not self._reconciled:
                self.reconcile()
            self._confirm()
            self._plan_checkpoint()
            self._sign_and_send()
            self._confirm()
        except ChainStateLostError as exc:
            self.status.chain_state_lost = True
            self._fail_pass(exc, now)
        except ChainError as exc:
            self._fail_pass(exc, now)
        else:
            self.status.chain_reachable = True
            self.status.last_error = None
            self.status.consecutive_failures = 0
            self._backoff = 0.0
        self._refresh_lag()
        return self.status

    def run_until_anchored(self, timeout: float = 60.0, poll: float = 0.2) -> WorkerStatus:
        """Tick until every appended event is covered by a confirmed checkpoint (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.tick()
            if status.events_behind == 0 and status.pending_transactions == 0:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"anchoring still {status.events_behind} events behind after {timeout}s "
                    f"(last error: {status.last_error})"
                )
            time.sleep(poll)

    def reconcile(self) -> None:
        """Compare recorded checkpoints with the chain; raise ``ChainStateLostError`` if the chain
        no longer holds what this node recorded as confirmed."""
        if not self.chain.has_notary_code():
            raise ChainStateLostError(
                "no ArchiveNotary code at the deployed address: the chain lost its state "
                "(re-deploy and run `archivechain anchor replay`)"
            )
        with self.sessions() as session:
            confirmed = list(
                session.execute(
                    select(Checkpoint)
                    .where(Checkpoint.state == CheckpointState.CONFIRMED)
                    .order_by(Checkpoint.size)
                ).scalars()
            )
        on_chain = self.chain.chain.checkpoint_count(self.chain.address)
        if len(confirmed) > on_chain:
            raise ChainStateLostError(
                f"this node recorded {len(confirmed)} confirmed checkpoints but the chain holds "
                f"{on_chain}: the chain lost its state (run `archivechain anchor replay`)"
            )
        if confirmed:
            latest = confirmed[-1]
            index = latest.chain_index if latest.chain_index is not None else on_chain - 1
            theirs = self.chain.chain.checkpoint_at(self.chain.address, index)
            if theirs.size != latest.size or theirs.root != latest.root:
                raise ChainStateLostError(
                    f"checkpoint {index} on chain is (size {theirs.size}, root {theirs.root.hex()}) "
                    f"but this node recorded (size {latest.size}, root {latest.root.hex()})"
                )
        self._reconciled = True

    # -- steps ---------------------------------------------------------------------------------

    def _plan_checkpoint(self) -> None:
        with self.sessions.begin() as session:
            in_flight = session.execute(
                select(func.count())
                .select_from(Checkpoint)
                .where(Checkpoint.state.in_([CheckpointState.PLANNED, CheckpointState.SUBMITTED]))
            ).scalar_one()
            if in_flight:
                return
            head = storage.current_head(session)
            last = _latest_checkpoint(session)
            covered = last.size if last else 0
            waiting = head.size - covered
            if waiting <= 0:
                return
            # Due when enough events wait, or when the oldest waiting event waited long enough:
            # no event waits more than ``interval`` seconds for its checkpoint to be planned.
            due = waiting >= self.config.max_batch
            if not due:
                oldest = storage.entry_at(session, covered).time.timestamp()
                due = self.clock() - oldest >= self.config.interval
            if not due:
                return
            now = datetime.now(UTC)
            item = OutboxItem(
                kind=CHECKPOINT_KIND,
                payload={"size": head.size, "root": head.root.hex()},
                state=OutboxState.PENDING,
                created_at=now,
                updated_at=now,
            )
            session.add(item)
            session.flush()
            session.add(
                Checkpoint(
                    size=head.size,
                    root=head.root,
                    state=CheckpointState.PLANNED,
                    outbox_id=item.id,
                    planned_at=now,
                )
            )
        self._fault("planned")

    def _sign_and_send(self) -> None:
        while True:
            with self.sessions() as session:
                in_flight = session.execute(
                    select(func.count(func.distinct(OutboxItem.tx_hash))).where(
                        OutboxItem.state == OutboxState.SUBMITTED
                    )
                ).scalar_one()
                pending = list(
                    session.execute(
                        select(OutboxItem)
                        .where(OutboxItem.state == OutboxState.PENDING)
                        .order_by(OutboxItem.id)
                        .limit(self.config.register_batch)
                    ).scalars()
                )
                checkpoint_in_flight = session.execute(
                    select(func.count())
                    .select_from(OutboxItem)
                    .where(
                        OutboxItem.state == OutboxState.SUBMITTED,
                        OutboxItem.kind == CHECKPOINT_KIND,
                    )
                ).scalar_one()
            if not pending or in_flight >= self.config.max_in_flight:
                return
            if pending[0].kind == CHECKPOINT_KIND and checkpoint_in_flight:
                return  # its consistency proof starts from the checkpoint still in flight
            group = _next_group(pending, self.config.register_batch)
            signed = self._sign_group(group)
            if signed is None:
                continue  # the group was resolved without a transaction (e.g. already on chain)
            self._fault("signed")
            try:
                self.chain.broadcast(signed.raw)
            except NonceTooLowError:
                self._resign(signed.tx_hash)
            # Other ChainErrors propagate: the rows stay SUBMITTED and are re-broadcast later.
            self._fault("broadcast")

    def _sign_group(self, group: list[OutboxItem]) -> SignedTx | None:
        with self.sessions.begin() as session:
            rows = [session.get_one(OutboxItem, item.id) for item in group]
            if any(row.state != OutboxState.PENDING for row in rows):
                return None
            head = rows[0]
            if head.kind == CHECKPOINT_KIND:
                call = self._checkpoint_call(session, head)
                if call is None:
                    return None
                function, args = call
            elif len(rows) > 1:
                # registerBatch takes one array of the single calls' argument tuples.
                function = BATCHABLE[head.payload["function"]]
                args = [[tuple(_from_json(row.payload["args"])) for row in rows]]
            else:
                function = head.payload["function"]
                args = [_from_json(value) for value in head.payload["args"]]
            contract = head.payload.get("contract", "ArchiveNotary")
            nonce = max(self.chain.confirmed_nonce(), _max_local_nonce(session) + 1)
            signed = self.chain.sign_call(function, args, nonce, contract=contract)
            now = datetime.now(UTC)
            for row in rows:
                row.state = OutboxState.SUBMITTED
                row.nonce = signed.nonce
                row.tx_hash = signed.tx_hash
                row.raw_tx = signed.raw
                row.attempts += 1
                row.updated_at = now
            if head.kind == CHECKPOINT_KIND:
                checkpoint = _checkpoint_for(session, head.id)
                checkpoint.state = CheckpointState.SUBMITTED
                checkpoint.tx_hash = signed.tx_hash
        return signed

    def _checkpoint_call(self, session: Session, item: OutboxItem) -> tuple[str, list[Any]] | None:
        """Arguments of ``anchorCheckpoint`` against the chain's latest checkpoint, or None when
        the row is already settled by what the chain holds."""
        size = int(item.payload["size"])
        root = bytes.fromhex(item.payload["root"])
        checkpoint = _checkpoint_for(session, item.id)
        count = self.chain.chain.checkpoint_count(self.chain.address)
        if count == 0:
            return "anchorCheckpoint", [size, root, []]
        latest = self.chain.chain.checkpoint_at(self.chain.address, count - 1)
        if latest.size == size and latest.root == root:
            # Mined before a crash, or anchored by a replay: record, never send twice.
            _settle_confirmed(
                item, checkpoint, index=count - 1, block_number=None, block_time=latest.anchored_at
            )
            self._run_handler(self.on_confirmed, session, item)
            return None
        if latest.size > size:
            later = storage.tree_head_at(session, min(latest.size, storage.current_size(session)))
            if later.size == latest.size and later.root == latest.root:
                # A later head of this same log is already anchored (e.g. by a replay).
                item.state = OutboxState.FAILED
                item.error = checkpoint.error = f"superseded by checkpoint of size {latest.size}"
                checkpoint.state = CheckpointState.FAILED
                return None
        ours = storage.tree_head_at(session, latest.size) if latest.size <= size else None
        if ours is None or ours.root != latest.root:
            raise ChainStateLostError(
                f"the chain's latest checkpoint (size {latest.size}, root {latest.root.hex()}) is "
                "not a prefix of this node's log; refusing to anchor"
            )
        proof = storage.consistency_proof(session, latest.size, size)
        return "anchorCheckpoint", [size, root, proof]

    def _resign(self, tx_hash: str) -> None:
        """The recorded nonce was consumed elsewhere: put the rows back to pending to re-sign."""
        with self.sessions.begin() as session:
            for row in _rows_for_tx(session, tx_hash):
                row.state = OutboxState.PENDING
                row.nonce = row.tx_hash = row.raw_tx = None
                row.updated_at = datetime.now(UTC)
                if row.kind == CHECKPOINT_KIND:
                    checkpoint = _checkpoint_for(session, row.id)
                    checkpoint.state = CheckpointState.PLANNED
                    checkpoint.tx_hash = None
        log.warning("transaction %s lost its nonce; it will be signed again", tx_hash)

    def _confirm(self) -> None:
        with self.sessions() as session:
            submitted = list(
                session.execute(
                    select(OutboxItem.tx_hash, OutboxItem.raw_tx)
                    .where(OutboxItem.state == OutboxState.SUBMITTED)
                    .distinct()
                ).all()
            )
        if not submitted:
            return
        latest_block = self.chain.latest_block()
        for tx_hash, raw in submitted:
            assert tx_hash is not None
            assert raw is not None
            receipt = self.chain.receipt(tx_hash)
            if receipt is None:
                if not self.chain.is_known(tx_hash):
                    try:
                        self.chain.broadcast(raw)
                    except NonceTooLowError:
                        self._resign(tx_hash)
                continue
            if latest_block - receipt.block_number + 1 < self.config.confirmations:
                continue
            reason = None if receipt.status == 1 else self.chain.revert_reason(tx_hash)
            self._record_outcome(receipt, reason)
            self._fault("recorded")

    def _record_outcome(self, receipt: TxReceipt, reason: str | None) -> None:
        timestamp = self.chain.chain.block_timestamp(receipt.block_number)
        block_time = datetime.fromtimestamp(timestamp, UTC)
        checkpoint_index = _anchored_index(receipt)
        with self.sessions.begin() as session:
            for row in _rows_for_tx(session, receipt.tx_hash):
                row.block_number = receipt.block_number
                row.block_time = block_time
                row.updated_at = datetime.now(UTC)
                checkpoint = (
                    _checkpoint_for(session, row.id) if row.kind == CHECKPOINT_KIND else None
                )
                if reason is None:
                    row.state = OutboxState.CONFIRMED
                    if checkpoint is not None:
                        _settle_confirmed(
                            row,
                            checkpoint,
                            index=checkpoint_index,
                            block_number=receipt.block_number,
                            block_time=timestamp,
                        )
                        self.status.last_checkpoint_at = block_time
                    self._run_handler(self.on_confirmed, session, row)
                else:
                    row.state = OutboxState.FAILED
                    row.error = reason
                    if checkpoint is not None:
                        checkpoint.state = CheckpointState.FAILED
                        checkpoint.error = reason
                    log.error(
                        "chain transaction %s (%s) reverted: %s", receipt.tx_hash, row.kind, reason
                    )
                    self._run_handler(self.on_failed, session, row)

    def _run_handler(
        self, handlers: dict[str, OutcomeHandler], session: Session, row: OutboxItem
    ) -> None:
        key = row.payload.get("function", row.kind) if row.kind == CALL_KIND else row.kind
        handler = handlers.get(key)
        if handler is not None:
            handler(session, row)

    def replay_lost(self) -> int:
        """Re-queue every confirmed transaction the chain no longer knows (a dev chain that lost
        state and was redeployed, or restored from an older dump), in their original order, so
        the next ticks re-anchor the same checkpoints (same sizes and roots) and re-send the same
        custody calls. Returns how many outbox rows were re-queued. ``archivechain anchor replay``."""
        with self.sessions() as session:
            confirmed = list(
                session.execute(
                    select(OutboxItem.id, OutboxItem.tx_hash)
                    .where(OutboxItem.state == OutboxState.CONFIRMED)
                    .order_by(OutboxItem.id)
                ).all()
            )
        lost = [
            row_id for row_id, tx_hash in confirmed if tx_hash and not self.chain.is_known(tx_hash)
        ]
        if not lost:
            return 0
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            for row_id in lost:
                row = session.get_one(OutboxItem, row_id)
                row.state = OutboxState.PENDING
                row.nonce = row.tx_hash = row.raw_tx = row.block_number = row.block_time = None
                row.error = "replayed: the chain lost the original transaction"
                row.updated_at = now
                if row.kind == CHECKPOINT_KIND:
                    checkpoint = _checkpoint_for(session, row.id)
                    checkpoint.state = CheckpointState.PLANNED
                    checkpoint.chain_index = checkpoint.tx_hash = checkpoint.block_number = None
                    checkpoint.block_time = checkpoint.confirmed_at = None
        self._reconciled = False
        self.status.chain_state_lost = False
        log.warning("re-queued %d transactions the chain lost", len(lost))
        return len(lost)

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # -- status --------------------------------------------------------------------------------

    def _fail_pass(self, exc: Exception, now: float) -> None:
        self.status.chain_reachable = isinstance(exc, ChainStateLostError)
        self.status.last_error = str(exc)
        self.status.consecutive_failures += 1
        self._backoff = min(
            self.config.backoff_max,
            self._backoff * 2 if self._backoff else self.config.backoff_initial,
        )
        self._backoff_until = now + self._backoff
        level = logging.ERROR if isinstance(exc, ChainStateLostError) else logging.WARNING
        log.log(level, "anchoring pass failed (retry in %.1fs): %s", self._backoff, exc)

    def _refresh_lag(self) -> None:
        try:
            with self.sessions() as session:
                lag = measure_lag(session, now=datetime.now(UTC))
        except LogError:  # an empty or half-initialised database
            return
        self.status.log_size = lag.log_size
        self.status.anchored_size = lag.anchored_size
        self.status.events_behind = lag.events_behind
        self.status.seconds_behind = lag.seconds_behind
        self.status.pending_transactions = lag.pending_transactions


def enqueue_call(
    session: Session,
    function: str,
    args: Sequence[Any],
    *,
    archive_id: str | None,
    contract: str = "ArchiveNotary",
) -> OutboxItem:
    """Record a contract call for the worker to send (inside the caller's transaction; no commit).

    Bytes arguments are stored as ``{"hex": …}``; calls are sent in the order they were enqueued.
    """
    now = datetime.now(UTC)
    payload: dict[str, Any] = {"function": function, "args": [_to_json(a) for a in args]}
    if contract != "ArchiveNotary":
        payload["contract"] = contract
    item = OutboxItem(
        kind=CALL_KIND,
        payload=payload,
        state=OutboxState.PENDING,
        archive_id=archive_id,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    return item


@dataclass(frozen=True)
class Lag:
    """How far anchoring trails the log."""

    log_size: int
    anchored_size: int
    events_behind: int
    seconds_behind: float
    pending_transactions: int


def measure_lag(session: Session, *, now: datetime) -> Lag:
    """Events and seconds between the log head and the latest confirmed checkpoint."""
    size = storage.current_size(session)
    anchored = storage.anchored_size(session)
    behind = max(0, size - anchored)
    seconds = 0.0
    if behind:
        oldest = storage.entry_at(session, anchored)
        seconds = max(0.0, (now - oldest.time).total_seconds())
    pending = session.execute(
        select(func.count())
        .select_from(OutboxItem)
        .where(OutboxItem.state.in_([OutboxState.PENDING, OutboxState.SUBMITTED]))
    ).scalar_one()
    return Lag(size, anchored, behind, seconds, int(pending))


# --------------------------------------------------------------------------------------------
# helpers


def _anchored_index(receipt: TxReceipt) -> int | None:
    """The chain index of the checkpoint a receipt anchored, if it anchored one."""
    try:
        return int(receipt.event("CheckpointAnchored").args["index"])
    except LookupError:
        return None


def _latest_checkpoint(session: Session) -> Checkpoint | None:
    return session.execute(
        select(Checkpoint)
        .where(Checkpoint.state != CheckpointState.FAILED)
        .order_by(Checkpoint.size.desc())
        .limit(1)
    ).scalar_one_or_none()


def _checkpoint_for(session: Session, outbox_id: int) -> Checkpoint:
    return session.execute(select(Checkpoint).where(Checkpoint.outbox_id == outbox_id)).scalar_one()


def _rows_for_tx(session: Session, tx_hash: str) -> list[OutboxItem]:
    return list(
        session.execute(
            select(OutboxItem)
            .where(OutboxItem.tx_hash == tx_hash, OutboxItem.state == OutboxState.SUBMITTED)
            .order_by(OutboxItem.id)
        ).scalars()
    )


def _max_local_nonce(session: Session) -> int:
    """The highest nonce of a signed transaction not yet mined (mined ones the chain counts)."""
    value = session.execute(
        select(func.max(OutboxItem.nonce)).where(OutboxItem.state == OutboxState.SUBMITTED)
    ).scalar_one_or_none()
    return -1 if value is None else int(value)


def _settle_confirmed(
    item: OutboxItem,
    checkpoint: Checkpoint,
    *,
    index: int | None,
    block_number: int | None,
    block_time: int,
) -> None:
    now = datetime.now(UTC)
    item.state = OutboxState.CONFIRMED
    item.updated_at = now
    checkpoint.state = CheckpointState.CONFIRMED
    checkpoint.chain_index = index
    checkpoint.block_number = block_number
    checkpoint.block_time = datetime.fromtimestamp(block_time, UTC)
    checkpoint.confirmed_at = now


def _next_group(pending: list[OutboxItem], limit: int) -> list[OutboxItem]:
    """The next transaction's rows: one row, or a run of batchable calls of the same function."""
    head = pending[0]
    function = head.payload.get("function") if head.kind == CALL_KIND else None
    if function not in BATCHABLE:
        return [head]
    group = [head]
    for item in pending[1:limit]:
        if item.kind != CALL_KIND or item.payload.get("function") != function:
            break
        group.append(item)
    return group


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value
