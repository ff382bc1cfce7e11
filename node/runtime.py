"""A running hospital node: configuration, keys, database, blob store, chain client, anchoring
worker and the services built on them. ``NodeRuntime.open`` fails closed on insecure settings."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.chain import ContractWriter, Role, RpcChain
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError
from anchoring.storage import OutboxItem, OutboxState
from anchoring.worker import AnchoringWorker, Lag, WorkerConfig, enqueue_call, measure_lag
from node import migrations
from node.alerts import AlertSink, LoggingAlertSink
from node.backup import refuse_unverified_restore
from node.blobstore import BlobStore, claim_daemons, open_blob_store, open_node_blob_store
from node.config import NodeSettings
from node.db import Clock, Database, GroupCommitter, UnitOfWork, utc_now
from node.dicom import store_instance
from node.dicom_scp import DicomScp
from node.encounters import EncounterFanOut
from node.errors import ConfigError
from node.keyring import KeyRing
from node.keystore import Keystore
from node.ledger import Ledger
from node.members import MemberDirectory
from node.mllp import MllpListener
from node.models import Archive, PeerNonce
from node.peers import WINDOW_SECONDS, PeerClient, PeerVerifier
from node.pseudonyms import Pseudonyms
from node.readback import CiphertextReader
from node.remote import RemoteNodes
from node.services.alerts import AlertService
from node.services.archives import ArchiveService
from node.services.attestations import AttestationService
from node.services.audits import AuditScope, FixityAuditService
from node.services.derivatives import DerivativeService
from node.services.hl7 import Hl7Service
from node.services.ingestion import (
    EncounterBatchArchiver,
    IngestionService,
    system_principal,
)
from node.services.kek import KekRotationService
from node.services.keys import ApiKeyService
from node.services.logaudit import LogAuditService
from node.services.logship import LogShippingService, replicated_point
from node.services.monitor import MonitorService
from node.services.notices import DestructionNoticeService
from node.services.permissions import AccessGate
from node.services.proofs import ProofService
from node.services.public import PublicService
from node.services.quality import QualityService
from node.services.regulator import RegulatorService
from node.services.replicas import ReplicaHolder, ReplicaService
from node.services.reports import ReportService
from node.services.retention import RetentionService
from node.services.shares import ShareService
from node.services.signin import SigninService
from node.services.status import HEALTH_PROBE_TIMEOUT, StatusService, WatcherHealth
from node.services.stays import StayRecorder
from node.services.tags import TagService
from node.services.tiers import TierService
from node.services.transfers import TransferService
from node.services.webhooks import WebhookService
from node.tombstones import TombstoneLedger
from node.watcher import ChainWatcher

log = logging.getLogger(__name__)


@dataclass
class NodeRuntime:
    """Everything one hospital node runs on, and the one place that wires it: the services get
    the narrow parts they use (ledger, key ring, unit runner, blob store, member directory,
    remote nodes, clock) in their constructors. Build with ``open``; ``start`` the background
    parts."""

    settings: NodeSettings
    keystore: Keystore
    db: Database
    blobs: BlobStore
    deployment: Deployment
    chain: RpcChain
    writer: ContractWriter
    committer: GroupCommitter
    worker: AnchoringWorker
    tombstones: TombstoneLedger
    alerts: AlertSink = field(default_factory=LoggingAlertSink)
    encounters: EncounterFanOut = field(default_factory=EncounterFanOut)
    alert_store: AlertService = field(init=False)
    clock: Clock = utc_now
    ledger: Ledger = field(init=False)
    keyring: KeyRing = field(init=False)
    pseudonyms: Pseudonyms = field(init=False)
    members: MemberDirectory = field(init=False)
    peer_client: PeerClient = field(init=False)
    peer_verifier: PeerVerifier = field(init=False)
    remote: RemoteNodes = field(init=False)
    archives: ArchiveService = field(init=False)
    ingestion: IngestionService = field(init=False)
    hl7: Hl7Service = field(init=False)
    mllp: MllpListener | None = field(default=None, init=False)
    dicom: DicomScp | None = field(default=None, init=False)
    proofs: ProofService = field(init=False)
    public: PublicService = field(init=False)
    tags: TagService = field(init=False)
    keys: ApiKeyService = field(init=False)
    kek: KekRotationService = field(init=False)
    transfers: TransferService = field(init=False)
    shares: ShareService = field(init=False)
    notices: DestructionNoticeService = field(init=False)
    retention: RetentionService = field(init=False)
    status: StatusService = field(init=False)
    fixity: FixityAuditService = field(init=False)
    log_audit: LogAuditService = field(init=False)
    monitor: MonitorService = field(init=False)
    webhooks: WebhookService = field(init=False)
    reports: ReportService = field(init=False)
    quality: QualityService = field(init=False)
    watcher: ChainWatcher = field(init=False)
    gate: AccessGate = field(init=False)
    signin: SigninService = field(init=False)
    regulator: RegulatorService = field(init=False)
    attestations: AttestationService = field(init=False)
    derivatives: DerivativeService = field(init=False)
    readback: CiphertextReader = field(init=False)
    replicas: ReplicaService = field(init=False)
    replica_holder: ReplicaHolder = field(init=False)
    log_shipping: LogShippingService = field(init=False)
    tiers: TierService = field(init=False)
    _scheduler: BackgroundScheduler | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        hospital = self.keystore.address
        settings, db, units = self.settings, self.db, self.committer
        self.alert_store = AlertService(db=db, units=units)
        self.webhooks = WebhookService(settings=settings, db=db, hospital=hospital)
        self.alert_store.listeners.append(self.webhooks.enqueue)
        if isinstance(self.alerts, LoggingAlertSink):  # the default: keep them in the database
            self.alerts = self.alert_store
        self.ledger = Ledger(
            hospital, clock_skew_tolerance=timedelta(seconds=settings.clock_skew_tolerance_seconds)
        )
        self.keyring = KeyRing(self.keystore)
        self.pseudonyms = Pseudonyms(self.keystore.pseudonym_secret)
        self.members = MemberDirectory(self.chain, hospital)
        self.peer_client = PeerClient(self.keystore.account())
        self.peer_verifier = PeerVerifier(
            recipient=hospital,
            is_active_hospital=lambda address: self.members.is_active(address, Role.HOSPITAL),
            remember_nonce=self._remember_nonce,
        )
        self.remote = RemoteNodes(self.peer_client, settings.peers)
        self.proofs = ProofService(hospital=hospital, deployment=self.deployment, db=db)
        self.public = PublicService(db=db, proofs=self.proofs, deployment=self.deployment)
        self.quality = QualityService(
            settings=settings,
            db=db,
            ledger=self.ledger,
            keyring=self.keyring,
            blobs=self.blobs,
            alerts=self.alerts,
        )
        self.gate = AccessGate(
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            alerts=self.alerts,
            clock=self.clock,
        )
        self.signin = SigninService(
            settings=settings,
            db=db,
            units=units,
            members=self.members,
            chain_id=self.chain.chain_id,
            clock=self.clock,
        )
        self.regulator = RegulatorService(
            hospital=hospital,
            db=db,
            ledger=self.ledger,
            pseudonyms=self.pseudonyms,
            chain=self.chain,
        )
        self.readback = CiphertextReader(self.blobs)
        self.archives = ArchiveService(
            gate=self.gate,
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            keyring=self.keyring,
            blobs=self.blobs,
            pseudonyms=self.pseudonyms,
            quality=self.quality.check,
            reader=self.readback,
        )
        self.tags = TagService(
            db=db, units=units, ledger=self.ledger, reader_pseudonym=self.pseudonyms.staff
        )
        self.ingestion = IngestionService(
            db=db,
            units=units,
            ledger=self.ledger,
            archives=self.archives,
            pseudonyms=self.pseudonyms,
            encounters=self.encounters,
            rules=settings.classification,
        )
        self.encounters.add(StayRecorder(db=db, units=units, pseudonyms=self.pseudonyms))
        self.encounters.add(
            EncounterBatchArchiver(self.ingestion, system_principal(self.pseudonyms, "encounters"))
        )
        self.hl7 = Hl7Service(
            ingestion=self.ingestion,
            principal=system_principal(self.pseudonyms, "mllp"),
            receiving_facility=settings.name,
        )
        self.keys = ApiKeyService(
            db=db, units=units, pseudonyms=self.pseudonyms, members=self.members
        )
        self.fixity = FixityAuditService(
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            blobs=self.blobs,
            alerts=self.alerts,
        )
        self.log_audit = LogAuditService(
            hospital=hospital, db=db, chain=self.chain, alerts=self.alerts
        )
        self.kek = KekRotationService(keystore=self.keystore, db=db, units=units)
        self.transfers = TransferService(
            settings=settings,
            deployment=self.deployment,
            db=db,
            units=units,
            ledger=self.ledger,
            keyring=self.keyring,
            blobs=self.blobs,
            members=self.members,
            remote=self.remote,
            proofs=self.proofs,
            chain=self.chain,
            reader=self.readback,
        )
        self.shares = ShareService(
            gate=self.gate,
            db=db,
            units=units,
            ledger=self.ledger,
            keyring=self.keyring,
            blobs=self.blobs,
            members=self.members,
            remote=self.remote,
            proofs=self.proofs,
            reader=self.readback,
            clock=self.clock,
        )
        self.notices = DestructionNoticeService(
            hospital=hospital,
            db=db,
            units=units,
            ledger=self.ledger,
            keyring=self.keyring,
            remote=self.remote,
            chain=self.chain,
            alerts=self.alerts,
        )
        self.retention = RetentionService(
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            pseudonyms=self.pseudonyms,
            alerts=self.alerts,
            clock=self.clock,
            keyring=self.keyring,
            blobs=self.blobs,
            signer=self.keystore.account(),
            deployment=self.deployment,
            tombstones=self.tombstones,
            encounters=self.encounters,
            custody=self.chain.custody,
        )
        self.encounters.add(self.retention)
        self.replicas = ReplicaService(
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            blobs=self.blobs,
            members=self.members,
            remote=self.remote,
            alerts=self.alerts,
            keystore=self.keystore,
            clock=self.clock,
        )
        self.replica_holder = ReplicaHolder(
            settings=settings,
            db=db,
            units=units,
            store=open_blob_store("local", local_root=settings.replica_dir),
            hospital=hospital,
        )
        self.log_shipping = LogShippingService(
            settings=settings,
            db=db,
            units=units,
            members=self.members,
            remote=self.remote,
            hospital=hospital,
            chain_size=self._chain_log_size,
        )
        self.fixity.on_failures = self.replicas.repair_failures
        self.fixity.check_replicas = self.replicas.challenge_versions
        self.readback.heal = self.replicas.ensure_local  # repair on read
        self.tiers = TierService(
            settings=settings,
            db=db,
            units=units,
            ledger=self.ledger,
            blobs=self.blobs,
            clock=self.clock,
        )
        self.retention.replica_holders = self.replicas.holders_many
        self.status = StatusService(
            hospital=hospital,
            deployment=self.deployment,
            db=db,
            chain=self.chain,
            worker=self.worker,
            committer=self.committer,
            max_lag_seconds=settings.anchoring_lag_alert_seconds,
            probe=RpcChain(settings.rpc_url, self.deployment, timeout=HEALTH_PROBE_TIMEOUT),
            watcher=lambda: WatcherHealth(self.watcher.stalled(), self.watcher.status.cursor),
        )
        self.reports = ReportService(
            settings=settings, db=db, hospital=hospital, lag=self._current_lag
        )
        self.monitor = MonitorService(
            settings=settings, db=db, health=self.status.health, alerts=self.alerts
        )
        self.watcher = ChainWatcher(
            deployment=self.deployment,
            chain=self.chain,
            db=db,
            units=units,
            ledger=self.ledger,
            transfers=self.transfers,
            membership_changed=self.peer_verifier.forget_membership,
            confirmations=settings.watcher_confirmations,
            alerts=self.alerts,
            stall_seconds=settings.watcher_stall_seconds,
        )
        self.attestations = AttestationService(
            hospital=hospital,
            db=db,
            units=units,
            members=self.members,
            pseudonyms=self.pseudonyms,
            signer=self.keystore.account(),
            deployment=self.deployment,
            latest_block=self.chain.rpc.block_number,
        )
        self.derivatives = DerivativeService(
            db=db,
            ledger=self.ledger,
            archives=self.archives,
            pseudonym_secret=self.keystore.pseudonym_secret,
        )
        self.worker.on_confirmed["acceptTransfer"] = lambda session, item: (
            self.transfers.chain_accept_confirmed(session, item.archive_id or "")
        )
        self.worker.on_failed["acceptTransfer"] = lambda session, item: (
            self.transfers.chain_accept_failed(session, item.archive_id or "")
        )

    @property
    def hospital(self) -> str:
        """This node's member address (the owner of its log)."""
        return self.keystore.address

    @classmethod
    def open(
        cls,
        settings: NodeSettings,
        *,
        create_keystore: bool | None = None,
        clock: Clock = utc_now,
    ) -> NodeRuntime:
        """Load keys, migrate the database, connect the stores. Nothing runs in the background
        until ``start``. ``create_keystore`` defaults to dev mode: production never generates keys.
        ``clock`` is the node's "now" (event times, deadlines due): the wall clock but in tests."""
        refuse_unverified_restore(settings.data_dir)
        keystore = _open_keystore(settings, create_keystore)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        deployment = Deployment.load(settings.resolved_deployment_file)
        url = settings.resolved_database_url
        migrations.upgrade(url)
        db = Database.connect(url, sqlite_cache_mib=settings.sqlite_cache_mib)
        blobs = open_node_blob_store(settings)  # with its cold tier (docs/recovery.md §3)
        claim_daemons(blobs, keystore.address, production=settings.mode == "production")
        # Before anything serves: a restored backup must not bring a destroyed key back.
        tombstones = TombstoneLedger(settings.resolved_tombstone_file)
        tombstones.replay(db, blobs, clock())
        chain = RpcChain(settings.rpc_url, deployment)
        writer = ContractWriter(chain, keystore.account())
        committer = GroupCommitter(db, clock=clock)
        worker = AnchoringWorker(
            sessions=db.write_session,
            chain=writer,
            config=WorkerConfig(
                interval=settings.anchor_interval,
                max_batch=settings.anchor_max_batch,
                confirmations=settings.anchor_confirmations,
                stuck_after=settings.outbox_stuck_seconds,
                anchor_limit=(
                    functools.partial(
                        replicated_point,
                        peers=min(settings.log_replica_count, len(settings.peers)),
                    )
                    if settings.anchor_after_replication
                    else None
                ),
            ),
            on_confirmed={"register": _registered},
            on_failed={"register": _registration_failed},
            clock=lambda: clock().timestamp(),
        )
        return cls(
            settings=settings,
            keystore=keystore,
            db=db,
            blobs=blobs,
            deployment=deployment,
            chain=chain,
            writer=writer,
            committer=committer,
            worker=worker,
            tombstones=tombstones,
            clock=clock,
        )

    def start(self, *, scheduler: bool = True) -> None:
        """Start the database writer and (unless told not to) the background schedule:
        anchoring, the chain watcher, incoming transfers, expiry of offers and grants, the
        fixity audit, the log audit and the monitor (health and access-anomaly alerts) and webhook delivery."""
        self.committer.start()
        if self.settings.mllp_enabled and self.mllp is None:
            self.mllp = MllpListener(
                self.hl7.handle,
                host=self.settings.mllp_host,
                port=self.settings.mllp_port,
                max_message_bytes=self.settings.mllp_max_message_bytes,
                idle_timeout=self.settings.mllp_idle_timeout,
                batch_handler=self.hl7.handle_many,
            )
            self.mllp.start()
        if self.settings.dicom_enabled and self.dicom is None:
            scp_principal = system_principal(self.pseudonyms, "dicom")
            self.dicom = DicomScp(
                lambda data, calling: store_instance(self.ingestion, scp_principal, data, calling),
                ae_title=self.settings.dicom_ae_title,
                host=self.settings.dicom_host,
                port=self.settings.dicom_port,
                allowed_callers=self.settings.dicom_allowed_callers,
            )
            self.dicom.start()
        self.sync_public_key()
        threading.Thread(target=self._warm_proofs, name="warm-proofs", daemon=True).start()
        if scheduler and self._scheduler is None:
            sched = BackgroundScheduler(timezone="UTC")
            jobs = (
                ("anchoring", self.worker.tick, self.settings.anchor_tick),
                ("watcher", self.watcher.tick, self.settings.watcher_tick),
                ("incoming-transfers", self.transfers.process_incoming, 1.0),
                ("expiry", self._expire, 30.0),
                ("fixity-audit", self.fixity.tick, self.settings.fixity_tick),
                ("log-audit", lambda: self.log_audit.audit(None), self.settings.log_audit_interval),
                (
                    "qc-audit",
                    lambda: self.quality.audit(None, AuditScope()),
                    self.settings.qc_audit_interval,
                ),
                ("monitor", self.monitor.tick, self.settings.monitor_tick),
                ("webhooks", self.webhooks.deliver_due, self.settings.webhook_tick),
                ("replicas", self.replicas.tick, self.settings.replica_tick),
                ("log-shipping", self.log_shipping.ship, self.settings.log_ship_tick),
                ("tiers", self.tiers.tick, self.settings.tier_tick),
                ("destruction-notices", self.notices.deliver_due, 30.0),
                (
                    "retention",
                    self.retention.run_schedule,
                    self.settings.retention_job_hours * 3600,
                ),
            )
            for name, job, seconds in jobs:
                sched.add_job(
                    _logged(name, job),
                    "interval",
                    seconds=seconds,
                    id=name,
                    max_instances=1,
                    coalesce=True,
                )
            sched.start()
            self._scheduler = sched

    def _current_lag(self) -> Lag | None:
        """Anchoring lag now (None before the log has a head)."""
        try:
            with self.db.session() as session:
                return measure_lag(session, now=datetime.now(UTC))
        except AnchoringError:
            return None

    def _warm_proofs(self) -> None:
        """Load the log's upper levels (held in memory for proofs) now, not on the first proof
        request: at 10^7 leaves that first request would otherwise wait about half a second."""
        try:
            with self.db.session() as session:
                size = storage.current_size(session)
                if size:
                    storage.inclusion_proof(session, size - 1, size)
        except Exception as exc:  # best effort: e.g. the node closed while warming
            log.warning("proof cache not warmed (%s); the first proof loads it", type(exc).__name__)

    def sync_public_key(self) -> bool:
        """Queue ``rotatePublicKey`` when the registry holds another encryption key for us (so
        other hospitals wrap keys to the one this node can open). True when queued."""
        try:
            registered = bytes(self.chain.member(self.hospital).public_key)
        except AnchoringError as exc:  # chain down: the next start tries again
            log.warning("cannot compare the registered public key: %s", exc)
            return False
        ours = self.keystore.encryption_public_key
        if registered == ours:
            return False
        with self.db.session() as session:
            pending = session.execute(
                select(OutboxItem.id).where(
                    OutboxItem.state.in_([OutboxState.PENDING, OutboxState.SUBMITTED]),
                    OutboxItem.kind == "call",
                )
            ).scalars()
            if any(
                session.get_one(OutboxItem, i).payload.get("function") == "rotatePublicKey"
                for i in pending
            ):
                return False
        self.committer.run(
            lambda uow: enqueue_call(
                uow.session,
                "rotatePublicKey",
                [ours],
                archive_id=None,
                contract="ConsortiumRegistry",
            )
        )
        log.info("queued rotatePublicKey: the registry held another encryption key")
        return True

    def _expire(self) -> None:
        self.transfers.expire_offers()
        self.shares.expire()
        with self.db.transaction() as session:
            cutoff = datetime.now(UTC) - timedelta(seconds=2 * WINDOW_SECONDS)
            session.execute(delete(PeerNonce).where(PeerNonce.seen_at < cutoff))

    def _remember_nonce(self, nonce: str, sender: str) -> bool:
        def unit(uow: UnitOfWork) -> bool:
            if uow.session.get(PeerNonce, nonce) is not None:
                return False
            uow.session.add(PeerNonce(nonce=nonce, sender=sender, seen_at=uow.now))
            return True

        return self.committer.run(unit)

    def _chain_log_size(self, hospital: str) -> int:
        """The size of ``hospital``'s latest on-chain checkpoint (0 without one)."""
        count = self.chain.checkpoint_count(hospital)
        return self.chain.checkpoint_at(hospital, count - 1).size if count else 0

    def close(self) -> None:
        """Stop background work and release connections (pending units finish first)."""
        if self.mllp is not None:
            self.mllp.stop()
            self.mllp = None
        if self.dicom is not None:
            self.dicom.stop()
            self.dicom = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.peer_client.close()
        self.committer.stop()
        self.fixity.close()
        self.blobs.close()
        self.db.dispose()

    def __enter__(self) -> NodeRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_keystore(settings: NodeSettings, create: bool | None) -> Keystore:
    passphrase = settings.passphrase()  # refuses insecure values outside dev mode
    path: Path = settings.resolved_keystore_path
    if path.exists():
        keystore = Keystore.load(path, passphrase)
    elif create if create is not None else settings.mode == "dev":
        path.parent.mkdir(parents=True, exist_ok=True)
        keystore = Keystore.create(path, passphrase)
    elif settings.mode == "dev":  # a maintenance command on a directory that holds no node
        raise ConfigError(
            f"no keystore at {path}: is this a node's data directory? (in dev mode `archivechain "
            "node run` creates the keystore; this command never does)"
        )
    else:
        raise ConfigError(
            f"no keystore at {path}; create one with `archivechain keys init` (production mode "
            "never generates keys on its own)"
        )
    if settings.mode != "dev" and keystore.uses_weak_kdf:
        raise ConfigError("the keystore uses a weak scrypt cost; production mode refuses it")
    return keystore


def _logged(name: str, job: Callable[[], object]) -> Callable[[], None]:
    """A scheduler job that logs (never raises) what goes wrong, so the schedule keeps running."""

    def run() -> None:
        try:
            job()
        except Exception:
            log.exception("background job %s failed", name)

    return run


def _registered(session: Session, item: OutboxItem) -> None:
    archive = session.get(Archive, item.archive_id) if item.archive_id else None
    if archive is not None and archive.chain_status == "pending":
        archive.chain_status = "registered"


def _registration_failed(session: Session, item: OutboxItem) -> None:
    archive = session.get(Archive, item.archive_id) if item.archive_id else None
    if archive is not None:
        archive.chain_status = "failed"
    log.error("on-chain registration of archive %s failed: %s", item.archive_id, item.error)
