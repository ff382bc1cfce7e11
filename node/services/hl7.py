"""HL7 v2 messages from hospital systems, answered with an ACK once what they carry is durable.

| message | becomes | ACK |
|---|---|---|
| ``ORU^R01`` (lab results) | an archive of the whole message (``application/hl7-v2``), or of the OBX ED document when there is one; class by OBR-24 / message type, sensitivity by OBX-3 / OBR-4 codes | AA after the commit |
| ``MDM^T02`` (document with content) | an archive of the OBX ED document (Base64), else of the OBX TX/FT text (``text/plain``); class by TXA-2 (LOINC) / PV1 | AA after the commit |
| ``ADT^A01`` / ``ADT^A04`` / ``ADT^A03`` | an encounter report (admission / visit / discharge) to the encounter listeners | AA after it is remembered and reported |
| the same MSH-3 + MSH-10 again | nothing new | AA ("duplicate") |
| another message type | nothing | AR (unsupported, ERR 200) |
| no MSH, unparsable, not UTF-8/GB18030 | nothing | AR (ERR 200) |
| a message lacking what it needs (PID-3, a document) or refused by the archive (media type, size) | nothing | AE (ERR 207, with the reason's code) |

The caller acts as ``system:mllp`` (an archivist pseudonym). Nothing here logs field values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from node import hl7v2
from node.classification import SourceHints
from node.encounters import EncounterKind, EncounterReport
from node.errors import InputError, NodeError, PermissionDeniedError
from node.hl7v2 import Header, Hl7FormatError
from node.principal import Principal
from node.services.ingestion import IncomingDocument, IngestionService

log = logging.getLogger(__name__)

HL7_MEDIA_TYPE = "application/hl7-v2"
DEFAULT_SOURCE = "HL7"
_ADT = {
    "A01": EncounterKind.ADMISSION,
    "A04": EncounterKind.VISIT,
    "A03": EncounterKind.DISCHARGE,
}


@dataclass(frozen=True)
class Outcome:
    """The ACK code and text of one message (for tests and metrics)."""

    code: str  # AA, AE, AR
    text: str
    archive_id: str | None = None
    duplicate: bool = False


class Hl7Service:
    """Turns HL7 v2 messages into archives and encounter reports; answers each with an ACK."""

    def __init__(
        self,
        *,
        ingestion: IngestionService,
        principal: Principal,
        receiving_facility: str = "",
        default_source: str = DEFAULT_SOURCE,
    ) -> None:
        self.ingestion = ingestion
        self.principal = principal
        self.receiving_facility = receiving_facility
        self.default_source = default_source

    def handle(self, raw: bytes) -> bytes:
        """The ACK (unframed) of one message (unframed)."""
        header = hl7v2.header_of(raw)
        return self._ack(header, self.process(raw, header))

    def handle_many(self, raws: Sequence[bytes]) -> list[bytes]:
        """The ACKs of pipelined messages, in order (group commit).

        Consecutive ORU^R01/MDM^T02 documents are archived together in one unit of work
        (``IngestionService.ingest_batch``: one commit, one fsync, resends and repeats within
        the group deduplicated by MSH-10); any other message is handled alone, after the
        documents before it are committed, so an ADT^A03 still finds the results sent before
        it. A group the archive refuses is retried message by message, so each message gets
        its own AA/AE/AR. Every ACK is built after the commit it reports."""
        outcomes: list[Outcome] = []
        headers: list[Header] = []
        group: list[tuple[int, IncomingDocument]] = []

        def flush() -> None:
            if not group:
                return
            done = self._archive_group([doc for _, doc in group])
            if done is None:
                for index, _ in group:
                    outcomes[index] = self.process(raws[index], headers[index])
            else:
                for (index, _), outcome in zip(group, done, strict=True):
                    outcomes[index] = outcome
            group.clear()

        for raw in raws:
            header = hl7v2.header_of(raw)
            headers.append(header)
            outcomes.append(Outcome("AE", "internal_error: not processed; resend"))
            doc = self._document_of(raw, header)
            if doc is not None:
                group.append((len(outcomes) - 1, doc))
                continue
            flush()
            outcomes[-1] = self.process(raw, header)
        flush()
        return [
            self._ack(header, outcome) for header, outcome in zip(headers, outcomes, strict=True)
        ]

    def _document_of(self, raw: bytes, header: Header) -> IncomingDocument | None:
        """The document of a well-formed ORU^R01/MDM^T02, else None (``process`` answers it)."""
        try:
            message = hl7v2.parse(raw)
            kind = (
                f"{hl7v2.field(message, 'MSH', 9, 1).upper()}^"
                f"{hl7v2.field(message, 'MSH', 9, 2).upper()}"
            )
            if not header.control_id or kind not in ("ORU^R01", "MDM^T02"):
                return None
            source = hl7v2.source_of(header, self.default_source)
            return self._incoming(raw, message, kind, source, header)
        except (Hl7FormatError, NodeError):
            return None

    def _archive_group(self, docs: list[IncomingDocument]) -> list[Outcome] | None:
        """The outcomes of one unit archiving ``docs``; None if the unit was refused."""
        try:
            results = self.ingestion.ingest_batch(self.principal, docs)
        except Exception as exc:  # each message is then tried alone and answered alone
            log.info("HL7 group of %d refused (%s); one by one", len(docs), type(exc).__name__)
            return None
        return [_archived(result.archive.id, result.duplicate) for result in results]

    def _ack(self, header: Header, outcome: Outcome) -> bytes:
        error = None if outcome.code == "AA" else outcome.text.split(":", 1)[0]
        return hl7v2.ack(
            header,
            outcome.code,
            outcome.text,
            receiving_facility=self.receiving_facility,
            error_code=error,
        )

    def process(self, raw: bytes, header: Header | None = None) -> Outcome:
        """What becomes of one message; never raises for a message's content."""
        header = header or hl7v2.header_of(raw)
        try:
            message = hl7v2.parse(raw)
            message_type = hl7v2.field(message, "MSH", 9, 1).upper()
            trigger = hl7v2.field(message, "MSH", 9, 2).upper()
            kind = f"{message_type}^{trigger}"
            if not header.control_id:
                raise Hl7FormatError("MSH-10 (message control id) is required")
            source = hl7v2.source_of(header, self.default_source)
            if kind == "ORU^R01" or kind == "MDM^T02":
                return self._document(raw, message, kind, source, header)
            if message_type == "ADT" and trigger in _ADT:
                return self._encounter(message, kind, _ADT[trigger], source, header)
            log.info("HL7 %s from %s refused: unsupported message type", kind, source)
            return Outcome("AR", f"unsupported_message_type: {kind} is not accepted here")
        except Hl7FormatError as exc:
            log.info("HL7 message refused: %s", exc.code)
            return Outcome("AR", f"{exc.code}: {exc.message}")
        except NodeError as exc:
            if _is_client_error(exc):
                log.info("HL7 message not accepted: %s", exc.code)
                return Outcome("AE", f"{exc.code}: {exc.message}")
            log.exception("HL7 message failed inside the node (%s)", exc.code)
            return Outcome("AE", "internal_error: the node could not store the message; resend")
        except Exception as exc:
            log.error("HL7 message failed inside the node (%s)", type(exc).__name__, exc_info=exc)
            return Outcome("AE", "internal_error: the node could not store the message; resend")

    # -- message kinds -------------------------------------------------------------------------

    def _document(
        self, raw: bytes, message: Any, kind: str, source: str, header: Header
    ) -> Outcome:
        result = self.ingestion.ingest(
            self.principal, self._incoming(raw, message, kind, source, header)
        )
        return _archived(result.archive.id, result.duplicate)

    def _incoming(
        self, raw: bytes, message: Any, kind: str, source: str, header: Header
    ) -> IncomingDocument:
        """The document an ORU^R01 or MDM^T02 carries (``InputError`` when it lacks one)."""
        patient = _patient(message)
        observations = hl7v2.segments(message, "OBX")
        content, media_type = raw, HL7_MEDIA_TYPE
        for obx in observations:
            embedded = hl7v2.embedded_document(obx)
            if embedded is not None:
                content, media_type = embedded
                break
        else:
            if kind == "MDM^T02":
                text = "\n".join(
                    hl7v2.seg_field(obx, 5)
                    for obx in observations
                    if hl7v2.seg_field(obx, 2).upper() in ("TX", "FT", "ST")
                )
                if not text.strip():
                    raise _missing("MDM^T02 carries no document (OBX ED or TX)")
                content, media_type = text.encode("utf-8"), "text/plain"
        codes = []
        for obx in observations:
            found = hl7v2.coded(hl7v2.seg_field(obx, 3, 3), hl7v2.seg_field(obx, 3, 1))
            if found is not None:
                codes.append(found)
        service = hl7v2.coded(hl7v2.field(message, "OBR", 4, 3), hl7v2.field(message, "OBR", 4, 1))
        if service is not None:
            codes.append(service)
        document_type = ""
        if kind == "MDM^T02":
            txa_system = hl7v2.field(message, "TXA", 2, 3).upper()
            txa_code = hl7v2.field(message, "TXA", 2, 1)
            document_type = txa_code if txa_system in ("LN", "") else ""
        department = hl7v2.field(message, "PV1", 10) or None
        hints = SourceHints(
            report_category=hl7v2.field(message, "OBR", 24) or None,
            document_type=document_type or None,
            message_type=kind,
            department=department,
            encounter_class=hl7v2.field(message, "PV1", 2) or None,
            codes=tuple(codes),
        )
        title = (
            hl7v2.field(message, "OBR", 4, 2)
            or hl7v2.field(message, "TXA", 2, 2)
            or f"{kind} {'lab result' if kind == 'ORU^R01' else 'document'}"
        )
        when = hl7v2.timestamp(hl7v2.field(message, "OBR", 7)) or hl7v2.timestamp(
            hl7v2.field(message, "MSH", 7)
        )
        texts = [
            hl7v2.seg_field(obx, 5)
            for obx in observations
            if hl7v2.seg_field(obx, 2).upper() in ("TX", "FT", "ST")
        ]
        texts.append(hl7v2.field(message, "OBR", 4, 2))
        texts.append(hl7v2.field(message, "TXA", 2, 2))
        metadata: dict[str, Any] = {"hl7_type": kind}
        if document_type:
            metadata["document_type"] = document_type
        return IncomingDocument(
            content=content,
            media_type=media_type,
            patient_id=patient,
            source_system=source,
            title=title,
            message_id=header.control_id,
            encounter_id=hl7v2.field(message, "PV1", 19) or None,
            department=department,
            hints=hints,
            trigger_date=when.date() if when else None,
            kind=f"hl7-{kind.replace('^', '-').lower()}",
            metadata=metadata,
            text="\n".join(text for text in texts if text),
        )

    def _encounter(
        self, message: Any, kind: str, what: EncounterKind, source: str, header: Header
    ) -> Outcome:
        patient = _patient(message)
        if what is EncounterKind.DISCHARGE:
            field_time = hl7v2.field(message, "PV1", 45)
        elif what is EncounterKind.ADMISSION:
            field_time = hl7v2.field(message, "PV1", 44)
        else:
            field_time = ""
        at = (
            hl7v2.timestamp(field_time)
            or hl7v2.timestamp(hl7v2.field(message, "EVN", 2))
            or hl7v2.timestamp(hl7v2.field(message, "MSH", 7))
            or datetime.now(UTC)
        )
        department = hl7v2.field(message, "PV1", 10) or None
        report = EncounterReport(
            patient_id=patient,
            kind=what,
            at=at,
            encounter_id=hl7v2.field(message, "PV1", 19) or None,
            department=department,
            source_system=source,
            admitted_at=hl7v2.timestamp(hl7v2.field(message, "PV1", 44))
            if what is EncounterKind.DISCHARGE
            else None,
        )
        reported = self.ingestion.receive_encounter(
            self.principal,
            report,
            source_system=source,
            message_id=header.control_id,
            kind=f"hl7-{kind.replace('^', '-').lower()}",
        )
        if not reported:
            return Outcome("AA", "duplicate: already received", duplicate=True)
        return Outcome("AA", f"{what.value} reported")


def _archived(archive_id: str, duplicate: bool) -> Outcome:
    if duplicate:
        return Outcome("AA", "duplicate: already archived", archive_id, True)
    return Outcome("AA", f"archived as {archive_id}", archive_id)


def _patient(message: Any) -> str:
    patient = hl7v2.field(message, "PID", 3, 1)
    if not patient:
        raise _missing("PID-3 (patient identifier) is required")
    return patient


def _missing(text: str) -> NodeError:
    return InputError(text, code="hl7_missing_field")


def _is_client_error(exc: NodeError) -> bool:
    return isinstance(exc, InputError | PermissionDeniedError)
