"""The ingestion service on a real node (real anvil, SQLite and PostgreSQL, real blob store):
classified archives recorded with their source message in one unit, resends not archived twice
(even when racing), refusals leaving nothing behind, no PHI in the log."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from anchoring import storage
from anchoring.events import RecordClass, Sensitivity
from anchoring.storage import OutboxItem
from node.classification import ICD10, Coded, SourceHints
from node.encounters import EncounterKind, EncounterReport
from node.errors import InputError
from node.models import Archive, IngestedMessage
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.ingestion import IncomingDocument, system_principal
from tests.api.conftest import real_pdf

PATIENT = "MRN-INGEST-0001"
TITLE = "出院小结 张三"


def _doc(**overrides: object) -> IncomingDocument:
    fields: dict[str, object] = {
        "content": real_pdf(60),  # a real PDF: it passes 四性检测 when archived
        "media_type": "application/pdf",
        "patient_id": PATIENT,
        "source_system": "HIS",
        "title": TITLE,
        "message_id": "MSG-0001",
        "encounter_id": "V-778899",
        "department": "心内科",
        "hints": SourceHints(document_type="18842-5"),
        "kind": "test",
    }
    fields.update(overrides)
    return IncomingDocument(**fields)  # type: ignore[arg-type]


def _footprint(node: NodeRuntime) -> tuple[int, int, int, int]:
    blobs = sum(1 for p in Path(node.settings.blob_dir).rglob("*") if p.is_file())
    with node.db.session() as session:
        archives = session.execute(select(func.count()).select_from(Archive)).scalar_one()
        messages = session.execute(select(func.count()).select_from(IngestedMessage)).scalar_one()
        log_size = storage.current_size(session)
    return blobs, archives, messages, log_size


@pytest.fixture
def archivist(node: NodeRuntime) -> Principal:
    return node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "his-gateway").secret)


def test_ingest_classifies_and_records_the_source_message(
    node: NodeRuntime, archivist: Principal
) -> None:
    result = node.ingestion.ingest(archivist, _doc())
    assert not result.duplicate
    view = result.archive
    assert view.state == "CREATED"
    assert view.record_class == RecordClass.INPATIENT.value
    assert view.sensitivity == Sensitivity.NORMAL.value
    assert view.department == "cardiology"  # 心内科 mapped to its code
    assert view.metadata["class_rule"] == "loinc:18842-5"
    assert view.metadata["sensitivity_rule"] == "default"
    assert view.patient_pseudonym == node.pseudonyms.patient(PATIENT)
    with node.db.session() as session:
        row = session.execute(select(IngestedMessage)).scalar_one()
        assert (row.source_system, row.message_id, row.archive_id) == ("HIS", "MSG-0001", view.id)
        assert row.encounter == node.pseudonyms.encounter("V-778899")
        assert row.encounter != "V-778899"
        assert row.class_rule == "loinc:18842-5"
    events = node.archives.events(archivist, view.id)
    assert [e.event_type for e in events] == ["CREATE"]
    assert node.ingestion.encounter_archives("V-778899") == [view.id]
    assert node.ingestion.encounter_archives("V-other") == []


def test_a_source_system_code_of_64_characters_is_recorded(
    node: NodeRuntime, archivist: Principal
) -> None:
    """The longest source code ingestion accepts fits the archive's row and its message's (on
    PostgreSQL ``archives.source_system`` refused codes over 32 characters before 0020)."""
    source = "laboratory-information-system." + "x" * 34
    view = node.ingestion.ingest(archivist, _doc(source_system=source)).archive
    assert view.source_system == source
    with node.db.session() as session:
        row = session.execute(select(IngestedMessage)).scalar_one()
        assert (row.source_system, row.archive_id) == (source, view.id)


def test_restricted_codes_grade_the_record(node: NodeRuntime, archivist: Principal) -> None:
    doc = _doc(
        message_id="MSG-HIV",
        department="laboratory",
        hints=SourceHints(report_category="LAB", codes=(Coded(ICD10, "B20"),)),
    )
    view = node.ingestion.ingest(archivist, doc).archive
    assert view.record_class == RecordClass.LAB.value
    assert view.sensitivity == Sensitivity.HIGHLY_SENSITIVE.value
    assert view.metadata["sensitivity_rule"] == "code:icd10:B20"


def test_a_resend_is_not_archived_twice(node: NodeRuntime, archivist: Principal) -> None:
    first = node.ingestion.ingest(archivist, _doc())
    before = _footprint(node)
    again = node.ingestion.ingest(archivist, _doc(content=b"other bytes, same message id"))
    assert again.duplicate
    assert again.classification is None
    assert again.archive.id == first.archive.id
    assert _footprint(node) == before
    # Same id from another source system is another message.
    other = node.ingestion.ingest(archivist, _doc(source_system="LIS"))
    assert not other.duplicate
    assert other.archive.id != first.archive.id
    # A resend is checked like a new message before it is answered: a bad encounter number is
    # refused whether or not the message was taken (a batch names it, and the import CLI
    # reports it without sending it alone), and nothing changes.
    before = _footprint(node)
    for message_id in ("MSG-0001", "MSG-NEW"):
        with pytest.raises(InputError) as refused:
            node.ingestion.ingest(archivist, _doc(message_id=message_id, encounter_id="V1\tX"))
        assert refused.value.code == "invalid_encounter"
    assert _footprint(node) == before


def test_racing_copies_of_one_message_make_one_archive(
    node: NodeRuntime, archivist: Principal
) -> None:
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        try:
            results.append(node.ingestion.ingest(archivist, _doc(message_id="RACE-1")).archive.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(set(results)) == 1
    assert len(results) == 4
    blobs, archives, messages, _ = _footprint(node)
    assert (blobs, archives, messages) == (1, 1, 1)  # the losers' blobs were deleted


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"source_system": "HIS system!"}, "invalid_source_system"),
        ({"message_id": "bad\x00id"}, "invalid_message_id"),
        ({"message_id": "x" * 201}, "invalid_message_id"),
        ({"patient_id": "  "}, "invalid_patient_id"),
        ({"content": b""}, "empty_content"),
        ({"media_type": "application/x-msdownload"}, "unsupported_media_type"),
    ],
)
def test_refusals_leave_nothing_behind(
    node: NodeRuntime, archivist: Principal, overrides: dict[str, object], code: str
) -> None:
    before = _footprint(node)
    with pytest.raises(InputError) as refused:
        node.ingestion.ingest(archivist, _doc(**overrides))
    assert refused.value.code == code
    assert _footprint(node) == before
    # The refused message id is still free: a corrected resend is archived.
    fixed = {k: v for k, v in overrides.items() if k == "message_id"}
    if not fixed:
        assert not node.ingestion.ingest(archivist, _doc()).duplicate


def test_roles_and_departments(node: NodeRuntime) -> None:
    auditor = node.keys.authenticate(node.keys.issue(Role.AUDITOR, "aud").secret)
    with pytest.raises(PermissionError):
        node.ingestion.ingest(auditor, _doc())
    clinician = node.keys.authenticate(node.keys.issue(Role.CLINICIAN, "dr", "oncology").secret)
    view = node.ingestion.ingest(clinician, _doc(message_id="C-1")).archive
    assert view.department == "oncology"
    system = system_principal(node.pseudonyms, "mllp")
    assert system.actor == node.pseudonyms.staff("system:mllp")
    view = node.ingestion.ingest(system, _doc(message_id="S-1", department=None)).archive
    assert view.department == "inpatient"  # the class's department when the source names none


def test_messages_without_a_record_are_remembered_once(node: NodeRuntime) -> None:
    system = system_principal(node.pseudonyms, "mllp")
    kwargs = {"source_system": "HIS", "message_id": "ADT-1", "kind": "hl7-adt"}
    assert node.ingestion.remember_message(system, patient_id=PATIENT, **kwargs)
    assert not node.ingestion.remember_message(system, patient_id=PATIENT, **kwargs)
    # A document reusing that id is refused, not silently merged.
    with pytest.raises(InputError) as refused:
        node.ingestion.ingest(system, _doc(message_id="ADT-1"))
    assert refused.value.code == "message_id_reused"


def test_no_phi_in_the_log(
    node: NodeRuntime, archivist: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        node.ingestion.ingest(archivist, _doc())
        node.ingestion.ingest(archivist, _doc())
    text = caplog.text
    assert "ingested test from HIS" in text
    for secret in (PATIENT, "张三", "V-778899", "discharge summary"):
        assert secret not in text


def test_a_batch_is_all_or_nothing(node: NodeRuntime, archivist: Principal) -> None:
    before = _footprint(node)
    docs = [_doc(message_id="B-1"), _doc(message_id="B-2"), _doc(message_id="B-3", content=b"")]
    with pytest.raises(InputError) as refused:
        node.ingestion.ingest_batch(archivist, docs)
    assert refused.value.code == "empty_content"
    assert _footprint(node) == before  # the first two blobs were deleted again

    earlier = node.ingestion.ingest(archivist, _doc(message_id="B-0"))
    docs = [
        _doc(message_id="B-0"),  # taken before
        _doc(message_id="B-1"),
        _doc(message_id="B-1"),  # twice in this batch
        _doc(message_id="B-2", hints=SourceHints(modality="MR")),
    ]
    results = node.ingestion.ingest_batch(archivist, docs)
    assert [r.duplicate for r in results] == [True, False, True, False]
    assert results[0].archive.id == earlier.archive.id
    assert results[1].archive.id == results[2].archive.id
    assert results[3].archive.record_class == "IMAGING"
    blobs, archives, messages, _ = _footprint(node)
    assert (blobs, archives, messages) == (3, 3, 3)
    # The whole batch shares one transaction: one commit time.
    assert results[1].archive.created_at == results[3].archive.created_at


def test_closing_an_encounter_archives_its_records_in_one_batch(
    node: NodeRuntime, archivist: Principal
) -> None:
    first = node.ingestion.ingest(archivist, _doc(message_id="E-1")).archive
    second = node.ingestion.ingest(archivist, _doc(message_id="E-2")).archive
    early = node.ingestion.ingest(archivist, _doc(message_id="E-3")).archive
    node.archives.archive(archivist, early.id)  # archived by hand before the discharge
    elsewhere = node.ingestion.ingest(
        archivist, _doc(message_id="E-4", encounter_id="V-OTHER")
    ).archive
    discharge = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
    node.encounters.report_encounter(
        EncounterReport(PATIENT, EncounterKind.DISCHARGE, discharge, encounter_id="V-778899")
    )
    with node.db.session() as session:
        rows = {a.id: a for a in session.execute(select(Archive)).scalars()}
        calls = session.execute(select(OutboxItem).where(OutboxItem.kind == "call")).scalars()
        registers = sum(1 for item in calls if item.payload.get("function") == "register")
    for archive_id in (first.id, second.id):
        assert rows[archive_id].state == "ARCHIVED"
        assert rows[archive_id].trigger_date.date() == date(2024, 5, 2)
        assert rows[archive_id].retention_deadline is not None
        assert rows[archive_id].retention_deadline.date() == date(2054, 5, 2)  # inpatient 30 y
    assert rows[first.id].archived_at == rows[second.id].archived_at  # one unit of work
    assert rows[elsewhere.id].state == "CREATED"
    assert registers == 3  # the hand-archived one and the batch of two
    batch = node.ingestion.archive_encounter(archivist, "V-778899", date(2024, 5, 2))
    assert batch.archived == ()
    assert set(batch.not_created) == {first.id, second.id, early.id}


def test_a_refused_batch_is_retried_record_by_record(
    node: NodeRuntime, archivist: Principal
) -> None:
    ok = node.ingestion.ingest(archivist, _doc(message_id="R-1")).archive
    node.ingestion.ingest(archivist, _doc(message_id="R-2"))
    # A clinician may not archive: the batch fails, every record is listed as failed.
    clinician = node.keys.authenticate(node.keys.issue(Role.CLINICIAN, "dr", "cardiology").secret)
    with pytest.raises(PermissionError):
        node.ingestion.archive_encounter(clinician, "V-778899", date(2024, 5, 2))
    # A record on hold still archives (holds block disposal, not archiving); a record archived
    # between listing and batch makes the batch fail and is reported.
    node.archives.place_hold(archivist, ok.id, "litigation")
    batch = node.ingestion.archive_encounter(archivist, "V-778899", date(2024, 5, 2))
    assert len(batch.archived) == 2
    assert batch.failed == ()


def test_a_batch_whose_blobs_cannot_be_made_durable_keeps_nothing(
    node: NodeRuntime, archivist: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local store takes a batch's blobs without per-blob fsyncs and syncs them at once
    before the unit records them; if that sync fails, the blobs are deleted and nothing is
    recorded."""
    before = _footprint(node)

    def broken(refs: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(node.blobs, "make_durable", broken)
    docs = [_doc(message_id=f"SYNC-{n}") for n in range(3)]
    with pytest.raises(OSError, match="disk gone"):
        node.ingestion.ingest_batch(archivist, docs)
    assert _footprint(node) == before
    monkeypatch.undo()
    results = node.ingestion.ingest_batch(archivist, docs)
    assert [r.duplicate for r in results] == [False, False, False]
