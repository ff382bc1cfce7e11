"""``anchor_after_replication`` (docs/recovery.md §2) on a real node and anvil: a checkpoint covers
only the entries every log peer acknowledged, so a restore from peers always reaches the chain's
latest checkpoint; without the setting the node anchors its whole log at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from eth_account.signers.local import LocalAccount

from anchoring import storage
from anchoring.chain import RpcChain
from anchoring.events import RecordClass, Sensitivity
from node.models import LogShipment
from node.principal import Role
from node.services.archives import NewArchive
from tests.fixtures.node import MakeNode

NEW = NewArchive(
    record_class=RecordClass.LAB,
    sensitivity=Sensitivity.NORMAL,
    department="lab",
    title="Lab result",
    patient_id="MRN-0002",
    source_system="LIS",
    media_type="text/plain",
)


def _anchored_on_chain(chain: RpcChain, hospital: str) -> int:
    count = chain.checkpoint_count(hospital)
    return chain.checkpoint_at(hospital, count - 1).size if count else 0


def test_checkpoints_wait_for_the_log_peers(
    make_node: MakeNode, chain: RpcChain, hospital_b: LocalAccount, hospital_c: LocalAccount
) -> None:
    peers = {hospital_b.address: "http://127.0.0.1:9", hospital_c.address: "http://127.0.0.1:9"}
    node = make_node(
        peers=peers, log_replica_count=2, anchor_after_replication=True, anchor_interval=0.1
    )
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    for _ in range(3):
        node.archives.create(archivist, NEW, [b"result"])
    with node.db.session() as session:
        size = storage.current_size(session)
    assert size == 3

    time.sleep(0.3)  # the oldest entry waited past anchor_interval: a checkpoint is due …
    for _ in range(10):  # … but no peer acknowledged anything: nothing is anchored
        node.worker.tick()
        time.sleep(0.05)
    assert _anchored_on_chain(chain, node.hospital) == 0
    assert node.worker.tick().events_behind == 3

    def acknowledged(peer: str, shipped: int) -> None:
        with node.db.transaction() as session:
            row = session.get(LogShipment, peer)
            if row is None:
                session.add(LogShipment(peer=peer, shipped=shipped, updated_at=datetime.now(UTC)))
            else:
                row.shipped = shipped

    acknowledged(hospital_b.address, 3)  # one of two log peers: still not replicated
    for _ in range(10):
        node.worker.tick()
    assert _anchored_on_chain(chain, node.hospital) == 0
    acknowledged(hospital_c.address, 2)  # both hold the first two entries: those are anchored
    node.worker.tick()
    deadline = datetime.now(UTC).timestamp() + 30
    while _anchored_on_chain(chain, node.hospital) < 2 and datetime.now(UTC).timestamp() < deadline:
        node.worker.tick()
    assert _anchored_on_chain(chain, node.hospital) == 2
    acknowledged(hospital_c.address, 3)
    node.worker.run_until_anchored(timeout=30)
    assert _anchored_on_chain(chain, node.hospital) == 3


def test_without_the_setting_the_whole_log_is_anchored(
    make_node: MakeNode, chain: RpcChain
) -> None:
    node = make_node(peers={"0x" + "11" * 20: "http://127.0.0.1:9"}, log_replica_count=1)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    node.archives.create(archivist, NEW, [b"result"])
    node.worker.run_until_anchored(timeout=30)
    assert _anchored_on_chain(chain, node.hospital) == 1
