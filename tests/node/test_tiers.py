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


def test_idle_policy_last_access_recall_and_retrieval_times_by_tier(
    make_node: MakeNode, tmp_path: Path, chain: RpcChain
) -> None:
    """Age AND last access: an archive read recently stays hot, an unread one goes cold; reads
    through the API keep the last access and record the tier they were served from (the
    utilisation report's ``by_tier``); a cold archive read again moves back to hot by the policy,
    and ``recall`` brings one back on demand; every move is a TIER_MOVE that verifies on chain."""
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from api.main import create_app
    from node.models import ArchiveTier

    node = make_node(
        cold_blob_dir=tmp_path / "cold",
        tier_cold_after_days={"INPATIENT": 0},
        tier_cold_idle_days={"INPATIENT": 1},
    )
    assert isinstance(node.blobs, TieredBlobStore)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    auditor = node.keys.issue(Role.AUDITOR, "audit").secret
    key = node.keys.issue(Role.ARCHIVIST, "reader").secret
    content = b"inpatient record read now and then " * 400
    read = node.archives.create(archivist, _new(RecordClass.INPATIENT), [content])
    unread = node.archives.create(archivist, _new(RecordClass.INPATIENT), [content + b"!"])
    for archive in (read, unread):
        node.archives.archive(archivist, archive.id)
    with node.db.session() as session:
        cids = dict(session.execute(select(ArchiveVersion.archive_id, ArchiveVersion.cid)).all())

    with TestClient(create_app(node)) as api:
        headers = {"Authorization": f"Bearer {key}"}

        def get(archive_id: str) -> bytes:
            answer = api.get(
                f"/api/v1/archives/{archive_id}/content",
                params={"purpose": "treatment"},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
            return answer.content

        assert get(read.id) == content
        with node.db.session() as session:
            row = session.get(ArchiveTier, read.id)
            assert row is not None
            assert row.tier == "hot"
            assert row.last_access_at is not None
        assert node.tiers.due() == [unread.id]  # old enough, never read
        report = node.tiers.tick()
        assert (report.moved, report.problems) == (1, [])
        assert node.blobs.tier_of(cids[unread.id]) == "cold"
        assert node.blobs.tier_of(cids[read.id]) == "hot"
        assert node.tiers.tick().moved == 0  # the read one stays hot, nothing to recall

        # A read from cold: transparent, timed as a cold read; the policy then recalls it.
        assert get(unread.id) == content + b"!"
        back = node.tiers.tick()
        assert (back.moved, back.problems) == (1, [])
        assert node.blobs.tier_of(cids[unread.id]) == "hot"
        assert not node.blobs.cold.exists(cids[unread.id])
        assert get(unread.id) == content + b"!"

        # Recall on demand (after a move to cold by hand).
        assert node.tiers.move(read.id, report)
        assert node.blobs.tier_of(cids[read.id]) == "cold"
        assert node.tiers.recall(read.id).moved == 1
        assert node.blobs.tier_of(cids[read.id]) == "hot"

        now = datetime.now(UTC)
        utilisation = api.get(
            "/api/v1/reports/utilisation",
            params={
                "from": (now - timedelta(days=1)).date().isoformat(),
                "to": (now + timedelta(days=1)).date().isoformat(),
            },
            headers={"Authorization": f"Bearer {auditor}"},
        )
        assert utilisation.status_code == 200, utilisation.text
        by_tier = utilisation.json()["retrieval_seconds"]["by_tier"]
        assert {tier: summary["reads"] for tier, summary in by_tier.items()} == {
            "hot": 2,
            "cold": 1,
        }
        assert by_tier["cold"]["first_byte_p50"] is not None

    moves = [
        (e.event["data"]["from_tier"], e.event["data"]["to_tier"])
        for e in node.archives.events(archivist, unread.id)
        if e.event_type == "TIER_MOVE"
    ]
    assert moves == [("hot", "cold"), ("cold", "hot")]
    node.worker.run_until_anchored(timeout=30)
    for archive in (read, unread):
        built = node.proofs.bundle(archivist, archive.id)
        verified = verify_bundle(parse_bundle(built.document), chain)
        assert verified.ok, verified.to_text()
