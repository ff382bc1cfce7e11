"""Blob stores: one protocol (``BlobStore``), a local content-addressed store and an IPFS store.

``open_blob_store`` picks the implementation from the configured kind ("local" | "ipfs").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from node.blobstore.base import (
    BlobNotFoundError,
    BlobRef,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailableError,
    DeferredSyncStore,
    FixityError,
)
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.config import NodeSettings

__all__ = [
    "BLOB_STORE_KINDS",
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailableError",
    "DeferredSyncStore",
    "FixityError",
    "claim_daemons",
    "open_blob_store",
    "open_node_blob_store",
]

BLOB_STORE_KINDS: Final = ("local", "ipfs")

log = logging.getLogger(__name__)


def open_blob_store(
    kind: str,
    *,
    local_root: Path | str | None = None,
    ipfs_api: str | None = None,
    ipfs_timeout: float = 60.0,
) -> BlobStore:
    """Build the configured store: ``"local"`` needs ``local_root``, ``"ipfs"`` needs ``ipfs_api``
    (a multiaddr such as ``/ip4/127.0.0.1/tcp/5001/http``). Misconfiguration raises ``ConfigError``.
    """
    if kind == "local":
        if local_root is None:
            raise ConfigError("the local blob store needs a root directory")
        from node.blobstore.local import LocalBlobStore

        return LocalBlobStore(local_root)
    if kind == "ipfs":
        if not ipfs_api:
            raise ConfigError("the IPFS blob store needs the node's API multiaddr")
        import ipfshttpclient.exceptions

        from node.blobstore.ipfs import IpfsBlobStore

        try:
            return IpfsBlobStore(ipfs_api, timeout=ipfs_timeout)
        except ipfshttpclient.exceptions.AddressError as exc:
            raise ConfigError(f"invalid IPFS API address {ipfs_api!r}") from exc
    raise ConfigError(f"unknown blob store kind {kind!r} (expected one of {BLOB_STORE_KINDS})")


def open_node_blob_store(settings: NodeSettings) -> BlobStore:
    """The node's blob store as its settings describe it: ``blob_store`` alone, or a
    ``TieredBlobStore`` over it and the cold tier (``cold_blob_dir`` or ``cold_ipfs_api``, not
    both). The runtime, ``restore --from-peers`` and backup verification all open it here, so a
    blob in the cold tier is found by all of them."""
    if settings.cold_blob_dir is not None and settings.cold_ipfs_api is not None:
        raise ConfigError("set cold_blob_dir or cold_ipfs_api, not both (one cold tier)")
    hot = open_blob_store(
        settings.blob_store, local_root=settings.blob_dir, ipfs_api=settings.ipfs_api
    )
    if settings.cold_blob_dir is None and settings.cold_ipfs_api is None:
        return hot
    from node.blobstore.tiered import TieredBlobStore

    if settings.cold_blob_dir is not None:
        return TieredBlobStore(hot, open_blob_store("local", local_root=settings.cold_blob_dir))
    return TieredBlobStore(hot, open_blob_store("ipfs", ipfs_api=settings.cold_ipfs_api))


def claim_daemons(blobs: BlobStore, node: str, *, production: bool) -> None:
    """Claim each IPFS daemon of the node's store (hot, and cold when tiered) for ``node`` and that
    tier. A daemon another node or tier already claimed would lose records: a transferred or
    moved blob has the same CID at both users, so one's unpin deletes the other's only copy. In
    production that refuses to start (``ConfigError``); in dev mode (tests and demos share one
    daemon) it is logged as a warning. A daemon that cannot be reached is not a reason to stay
    down (proofs and metadata need no blobs; blob reads answer 503 until it is back): logged, and
    checked again at the next start."""
    from node.blobstore.ipfs import OWNER_FILE, IpfsBlobStore
    from node.blobstore.tiered import TieredBlobStore

    tiers = (
        [("hot", blobs.hot), ("cold", blobs.cold)]
        if isinstance(blobs, TieredBlobStore)
        else [("hot", blobs)]
    )
    for tier, store in tiers:
        if not isinstance(store, IpfsBlobStore):
            continue
        try:
            other = store.claim(f"{node} {tier}")
        except BlobStoreUnavailableError as exc:
            log.warning("the %s tier's IPFS daemon could not be claimed (%s)", tier, exc.code)
            continue
        if other is None:
            continue
        message = (
            f"the IPFS daemon of this node's {tier} tier already holds the blobs of {other}: "
            "each node, and each tier, needs its own daemon (a transferred or moved record "
            "would lose its only copy); if this node replaces that user (a new member key, a "
            f"daemon moved to the other tier), release the claim: ipfs files rm {OWNER_FILE}"
        )
        if production:
            raise ConfigError(message)
        log.warning("%s; dev mode: starting anyway", message)
