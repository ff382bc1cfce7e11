"""De-identification profiles for derivatives (issue 12 §5): DICOM, FHIR R4 JSON and HL7 v2.

Each profile turns the original's plaintext into a de-identified copy, or refuses
(``DeidentificationError``); a format with no profile is refused, never passed through. Keyed
choices (new UIDs, resource ids, the per-patient date shift) come from ``keyed``: a function of a
string giving 64 hex (the node passes an HMAC under its pseudonym secret, scoped to the derivation's
recipient), so one recipient's derivatives of one study or patient stay consistent with each other,
and cannot be linked to another recipient's or to the original without the hospital's secret.

- ``dicom-basic``: PS3.15 Annex E Basic Application Level Confidentiality Profile, every row of
  Table E.1-1 (edition 2024b, ``node.dicom_e11``): ``X`` removed, ``Z`` emptied, ``D`` a dummy of
  the VR, ``U`` a keyed UID consistent per study, combinations as ``COMBINED_ACTIONS`` says;
  applied at every nesting level; private tags, curves and overlays removed; Patient Identity
  Removed = YES, the De-identification Method and its code (DCM 113100) recorded.
- ``fhir-r4-deid``: ``identifier``, ``name``, ``telecom``, ``address``, ``photo``, ``contact`` and
  narrative ``text``, every ``extension`` and ``note`` (Annotation) removed everywhere, a
  ``modifierExtension`` refused (400 ``modifier_extension``); ``birthDate`` reduced to the year; every full date or
  date-time shifted back by a per-patient number of days (1..365); resource ids, references and
  ``fullUrl``s replaced by keyed ids; reference ``display`` texts removed.
- ``hl7v2-deid``: PID-2..6, 9, 11..14, 18..21, 23 emptied, PID-7 reduced to the year; NK1 emptied
  but NK1-1 and NK1-3; PV1-3, 7, 8, 9, 17, 19, 50, 52 emptied and PV1-44/45 shifted by the
  per-patient offset; GT1, IN1, IN2, IN3, PD1 and NTE (notes) segments dropped; OBX-5 emptied
  for free-text value types (TX, FT, ST, and any type not known to be structured), coded values
  (CE, CWE, CNE, CF) keep only their codes (text components 2, 5, 9 emptied).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from node.dicom_e11 import BASIC_PROFILE_ROWS
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
# DICOM: PS3.15 Annex E, Table E.1-1, Basic Profile column (edition 2024b, node/dicom_e11.py)

_X = "X"
_Z = "Z"
_U = "U"
_D = "D"
_SEQUENCE_UIDS = "X/Z/U*"

DICOM_TABLE_ACTIONS: dict[int, str] = {tag: action for tag, _, action in BASIC_PROFILE_ROWS}
"""Every single-tag row of Table E.1-1 (2024b): tag → the Basic Profile action as printed."""

COMBINED_ACTIONS: dict[str, str] = {
    _X: _X,
    _Z: _Z,
    _D: _D,
    _U: _U,
    "X/Z": _Z,
    "X/D": _D,
    "Z/D": _D,
    "X/Z/D": _D,
    _SEQUENCE_UIDS: _SEQUENCE_UIDS,
}
"""The action applied for each code of the table. A combination means "the first unless the
IOD's attribute type needs the next" (Type 3 → X, Type 2 → Z, Type 1 → D); the profile does not
know each SOP class's module types, so it applies the last one of the combination, which every
type allows and which keeps no original value: ``X/Z`` → empty, ``X/D``, ``Z/D`` and ``X/Z/D`` →
a dummy. ``X/Z/U*`` (Referenced/Source Image Sequence) keeps the sequence and replaces the UIDs it
holds (its items are scrubbed by the same table, where the referenced UIDs are ``U``)."""

DICOM_BASIC_PROFILE: dict[int, str] = {
    tag: COMBINED_ACTIONS[action] for tag, action in DICOM_TABLE_ACTIONS.items()
}
"""Tag → the action ``dicom-basic`` applies (X, Z, D, U or the sequence rule)."""

_KEYWORDS = {tag: keyword for tag, keyword, _ in BASIC_PROFILE_ROWS}
DICOM_REMOVED = frozenset(_KEYWORDS[t] for t, a in DICOM_BASIC_PROFILE.items() if a == _X)
DICOM_EMPTIED = frozenset(_KEYWORDS[t] for t, a in DICOM_BASIC_PROFILE.items() if a == _Z)
DICOM_DUMMIED = frozenset(_KEYWORDS[t] for t, a in DICOM_BASIC_PROFILE.items() if a == _D)
DICOM_REMAPPED = frozenset(_KEYWORDS[t] for t, a in DICOM_BASIC_PROFILE.items() if a == _U)
DEID_METHOD = "ArchiveChain dicom-basic v2 (PS3.15 2024b E.1-1 Basic)"

DUMMY_VALUES: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "urn:uuid:00000000-0000-0000-0000-000000000000",
    "OB": b"\x00\x00",
    "UN": b"\x00\x00",
}
"""The ``D`` dummy per VR (a UI gets a keyed UID like ``U``; a sequence keeps its scrubbed
items)."""


def _new_uid(keyed: Keyed, study: str, uid: str) -> str:
    """A ``2.25.<decimal>`` UID keyed by the study and the original UID (consistent per study)."""
    return "2.25." + str(int(keyed(f"dicom-uid:{study}:{uid}")[:32], 16))


def _range_removed(tag: int) -> bool:
    """The range rows of Table E.1-1 (all ``X``): Curve Data (50xx,xxxx) and Overlay Data /
    Overlay Comments (60xx,3000)/(60xx,4000), xx even (repeating groups 0x00–0x1E)."""
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return True
    return 0x6000 <= group <= 0x601E and group % 2 == 0 and element in (0x3000, 0x4000)


def deidentify_dicom(content: bytes, keyed: Keyed) -> bytes:
    """Apply every row of Table E.1-1's Basic Profile at every level, drop private tags (the
    table's "Private Attributes" row), remap UIDs per study."""
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

    def new_uids(value: Any) -> Any:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [_new_uid(keyed, study, str(v)) for v in value]
        return _new_uid(keyed, study, str(value))

    def scrub(ds: Dataset) -> None:
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag.is_private or _range_removed(tag):
                del ds[elem.tag]
                continue
            action = DICOM_BASIC_PROFILE.get(tag)
            if action == _X:
                del ds[elem.tag]
            elif action == _Z:
                ds[elem.tag] = DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else "")
            elif action == _U or (action == _D and elem.VR == "UI"):
                if elem.value:
                    elem.value = new_uids(elem.value)
                else:
                    elem.value = _new_uid(keyed, study, f"empty:{tag:08X}")
            elif action == _D and elem.VR != "SQ":
                dummy = DUMMY_VALUES.get(elem.VR)
                if dummy is None:  # a VR the table gives no D row today: remove (safe)
                    del ds[elem.tag]
                else:
                    ds[elem.tag] = DataElement(elem.tag, elem.VR, dummy)
            elif elem.VR == "SQ" and isinstance(elem.value, Sequence):
                # D or X/Z/U* on a sequence, or a sequence the table does not name: keep it and
                # apply the table to its items (their UIDs, names, dates…)
                for item in elem.value:
                    scrub(item)

    try:
        scrub(dataset)
    except Exception as exc:  # a value pydicom cannot decode (e.g. a broken UID list)
        raise DeidentificationError(f"not a readable DICOM instance: {exc}") from None
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta:
        meta = None
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    dataset.DeidentificationMethodCodeSequence = Sequence([code])
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=meta is not None)
    return out.getvalue()


# ------------------------------------------------------------------------------------------
# FHIR R4 JSON

FHIR_REMOVED = frozenset(
    {"identifier", "name", "telecom", "address", "photo", "contact", "text", "extension", "note"}
)
"""Elements dropped wherever they occur: identifying data types, the narrative (``text``, whose
``div`` is free text), every ``extension`` (also on primitives, ``_birthDate.extension``: an
extension may carry anything, e.g. the patient-birthTime), and ``note`` (Annotation: free text
with its author and time). A ``modifierExtension`` is refused, not dropped: it changes the
meaning of the element that holds it, so a copy without it would say something else."""


class ModifierExtensionError(DeidentificationError):
    """A FHIR resource holds a ``modifierExtension``: it is refused (see ``FHIR_REMOVED``)."""

    code = "modifier_extension"


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
                if name == "modifierExtension":
                    raise ModifierExtensionError(
                        "the FHIR document holds a modifierExtension, which changes the meaning "
                        "of its element: it can neither be kept (free content) nor dropped "
                        "(the copy would mean something else)"
                    )
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
HL7_DROPPED = frozenset({"GT1", "IN1", "IN2", "IN3", "PD1", "NTE"})
"""Segments dropped: guarantor, insurance, additional demographics, and NTE (free-text notes and
comments, which may name anyone)."""
OBX_FREE_TEXT = frozenset({"TX", "FT", "ST"})
"""OBX value types whose OBX-5 is free text: emptied."""
OBX_CODED = frozenset({"CE", "CWE", "CNE", "CF"})
"""OBX value types whose OBX-5 is a code: identifier (1) and coding system (3), alternate
identifier (4) and its system (6) and versions (7, 8) kept; texts (2, 5) and original text (9)
emptied."""
_CODED_TEXT_COMPONENTS = frozenset({2, 5, 9})
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
        elif name == "OBX" and len(fields) > 5:
            fields[5] = _scrub_obx_value(fields[2], fields[5], segments[0][4:8])
        out.append(separator.join(fields))
    return ("\r".join(out) + "\r").encode("utf-8")


def _scrub_obx_value(value_type: str, value: str, encoding: str) -> str:
    """OBX-5 without free text (``OBX_FREE_TEXT`` emptied, ``OBX_CODED`` texts emptied); other
    value types (NM, SN, DT, TS, …) are kept. An unknown or missing type with a value is emptied:
    free text cannot be ruled out."""
    kind = value_type.strip().upper()
    component = encoding[0] if encoding else "^"
    repetition = encoding[1] if len(encoding) > 1 else "~"
    if kind in OBX_CODED:
        kept = []
        for rep in value.split(repetition):
            parts = rep.split(component)
            kept.append(
                component.join(
                    "" if i + 1 in _CODED_TEXT_COMPONENTS else part for i, part in enumerate(parts)
                )
            )
        return repetition.join(kept)
    if kind in OBX_FREE_TEXT or kind not in _OBX_STRUCTURED:
        return ""
    return value


_OBX_STRUCTURED = frozenset(
    {"NM", "SN", "DT", "TM", "TS", "DTM", "DR", "CQ", "MO", "NA", "NR", "ID", "IS", "RP"}
)
"""OBX value types kept as they are (numbers, dates and times, identifiers, references).
Encapsulated data (ED) and any other type are emptied like free text."""
