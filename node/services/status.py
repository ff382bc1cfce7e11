"""Operational status of a node: its anchoring checkpoints, its health and its metric values.

Health is judged here (not in the API) because "degraded" is a rule: the database must answer,
the chain must answer and still hold what this node anchored, anchoring must not trail the log by
more than ``max_lag_seconds``, no chain transaction may wait unconfirmed for longer than the
worker's ``stuck_after`` (``outbox_stuck_seconds``), and the chain watcher must not have been
failing (or stuck in one pass) for ``watcher_stall_seconds``. Nothing here returns error text from the chain or the
database: only booleans, counts and short problem codes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from anchoring.chain import RpcChain
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError, LogError
from anchoring.storage import Checkpoint, CheckpointState
from anchoring.worker import AnchoringWorker, Lag, measure_lag, outbox_stuck
from node.db import Database, GroupCommitter
from node.errors import InputError
from node.models import Archive
from node.principal import Action, Principal
from node.services.records import Page

log = logging.getLogger(__name__)

MAX_CHECKPOINT_PAGE = 200
DEFAULT_MAX_LAG_SECONDS = 300.0
"""Anchoring this far behind the log (oldest unanchored event) marks the node degraded."""


class HealthStatus(StrEnum):
    """Overall health: ``ok``; ``degraded`` (serves requests, evidence at risk); ``down``."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class Problem(StrEnum):
    """Why a node is not ``ok`` (stable codes for alerts)."""

    DATABASE_UNREACHABLE = "database_unreachable"
    CHAIN_UNREACHABLE = "chain_unreachable"
    CHAIN_STATE_LOST = "chain_state_lost"
    ANCHORING_LAG = "anchoring_lag"
    OUTBOX_STUCK = "outbox_stuck"
    WATCHER_STALLED = "watcher_stalled"


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """One checkpoint this node planned, and what became of it on chain."""

    id: int
    size: int
    root: str
    state: CheckpointState
    chain_index: int | None
    tx_hash: str | None
    block_number: int | None
    block_time: datetime | None
    planned_at: datetime
    confirmed_at: datetime | None

    @classmethod
    def of(cls, row: Checkpoint) -> CheckpointView:
        return cls(
            id=row.id,
            size=row.size,
            root=row.root.hex(),
            state=CheckpointState(row.state),
            chain_index=row.chain_index,
            tx_hash=row.tx_hash,
            block_number=row.block_number,
            block_time=row.block_time,
            planned_at=row.planned_at,
            confirmed_at=row.confirmed_at,
        )


@dataclass(frozen=True, slots=True)
class WatcherHealth:
    """The chain watcher as ``/healthz`` shows it: stalled (failing, or stuck in one pass, for
    ``watcher_stall_seconds``) and the last block it processed (None before its first pass)."""

    stalled: bool
    cursor: int | None


@dataclass(frozen=True, slots=True)
class Health:
    """What ``/healthz`` reports. ``lag`` is None when the database could not be read."""

    status: HealthStatus
    hospital: str
    chain_id: int
    notary: str
    database_reachable: bool
    chain_reachable: bool
    chain_state_lost: bool
    lag: Lag | None
    outbox_stuck: bool
    last_checkpoint_at: datetime | None
    problems: tuple[Problem, ...]
    watcher: WatcherHealth = WatcherHealth(stalled=False, cursor=None)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Values ``/metrics`` exposes, read at scrape time."""

    lag: Lag | None
    archives_by_state: dict[str, int]
    checkpoints_by_state: dict[str, int]
    chain_reachable: bool
    chain_state_lost: bool
    outbox_stuck: bool
    anchoring_failures: int
    nonce_replans: int
    commit_batches: int
    commit_units: int


HEALTH_PROBE_TIMEOUT: Final = 1.5
"""Seconds a health probe waits for each chain answer. The node's own chain client waits 10 s; a
probe (load balancers, Kubernetes) gives up much sooner, so a frozen chain (the RPC accepts
connections and never answers) makes ``/healthz`` answer ``degraded`` in seconds instead of
looking like a dead node."""


PROBE_STALE_AFTER: Final = 2 * HEALTH_PROBE_TIMEOUT + 1
"""Seconds after which a probe still waiting on the chain (the timeout bounds each socket
operation, not the whole call: an endpoint that trickles bytes can hold it) makes every other probe
report the chain unreachable rather than the last answer."""


class StatusService:
    """Checkpoint listing, health and metric values of one node.

    Health probes of the chain run one at a time: a probe that arrives while another is waiting
    for the chain is answered from the last probe's result instead of waiting too (so a flood of
    probes against a frozen chain holds one thread, not one per probe)."""

    def __init__(
        self,
        *,
        hospital: str,
        deployment: Deployment,
        db: Database,
        chain: RpcChain,
        worker: AnchoringWorker,
        committer: GroupCommitter,
        max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS,
        probe: RpcChain | None = None,
        watcher: Callable[[], WatcherHealth] | None = None,
    ) -> None:
        self.hospital = hospital
        self.deployment = deployment
        self.db = db
        self.chain = chain
        self.probe = probe or chain
        """The chain client of health probes (the runtime's has ``HEALTH_PROBE_TIMEOUT``)."""
        self._probing = threading.Lock()
        self._probe_started = time.monotonic()
        self._last_probe: tuple[bool, bool, int] | None = None
        self.worker = worker
        self.committer = committer
        self.max_lag_seconds = max_lag_seconds
        self.watcher = watcher or (lambda: WatcherHealth(stalled=False, cursor=None))
        """The chain watcher's state (``ChainWatcher.stalled`` and its cursor)."""

    def checkpoints(
        self,
        principal: Principal,
        state: CheckpointState | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[CheckpointView]:
        """This node's checkpoints, newest (largest) first. Evidence readers only."""
        principal.require(Action.READ_PROOF)
        if not 1 <= limit <= MAX_CHECKPOINT_PAGE:
            raise InputError(
                f"limit must be between 1 and {MAX_CHECKPOINT_PAGE}", code="invalid_page"
            )
        if offset < 0:
            raise InputError("offset must not be negative", code="invalid_page")
        query = select(Checkpoint)
        if state is not None:
            query = query.where(Checkpoint.state == state)
        with self.db.session() as session:
            total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = session.execute(
                query.order_by(Checkpoint.size.desc(), Checkpoint.id.desc())
                .limit(limit)
                .offset(offset)
            ).scalars()
            items = tuple(CheckpointView.of(row) for row in rows)
        return Page(items, int(total), limit, offset)

    def health(self) -> Health:
        """Probe the database and the chain; judge the node ``ok``, ``degraded`` or ``down``."""
        problems: list[Problem] = []
        lag, confirmed, database_ok = self._read_database()
        if not database_ok:
            problems.append(Problem.DATABASE_UNREACHABLE)
        chain_ok, state_lost = self._probe_chain(confirmed)
        if not chain_ok:
            problems.append(Problem.CHAIN_UNREACHABLE)
        if state_lost:
            problems.append(Problem.CHAIN_STATE_LOST)
        if lag is not None and lag.seconds_behind > self.max_lag_seconds:
            problems.append(Problem.ANCHORING_LAG)
        stuck = lag is not None and outbox_stuck(lag, self.worker.config.stuck_after)
        if stuck:
            problems.append(Problem.OUTBOX_STUCK)
        watcher = self.watcher()
        if watcher.stalled:
            problems.append(Problem.WATCHER_STALLED)
        if not database_ok:
            status = HealthStatus.DOWN
        elif problems:
            status = HealthStatus.DEGRADED
        else:
            status = HealthStatus.OK
        return Health(
            status=status,
            hospital=self.hospital,
            chain_id=self.deployment.chain_id,
            notary=self.deployment.notary.address,
            database_reachable=database_ok,
            chain_reachable=chain_ok,
            chain_state_lost=state_lost,
            lag=lag,
            outbox_stuck=stuck,
            last_checkpoint_at=self.worker.status.last_checkpoint_at,
            problems=tuple(problems),
            watcher=watcher,
        )

    def metrics(self) -> MetricsSnapshot:
        """Counts and lag read from the database, plus the worker's view of the chain."""
        lag: Lag | None = None
        archives: dict[str, int] = {}
        checkpoints: dict[str, int] = {}
        try:
            with self.db.session() as session:
                lag = _lag(session)
                archives = {
                    str(state): int(count)
                    for state, count in session.execute(
                        select(Archive.state, func.count()).group_by(Archive.state)
                    )
                }
                checkpoints = {
                    str(CheckpointState(state)): int(count)
                    for state, count in session.execute(
                        select(Checkpoint.state, func.count()).group_by(Checkpoint.state)
                    )
                }
        except SQLAlchemyError:
            log.warning("metrics: the database could not be read")
        worker = self.worker.status
        return MetricsSnapshot(
            lag=lag,
            archives_by_state=archives,
            checkpoints_by_state=checkpoints,
            chain_reachable=worker.chain_reachable,
            chain_state_lost=worker.chain_state_lost,
            outbox_stuck=lag is not None and outbox_stuck(lag, self.worker.config.stuck_after),
            anchoring_failures=worker.consecutive_failures,
            nonce_replans=worker.replans,
            commit_batches=self.committer.batches,
            commit_units=self.committer.units,
        )

    # -- probes --------------------------------------------------------------------------------

    def _read_database(self) -> tuple[Lag | None, int, bool]:
        """(lag, confirmed checkpoint count, reachable)."""
        try:
            with self.db.session() as session:
                session.execute(text("SELECT 1"))
                lag = _lag(session)
                confirmed = session.execute(
                    select(func.count())
                    .select_from(Checkpoint)
                    .where(Checkpoint.state == CheckpointState.CONFIRMED)
                ).scalar_one()
        except SQLAlchemyError:
            log.warning("health: the database could not be read")
            return None, 0, False
        return lag, int(confirmed), True

    def _probe_chain(self, confirmed_locally: int) -> tuple[bool, bool]:
        """(reachable, state lost). The chain lost its state when the notary has no code or
        holds fewer of this node's checkpoints than the node recorded as confirmed."""
        lost = self.worker.status.chain_state_lost
        facts = self._chain_facts()
        if facts is None:
            return False, lost  # a probe has been waiting on the chain for too long
        (reachable, has_code, on_chain), fresh = facts
        if not reachable:
            return False, lost
        if not has_code:
            return True, True
        # Only a count read after ``confirmed_locally`` may say checkpoints were lost: an older
        # one (another probe's) can trail a checkpoint confirmed since.
        return True, lost or (fresh and on_chain < confirmed_locally)

    def _chain_facts(self) -> tuple[tuple[bool, bool, int], bool] | None:
        """((reachable, the notary has code, this node's checkpoints on chain), read now): read
        now, or the last probe's (not fresh) while another probe is reading the chain; None when
        that probe has been waiting longer than a probe may (the chain does not answer)."""
        if not self._probing.acquire(blocking=False):
            last = self._last_probe
            waited = time.monotonic() - self._probe_started
            if waited > PROBE_STALE_AFTER:
                return None
            if last is not None:
                return last, False
            if not self._probing.acquire(timeout=PROBE_STALE_AFTER):  # the first probe ever
                return None
        try:
            self._probe_started = time.monotonic()
            try:
                has_code = self.probe.has_contract_code()
                on_chain = self.probe.checkpoint_count(self.hospital) if has_code else 0
                facts = (True, has_code, on_chain)
            except AnchoringError:
                facts = (False, True, 0)
            self._last_probe = facts
            return facts, True
        finally:
            self._probing.release()


def _lag(session: Session) -> Lag | None:
    """Anchoring lag now; None on a log that has no head yet."""
    try:
        return measure_lag(session, now=datetime.now(UTC))
    except LogError:
        return None
