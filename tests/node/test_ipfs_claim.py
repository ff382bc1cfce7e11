"""One IPFS daemon per node and per tier (``IpfsBlobStore.claim``, ``claim_daemons``).

A node's blob store owns its daemon's pins, and a blob has the same CID wherever its bytes are
(a transferred record at its former and new custodian, a moved blob in both tiers), so a daemon
shared by two users loses the only copy when one of them unpins. Each test here runs its own
js-ipfs daemon (real, offline) so the claims of other tests do not meet it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from devtools.ipfsdev import IpfsDaemon
from node.blobstore import claim_daemons
from node.blobstore.ipfs import IpfsBlobStore
from node.blobstore.local import LocalBlobStore
from node.blobstore.tiered import TieredBlobStore
from node.errors import ConfigError
from node.ports import free_port
from tests.fixtures.ipfs import start_ipfs_daemon
from tests.fixtures.node import MakeNode


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[IpfsDaemon]:
    started = start_ipfs_daemon(tmp_path / "repo")
    yield started
    started.stop()


def test_the_first_claim_holds_and_survives_garbage_collection(daemon: IpfsDaemon) -> None:
    store = IpfsBlobStore(daemon.api_addr)
    try:
        assert store.claim("0xAAA hot") is None  # claimed now
        assert store.claim("0xAAA hot") is None  # ours already (a restart)
        store.collect_garbage()  # the MFS file is not an unpinned block: it stays
        assert store.claim("0xBBB hot") == "0xAAA hot"
        assert store.claim("0xAAA cold") == "0xAAA hot"  # the other tier of the same node too
    finally:
        store.close()


def test_a_shared_daemon_refuses_a_production_node_and_warns_in_dev(
    daemon: IpfsDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = IpfsBlobStore(daemon.api_addr), IpfsBlobStore(daemon.api_addr)
    try:
        claim_daemons(first, "0xAAA", production=True)
        claim_daemons(first, "0xAAA", production=True)  # the same node again: accepted
        with pytest.raises(ConfigError, match="already holds the blobs of 0xAAA hot"):
            claim_daemons(second, "0xBBB", production=True)
        with caplog.at_level(logging.WARNING, logger="node.blobstore"):
            claim_daemons(second, "0xBBB", production=False)
        assert "already holds the blobs of 0xAAA hot" in caplog.text
        assert "dev mode: starting anyway" in caplog.text
        # a cold tier on a daemon that is another user's hot tier: refused the same way
        tiered = TieredBlobStore(LocalBlobStore(tmp_path / "hot"), second)
        with pytest.raises(ConfigError, match="this node's cold tier"):
            claim_daemons(tiered, "0xAAA", production=True)
        claim_daemons(LocalBlobStore(tmp_path / "local"), "0xCCC", production=True)  # no daemon
    finally:
        first.close()
        second.close()


def test_a_node_claims_its_daemon_when_it_opens(
    daemon: IpfsDaemon,
    make_node: MakeNode,
    hospital_b: LocalAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The runtime claims at open: the first node's address is recorded; a second node on the
    same daemon (dev mode here) is warned, naming the first."""
    first = make_node(blob_store="ipfs", ipfs_api=daemon.api_addr)
    store = IpfsBlobStore(daemon.api_addr)
    try:
        assert store.claim(f"{first.hospital} hot") is None  # recorded by the node
    finally:
        store.close()
    with caplog.at_level(logging.WARNING, logger="node.blobstore"):
        make_node(hospital_b, blob_store="ipfs", ipfs_api=daemon.api_addr)
    assert f"already holds the blobs of {first.hospital} hot" in caplog.text


def test_an_unreachable_daemon_does_not_keep_the_node_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Claiming needs the daemon; one that is down at start is logged and left for the next start
    (the node still serves proofs and metadata; blob reads answer 503 meanwhile)."""
    store = IpfsBlobStore(f"/ip4/127.0.0.1/tcp/{free_port()}/http", timeout=2)
    try:
        with caplog.at_level(logging.WARNING, logger="node.blobstore"):
            claim_daemons(store, "0xAAA", production=True)
    finally:
        store.close()
    assert "could not be claimed (blob_store_unavailable)" in caplog.text
