"""Destruction on the IPFS blob store (a real js-ipfs daemon): after destruction the CID is no
longer pinned and a fetch through the store fails; the key is gone and content is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anchoring.events import Purpose, RecordClass, Sensitivity
from node.blobstore.base import BlobNotFoundError
from node.errors import GoneError
from node.principal import Role
from node.services.archives import NewArchive


def test_destruction_unpins_the_ciphertext_from_ipfs(make_node: Any, ipfs_api_addr: str) -> None:
    node = make_node(blob_store="ipfs", ipfs_api=ipfs_api_addr)
    keys = node.keys
    archivist = keys.authenticate(keys.issue(Role.ARCHIVIST, "ipfs-archivist").secret)
    manager = keys.authenticate(keys.issue(Role.RECORDS_MANAGER, "ipfs-manager").secret)
    expired = (datetime.now(UTC) - timedelta(days=16 * 366)).date()  # the deadline passed
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Visit note",
        patient_id="MRN-IPFS",
        source_system="HIS",
        media_type="text/plain",
        trigger_date=expired,
    )
    created = node.archives.create(archivist, new, [b"visit note on IPFS " * 2000])
    cid = created.versions[0].cid
    node.archives.archive(archivist, created.id)
    assert node.retention.start_dispositions(archivist) == 1
    proposal = node.retention.propose(archivist, [created.id], "retention expired")
    node.retention.decide(manager, proposal.id, created.id, approve=True, reason="ok")
    assert node.blobs.exists(cid)

    outcome = node.retention.destroy(archivist, proposal.id, created.id)
    assert (outcome.key_copies_destroyed, outcome.blobs_deleted) == (1, 1)
    assert not node.blobs.exists(cid)
    with pytest.raises(BlobNotFoundError):
        b"".join(node.blobs.open_stream(cid))
    with pytest.raises(GoneError):
        node.archives.open_content(archivist, created.id, Purpose.OPERATIONS)
    certificate = node.retention.certificate(archivist, created.id)
    assert b'"blob_store":"ipfs"' in certificate.document
    assert cid.encode() in certificate.document
