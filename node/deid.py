"""De-identification profiles for derivatives (issue 12 §5): DICOM, FHIR R4 JSON and HL7 v2.

Each profile turns the original's plaintext into a de-identified copy, or refuses
(``DeidentificationError``); a format with no profile is refused, never passed through. Keyed
choices (new UIDs, resource ids, the per-patient date shift) come from ``keyed``: a function of a
string giving 64 hex (the node passes an HMAC under its pseudonym secret, scoped to the derivation's
recipient), so one recipient's derivatives of one study or patient stay consistent with each other,
and cannot be linked to another recipient's or to the original without the hospital's secret.

- ``dicom-basic``: PS3.15 Annex E Basic Application Level Confidentiality Profile as the table
  ``DICOM_BASIC_PROFILE`` lists it (attribute keyword → action ``X`` remove, ``Z`` replace with an
  empty value, ``U`` replace the UID consistently), applied at every nesting level; every private
  tag removed; Patient Identity Removed = YES and the De-identification Method recorded.
- ``fhir-r4-deid``: ``identifier``, ``name``, ``telecom``, ``address``, ``photo``, ``contact`` and
  narrative ``text`` removed everywhere; ``birthDate`` reduced to the year; every full date or
  date-time shifted back by a per-patient number of days (1..365); resource ids, references and
  ``fullUrl``s replaced by keyed ids; reference ``display`` texts removed.
- ``hl7v2-deid``: PID-2..6, 9, 11..14, 18..21, 23 emptied, PID-7 reduced to the year; NK1 emptied
  but NK1-1 and NK1-3; PV1-3, 7, 8, 9, 17, 19, 50, 52 emptied and PV1-44/45 shifted by the
  per-patient offset; GT1, IN1, IN2, IN3 and PD1 segments dropped.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from node.errors import InputError

Keyed = Callable[[str], str]
"""A keyed hash of a string: 64 lowercase hex (HMAC under the node's secret)."""

DICOM_MEDIA_TYPE = "application/dicom"
FHIR_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json"})
HL7_MEDIA_TYPE = "application/hl7-v2"

PROFILES: dict[str, frozenset[str]] = {
    "dicom-basic": frozenset({DICOM_MEDIA_TYPE}),
    "fhir-r4-deid": FHIR_MEDIA_TYPES,
    "hl7v2-deid": frozenset({HL7_MEDIA_TYPE}),
}
"""Each profile and the media types it applies to; anything else has no profile."""


class DeidentificationError(InputError):
    """The content cannot be de-identified by the profile (malformed, or not its format)."""

    code = "deidentification_failed"


def profile_for(profile: str, media_type: str) -> None:
    """Refuse (400) an unknown profile, a media type no profile covers, or a mismatch."""
    if profile not in PROFILES:
        raise InputError(
            f"unknown de-identification profile {profile!r} (known: {', '.join(sorted(PROFILES))})",
            code="unknown_profile",
        )
    if not any(media_type in types for types in PROFILES.values()):
        raise InputError(
            f"no de-identification profile exists for {media_type}: a derivative is refused, "
            "never a pass-through",
            code="no_deid_profile",
        )
    if media_type not in PROFILES[profile]:
        raise InputError(
            f"profile {profile} does not apply to {media_type}", code="profile_mismatch"
        )


def deidentify(profile: str, content: bytes, keyed: Keyed) -> bytes:
    """The de-identified copy of ``content`` by ``profile``."""
    if profile == "dicom-basic":
        return deidentify_dicom(content, keyed)
    if profile == "fhir-r4-deid":
        return deidentify_fhir(content, keyed)
    if profile == "hl7v2-deid":
        return deidentify_hl7(content, keyed)
    raise InputError(f"unknown de-identification profile {profile!r}", code="unknown_profile")


# ------------------------------------------------------------------------------------------
# DICOM: PS3.15 Annex E, Table E.1-1, Basic Profile column

_X = "X"
_Z = "Z"
_U = "U"

DICOM_BASIC_PROFILE: dict[str, str] = {
    # identifying UIDs: replaced consistently (U)
    "StudyInstanceUID": _U,
    "SeriesInstanceUID": _U,
    "SOPInstanceUID": _U,
    "MediaStorageSOPInstanceUID": _U,
    "FrameOfReferenceUID": _U,
    "SynchronizationFrameOfReferenceUID": _U,
    "ReferencedSOPInstanceUID": _U,
    "ReferencedFrameOfReferenceUID": _U,
    "RelatedFrameOfReferenceUID": _U,
    "IrradiationEventUID": _U,
    "ConcatenationUID": _U,
    "DimensionOrganizationUID": _U,
    "StorageMediaFileSetUID": _U,
    "TransactionUID": _U,
    "DeviceUID": _U,
    "InstanceCreatorUID": _U,
    "UID": _U,
    # replaced with an empty value (Z; also where the table allows Z/D or X/Z)
    "PatientName": _Z,
    "PatientID": _Z,
    "PatientBirthDate": _Z,
    "PatientSex": _Z,
    "ReferringPhysicianName": _Z,
    "StudyID": _Z,
    "StudyDate": _Z,
    "StudyTime": _Z,
    "AccessionNumber": _Z,
    "ContentDate": _Z,
    "ContentTime": _Z,
    "ContrastBolusAgent": _Z,
    "OperatorsName": _Z,
    "InstitutionName": _Z,
    "StationName": _Z,
    "DeviceSerialNumber": _Z,
    "ProtocolName": _Z,
    "RequestedProcedureDescription": _Z,
    "VerifyingObserverName": _Z,
    "PersonName": _Z,
    # removed (X)
    "AcquisitionDate": _X,
    "AcquisitionTime": _X,
    "AcquisitionDateTime": _X,
    "SeriesDate": _X,
    "SeriesTime": _X,
    "InstanceCreationDate": _X,
    "InstanceCreationTime": _X,
    "OverlayDate": _X,
    "OverlayTime": _X,
    "CurveDate": _X,
    "CurveTime": _X,
    "AcquisitionComments": _X,
    "AdditionalPatientHistory": _X,
    "AdmissionID": _X,
    "AdmittingDiagnosesDescription": _X,
    "Allergies": _X,
    "AuthorObserverSequence": _X,
    "BranchOfService": _X,
    "CountryOfResidence": _X,
    "CurrentPatientLocation": _X,
    "DerivationDescription": _X,
    "EthnicGroup": _X,
    "FillerOrderNumberImagingServiceRequest": _X,
    "FrameComments": _X,
    "GantryID": _X,
    "IconImageSequence": _X,
    "ImageComments": _X,
    "InstitutionAddress": _X,
    "InstitutionCodeSequence": _X,
    "InstitutionalDepartmentName": _X,
    "IssuerOfPatientID": _X,
    "MedicalAlerts": _X,
    "MedicalRecordLocator": _X,
    "MilitaryRank": _X,
    "ModifiedAttributesSequence": _X,
    "NameOfPhysiciansReadingStudy": _X,
    "Occupation": _X,
    "OriginalAttributesSequence": _X,
    "OtherPatientIDs": _X,
    "OtherPatientIDsSequence": _X,
    "OtherPatientNames": _X,
    "PatientAddress": _X,
    "PatientAge": _X,
    "PatientBirthName": _X,
    "PatientBirthTime": _X,
    "PatientComments": _X,
    "PatientInsurancePlanCodeSequence": _X,
    "PatientMotherBirthName": _X,
    "PatientReligiousPreference": _X,
    "PatientSize": _X,
    "PatientState": _X,
    "PatientTelephoneNumbers": _X,
    "PatientWeight": _X,
    "PerformedProcedureStepDescription": _X,
    "PerformedProcedureStepID": _X,
    "PerformedProcedureStepStartDate": _X,
    "PerformedProcedureStepStartTime": _X,
    "PerformingPhysicianName": _X,
    "PerformingPhysicianIdentificationSequence": _X,
    "PhysiciansOfRecord": _X,
    "PhysiciansOfRecordIdentificationSequence": _X,
    "PhysiciansReadingStudyIdentificationSequence": _X,
    "PregnancyStatus": _X,
    "ReasonForStudy": _X,
    "ReferencedPatientSequence": _X,
    "ReferencedPerformedProcedureStepSequence": _X,
    "ReferencedStudySequence": _X,
    "ReferringPhysicianAddress": _X,
    "ReferringPhysicianIdentificationSequence": _X,
    "ReferringPhysicianTelephoneNumbers": _X,
    "RequestAttributesSequence": _X,
    "RequestingPhysician": _X,
    "RequestingService": _X,
    "ResponsibleOrganization": _X,
    "ResponsiblePerson": _X,
    "ReviewerName": _X,
    "ScheduledProcedureStepDescription": _X,
    "SeriesDescription": _X,
    "SmokingStatus": _X,
    "SpecialNeeds": _X,
    "StudyDescription": _X,
    "TextComments": _X,
    "TextString": _X,
    "TimezoneOffsetFromUTC": _X,
    "VisitComments": _X,
}
"""The Basic Profile actions applied (a keyword pydicom does not know is an error at import)."""

DICOM_REMOVED = frozenset(k for k, action in DICOM_BASIC_PROFILE.items() if action == _X)
DICOM_EMPTIED = frozenset(k for k, action in DICOM_BASIC_PROFILE.items() if action == _Z)
DICOM_REMAPPED = frozenset(k for k, action in DICOM_BASIC_PROFILE.items() if action == _U)
DEID_METHOD = "ArchiveChain dicom-basic v1 (PS3.15 E.1-1 Basic Profile)"


def _new_uid(keyed: Keyed, study: str, uid: str) -> str:
    """A ``2.25.<decimal>`` UID keyed by the study and the original UID (consistent per study)."""
    return "2.25." + str(int(keyed(f"dicom-uid:{study}:{uid}")[:32], 16))


def deidentify_dicom(content: bytes, keyed: Keyed) -> bytes:
    """Apply ``DICOM_BASIC_PROFILE`` at every level, drop private tags, remap UIDs per study."""
    import pydicom
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError
    from pydicom.sequence import Sequence

    try:
        try:
            dataset = pydicom.dcmread(io.BytesIO(content), force=False)
        except InvalidDicomError:  # no preamble: accepted only if it reads as an SOP instance
            dataset = pydicom.dcmread(io.BytesIO(content), force=True)
            if "SOPClassUID" not in dataset:
                raise DeidentificationError("not a DICOM instance") from None
    except DeidentificationError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise DeidentificationError(f"not a readable DICOM instance: {exc}") from None
    study = str(dataset.get("StudyInstanceUID", ""))
    dataset.remove_private_tags()

    def scrub(ds: Dataset) -> None:
        for elem in list(ds):
            keyword = elem.keyword
            action = DICOM_BASIC_PROFILE.get(keyword)
            if action == _X:
                del ds[elem.tag]
                continue
            if action == _Z:
                ds[elem.tag] = DataElement(elem.tag, elem.VR, None if elem.VR == "SQ" else "")
                continue
            if action == _U and elem.value:
                if elem.VM > 1:
                    elem.value = [_new_uid(keyed, study, str(v)) for v in elem.value]
                else:
                    elem.value = _new_uid(keyed, study, str(elem.value))
                continue
            if elem.VR == "SQ" and isinstance(elem.value, Sequence):
                for item in elem.value:
                    scrub(item)

    scrub(dataset)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta:
        meta = None
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = DEID_METHOD
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=meta is not None)
    return out.getvalue()


# ------------------------------------------------------------------------------------------
# FHIR R4 JSON

FHIR_REMOVED = frozenset({"identifier", "name", "telecom", "address", "photo", "contact", "text"})
_FHIR_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T.*)?$")
_FHIR_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_MAX_FHIR_BYTES = 32 * 1024 * 1024


def _shift_days(keyed: Keyed, subject: str) -> int:
    """Days (1..365) the dates of one patient move back."""
    return int(keyed(f"date-shift:{subject}")[:8], 16) % 365 + 1


def _shift(value: str, days: int) -> str:
    match = _FHIR_DATE.fullmatch(value)
    if match:
        year, month, day, rest = match.groups()
        try:
            moved = date(int(year), int(month), int(day)) - timedelta(days=days)
        except ValueError:
            return value[:4]
        return moved.isoformat() + (rest or "")
    if _FHIR_YEAR_MONTH.fullmatch(value):
        return value[:4]
    return value


def _fhir_subject(resource: Any) -> str:
    """The patient a resource (or bundle) is about: its Patient's id or first subject reference."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if found:
            return
        if isinstance(node, dict):
            if node.get("resourceType") == "Patient" and isinstance(node.get("id"), str):
                found.append("Patient/" + node["id"])
                return
            for key in ("subject", "patient"):
                ref = node.get(key)
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    found.append(ref["reference"])
                    return
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(resource)
    return found[0] if found else "(none)"


def deidentify_fhir(content: bytes, keyed: Keyed) -> bytes:
    """The FHIR profile over a resource or a Bundle (JSON); see the module docstring."""
    if len(content) > _MAX_FHIR_BYTES:
        raise DeidentificationError("the FHIR document is too large")
    try:
        resource = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DeidentificationError("not a FHIR JSON document") from None
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise DeidentificationError("not a FHIR resource (no resourceType)")
    days = _shift_days(keyed, _fhir_subject(resource))

    def new_id(value: str) -> str:
        return keyed(f"fhir-id:{value}")[:32]

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, dict):
            result: dict[str, Any] = {}
            for name, value in node.items():
                if name in FHIR_REMOVED:
                    continue
                if name == "display" and "reference" in node:
                    continue
                if name == "birthDate" and isinstance(value, str):
                    result[name] = value[:4]
                elif name == "id" and isinstance(value, str) and "resourceType" in node:
                    result[name] = new_id(value)
                elif name == "reference" and isinstance(value, str):
                    kind, _, ident = value.rpartition("/")
                    result[name] = f"{kind}/{new_id(ident)}" if kind else new_id(value)
                elif name == "fullUrl" and isinstance(value, str):
                    result[name] = "urn:uuid:" + _uuid(new_id(value))
                else:
                    result[name] = walk(value, name)
            return result
        if isinstance(node, list):
            return [walk(item, key) for item in node]
        if isinstance(node, str):
            return _shift(node, days)
        return node

    cleaned = walk(resource, None)
    return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _uuid(hex32: str) -> str:
    h = hex32[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# ------------------------------------------------------------------------------------------
# HL7 v2

HL7_SCRUBBED: dict[str, frozenset[int]] = {
    "PID": frozenset({2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 18, 19, 20, 21, 23}),
    "PV1": frozenset({3, 7, 8, 9, 17, 19, 50, 52}),
}
"""Fields emptied per segment (HL7 field numbers; NK1 keeps only NK1-1 and NK1-3)."""
HL7_DROPPED = frozenset({"GT1", "IN1", "IN2", "IN3", "PD1"})
NK1_KEPT = frozenset({1, 3})
_HL7_TS = re.compile(r"^(\d{8})(\d*)(.*)$")


def _shift_ts(value: str, days: int) -> str:
    match = _HL7_TS.fullmatch(value)
    if not match:
        return ""
    day, clock, zone = match.groups()
    try:
        moved = datetime.strptime(day, "%Y%m%d") - timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") + clock + zone


def deidentify_hl7(content: bytes, keyed: Keyed) -> bytes:
    """The HL7 v2 profile (ER7 text, segments separated by CR); see the module docstring."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    segments = [s for s in re.split(r"\r\n|\r|\n", text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise DeidentificationError("not an HL7 v2 message (no MSH segment)")
    separator = segments[0][3]
    subject = "(none)"
    for segment in segments:
        fields = segment.split(separator)
        if fields[0] == "PID" and len(fields) > 3:
            subject = fields[3].split(segments[0][4] if len(segments[0]) > 4 else "^")[0]
    days = _shift_days(keyed, f"hl7:{subject}")
    out: list[str] = []
    for segment in segments:
        fields = segment.split(separator)
        name = fields[0]
        if name in HL7_DROPPED:
            continue
        if name == "PID":
            for i in range(1, len(fields)):
                if i in HL7_SCRUBBED["PID"]:
                    fields[i] = ""
                elif i == 7:
                    fields[i] = fields[i][:4]
        elif name == "NK1":
            fields = [f if i == 0 or i in NK1_KEPT else "" for i, f in enumerate(fields)]
        elif name == "PV1":
            for i in range(1, len(fields)):
                if i in HL7_SCRUBBED["PV1"]:
                    fields[i] = ""
                elif i in (44, 45) and fields[i]:
                    fields[i] = _shift_ts(fields[i], days)
        out.append(separator.join(fields))
    return ("\r".join(out) + "\r").encode("utf-8")
