"""The anchoring worker: sends every chain transaction of the node's key, exactly once, in order.

Checkpoints of the log and custody calls (register, transfer, hold …) all go through one outbox
(``chain_outbox``). Each row moves ``pending → submitted → confirmed`` (or ``failed``), and every step
is committed before the next external action:

1. *plan* (one transaction): a checkpoint row (size, root of the current head) and its outbox row;
2. *sign* (one transaction): the next nonce, the raw signed transaction and its hash are recorded
   (and kept in ``chain_outbox_attempts``, which holds every transaction ever signed for a row);
3. *broadcast* the recorded raw bytes (repeatable: the same bytes, the same hash);
4. *confirm* (one transaction): the receipt's block, time and — for checkpoints — the chain index.

A crash between any two steps is repaired on the next ``tick``: a planned row is signed, a signed row
is re-broadcast (or found mined), nothing is signed twice with two nonces. On start ``reconcile``
compares the recorded checkpoints with the chain and refuses loudly if the chain lost them.

*Re-planning nonces.* The recorded transactions can become unsendable: the chain node dropped them
and refuses them again (e.g. their fee is now below the base fee), another transaction used their
nonce, or the chain's nonce for this key fell below them (a dev chain restarted from an older state,
``anvil_setNonce``) so they wait in the pool forever. The worker notices a *stall* — the lowest
unconfirmed transaction sits above the chain's next nonce, or is unknown to the node and refused
again — and when it lasts ``replan_grace`` seconds (at once for a used nonce, and on
``replay_lost`` after a chain reset) it ``replan``s: in one database transaction every unconfirmed
row is re-signed, in its original order, with nonces counted from the chain's, checkpoints re-derived
from the chain's latest checkpoint (each one's consistency proof from the one before it); every
higher nonce an earlier transaction used is burnt with an empty transaction to self; and every new
transaction pays at least ``FEE_BUMP`` times what any earlier transaction with its nonce offered
(up to ``FEE_CAP`` times the current fees), so a pool still holding an earlier one replaces it.
Only then is anything sent. An earlier transaction that still lands anyway (it reappeared and won
its nonce) settles its rows by its own receipt: they are never sent again.

The worker is a plain object (``tick()`` for tests and scripts); ``node`` runs it under APScheduler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import rlp  # type: ignore[import-untyped]
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from anchoring import storage
from anchoring.chain import (
    ContractName,
    ContractWriter,
    NonceTooLowError,
    RpcError,
    SignedTx,
    TxReceipt,
    sign_transaction,
)
from anchoring.chainview import CustodyRecord, CustodyState
from anchoring.errors import ChainError, ChainStateLostError, LogError
from anchoring.storage import Checkpoint, CheckpointState, OutboxAttempt, OutboxItem, OutboxState

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"
CALL_KIND = "call"
CANCEL_KIND = "cancel"
"""An empty transaction to self that burns a nonce an earlier, superseded transaction used."""
CANCEL_GAS = 21_000
BATCHABLE = {"register": "registerBatch", "destroy": "destroyBatch"}
"""Custody calls the worker may coalesce into one transaction (function → batch function)."""
ALREADY_ON_CHAIN: dict[str, Callable[[CustodyRecord, list[Any]], bool]] = {
    # register(id, class, trigger, deadline, commitment, holdReasonHash): the same record is
    # registered
    "register": lambda record, args: (
        record.state != CustodyState.NONE and bytes(record.commitment) == args[4]
    ),
    # destroy(id, certificateHash): the archive is destroyed with that certificate
    "destroy": lambda record, args: (
        record.state == CustodyState.DESTROYED and bytes(record.certificate_hash) == args[1]
    ),
    # placeHold / releaseHold(id, reasonHash): the archive is (no longer) on hold
    "placeHold": lambda record, args: record.state != CustodyState.NONE and record.on_hold,
    "releaseHold": lambda record, args: record.state != CustodyState.NONE and not record.on_hold,
}
"""Custody calls that, once signed, are not sent again when the chain's custody record already
shows their effect (a chain restored from a state dump): function → test of the record."""
FEE_BUMP = (5, 4)
"""A re-signed transaction offers at least 5/4 of the fees of every earlier transaction with its
nonce: pools replace a pending transaction only for a higher price (geth and Besu ask 10 % more)."""
FEE_CAP = 4
"""…but never more than 4 times the chain's current fees, however often a nonce is re-signed (an
earlier transaction priced that high is mined soon anyway, and then its rows settle by it)."""


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
    replan_grace: float = 30.0  # seconds a stall may last before the nonces are re-planned
    stuck_after: float = 300.0  # the outbox is stuck once a row waits this long unconfirmed
    # The largest log size a checkpoint may cover (None: the head): a node that anchors only what
    # its log peers hold can always be rebuilt from them to its latest checkpoint.
    anchor_limit: Callable[[Session], int] | None = None


@dataclass(frozen=True)
class Replan:
    """What one re-plan did."""

    reason: str
    from_nonce: int  # the chain's next nonce: the first re-signed transaction's
    transactions: int  # transactions re-signed for outbox rows
    rows: int  # outbox rows they carry
    cancels: int  # higher nonces of earlier transactions, burnt with an empty transaction to self


@dataclass
class WorkerStatus:
    """What ``/healthz`` and ``/metrics`` show about anchoring."""

    log_size: int = 0
    anchored_size: int = 0
    events_behind: int = 0
    seconds_behind: float = 0.0
    pending_transactions: int = 0
    oldest_unconfirmed_seconds: float = 0.0
    outbox_stuck: bool = False
    stalled: str | None = None  # why the next unconfirmed transaction cannot progress
    replans: int = 0
    last_replan: Replan | None = None
    chain_reachable: bool = True
    chain_state_lost: bool = False
    last_error: str | None = None
    last_checkpoint_at: datetime | None = None
    consecutive_failures: int = 0


OutcomeHandler = Callable[[Session, OutboxItem], None]
"""Called inside the transaction that records an outbox row as confirmed or failed."""


@dataclass(frozen=True)
class _Sent:
    """One signed, unconfirmed transaction of the outbox and the rows it carries."""

    tx_hash: str
    nonce: int
    rows: tuple[int, ...]
    resigned: bool  # a row was signed before: an earlier transaction of it may have landed


@dataclass(frozen=True)
class _Head:
    """The latest checkpoint of this node on chain, or the one a re-plan will have put there."""

    count: int
    size: int
    root: bytes
    anchored_at: int | None  # None: not on chain yet (signed earlier in the same re-plan)


@dataclass(frozen=True)
class _Call:
    """What one transaction does: a contract call, or (``function`` None) an empty cancel."""

    function: str | None
    args: list[Any]
    contract: ContractName = "ArchiveNotary"


_CANCEL = _Call(None, [])


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
    step's commit or send), and in a re-plan at ``replanning`` (after each transaction is signed,
    before the commit), ``replanned`` (after the commit) and ``replan-broadcast`` (after each
    send), so fault-injection tests can kill the process exactly there."""
    status: WorkerStatus = field(default_factory=WorkerStatus)
    _backoff_until: float = 0.0
    _backoff: float = 0.0
    _reconciled: bool = False
    _stall: tuple[float, str] | None = None  # (since, why) while the outbox cannot progress
    _replan_due: str | None = None
    _confirmed_ceiling: int = -1  # the highest nonce of a transaction recorded as confirmed

    # -- public --------------------------------------------------------------------------------

    def tick(self) -> WorkerStatus:
        """One pass: reconcile (first time), plan, sign, broadcast, confirm, re-plan if due.
        Never raises on chain trouble: it backs off and records the error in ``status``."""
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
            if self._replan_due is not None:
                self.replan(self._replan_due)
        except ChainStateLostError as exc:
            self._reconciled = False
            self.status.chain_state_lost = True
            self._fail_pass(exc)
        except ChainError as exc:
            self._fail_pass(exc)
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
                    f"(last error: {status.last_error}; stalled: {status.stalled})"
                )
            time.sleep(poll)

    def reconcile(self) -> None:
        """Compare recorded checkpoints and transactions with the chain; raise
        ``ChainStateLostError`` if the chain no longer holds what this node recorded as confirmed,
        or holds a checkpoint of this node's key that is not a prefix of its log."""
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
        if on_chain:
            head = self._chain_head()
            with self.sessions() as session:
                logged = storage.current_size(session)
                ours = storage.tree_head_at(session, head.size) if head.size <= logged else None
            if ours is None or ours.root != head.root:
                raise ChainStateLostError(
                    f"the chain's latest checkpoint (size {head.size}, root {head.root.hex()}) is "
                    "not a prefix of this node's log; refusing to anchor"
                )
        self._check_nothing_confirmed_lost(self.chain.confirmed_nonce())
        self._reconciled = True
        self.status.chain_state_lost = False

    def replan(self, reason: str) -> Replan | None:
        """Re-sign every unconfirmed transaction with fresh nonces from the chain's next one.

        In one database transaction, before anything is sent: the unconfirmed rows up to the last
        one ever signed are signed again in their original order (a batch stays a batch),
        checkpoints re-derived from the chain's latest checkpoint and chained one to the next;
        every higher nonce an earlier transaction used is burnt with an empty transaction to self;
        every new transaction outbids each earlier one with its nonce (``FEE_BUMP``). Rows whose
        earlier transaction was mined are left to ``_confirm``. Refuses (``ChainStateLostError``)
        on a chain that lost confirmed checkpoints: that needs ``replay_lost``. Returns None when
        there was nothing to re-plan.
        """
        self._replan_due = None
        self.reconcile()
        chain_nonce = self.chain.confirmed_nonce()
        landed = {row for sent in self._in_flight() if self._landed(sent) for row in sent.rows}
        fees = self.chain.chain.rpc.fee_fields()
        head = self._chain_head()
        plan: list[SignedTx] = []
        rows_signed = 0
        with self.sessions.begin() as session:
            scope = _replan_scope(session, landed)
            top = session.execute(select(func.max(OutboxAttempt.nonce))).scalar_one_or_none()
            nonce = chain_nonce
            for whole in _units(scope, self.config.register_batch):
                unit = self._unsettled(session, whole)
                if not unit:  # every row of it is already on chain
                    continue
                call = self._call_for(session, unit, head)
                if call is None:  # settled by what the chain already holds
                    continue
                plan.append(self._sign_rows(session, unit, call, nonce, fees))
                rows_signed += len(unit)
                nonce += 1
                if unit[0].kind == CHECKPOINT_KIND:
                    size, root = _checkpoint_payload(unit[0])
                    head = _Head(head.count + 1, size, root, None)
                self._fault("replanning")
            transactions = len(plan)
            now = datetime.now(UTC)
            for burnt in range(nonce, (-1 if top is None else int(top)) + 1):
                cancel = OutboxItem(
                    kind=CANCEL_KIND,
                    payload={"nonce": burnt},
                    state=OutboxState.PENDING,
                    created_at=now,
                    updated_at=now,
                )
                session.add(cancel)
                session.flush()
                plan.append(self._sign_rows(session, [cancel], _CANCEL, burnt, fees))
        self._clear_stall(quiet=True)
        if not plan:
            return None
        outcome = Replan(reason, chain_nonce, transactions, rows_signed, len(plan) - transactions)
        self.status.replans += 1
        self.status.last_replan = outcome
        log.warning(
            "re-planned nonces (%s): %d transaction(s) for %d outbox row(s) signed again from "
            "nonce %d, %d higher nonce(s) burnt",
            reason,
            outcome.transactions,
            outcome.rows,
            outcome.from_nonce,
            outcome.cancels,
        )
        self._fault("replanned")
        for signed in plan:
            try:
                self.chain.broadcast(signed.raw)
            except RpcError as exc:  # the next ticks send again in order, or notice the stall
                log.warning(
                    "re-planned transaction %s (nonce %d) not accepted yet: %s",
                    signed.tx_hash,
                    signed.nonce,
                    exc.rpc_message,
                )
                break
            self._fault("replan-broadcast")
        return outcome

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
            if self.config.anchor_limit is not None:
                allowed = self.config.anchor_limit(session)
                if allowed < head.size:
                    head = storage.tree_head_at(session, max(allowed, covered))
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
        # While stalled nothing new is signed: it would only queue behind the gap.
        while self._stall is None and self._replan_due is None:
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
                self._replan_due = f"nonce {signed.nonce} was used by another transaction"
                return
            # Other ChainErrors propagate: the rows stay SUBMITTED and are re-broadcast later.
            self._fault("broadcast")

    def _sign_group(self, group: list[OutboxItem]) -> SignedTx | None:
        chain_nonce = self.chain.confirmed_nonce()
        if chain_nonce <= self._confirmed_ceiling:  # the chain no longer counts one of ours
            self._check_nothing_confirmed_lost(chain_nonce)
        with self.sessions.begin() as session:
            rows = [session.get_one(OutboxItem, item.id) for item in group]
            if any(row.state != OutboxState.PENDING for row in rows):
                return None
            rows = self._unsettled(session, rows)
            if not rows:
                return None
            head = self._chain_head() if rows[0].kind == CHECKPOINT_KIND else None
            call = self._call_for(session, rows, head)
            if call is None:
                return None
            nonce = max(chain_nonce, _max_local_nonce(session) + 1)
            return self._sign_rows(session, rows, call, nonce, self.chain.chain.rpc.fee_fields())

    def _unsettled(self, session: Session, rows: list[OutboxItem]) -> list[OutboxItem]:
        """``rows`` without the custody calls whose effect the chain already holds, which are
        settled here.

        Only a row signed before can be on chain (a row is recorded as signed before it is ever
        broadcast). After a chain reset its transaction may be unknown to the chain while its
        effect survived (a state dump keeps storage, not every receipt): sending it again would
        revert (``NotaryUnexpectedState``, ``NotaryAlreadyOnHold`` …) and, in a batch, take the
        other rows with it. Such a row is recorded as confirmed without a transaction when the
        archive's custody record shows its effect (``ALREADY_ON_CHAIN``) and no earlier call for
        the same archive is still unconfirmed (the record cannot show what that one will do: a
        release after a hold not yet mined must be sent)."""
        kept: list[OutboxItem] = []
        for row in rows:
            function = row.payload.get("function") if row.kind == CALL_KIND else None
            effect = ALREADY_ON_CHAIN.get(str(function))
            if (
                effect is not None
                and row.attempts > 0
                and row.archive_id is not None
                and not _earlier_call_in_flight(session, row)
            ):
                record = self.chain.chain.custody(row.archive_id)
                if effect(record, _from_json(row.payload["args"])):
                    row.state = OutboxState.CONFIRMED
                    # The last signed hash stays: should a later reset lose this effect too,
                    # ``replay_lost`` finds the hash unknown and this check runs again.
                    row.nonce = row.raw_tx = row.block_number = row.block_time = None
                    row.error = f"settled: the chain already holds this {function}"
                    row.updated_at = datetime.now(UTC)
                    log.info(
                        "%s of %s is already on chain; not sent again", function, row.archive_id
                    )
                    self._run_handler(self.on_confirmed, session, row)
                    continue
            kept.append(row)
        return kept

    def _call_for(
        self, session: Session, rows: list[OutboxItem], head: _Head | None
    ) -> _Call | None:
        """The transaction of a group of rows, or None when a checkpoint needs none any more."""
        first = rows[0]
        if first.kind == CANCEL_KIND:
            return _CANCEL
        if first.kind == CHECKPOINT_KIND:
            assert head is not None
            args = self._checkpoint_args(session, first, head)
            return None if args is None else _Call("anchorCheckpoint", args)
        contract: ContractName = first.payload.get("contract", "ArchiveNotary")
        if len(rows) > 1:
            # registerBatch takes one array of the single calls' argument tuples.
            batch = [tuple(_from_json(row.payload["args"])) for row in rows]
            return _Call(BATCHABLE[first.payload["function"]], [batch], contract)
        args = [_from_json(value) for value in first.payload["args"]]
        return _Call(first.payload["function"], args, contract)

    def _sign_rows(
        self,
        session: Session,
        rows: list[OutboxItem],
        call: _Call,
        nonce: int,
        fees: Mapping[str, int],
    ) -> SignedTx:
        """Sign ``call`` with ``nonce`` (outbidding every earlier transaction with that nonce) and
        record it on ``rows`` and in their attempts (no commit: the caller's transaction)."""
        offered = outbid(fees, _fees_at(session, nonce))
        if call.function is None:
            signed = sign_transaction(
                self.chain.account,
                chain_id=self.chain.chain.chain_id(),
                nonce=nonce,
                to=self.chain.address,
                data=b"",
                gas=CANCEL_GAS,
                fees=offered,
            )
        else:
            signed = self.chain.sign_call(
                call.function, call.args, nonce, contract=call.contract, fees=offered
            )
        now = datetime.now(UTC)
        for row in rows:
            row.state = OutboxState.SUBMITTED
            row.nonce = signed.nonce
            row.tx_hash = signed.tx_hash
            row.raw_tx = signed.raw
            row.attempts += 1
            row.updated_at = now
            session.add(
                OutboxAttempt(
                    outbox_id=row.id,
                    nonce=signed.nonce,
                    tx_hash=signed.tx_hash,
                    fees=dict(offered),
                    signed_at=now,
                )
            )
        if rows[0].kind == CHECKPOINT_KIND:
            checkpoint = _checkpoint_for(session, rows[0].id)
            checkpoint.state = CheckpointState.SUBMITTED
            checkpoint.tx_hash = signed.tx_hash
        return signed

    def _chain_head(self) -> _Head:
        count = self.chain.chain.checkpoint_count(self.chain.address)
        if count == 0:
            return _Head(0, 0, b"", None)
        latest = self.chain.chain.checkpoint_at(self.chain.address, count - 1)
        return _Head(count, latest.size, latest.root, latest.anchored_at)

    def _checkpoint_args(self, session: Session, item: OutboxItem, head: _Head) -> list[Any] | None:
        """Arguments of ``anchorCheckpoint`` on top of ``head``, or None when the row is already
        settled by what the chain holds."""
        size, root = _checkpoint_payload(item)
        checkpoint = _checkpoint_for(session, item.id)
        if head.count == 0:
            return [size, root, []]
        if head.size == size and head.root == root and head.anchored_at is not None:
            # Mined before a crash, or anchored by a replay: record, never send twice.
            _settle_confirmed(
                item,
                checkpoint,
                index=head.count - 1,
                block_number=None,
                block_time=head.anchored_at,
            )
            self._run_handler(self.on_confirmed, session, item)
            return None
        if head.size > size:
            later = storage.tree_head_at(session, min(head.size, storage.current_size(session)))
            if later.size == head.size and later.root == head.root:
                # A later head of this same log is already anchored (e.g. by a replay).
                item.state = OutboxState.FAILED
                item.error = checkpoint.error = f"superseded by checkpoint of size {head.size}"
                checkpoint.state = CheckpointState.FAILED
                return None
        ours = storage.tree_head_at(session, head.size) if head.size <= size else None
        if ours is None or ours.root != head.root:
            raise ChainStateLostError(
                f"the chain's latest checkpoint (size {head.size}, root {head.root.hex()}) is "
                "not a prefix of this node's log; refusing to anchor"
            )
        return [size, root, storage.consistency_proof(session, head.size, size)]

    def _confirm(self) -> None:
        in_flight = self._in_flight()
        if not in_flight:
            self._clear_stall()
            return
        latest_block = self.chain.latest_block()
        unmined: list[_Sent] = []
        for sent in in_flight:
            receipt = self._landed(sent)
            if receipt is None:
                unmined.append(sent)
                continue
            if latest_block - receipt.block_number + 1 < self.config.confirmations:
                continue
            reason = None if receipt.status == 1 else self.chain.revert_reason(receipt.tx_hash)
            self._record_outcome(sent.tx_hash, receipt, reason)
            self._fault("recorded")
        self._keep_moving(unmined)

    def _in_flight(self) -> list[_Sent]:
        """Every submitted transaction, in nonce order."""
        with self.sessions() as session:
            rows = session.execute(
                select(OutboxItem.id, OutboxItem.tx_hash, OutboxItem.nonce, OutboxItem.attempts)
                .where(OutboxItem.state == OutboxState.SUBMITTED)
                .order_by(OutboxItem.nonce, OutboxItem.id)
            ).all()
        grouped: dict[str, tuple[int, list[int], bool]] = {}
        for row_id, tx_hash, nonce, attempts in rows:
            assert tx_hash is not None
            assert nonce is not None
            _, ids, resigned = grouped.setdefault(tx_hash, (int(nonce), [], False))
            ids.append(int(row_id))
            grouped[tx_hash] = (int(nonce), ids, resigned or attempts > 1)
        return [
            _Sent(tx_hash, nonce, tuple(ids), resigned)
            for tx_hash, (nonce, ids, resigned) in grouped.items()
        ]

    def _landed(self, sent: _Sent) -> TxReceipt | None:
        """The receipt of the rows' transaction: the current one, or a successful earlier one of
        re-signed rows (it landed before its replacement could; the replacement, if mined too,
        reverted as a repeat)."""
        receipt = self.chain.receipt(sent.tx_hash)
        if not sent.resigned or (receipt is not None and receipt.status == 1):
            return receipt
        with self.sessions() as session:
            earlier = session.execute(
                select(OutboxAttempt.tx_hash)
                .where(
                    OutboxAttempt.outbox_id.in_(sent.rows), OutboxAttempt.tx_hash != sent.tx_hash
                )
                .distinct()
            ).scalars()
            hashes = list(earlier)
        for tx_hash in hashes:
            found = self.chain.receipt(tx_hash)
            if found is not None and found.status == 1:
                return found
        return receipt

    def _keep_moving(self, unmined: list[_Sent]) -> None:
        """Send again, in nonce order, what the chain node lost; note a stall when the next
        unconfirmed transaction cannot progress (a nonce gap below it, or refused again)."""
        if not unmined:
            self._clear_stall()
            return
        next_nonce = self.chain.pending_nonce()
        for sent in unmined:
            if sent.nonce > next_nonce:
                self._note_stall(
                    f"the chain's next nonce for {self.chain.address} is {next_nonce} but the next "
                    f"unconfirmed transaction has nonce {sent.nonce} ({sent.tx_hash})"
                )
                return
            if not self.chain.is_known(sent.tx_hash):
                try:
                    self.chain.broadcast(self._raw(sent.tx_hash))
                except NonceTooLowError:
                    self._replan_due = f"nonce {sent.nonce} was used by another transaction"
                    return
                except RpcError as exc:
                    self._note_stall(
                        f"transaction {sent.tx_hash} (nonce {sent.nonce}) is unknown to the chain "
                        f"node, which refuses it again: {exc.rpc_message}"
                    )
                    return
            next_nonce = max(next_nonce, sent.nonce + 1)
        self._clear_stall()

    def _raw(self, tx_hash: str) -> bytes:
        with self.sessions() as session:
            raw = session.execute(
                select(OutboxItem.raw_tx).where(OutboxItem.tx_hash == tx_hash).limit(1)
            ).scalar_one()
        assert raw is not None
        return raw

    def _note_stall(self, why: str) -> None:
        now = self.clock()
        if self._stall is None:
            self._stall = (now, why)
            self.status.stalled = why
            log.warning(
                "anchoring stalled: %s; nonces are re-planned if this lasts %.0f s",
                why,
                self.config.replan_grace,
            )
            # A gap often means the chain lost blocks. If it lost checkpoints this node recorded,
            # say so now (ChainStateLostError) and re-plan nothing: that takes a replay.
            self.reconcile()
        if now - self._stall[0] >= self.config.replan_grace:
            self._replan_due = why

    def _clear_stall(self, *, quiet: bool = False) -> None:
        if self._stall is not None and not quiet:
            log.info("anchoring no longer stalled")
        self._stall = None
        self.status.stalled = None

    def _record_outcome(self, tx_hash: str, receipt: TxReceipt, reason: str | None) -> None:
        """Record the outcome of the rows sent as ``tx_hash`` (``receipt`` may be an earlier
        transaction of theirs that landed instead)."""
        timestamp = self.chain.chain.block_timestamp(receipt.block_number)
        block_time = datetime.fromtimestamp(timestamp, UTC)
        checkpoint_index = _anchored_index(receipt)
        with self.sessions.begin() as session:
            landed_nonce: int | None = None
            if receipt.tx_hash != tx_hash:
                landed_nonce = session.execute(
                    select(OutboxAttempt.nonce)
                    .where(OutboxAttempt.tx_hash == receipt.tx_hash)
                    .limit(1)
                ).scalar_one()
                log.warning(
                    "earlier transaction %s landed instead of its replacement %s; recorded from it",
                    receipt.tx_hash,
                    tx_hash,
                )
            for row in _rows_for_tx(session, tx_hash):
                if landed_nonce is not None:
                    row.tx_hash, row.nonce, row.raw_tx = receipt.tx_hash, landed_nonce, None
                if row.nonce is not None:
                    self._confirmed_ceiling = max(self._confirmed_ceiling, row.nonce)
                row.block_number = receipt.block_number
                row.block_time = block_time
                row.updated_at = datetime.now(UTC)
                checkpoint = (
                    _checkpoint_for(session, row.id) if row.kind == CHECKPOINT_KIND else None
                )
                if checkpoint is not None:
                    checkpoint.tx_hash = receipt.tx_hash
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
        state and was redeployed, or restored from an older dump), in their original order, then
        ``replan`` every unconfirmed transaction from the chain's nonce, so the same checkpoints
        (same sizes and roots) are anchored again and the same custody calls re-sent, in order.
        Returns how many outbox rows were re-queued; when the chain still contradicts this node's
        log nothing is re-planned and ``status.chain_state_lost`` and ``status.last_error`` say
        why. ``archivechain anchor replay`` and ``archivechain up --reset-chain``."""
        with self.sessions() as session:
            confirmed = list(
                session.execute(
                    select(OutboxItem.id, OutboxItem.tx_hash)
                    .where(
                        OutboxItem.state == OutboxState.CONFIRMED,
                        OutboxItem.kind != CANCEL_KIND,  # nothing to replay: it only burnt a nonce
                    )
                    .order_by(OutboxItem.id)
                ).all()
            )
        lost = [
            row_id for row_id, tx_hash in confirmed if tx_hash and not self.chain.is_known(tx_hash)
        ]
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
        if lost:
            log.warning("re-queued %d transactions the chain lost", len(lost))
        try:
            self.replan("the chain was reset")
        except ChainStateLostError as exc:  # the callers report it (reconcile says it again)
            self.status.chain_state_lost = True
            self.status.last_error = str(exc)
        return len(lost)

    def _check_nothing_confirmed_lost(self, chain_nonce: int) -> None:
        """Raise ``ChainStateLostError`` when the chain no longer knows a transaction this node
        recorded as confirmed with a nonce the chain does not count any more (it lost the blocks:
        re-planning would silently reuse their nonces; a replay must re-send them first)."""
        with self.sessions() as session:
            ceiling = session.execute(
                select(func.max(OutboxItem.nonce)).where(
                    OutboxItem.state == OutboxState.CONFIRMED, OutboxItem.kind != CANCEL_KIND
                )
            ).scalar_one_or_none()
            above = list(
                session.execute(
                    select(OutboxItem.tx_hash, OutboxItem.nonce)
                    .where(
                        OutboxItem.state == OutboxState.CONFIRMED,
                        OutboxItem.kind != CANCEL_KIND,
                        OutboxItem.nonce >= chain_nonce,
                    )
                    .distinct()
                    .order_by(OutboxItem.nonce)
                ).all()
            )
        for tx_hash, nonce in above:
            if tx_hash is not None and not self.chain.is_known(tx_hash):
                raise ChainStateLostError(
                    f"the chain no longer knows transaction {tx_hash} (nonce {nonce}) that this "
                    f"node recorded as confirmed; its nonce for {self.chain.address} is "
                    f"{chain_nonce}: the chain lost blocks (run `archivechain anchor replay`)"
                )
        self._confirmed_ceiling = -1 if ceiling is None else int(ceiling)

    def _fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # -- status --------------------------------------------------------------------------------

    def _fail_pass(self, exc: Exception) -> None:
        """Record a failed pass and back off, counted from when the pass failed: a pass that
        spent longer than the backoff waiting on a dead RPC must not be retried at once."""
        self.status.chain_reachable = isinstance(exc, ChainStateLostError)
        self.status.last_error = str(exc)
        self.status.consecutive_failures += 1
        self._backoff = min(
            self.config.backoff_max,
            self._backoff * 2 if self._backoff else self.config.backoff_initial,
        )
        self._backoff_until = self.clock() + self._backoff
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
        self.status.oldest_unconfirmed_seconds = lag.oldest_unconfirmed_seconds
        stuck = outbox_stuck(lag, self.config.stuck_after)
        if stuck == self.status.outbox_stuck:
            return
        self.status.outbox_stuck = stuck
        if stuck:  # one line when it starts, one when it ends: never one per tick
            why = self.status.stalled or self.status.last_error
            log.error(
                "chain outbox stuck: %d transaction(s) unconfirmed, the oldest for %.1f s "
                "(alert after %.1f s)%s",
                lag.pending_transactions,
                lag.oldest_unconfirmed_seconds,
                self.config.stuck_after,
                f"; {why}" if why else "",
            )
        else:
            log.info("chain outbox no longer stuck")


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


def enqueue_calls(
    session: Session,
    function: str,
    calls: Sequence[tuple[Sequence[Any], str | None]],
    *,
    contract: str = "ArchiveNotary",
) -> int:
    """``enqueue_call`` for many ``(args, archive id)`` of one function in one insert (bulk paths:
    a destruction list); rows keep the given order. Returns how many."""
    if not calls:
        return 0
    now = datetime.now(UTC)
    rows = []
    for args, archive_id in calls:
        payload: dict[str, Any] = {"function": function, "args": [_to_json(a) for a in args]}
        if contract != "ArchiveNotary":
            payload["contract"] = contract
        rows.append(
            {
                "kind": CALL_KIND,
                "payload": payload,
                "state": OutboxState.PENDING,
                "archive_id": archive_id,
                "created_at": now,
                "updated_at": now,
            }
        )
    session.execute(
        insert(cast(Table, OutboxItem.__table__)), rows
    )  # Core: no per-row ORM bookkeeping
    return len(rows)


@dataclass(frozen=True)
class Lag:
    """How far anchoring trails the log, and how long the outbox has been waiting."""

    log_size: int
    anchored_size: int
    events_behind: int
    seconds_behind: float
    pending_transactions: int
    oldest_unconfirmed_seconds: float = 0.0  # age of the oldest pending or submitted outbox row


def measure_lag(session: Session, *, now: datetime) -> Lag:
    """Events and seconds between the log head and the latest confirmed checkpoint, and the
    number and age of the outbox rows not yet confirmed."""
    size = storage.current_size(session)
    anchored = storage.anchored_size(session)
    behind = max(0, size - anchored)
    seconds = 0.0
    if behind:
        oldest = storage.entry_at(session, anchored)
        seconds = max(0.0, (now - oldest.time).total_seconds())
    pending, since = session.execute(
        select(func.count(), func.min(OutboxItem.created_at)).where(
            OutboxItem.state.in_([OutboxState.PENDING, OutboxState.SUBMITTED])
        )
    ).one()
    waiting = max(0.0, (now - since).total_seconds()) if since is not None else 0.0
    return Lag(size, anchored, behind, seconds, int(pending), waiting)


def outbox_stuck(lag: Lag, threshold: float) -> bool:
    """Whether a chain transaction has waited unconfirmed for longer than ``threshold`` seconds."""
    return lag.pending_transactions > 0 and lag.oldest_unconfirmed_seconds > threshold


def fees_of(raw: bytes) -> dict[str, int]:
    """The fee fields of a signed transaction (to outbid it), empty for an unknown type."""
    if raw[:1] == b"\x02":
        fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        return {
            "maxFeePerGas": int(fields["maxFeePerGas"]),
            "maxPriorityFeePerGas": int(fields["maxPriorityFeePerGas"]),
        }
    if raw[:1] >= b"\xc0":  # legacy: the RLP list [nonce, gasPrice, gas, to, value, data, v, r, s]
        gas_price = rlp.decode(raw)[1]
        return {"gasPrice": int.from_bytes(gas_price, "big")}
    return {}


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


def _checkpoint_payload(item: OutboxItem) -> tuple[int, bytes]:
    return int(item.payload["size"]), bytes.fromhex(item.payload["root"])


def _earlier_call_in_flight(session: Session, row: OutboxItem) -> bool:
    """Whether a custody call for ``row``'s archive, queued before it, is still unconfirmed."""
    earlier = session.execute(
        select(OutboxItem.id)
        .where(
            OutboxItem.archive_id == row.archive_id,
            OutboxItem.kind == CALL_KIND,
            OutboxItem.id < row.id,
            OutboxItem.state.in_((OutboxState.PENDING, OutboxState.SUBMITTED)),
        )
        .limit(1)
    ).first()
    return earlier is not None


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


def _fees_at(session: Session, nonce: int) -> list[dict[str, Any]]:
    """The fees of every transaction this node ever signed with ``nonce``."""
    return list(
        session.execute(select(OutboxAttempt.fees).where(OutboxAttempt.nonce == nonce)).scalars()
    )


def outbid(fees: Mapping[str, int], earlier: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The chain's current ``fees`` raised to ``FEE_BUMP`` times each earlier offer for the same
    nonce, capped at ``FEE_CAP`` times the current fees."""
    numerator, denominator = FEE_BUMP
    offered = dict(fees)
    for old in earlier:
        for key, current in fees.items():
            value = old.get(key)
            if isinstance(value, int):
                bumped = min(value * numerator // denominator + 1, current * FEE_CAP)
                offered[key] = max(offered[key], bumped)
    if "maxPriorityFeePerGas" in offered:
        offered["maxFeePerGas"] = max(offered["maxFeePerGas"], offered["maxPriorityFeePerGas"])
    return offered


def _replan_scope(session: Session, landed: set[int]) -> list[OutboxItem]:
    """The unconfirmed rows a re-plan signs again: every one up to the last that was ever signed
    (rows never signed after it are left to the normal path), in their original order."""
    unsettled = OutboxItem.state.in_([OutboxState.PENDING, OutboxState.SUBMITTED])
    signed = select(func.max(OutboxItem.id)).where(
        unsettled,
        (OutboxItem.state == OutboxState.SUBMITTED) | (OutboxItem.attempts > 0),
        OutboxItem.id.not_in(landed),
    )
    horizon = session.execute(signed).scalar_one_or_none()
    if horizon is None:
        return []
    rows = session.execute(
        select(OutboxItem)
        .where(unsettled, OutboxItem.id <= horizon, OutboxItem.id.not_in(landed))
        .order_by(OutboxItem.id)
    ).scalars()
    return list(rows)


def _units(rows: list[OutboxItem], limit: int) -> list[list[OutboxItem]]:
    """One list of rows per transaction: rows sent together stay together; rows not yet signed
    are grouped as the normal path groups them."""
    units: list[list[OutboxItem]] = []
    index = 0
    while index < len(rows):
        row = rows[index]
        if row.state == OutboxState.SUBMITTED:
            unit = [row]
            while (
                index + len(unit) < len(rows)
                and rows[index + len(unit)].state == OutboxState.SUBMITTED
                and rows[index + len(unit)].tx_hash == row.tx_hash
            ):
                unit.append(rows[index + len(unit)])
        else:
            run: list[OutboxItem] = []
            while (
                index + len(run) < len(rows)
                and len(run) < limit
                and rows[index + len(run)].state == OutboxState.PENDING
            ):
                run.append(rows[index + len(run)])
            unit = _next_group(run, limit)
        units.append(unit)
        index += len(unit)
    return units


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
