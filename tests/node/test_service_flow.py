"""Service-level end to end on a real anvil and a real database: create → archive → anchored →
proof bundle → independent verification against the chain."""

from __future__ import annotations

from typing import Any

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.events import (
    AccessEvent,
    AccessScope,
    Purpose,
    RecordClass,
    Sensitivity,
    parse_event,
)
from anchoring.verifier import verify_bundle
from node.principal import Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from tests.api.conftest import real_pdf


def _new(**overrides: object) -> NewArchive:
    fields: dict[str, object] = {
        "record_class": RecordClass.INPATIENT,
        "sensitivity": Sensitivity.NORMAL,
        "department": "cardiology",
        "title": "Discharge summary",
        "patient_id": "MRN-0001",
        "source_system": "HIS",
        "media_type": "application/pdf",
    }
    fields.update(overrides)
    return NewArchive(**fields)  # type: ignore[arg-type]


def test_create_archive_read_prove_verify(node: NodeRuntime, chain: RpcChain) -> None:
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    content = real_pdf()  # a valid PDF: 四性检测 refuses an unreadable one by default
    created = node.archives.create(archivist, _new(), [content[:5000], content[5000:]])
    assert created.state == "CREATED"
    archived = node.archives.archive(archivist, created.id)
    assert archived.state == "ARCHIVED"
    stream = node.archives.open_content(archivist, created.id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == content

    node.worker.run_until_anchored(timeout=30)
    view = node.archives.get(archivist, created.id)  # a metadata read: logged too
    assert view.chain_status == "registered"
    assert view.event_count == 4
    custody = chain.custody(created.id)
    assert custody.custodian == node.hospital

    node.worker.run_until_anchored(timeout=30)
    built = node.proofs.bundle(archivist, created.id)
    assert built.entries == 4
    assert built.unanchored == 0
    report = verify_bundle(parse_bundle(built.document), chain)
    assert report.ok, report.to_text()
    assert [e.event_type for e in report.entries] == ["CREATE", "ARCHIVE", "ACCESS", "ACCESS"]
    read = parse_event(parse_bundle(built.document).entries[-1].event)
    assert isinstance(read, AccessEvent)
    assert (read.data.scope, read.data.purpose) == (AccessScope.METADATA, Purpose.OPERATIONS)


def test_a_node_configured_for_ipfs_stores_and_reads_through_it(
    make_node: Any, ipfs_api_addr: str
) -> None:
    node = make_node(blob_store="ipfs", ipfs_api=ipfs_api_addr)
    assert type(node.blobs).__name__ == "IpfsBlobStore"
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "ipfs").secret)
    content = b"PACS report stored on IPFS " * 5000
    created = node.archives.create(archivist, _new(media_type="text/plain"), [content])
    cid = created.versions[0].cid
    assert node.blobs.exists(cid)
    stream = node.archives.open_content(archivist, created.id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == content


def test_the_node_opens_its_sqlite_database_with_the_configured_page_cache(
    make_node: Any,
) -> None:
    """``sqlite_cache_mib`` reaches every connection the node opens (SQLite only)."""
    runtime = make_node(sqlite_cache_mib=7)
    for engine in (runtime.db.reader, runtime.db.writer):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -7 * 1024
