"""An IPFS daemon as the cold tier (docs/recovery.md §3), on a real js-ipfs daemon and a real node
on SQLite and PostgreSQL: the IPFS store names a multi-block blob by its own CID, so a move records
the copy's CID as the version's ``cid`` with the TIER_MOVE; the content opens from IPFS, passes the
fixity audit, verifies on chain; a recall checks the ciphertext's SHA-256, restores the local id and
unpins the cold copy; a copy that does not match the recorded hash is refused and nothing moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.events import Purpose, RecordClass, Sensitivity
from anchoring.verifier import verify_bundle
from node.backup import verify_node_data
from node.blobstore.ipfs import IpfsBlobStore
from node.blobstore.local import LocalBlobStore
from node.blobstore.tiered import TieredBlobStore
from node.errors import ConfigError
from node.models import ArchiveTier, ArchiveVersion
from node.principal import Role
from node.services.archives import NewArchive
from node.services.audits import AuditScope
from tests.fixtures.node import MakeNode


def _new() -> NewArchive:
    return NewArchive(
        record_class=RecordClass.INPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="cardiology",
        title="Discharge summary",
        patient_id="MRN-0002",
        source_system="HIS",
        media_type="text/plain",
    )


def _cid(node: object, archive_id: str) -> str:
    with node.db.session() as session:  # type: ignore[attr-defined]
        return str(
            session.execute(
                select(ArchiveVersion.cid).where(ArchiveVersion.archive_id == archive_id)
            ).scalar_one()
        )


def test_an_ipfs_cold_tier_keeps_its_own_cid_and_recalls_checked_bytes(
    make_node: MakeNode, ipfs_api_addr: str, database_url: str, chain: RpcChain
) -> None:
    node = make_node(
        database_url=database_url,
        cold_ipfs_api=ipfs_api_addr,
        tier_cold_after_days={"INPATIENT": 0},
    )
    assert isinstance(node.blobs, TieredBlobStore)
    assert isinstance(node.blobs.hot, LocalBlobStore)
    assert isinstance(node.blobs.cold, IpfsBlobStore)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    content = b"".join(
        b"inpatient record, line %06d, for the cold tier\n" % i for i in range(16000)
    )
    assert len(content) > 2 * 256 * 1024  # several IPFS blocks: the CID is a dag-pb root
    archive = node.archives.create(archivist, _new(), [content])
    node.archives.archive(archivist, archive.id)
    hot_cid = _cid(node, archive.id)

    report = node.tiers.tick()
    assert (report.moved, report.problems) == (1, [])
    cold_cid = _cid(node, archive.id)
    assert cold_cid != hot_cid  # the IPFS store's own id, recorded with the move
    assert node.blobs.cold.exists(cold_cid)
    assert not node.blobs.hot.exists(hot_cid)
    assert node.blobs.tier_of(cold_cid) == "cold"
    with node.db.session() as session:
        assert session.get_one(ArchiveTier, archive.id).tier == "cold"
    assert [e.event_type for e in node.archives.events(archivist, archive.id)][-1] == "TIER_MOVE"
    stream = node.archives.open_content(archivist, archive.id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == content  # read from IPFS, decrypted
    audit = node.fixity.audit(None, AuditScope())
    assert (audit.checked, audit.failed) == (1, 0)
    assert node.tiers.tick().moved == 0  # already cold
    node.worker.run_until_anchored(timeout=30)
    checked = verify_node_data(node.settings)  # what restore runs: finds the blob in IPFS
    assert (checked.blobs, checked.problems) == (1, [])

    # A recall whose copy does not hash to the recorded value is refused: nothing moves.
    with node.db.session() as session:
        real_sha = session.execute(
            select(ArchiveVersion.ciphertext_sha256).where(ArchiveVersion.archive_id == archive.id)
        ).scalar_one()

    def record_sha(value: str) -> None:
        with node.db.transaction() as session:
            session.execute(
                update(ArchiveVersion)
                .where(ArchiveVersion.archive_id == archive.id)
                .values(ciphertext_sha256=value)
            )

    record_sha("00" * 32)
    refused = node.tiers.recall(archive.id)
    assert refused.moved == 0
    assert len(refused.problems) == 1
    assert "does not match its recorded hash" in refused.problems[0]
    assert _cid(node, archive.id) == cold_cid
    assert node.blobs.cold.exists(cold_cid)
    assert not node.blobs.hot.exists(hot_cid)  # the mismatching hot copy was deleted again
    moves = [e.event_type for e in node.archives.events(archivist, archive.id)]
    assert moves.count("TIER_MOVE") == 1
    record_sha(real_sha)

    # The recall: checked, the local id back, the IPFS copy unpinned, TIER_MOVE cold → hot.
    back = node.tiers.recall(archive.id)
    assert (back.moved, back.problems) == (1, [])
    assert _cid(node, archive.id) == hot_cid
    assert node.blobs.hot.exists(hot_cid)
    assert not node.blobs.cold.exists(cold_cid)
    with node.db.session() as session:
        assert session.get_one(ArchiveTier, archive.id).tier == "hot"
    stream = node.archives.open_content(archivist, archive.id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == content
    moves = [e.event_type for e in node.archives.events(archivist, archive.id)]
    assert moves.count("TIER_MOVE") == 2
    node.worker.run_until_anchored(timeout=30)
    built = node.proofs.bundle(archivist, archive.id)
    verified = verify_bundle(parse_bundle(built.document), chain)
    assert verified.ok, verified.to_text()


def test_one_cold_tier_only(make_node: MakeNode, ipfs_api_addr: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        make_node(cold_ipfs_api=ipfs_api_addr, cold_blob_dir=tmp_path)
