"""The fixity audit over the IPFS blob store (a real js-ipfs daemon, offline): intact blobs pass,
each with a FIXITY_CHECK event holding the SHA-256 of the bytes the daemon returned; a blob
unpinned and garbage-collected behind the node's back is ``blob_missing``; a catalogue row
pointed at another pinned blob (an edited database row) is ``catalogue_mismatch`` plus a
``fixity_mismatch`` (the bytes read are not those the log recorded)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select, update

from anchoring import storage
from anchoring.events import RecordClass, Sensitivity
from node.models import ArchiveVersion
from node.principal import Role
from node.services.archives import NewArchive
from node.services.audits import MISSING_SHA256, AuditScope


def _new(patient: str) -> NewArchive:
    return NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Visit note",
        patient_id=patient,
        source_system="HIS",
        media_type="text/plain",
    )


def _fixity_events(node: Any, archive_id: str) -> list[dict[str, Any]]:
    with node.db.session() as session:
        rows = storage.entries_for_archive(session, archive_id)
        return [json.loads(row.event)["data"] for row in rows if row.event_type == "FIXITY_CHECK"]


def test_fixity_audit_on_ipfs(make_node: Any, ipfs_api_addr: str) -> None:
    node = make_node(blob_store="ipfs", ipfs_api=ipfs_api_addr)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "ipfs-fixity").secret)
    contents = [f"visit note {n} on IPFS ".encode() * (3000 + n) for n in range(4)]
    intact, unpinned, swapped, other = (
        node.archives.create(archivist, _new(f"MRN-FX-{n}"), [content])
        for n, content in enumerate(contents)
    )
    with node.db.session() as session:
        stored = {
            v.archive_id: (v.cid, v.ciphertext_sha256)
            for v in session.execute(select(ArchiveVersion)).scalars()
        }

    report = node.fixity.audit(None, AuditScope())
    assert (report.checked, report.passed, report.failed) == (4, 4, 0)
    assert _fixity_events(node, intact.id) == [
        {"version": 1, "ciphertext_sha256": stored[intact.id][1], "ok": True}
    ]
    assert node.alert_store.open_for(["fixity_mismatch", "blob_missing"]) == []

    # behind the node's back: unpin one blob and collect it; point a row at another's blob
    assert node.blobs.delete(stored[unpinned.id][0])
    node.blobs.collect_garbage()
    with node.db.transaction() as session:
        session.execute(
            update(ArchiveVersion)
            .where(ArchiveVersion.archive_id == swapped.id)
            .values(cid=stored[other.id][0], ciphertext_sha256=stored[other.id][1])
        )

    report = node.fixity.audit(None, AuditScope())
    assert (report.checked, report.passed, report.failed) == (4, 2, 2)
    assert sorted((f.archive_id, f.problem) for f in report.failures) == sorted(
        [(unpinned.id, "blob_missing"), (swapped.id, "size_mismatch")]
    )
    alerts = node.alert_store.open_for(["fixity_mismatch", "blob_missing", "catalogue_mismatch"])
    assert sorted((a.kind, a.subject) for a in alerts) == sorted(
        [
            ("blob_missing", unpinned.id),
            ("fixity_mismatch", swapped.id),
            ("catalogue_mismatch", swapped.id),
        ]
    )
    assert _fixity_events(node, unpinned.id)[-1] == {
        "version": 1,
        "ciphertext_sha256": MISSING_SHA256,
        "ok": False,
    }
    observed = b"".join(node.blobs.open_stream(stored[other.id][0]))
    assert _fixity_events(node, swapped.id)[-1] == {
        "version": 1,
        "ciphertext_sha256": hashlib.sha256(observed).hexdigest(),
        "ok": False,
    }
    assert [e["ok"] for e in _fixity_events(node, intact.id)] == [True, True]
