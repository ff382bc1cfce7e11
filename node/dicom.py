"""DICOM instances → incoming documents (metadata read with pydicom; the file is the archive).

Each instance (a Part 10 file with its ``DICM`` preamble) becomes one archive of media type
``application/dicom``; instances of one study carry its StudyInstanceUID in their metadata
(``study_uid``), so the catalogue groups them. Read: SOPInstanceUID (the idempotency key),
SOPClassUID, StudyInstanceUID, SeriesInstanceUID, Modality (class IMAGING by the
``dicom-modality`` rule), StudyDate (the trigger date), StudyDescription / SeriesDescription
(the title), PatientID (the patient; only its keyed pseudonym is stored), AdmissionID (the
encounter, when present). Pixel data is not decoded.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime

import pydicom
from pydicom.errors import InvalidDicomError

from node.classification import SourceHints
from node.errors import InputError, NodeError
from node.principal import Principal
from node.services.ingestion import IncomingDocument, IngestionService

log = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"
DEFAULT_SOURCE = "PACS"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class DicomInvalidError(InputError):
    """Not a DICOM Part 10 instance, or one without the identifiers ingestion needs."""

    code = "dicom_invalid"


@dataclass(frozen=True)
class Instance:
    """One parsed instance: what STOW-RS answers with, and the document to ingest."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    document: IncomingDocument


def _uid(value: object, name: str) -> str:
    text = str(value or "").strip()
    if not text or len(text) > 64 or not _UID.fullmatch(text):
        raise DicomInvalidError(f"{name} is missing or not a DICOM UID")
    return text


def _study_date(value: object) -> date | None:
    text = str(value or "").strip()
    try:
        return datetime.strptime(text, "%Y%m%d").date() if text else None
    except ValueError:
        return None


def read_instance(data: bytes, *, source_system: str = DEFAULT_SOURCE) -> Instance:
    """Parse one Part 10 instance; ``DicomInvalidError`` if it is not one or lacks identifiers."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError):
        raise DicomInvalidError("the part is not a DICOM Part 10 instance") from None
    sop_instance = _uid(dataset.get("SOPInstanceUID"), "SOPInstanceUID")
    sop_class = _uid(dataset.get("SOPClassUID"), "SOPClassUID")
    study = _uid(dataset.get("StudyInstanceUID"), "StudyInstanceUID")
    series = str(dataset.get("SeriesInstanceUID") or "").strip()
    patient = str(dataset.get("PatientID") or "").strip()
    if not patient:
        raise DicomInvalidError("PatientID is missing")
    modality = str(dataset.get("Modality") or "").strip().upper() or "OT"
    description = str(dataset.get("StudyDescription") or dataset.get("SeriesDescription") or "")
    admission = str(dataset.get("AdmissionID") or "").strip() or None
    metadata: dict[str, str] = {"modality": modality, "study_uid": study}
    if series and _UID.fullmatch(series):
        metadata["series_uid"] = series
    document = IncomingDocument(
        content=data,
        media_type=DICOM_MEDIA_TYPE,
        patient_id=patient,
        source_system=source_system,
        title=f"{modality} {description}".strip(),
        message_id=sop_instance,
        encounter_id=admission,
        department="radiology",
        hints=SourceHints(modality=modality),
        trigger_date=_study_date(dataset.get("StudyDate")),
        kind="dicom",
        metadata=metadata,
        text="\n".join(
            str(dataset.get(name) or "")
            for name in (
                "StudyDescription",
                "SeriesDescription",
                "BodyPartExamined",
                "ProtocolName",
            )
        ),
    )
    return Instance(sop_class, sop_instance, study, document)


_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700


def store_instance(
    ingestion: IngestionService, principal: Principal, data: bytes, calling_ae: str
) -> int:
    """Ingest one instance received by the C-STORE SCP; the DIMSE status to answer with."""
    source = calling_ae if _CODE.fullmatch(calling_ae) else DEFAULT_SOURCE
    try:
        instance = read_instance(data, source_system=source)
    except DicomInvalidError:
        log.info("C-STORE from %s refused: not a readable instance", source)
        return STATUS_CANNOT_UNDERSTAND
    try:
        ingestion.ingest(principal, instance.document)
    except InputError as exc:
        log.info("C-STORE from %s refused (%s)", source, exc.code)
        return STATUS_OUT_OF_RESOURCES if exc.code == "payload_too_large" else 0xA900
    except NodeError as exc:
        log.warning("C-STORE from %s not stored (%s)", source, exc.code)
        return STATUS_OUT_OF_RESOURCES
    return STATUS_SUCCESS
