"""The DICOM C-STORE SCP on a real node (both databases), driven by a pynetdicom SCU over real TCP
with pydicom's bundled test files: instances become IMAGING archives once each, associations from
callers not on the list or to another AE title are refused, unreadable instances fail."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    Verification,
)
from sqlalchemy import select

from node.models import Archive
from node.runtime import NodeRuntime
from tests.fixtures.node import MakeNode


@pytest.fixture
def scp_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    return make_node(
        database_url=database_url,
        dicom_enabled=True,
        dicom_port=0,
        dicom_ae_title="ARCHIVE",
        dicom_allowed_callers=("CT01", "PACS-MAIN"),
    )


def dataset(name: str) -> Any:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(str(path))


def associate(node: NodeRuntime, calling: str = "CT01", called: str = "ARCHIVE") -> Any:
    assert node.dicom is not None
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", node.dicom.port, ae_title=called)


def archives(node: NodeRuntime) -> list[Archive]:
    with node.db.session() as session:
        return list(session.execute(select(Archive).order_by(Archive.created_at)).scalars())


def test_c_store_archives_each_instance_once(scp_node: NodeRuntime) -> None:
    assoc = associate(scp_node)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        ct, mr = dataset("CT_small.dcm"), dataset("MR_small.dcm")
        assert assoc.send_c_store(ct).Status == 0x0000
        assert assoc.send_c_store(mr).Status == 0x0000
        assert assoc.send_c_store(ct).Status == 0x0000  # resent: stored already
    finally:
        assoc.release()
    rows = archives(scp_node)
    assert len(rows) == 2
    assert {row.record_class for row in rows} == {"IMAGING"}
    assert {row.source_system for row in rows} == {"CT01"}
    assert rows[0].metadata_json["study_uid"] == ct.StudyInstanceUID
    assert rows[0].patient_pseudonym == scp_node.pseudonyms.patient(ct.PatientID)


def test_associations_are_refused_by_calling_and_called_ae(scp_node: NodeRuntime) -> None:
    stranger = associate(scp_node, calling="ROGUE")
    assert not stranger.is_established
    assert stranger.is_rejected
    elsewhere = associate(scp_node, called="OTHER")
    assert not elsewhere.is_established
    assert archives(scp_node) == []


def test_an_instance_without_identifiers_is_not_stored(scp_node: NodeRuntime) -> None:
    ct = dataset("CT_small.dcm")
    del ct.PatientID
    assoc = associate(scp_node, calling="PACS-MAIN")
    try:
        assert assoc.send_c_store(ct).Status == 0xC000
    finally:
        assoc.release()
    assert archives(scp_node) == []


def test_scp_is_off_by_default(make_node: MakeNode, sqlite_url: str) -> None:
    assert make_node(database_url=sqlite_url).dicom is None
