"""HL7 v2 over MLLP on a real TCP socket to a real node (both databases): ORU^R01 and MDM^T02
become archives, ADT^A01/A03 reach the encounter listeners, each message is acknowledged after it
is durable (MSA AA), resends (same MSH-10) store nothing, unsupported or malformed messages and
frames get AR or AE and store nothing."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from anchoring.events import Purpose
from node.encounters import EncounterKind, EncounterReport
from node.models import Archive, IngestedMessage
from node.principal import Role
from node.runtime import NodeRuntime
from tests.api.conftest import real_pdf
from tests.fixtures.node import MakeNode

PDF = real_pdf(40)  # a real PDF: it passes 四性检测 when archived
MAX_MESSAGE = 16 * 1024


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with ``fields`` at their HL7 positions (MSH counts its separator as MSH-1)."""
    last = max(fields)
    values = [fields.get(i, "") for i in range(1, last + 1)]
    if name == "MSH":
        return "MSH|" + "|".join(values[1:])
    return "|".join([name, *values])


def message(kind: str, control_id: str, *segments: str, sender: str = "LIS") -> bytes:
    msh = segment(
        "MSH",
        {1: "|", 2: "^~\\&", 3: sender, 4: "HOSP", 5: "ARCHIVE", 6: "HOSP", 7: "20240502101500",
         9: kind, 10: control_id, 11: "P", 12: "2.5.1"},
    )  # fmt: skip
    return ("\r".join([msh, *segments]) + "\r").encode("utf-8")


PID = segment("PID", {1: "1", 3: "MRN-0001^^^HOSP^MR", 5: "DOE^JOHN"})
PV1_IN = segment("PV1", {1: "1", 2: "I", 3: "5B^12^1", 10: "cardiology", 19: "V-1001",
                         44: "20240420080000", 45: "20240502100000+0800"})  # fmt: skip
OBR = segment("OBR", {1: "1", 3: "LAB-1", 4: "58410-2^CBC panel^LN", 7: "20240502"})
OBX_HB = segment("OBX", {1: "1", 2: "NM", 3: "718-7^Hemoglobin^LN", 5: "13.5", 6: "g/dL"})


def oru(control_id: str, *observations: str) -> bytes:
    return message("ORU^R01^ORU_R01", control_id, PID, PV1_IN, OBR, *(observations or (OBX_HB,)))


def mdm(control_id: str, data: str | None = None) -> bytes:
    txa = segment("TXA", {1: "1", 2: "18842-5^Discharge summary^LN", 3: "AP", 12: "DOC-1"})
    encoded = base64.b64encode(PDF).decode() if data is None else data
    obx = segment("OBX", {1: "1", 2: "ED", 3: "18842-5^Discharge summary^LN",
                          5: f"HIS^application^pdf^Base64^{encoded}"})  # fmt: skip
    return message("MDM^T02^MDM_T02", control_id, PID, PV1_IN, txa, obx, sender="HIS")


def adt(trigger: str, control_id: str) -> bytes:
    evn = segment("EVN", {1: trigger, 2: "20240502100000"})
    return message(f"ADT^{trigger}^ADT_A01", control_id, evn, PID, PV1_IN, sender="HIS")


class Link:
    """One MLLP connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.pending = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> dict[str, str]:
        self.send_raw(b"\x0b" + payload + b"\x1c\x0d")
        return self.ack()

    def ack(self) -> dict[str, str]:
        while b"\x1c\x0d" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.pending += chunk
        block, self.pending = self.pending.split(b"\x1c\x0d", 1)
        assert block.startswith(b"\x0b")
        text = block[1:].decode("utf-8")
        segments = {line.split("|", 1)[0]: line for line in text.split("\r") if line}
        msa = segments["MSA"].split("|")
        return {
            "code": msa[1],
            "control_id": msa[2],
            "text": msa[3] if len(msa) > 3 else "",
            "msh": segments["MSH"],
            "err": segments.get("ERR", ""),
        }

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()


class Recorder:
    def __init__(self) -> None:
        self.reports: list[EncounterReport] = []

    def report_encounter(self, report: EncounterReport) -> None:
        self.reports.append(report)


@pytest.fixture
def mllp_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    return make_node(
        database_url=database_url,
        mllp_enabled=True,
        mllp_port=0,
        mllp_max_message_bytes=MAX_MESSAGE,
        mllp_idle_timeout=10,
    )


@pytest.fixture
def link(mllp_node: NodeRuntime) -> Iterator[Link]:
    assert mllp_node.mllp is not None
    connection = Link(mllp_node.mllp.port)
    yield connection
    connection.close()


def counts(node: NodeRuntime) -> tuple[int, int]:
    with node.db.session() as session:
        archives = session.execute(select(func.count()).select_from(Archive)).scalar_one()
        messages = session.execute(select(func.count()).select_from(IngestedMessage)).scalar_one()
    return archives, messages


def test_oru_is_archived_once_and_acknowledged(mllp_node: NodeRuntime, link: Link) -> None:
    ack = link.send(oru("MSG00001"))
    assert ack["code"] == "AA", ack
    assert ack["control_id"] == "MSG00001"
    assert ack["msh"].split("|")[8] == "ACK^R01^ACK"
    assert ack["msh"].split("|")[4] == "LIS"  # MSH-5 answers the sender
    archive_id = ack["text"].removeprefix("archived as ")
    archivist = mllp_node.keys.authenticate(mllp_node.keys.issue(Role.ARCHIVIST, "a").secret)
    view = mllp_node.archives.get(archivist, archive_id)
    assert (view.record_class, view.sensitivity) == ("LAB", "NORMAL")
    assert view.source_system == "LIS"
    assert view.metadata["class_rule"] == "hl7:ORU^R01"
    assert view.department == "cardiology"
    stream = mllp_node.archives.open_content(archivist, archive_id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == oru("MSG00001")
    assert stream.media_type == "application/hl7-v2"
    # A resend of the same MSH-10 is acknowledged and stores nothing.
    again = link.send(oru("MSG00001"))
    assert (again["code"], again["text"]) == ("AA", "duplicate: already archived")
    assert counts(mllp_node) == (1, 1)
    assert mllp_node.ingestion.encounter_archives("V-1001") == [archive_id]


def test_restricted_observations_grade_the_record(mllp_node: NodeRuntime, link: Link) -> None:
    hiv = segment("OBX", {1: "2", 2: "ST", 3: "56888-1^HIV 1+2 Ab^LN", 5: "negative"})
    ack = link.send(oru("MSG-HIV", OBX_HB, hiv))
    assert ack["code"] == "AA"
    with mllp_node.db.session() as session:
        archive = session.execute(select(Archive)).scalar_one()
    assert archive.sensitivity == "HIGHLY_SENSITIVE"
    assert archive.metadata_json["sensitivity_rule"] == "code:loinc:56888-1"


def test_mdm_document_is_archived(mllp_node: NodeRuntime, link: Link) -> None:
    ack = link.send(mdm("MDM-1"))
    assert ack["code"] == "AA", ack
    archive_id = ack["text"].removeprefix("archived as ")
    archivist = mllp_node.keys.authenticate(mllp_node.keys.issue(Role.ARCHIVIST, "a").secret)
    view = mllp_node.archives.get(archivist, archive_id)
    assert view.record_class == "INPATIENT"
    assert view.metadata["class_rule"] == "loinc:18842-5"
    stream = mllp_node.archives.open_content(archivist, archive_id, Purpose.TREATMENT)
    assert b"".join(stream.chunks) == PDF
    assert stream.media_type == "application/pdf"


def test_a_control_character_in_a_document_code_is_archived_as_a_space(
    mllp_node: NodeRuntime, link: Link
) -> None:
    """A NUL in TXA-2 (kept as the archive's document_type) is archived on both databases, as a
    space: PostgreSQL cannot store NUL (before: AE internal_error, so the sender resent it for
    ever; SQLite archived it)."""
    txa = segment("TXA", {1: "1", 2: "18842\x00-5^Discharge summary^LN", 3: "AP", 12: "DOC-1"})
    obx = segment("OBX", {1: "1", 2: "ED", 3: "18842-5^Discharge summary^LN",
                          5: f"HIS^application^pdf^Base64^{base64.b64encode(PDF).decode()}"})  # fmt: skip
    ack = link.send(message("MDM^T02^MDM_T02", "MDM-NUL", PID, PV1_IN, txa, obx, sender="HIS"))
    assert ack["code"] == "AA", ack
    with mllp_node.db.session() as session:
        archive = session.execute(select(Archive)).scalar_one()
    assert archive.metadata_json["document_type"] == "18842 -5"


def test_adt_reports_encounters_once(mllp_node: NodeRuntime, link: Link) -> None:
    recorder = Recorder()
    mllp_node.encounters.add(recorder)
    assert link.send(adt("A01", "ADT-1"))["code"] == "AA"
    assert link.send(adt("A03", "ADT-2"))["code"] == "AA"
    resent = link.send(adt("A03", "ADT-2"))
    assert (resent["code"], resent["text"]) == ("AA", "duplicate: already received")
    assert [r.kind for r in recorder.reports] == [EncounterKind.ADMISSION, EncounterKind.DISCHARGE]
    discharge = recorder.reports[1]
    assert discharge.patient_id == "MRN-0001"
    assert discharge.encounter_id == "V-1001"
    assert discharge.at.isoformat() == "2024-05-02T02:00:00+00:00"  # PV1-45, +0800
    assert recorder.reports[0].at.isoformat() == "2024-04-20T08:00:00+00:00"  # PV1-44
    assert discharge.admitted_at is not None  # the discharge carries the admission (PV1-44)
    assert discharge.admitted_at.isoformat() == "2024-04-20T08:00:00+00:00"
    assert counts(mllp_node) == (0, 2)
    from node.models import EncounterStay

    with mllp_node.db.session() as session:
        stay = session.get(EncounterStay, mllp_node.pseudonyms.encounter("V-1001"))
        assert stay is not None
        assert stay.admitted_at is not None
        assert stay.discharged_at is not None
        assert (stay.admitted_at.isoformat(), stay.discharged_at.isoformat()) == (
            "2024-04-20T08:00:00+00:00",
            "2024-05-02T02:00:00+00:00",
        )


def test_a_failing_listener_leaves_the_message_to_be_resent(
    mllp_node: NodeRuntime, link: Link
) -> None:
    class FailsOnce(Recorder):
        def report_encounter(self, report: EncounterReport) -> None:
            if not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("listener down")
            super().report_encounter(report)

    listener = FailsOnce()
    mllp_node.encounters.add(listener)
    first = link.send(adt("A01", "ADT-F"))
    assert first["code"] == "AE"
    assert "internal_error" in first["err"]
    assert counts(mllp_node) == (0, 0)  # not remembered: the resend is taken
    assert link.send(adt("A01", "ADT-F"))["code"] == "AA"
    assert [r.kind for r in listener.reports] == [EncounterKind.ADMISSION]
    assert link.send(adt("A01", "ADT-F"))["text"] == "duplicate: already received"


def test_a_discharge_archives_the_stays_records(mllp_node: NodeRuntime, link: Link) -> None:
    archive_id = link.send(oru("LAB-STAY"))["text"].removeprefix("archived as ")
    assert link.send(adt("A03", "ADT-DIS"))["code"] == "AA"
    with mllp_node.db.session() as session:
        archive = session.get_one(Archive, archive_id)
    assert archive.state == "ARCHIVED"
    assert archive.trigger_date.date().isoformat() == "2024-05-02"


@pytest.mark.parametrize(
    ("payload", "code", "error"),
    [
        (message("SIU^S12", "S-1", PID), "AR", "unsupported_message_type"),
        (b"HELLO WORLD", "AR", "hl7_malformed"),
        (b"\xff\xfe\x00garbage", "AR", "hl7_malformed"),
        (message("ORU^R01", "", PID, OBR, OBX_HB), "AR", "hl7_malformed"),
        (message("ORU^R01", "NO-PID", OBR, OBX_HB), "AE", "hl7_missing_field"),
        (mdm("MDM-BAD", data="@@@not base64@@@"), "AE", "hl7_invalid_document"),
        (message("MDM^T02", "MDM-EMPTY", PID), "AE", "hl7_missing_field"),
    ],
)
def test_refused_messages_store_nothing(
    mllp_node: NodeRuntime, link: Link, payload: bytes, code: str, error: str
) -> None:
    ack = link.send(payload)
    assert ack["code"] == code, ack
    assert error in ack["err"], ack
    assert counts(mllp_node) == (0, 0)
    # The connection stays usable.
    assert link.send(oru("AFTER"))["code"] == "AA"


def test_framing_errors(mllp_node: NodeRuntime, link: Link) -> None:
    # Stray bytes before a block: refused, then the block that follows is processed.
    link.send_raw(b"junk" + b"\x0b" + oru("F-1") + b"\x1c\x0d")
    assert link.ack()["code"] == "AR"
    assert link.ack()["code"] == "AA"
    # 0x1C without 0x0D: that block is refused.
    link.send_raw(b"\x0b" + oru("F-2") + b"\x1cX")
    assert link.ack()["code"] == "AR"
    # Several blocks in one write are answered in order.
    link.send_raw(b"".join(b"\x0b" + oru(f"P-{i}") + b"\x1c\x0d" for i in range(3)))
    answers = [link.ack() for _ in range(3)]
    assert [(a["code"], a["control_id"]) for a in answers] == [
        ("AA", "P-0"),
        ("AA", "P-1"),
        ("AA", "P-2"),
    ]
    assert counts(mllp_node)[0] == 4
    # A block over the limit: refused and the connection closed.
    link.send_raw(b"\x0b" + b"A" * (MAX_MESSAGE + 10))
    assert link.ack()["code"] == "AR"
    assert link.closed()
    assert counts(mllp_node)[0] == 4


def test_gb18030_text_is_accepted(mllp_node: NodeRuntime, link: Link) -> None:
    pid = segment("PID", {1: "1", 3: "MRN-0002^^^HOSP^MR", 5: "张^三"})
    payload = message("ORU^R01", "GB-1", pid, PV1_IN, OBR, OBX_HB).decode().encode("gb18030")
    assert link.send(payload)["code"] == "AA"


def test_listener_is_off_by_default(make_node: MakeNode, sqlite_url: str) -> None:
    node = make_node(database_url=sqlite_url)
    assert node.mllp is None


def test_pipelined_messages_are_committed_as_groups_and_acknowledged_in_order(
    mllp_node: NodeRuntime, link: Link
) -> None:
    assert link.send(oru("G-0"))["code"] == "AA"  # taken before: its resend below is a duplicate
    payloads = [
        *(oru(f"G-{i}") for i in range(1, 40)),
        oru("G-5"),  # the same MSH-10 again within the group
        message("ORU^R01", "G-NOPID", OBR, OBX_HB),  # AE, nothing stored
        message("SIU^S12", "G-SIU", PID),  # AR, nothing stored
        oru("G-0"),  # a resend of a message committed earlier
        adt("A03", "G-A03"),  # handled alone, after the documents before it are committed
        *(oru(f"G-{i}") for i in range(40, 60)),
    ]
    link.send_raw(b"".join(b"\x0b" + p + b"\x1c\x0d" for p in payloads))
    answers = [link.ack() for _ in payloads]
    expected_ids = [f"G-{i}" for i in range(1, 40)] + ["G-5", "G-NOPID", "G-SIU", "G-0", "G-A03"]
    expected_ids += [f"G-{i}" for i in range(40, 60)]
    assert [a["control_id"] for a in answers] == expected_ids
    codes = {a["control_id"]: a["code"] for a in answers}
    assert codes["G-NOPID"] == "AE"
    assert "hl7_missing_field" in answers[40]["err"]
    assert codes["G-SIU"] == "AR"
    assert all(codes[f"G-{i}"] == "AA" for i in range(60))
    assert codes["G-A03"] == "AA"
    assert "duplicate" in answers[39]["text"]
    assert "duplicate" in answers[42]["text"]
    archives, _ = counts(mllp_node)
    assert archives == 60  # G-0 … G-59 once each; refused and repeated messages store nothing
    with mllp_node.db.session() as session:
        stored = session.execute(
            select(func.count())
            .select_from(IngestedMessage)
            .where(IngestedMessage.message_id.like("G-%"))
        ).scalar_one()
    assert stored == 61  # 60 documents and the discharge
    # The connection stays usable, one message at a time.
    assert link.send(oru("G-LAST"))["code"] == "AA"
