"""DICOMweb STOW-RS as a PACS or viewer sends it: ``dicomweb-client`` (a real DICOMweb client
library, its own multipart encoding and headers) over real HTTP to a live node (uvicorn serving
the real app), both databases, with pydicom's bundled test files."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from api.routes.dicomweb import DICOMWEB_PREFIX
from node.models import Archive
from node.policy import Purpose
from node.principal import Role
from node.runtime import NodeRuntime
from tests.console.live import live_server

REFERENCED_SOP_SEQUENCE = 0x00081199
FAILED_SOP_SEQUENCE = 0x00081198


def dataset(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(str(path))


@pytest.fixture
def node_url(api_node: NodeRuntime) -> Iterator[str]:
    with live_server(api_node) as url:
        yield url


def client(node: NodeRuntime, url: str, role: Role = Role.ARCHIVIST) -> DICOMwebClient:
    secret = node.keys.issue(role, f"pacs-{role.value}").secret
    return DICOMwebClient(
        url=url + DICOMWEB_PREFIX, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def archive_count(node: NodeRuntime) -> int:
    with node.db.session() as session:
        return int(session.execute(select(func.count()).select_from(Archive)).scalar_one())


def test_dicomweb_client_stores_instances_once(api_node: NodeRuntime, node_url: str) -> None:
    ct, mr = dataset("CT_small.dcm"), dataset("MR_small.dcm")
    pacs = client(api_node, node_url)
    answer = pacs.store_instances([ct, mr])
    assert FAILED_SOP_SEQUENCE not in answer
    referenced = answer[REFERENCED_SOP_SEQUENCE].value
    assert [item.ReferencedSOPInstanceUID for item in referenced] == [
        ct.SOPInstanceUID,
        mr.SOPInstanceUID,
    ]
    urls = [str(item.RetrieveURL) for item in referenced]
    archive_ids = [url.rsplit("/", 1)[-1] for url in urls]
    assert archive_count(api_node) == 2
    with api_node.db.session() as session:
        for archive_id, sent in zip(archive_ids, (ct, mr), strict=True):
            row = session.get_one(Archive, archive_id)
            assert (row.record_class, row.source_system) == ("IMAGING", "PACS")
            assert row.metadata_json["study_uid"] == sent.StudyInstanceUID
            assert row.metadata_json["modality"] == sent.Modality
            assert row.patient_pseudonym == api_node.pseudonyms.patient(sent.PatientID)
    # The content kept is the instance the client sent.
    archivist = api_node.keys.authenticate(api_node.keys.issue(Role.ARCHIVIST, "reader").secret)
    stream = api_node.archives.open_content(archivist, archive_ids[0], Purpose.TREATMENT)
    stored = pydicom.dcmread(BytesIO(b"".join(stream.chunks)))
    assert stored.SOPInstanceUID == ct.SOPInstanceUID
    assert stored.PixelData == ct.PixelData
    # Sent again by the client: answered with the same archives, nothing new stored.
    again = pacs.store_instances([ct, mr])
    assert [str(item.RetrieveURL) for item in again[REFERENCED_SOP_SEQUENCE].value] == urls
    assert archive_count(api_node) == 2


def test_dicomweb_client_refusals(api_node: NodeRuntime, node_url: str) -> None:
    ct, mr = dataset("CT_small.dcm"), dataset("MR_small.dcm")
    # No key, a role that may not store, an instance of another study than the URL names.
    anonymous = DICOMwebClient(url=node_url + DICOMWEB_PREFIX, timeout=30)
    with pytest.raises(requests.HTTPError) as refused:
        anonymous.store_instances([ct])
    assert refused.value.response.status_code == 401
    with pytest.raises(requests.HTTPError) as refused:
        client(api_node, node_url, Role.AUDITOR).store_instances([ct])
    assert refused.value.response.status_code == 403
    with pytest.raises(requests.HTTPError) as refused:
        client(api_node, node_url).store_instances([mr], study_instance_uid=ct.StudyInstanceUID)
    assert refused.value.response.status_code == 409
    failed = refused.value.response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[0xA900]]  # wrong study
    assert archive_count(api_node) == 0
