"""A running hospital node: configuration, keys, database, blob store, chain client, anchoring
worker and the services built on them. ``NodeRuntime.open`` fails closed on insecure settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session

from anchoring.chain import ContractWriter, RpcChain
from anchoring.deployment import Deployment
from anchoring.storage import OutboxItem
from anchoring.worker import AnchoringWorker, WorkerConfig
from node import migrations
from node.blobstore import BlobStore, open_blob_store
from node.config import NodeSettings
from node.db import Database, GroupCommitter
from node.errors import ConfigError
from node.keystore import Keystore
from node.models import Archive
from node.services.archives import ArchiveService
from node.services.keys import ApiKeyService
from node.services.proofs import ProofService

log = logging.getLogger(__name__)


@dataclass
class NodeRuntime:
    """Everything one hospital node runs on. Build with ``open``; ``start`` the background parts."""

    settings: NodeSettings
    keystore: Keystore
    db: Database
    blobs: BlobStore
    deployment: Deployment
    chain: RpcChain
    writer: ContractWriter
    committer: GroupCommitter
    worker: AnchoringWorker
    archives: ArchiveService = field(init=False)
    proofs: ProofService = field(init=False)
    keys: ApiKeyService = field(init=False)
    _scheduler: BackgroundScheduler | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.archives = ArchiveService(self)
        self.proofs = ProofService(self)
        self.keys = ApiKeyService(self)

    @property
    def hospital(self) -> str:
        """This node's member address (the owner of its log)."""
        return self.keystore.address

    @classmethod
    def open(cls, settings: NodeSettings, *, create_keystore: bool | None = None) -> NodeRuntime:
        """Load keys, migrate the database, connect the stores. Nothing runs in the background
        until ``start``. ``create_keystore`` defaults to dev mode: production never generates keys."""
        keystore = _open_keystore(settings, create_keystore)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        deployment = Deployment.load(settings.resolved_deployment_file)
        url = settings.resolved_database_url
        migrations.upgrade(url)
        db = Database.connect(url)
        blobs = open_blob_store(
            settings.blob_store, local_root=settings.blob_dir, ipfs_api=settings.ipfs_api
        )
        chain = RpcChain(settings.rpc_url, deployment)
        writer = ContractWriter(chain, keystore.account())
        committer = GroupCommitter(db)
        worker = AnchoringWorker(
            sessions=db.write_session,
            chain=writer,
            config=WorkerConfig(
                interval=settings.anchor_interval,
                max_batch=settings.anchor_max_batch,
                confirmations=settings.anchor_confirmations,
            ),
            on_confirmed={"register": _registered},
            on_failed={"register": _registration_failed},
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
        )

    def start(self, *, scheduler: bool = True) -> None:
        """Start the database writer and (unless told not to) the anchoring schedule."""
        self.committer.start()
        if scheduler and self._scheduler is None:
            sched = BackgroundScheduler(timezone="UTC")
            sched.add_job(
                self.worker.tick,
                "interval",
                seconds=self.settings.anchor_tick,
                id="anchoring",
                max_instances=1,
                coalesce=True,
            )
            sched.start()
            self._scheduler = sched

    def close(self) -> None:
        """Stop background work and release connections (pending units finish first)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.committer.stop()
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
    else:
        raise ConfigError(
            f"no keystore at {path}; create one with `archivechain keys init` (production mode "
            "never generates keys on its own)"
        )
    if settings.mode != "dev" and keystore.uses_weak_kdf:
        raise ConfigError("the keystore uses a weak scrypt cost; production mode refuses it")
    return keystore


def _registered(session: Session, item: OutboxItem) -> None:
    archive = session.get(Archive, item.archive_id) if item.archive_id else None
    if archive is not None and archive.chain_status == "pending":
        archive.chain_status = "registered"


def _registration_failed(session: Session, item: OutboxItem) -> None:
    archive = session.get(Archive, item.archive_id) if item.archive_id else None
    if archive is not None:
        archive.chain_status = "failed"
    log.error("on-chain registration of archive %s failed: %s", item.archive_id, item.error)
