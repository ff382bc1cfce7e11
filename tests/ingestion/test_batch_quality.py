"""Quality control (四性检测) in batch archiving, as in single archiving: a discharge archives the
stay's records that pass in one unit and lists those that fail (``qc_failed``), and a manual
batch with a failing member archives nothing and names it — real app, real node, both databases.
Failing here means *integrity*: the record lacks metadata its class requires
(``qc_required_metadata``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from node.classification import SourceHints
from node.encounters import EncounterKind, EncounterReport
from node.errors import BatchRefusedError
from node.models import Archive
from node.principal import Role
from node.runtime import NodeRuntime
from node.services.ingestion import IncomingDocument
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api
from tests.fixtures.node import MakeNode

PATIENT = "MRN-QC-0042"
STAY = "V-QC-1"
QC = {"qc_policy": "refuse", "qc_required_metadata": {"INPATIENT": ["ward"]}}


@pytest.fixture
def api_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    """The API tests' node, refusing to archive an inpatient record without a ward."""
    return make_node(
        database_url=database_url, max_upload_bytes=UPLOAD_LIMIT, chunk_size=CHUNK_SIZE, **QC
    )


def _ingest(node: NodeRuntime, message_id: str, *, ward: str | None) -> str:
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "his").secret)
    doc = IncomingDocument(
        content=f"progress note {message_id}".encode(),
        media_type="text/plain",
        patient_id=PATIENT,
        source_system="HIS",
        title="病程记录",
        message_id=message_id,
        encounter_id=STAY,
        hints=SourceHints(class_hint="住院"),
        metadata={"ward": ward} if ward else {},
    )
    return node.ingestion.ingest(archivist, doc).archive.id


def _rows(node: NodeRuntime) -> dict[str, Archive]:
    with node.db.session() as session:
        return {row.id: row for row in session.execute(select(Archive)).scalars()}


def test_a_discharge_archives_the_passing_records_and_lists_the_failing(api: Api) -> None:
    node = api.node
    good = [_ingest(node, f"QC-{n}", ward="5B") for n in range(3)]
    bad = _ingest(node, "QC-BAD", ward=None)
    node.encounters.report_encounter(
        EncounterReport(
            PATIENT,
            EncounterKind.DISCHARGE,
            datetime(2024, 6, 3, 9, tzinfo=UTC),
            encounter_id=STAY,
        )
    )
    rows = _rows(node)
    assert all(rows[i].state == "ARCHIVED" for i in good)
    assert len({rows[i].archived_at for i in good}) == 1  # one unit of work
    assert rows[bad].state == "CREATED"
    # What the listener got back (the same call again): the failing record listed, not skipped.
    archivist = node.keys.authenticate(api.keys["archivist"])
    batch = node.ingestion.archive_encounter(archivist, STAY, date(2024, 6, 3))
    assert batch.archived == ()
    assert batch.failed == ((bad, "qc_failed"),)
    assert set(batch.not_created) == set(good)
    # The failure is kept: its QC result and alert, as for a single archive.
    results = node.quality.results(node.keys.authenticate(api.keys["archivist"]), bad)
    assert results
    assert "metadata_missing:ward" in str(results[-1].failed)


def test_a_manual_batch_with_a_failing_member_archives_nothing(api: Api) -> None:
    good = _ingest(api.node, "QC-M1", ward="7A")
    bad = _ingest(api.node, "QC-M2", ward=None)
    for body in ({"archive_ids": [good, bad]}, {"encounter": STAY}):
        before = api.footprint()
        response = api.client.post(
            "/api/v1/archives/batch-archive", json=body, headers=api.auth("archivist")
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "batch_refused"
        assert response.json()["details"]["failed"] == [{"id": bad, "code": "qc_failed"}]
        assert api.footprint() == before
    assert {_rows(api.node)[i].state for i in (good, bad)} == {"CREATED"}
    # The passing record alone goes through; the failing one alone gets the single-archive 409.
    response = api.client.post(
        "/api/v1/archives/batch-archive",
        json={"archive_ids": [good]},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 200, response.text
    single = api.client.post(f"/api/v1/archives/{bad}/archive", headers=api.auth("archivist"))
    assert single.status_code == 409
    assert single.json()["code"] == "qc_failed"


def test_warn_policy_archives_the_whole_batch_and_keeps_the_alert(
    make_node: MakeNode, database_url: str
) -> None:
    node = make_node(
        database_url=database_url, qc_policy="warn", qc_required_metadata={"INPATIENT": ["ward"]}
    )
    ids = [_ingest(node, "W-1", ward="5B"), _ingest(node, "W-2", ward=None)]
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "a").secret)
    views = node.archives.archive_many(archivist, ids, date(2024, 6, 3))
    assert [v.state for v in views] == ["ARCHIVED", "ARCHIVED"]
    assert "metadata_missing:ward" in str(node.quality.results(archivist, ids[1])[-1].failed)


def test_service_batch_refusal_names_qc_and_lifecycle_failures_together(
    make_node: MakeNode, database_url: str
) -> None:
    node = make_node(database_url=database_url, **QC)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "a").secret)
    done = _ingest(node, "S-1", ward="5B")
    node.archives.archive(archivist, done)
    bad = _ingest(node, "S-2", ward=None)
    fresh = _ingest(node, "S-3", ward="5B")
    with pytest.raises(BatchRefusedError) as caught:
        node.archives.archive_many(archivist, [done, bad, fresh])
    assert dict(caught.value.failures) == {done: "illegal_transition", bad: "qc_failed"}
    assert _rows(node)[fresh].state == "CREATED"
