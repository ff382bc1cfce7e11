"""Storage tiers (docs/recovery.md §3) on a real node: an archived record of a class with a cold
policy moves to the cold directory (TIER_MOVE, checked copy, hot copy gone), still opens, passes
the fixity audit from cold, verifies on chain; a class without a policy and a record not yet
archived stay hot; a cold copy that fails its hash is caught by the audit."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.events import Purpose, RecordClass, Sensitivity
from anchoring.verifier import verify_bundle
from node.blobstore.tiered import TieredBlobStore
from node.models import ArchiveVersion
from node.principal import Role
from node.services.archives import NewArchive
from node.services.audits import AuditScope
from tests.fixtures.node import MakeNode


def _new(record_class: RecordClass) -> NewArchive:
    return NewArchive(
        record_class=record_class,
        sensitivity=Sensitivity.NORMAL,
        department="cardiology",
        title="Discharge summary",
        patient_id="MRN-0001",
        source_system="HIS",
        media_type="text/plain",
    )


def test_old_archives_move_to_cold_and_still_open_and_pass_fixity(
    make_node: MakeNode, tmp_path: Path, chain: RpcChain
) -> None:
    node = make_node(cold_blob_dir=tmp_path / "cold", tier_cold_after_days={"INPATIENT": 0})
    assert isinstance(node.blobs, TieredBlobStore)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    content = b"inpatient record, old enough for the cold tier " * 500
    old = node.archives.create(archivist, _new(RecordClass.INPATIENT), [content])
    node.archives.archive(archivist, old.id)
    fresh = node.archives.create(archivist, _new(RecordClass.INPATIENT), [b"not archived"])
    other = node.archives.create(archivist, _new(RecordClass.LAB), [b"lab result"])
    node.archives.archive(archivist, other.id)

    report = node.tiers.tick()
    assert (report.moved, report.problems) == (1, [])
    assert node.tiers.tick().moved == 0  # already cold
    with node.db.session() as session:
        cids = dict(session.execute(select(ArchiveVersion.archive_id, ArchiveVersion.cid)).all())
    assert node.blobs.tier_of(cids[old.id]) == "cold"
    assert not node.blobs.hot.exists(cids[old.id])
    assert node.blobs.tier_of(cids[fresh.id]) == "hot"
    assert node.blobs.tier_of(cids[other.id]) == "hot"
    events = [e.event_type for e in node.archives.events(archivist, old.id)]
    assert events[-1] == "TIER_MOVE"

    stream = node.archives.open_content(archivist, old.id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == content  # transparent read from cold
    audit = node.fixity.audit(None, AuditScope())
    assert (audit.checked, audit.failed) == (3, 0)

    node.worker.run_until_anchored(timeout=30)
    built = node.proofs.bundle(archivist, old.id)
    verified = verify_bundle(parse_bundle(built.document), chain)
    assert verified.ok, verified.to_text()

    # Corruption in the cold tier is a fixity failure like any other.
    path = node.blobs.cold.path_of(cids[old.id])  # type: ignore[attr-defined]
    path.write_bytes(b"x" + path.read_bytes()[1:])
    audit = node.fixity.audit(None, AuditScope())
    assert [(f.archive_id, f.problem) for f in audit.failures] == [(old.id, "hash_mismatch")]


def test_without_a_cold_directory_nothing_moves(make_node: MakeNode) -> None:
    node = make_node(tier_cold_after_days={"INPATIENT": 0})
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    created = node.archives.create(archivist, _new(RecordClass.INPATIENT), [b"record"])
    node.archives.archive(archivist, created.id)
    assert node.tiers.due() == [created.id]
    assert node.tiers.tick().moved == 0
    events = [e.event_type for e in node.archives.events(archivist, created.id)]
    assert "TIER_MOVE" not in events
