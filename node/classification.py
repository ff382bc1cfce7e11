"""Automatic classification and sensitivity grading of records arriving from hospital systems.

One rules module, read as data: each rule has a stable id, and the id of the rule that decided is
recorded with the archive (``metadata.class_rule`` / ``metadata.sensitivity_rule``) and with its
ingestion row, so an archivist can find every record a rule placed and correct it.

Record class (门诊 OUTPATIENT, 住院 INPATIENT, 急诊 EMERGENCY, 检验 LAB, 影像 IMAGING, 护理 NURSING,
行政 ADMINISTRATIVE): the first rule that matches wins, in this order —

1. ``hint``: the sender named a class (an enum name or its Chinese label);
2. ``dicom-modality``: any DICOM modality → IMAGING;
3. ``report-category:<code>``: a DiagnosticReport category / HL7 OBR-24 diagnostic service section
   (v2 table 0074: RAD, CT, MR, US, NMR, XRC … → IMAGING; LAB, CH, HM, MB, SR, BG, CP … → LAB);
4. ``loinc:<code>``: a LOINC document type (discharge summary → INPATIENT, ED note → EMERGENCY,
   nursing notes → NURSING, lab report → LAB, imaging study → IMAGING, consent → ADMINISTRATIVE);
5. ``hl7:<message type>``: ORU^R01 → LAB;
6. ``department:<name>``: the source department (nursing, laboratory, radiology, emergency, the
   administrative offices; English codes and the usual Chinese names);
7. ``encounter-class:<code>``: the FHIR encounter class (v3 ActCode AMB, IMP, EMER, ACUTE, NONAC,
   OBSENC, SS, HH, VR) or the HL7 v2 PV1-2 patient class (O, I, E, P, R, B);
8. ``default``: INPATIENT — the class with the longest default retention (30 years), so a record
   nothing recognised is never destroyed early; the rule id tells the archivist to look at it.

Sensitivity (NORMAL, SENSITIVE, HIGHLY_SENSITIVE): the *highest* grade any rule gives wins —

- ``security-label:<code>``: FHIR ``meta.security`` / ``securityLabel`` confidentiality codes
  (v3 Confidentiality R, V → HIGHLY_SENSITIVE; …);
- ``code:<system>:<code>``: codes that mark restricted records — HIV tests (LOINC), ICD-10 B20–B24
  (HIV disease), F01–F99 (mental and behavioural disorders, including substance use), genetic
  analysis (LOINC), Z15 (genetic susceptibility) → HIGHLY_SENSITIVE; ICD-10 A50–A64 (sexually
  transmitted), O00–O08 (pregnancy with abortive outcome), Z30 (contraception) → SENSITIVE;
- ``department:<name>``: psychiatry, genetics → HIGHLY_SENSITIVE; reproductive medicine → SENSITIVE;
- a sender's explicit grade (``hint``) counts like any other rule: it can raise, never lower;
- ``default``: NORMAL.

Nothing here logs or stores a code's display text; codes are matched on their system and value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from anchoring.events import RecordClass, Sensitivity

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CN = "icd-10-cn"

CHINESE_LABELS: dict[str, RecordClass] = {
    "门诊": RecordClass.OUTPATIENT,
    "住院": RecordClass.INPATIENT,
    "急诊": RecordClass.EMERGENCY,
    "检验": RecordClass.LAB,
    "影像": RecordClass.IMAGING,
    "护理": RecordClass.NURSING,
    "行政": RecordClass.ADMINISTRATIVE,
}
"""The record classes as Chinese archive practice names them."""

_IMAGING_SECTIONS = frozenset(
    {"RAD", "RX", "CT", "MR", "MRI", "US", "NMR", "NMS", "XRC", "VUS", "CUS", "OUS", "RUS", "IMG"}
)
_LAB_SECTIONS = frozenset(
    {"LAB", "CH", "HM", "MB", "SR", "BG", "BLB", "CP", "CG", "IMM", "MCB", "MYC", "OSL", "PAR"}
    | {"PAT", "SP", "TX", "URN", "VR", "VIR", "HEM", "MICRO", "CHEM"}
)

LOINC_DOCUMENT_CLASSES: dict[str, RecordClass] = {
    "18842-5": RecordClass.INPATIENT,  # Discharge summary
    "34105-7": RecordClass.INPATIENT,  # Hospital Discharge summary
    "34117-2": RecordClass.INPATIENT,  # History and physical note
    "11506-3": RecordClass.INPATIENT,  # Progress note
    "28570-0": RecordClass.INPATIENT,  # Procedure note
    "11504-8": RecordClass.INPATIENT,  # Surgical operation note
    "34111-5": RecordClass.EMERGENCY,  # Emergency department note
    "59258-4": RecordClass.EMERGENCY,  # Emergency department Discharge summary
    "34133-9": RecordClass.OUTPATIENT,  # Summary of episode note
    "11488-4": RecordClass.OUTPATIENT,  # Consult note
    "57133-1": RecordClass.OUTPATIENT,  # Referral note
    "34746-8": RecordClass.NURSING,  # Nurse Note
    "28651-8": RecordClass.NURSING,  # Nurse Transfer note
    "34745-0": RecordClass.NURSING,  # Nurse Discharge summary
    "11502-2": RecordClass.LAB,  # Laboratory report
    "26436-6": RecordClass.LAB,  # Laboratory Studies
    "11526-1": RecordClass.LAB,  # Pathology study
    "18748-4": RecordClass.IMAGING,  # Diagnostic imaging study
    "18726-0": RecordClass.IMAGING,  # Radiology studies
    "59284-0": RecordClass.ADMINISTRATIVE,  # Consent Document
    "64290-0": RecordClass.ADMINISTRATIVE,  # Health insurance card
    "52034-6": RecordClass.ADMINISTRATIVE,  # Billing
}
"""LOINC document type (``DocumentReference.type``, ``Composition.type``, MDM TXA-2) → class."""

HL7_MESSAGE_CLASSES: dict[str, RecordClass] = {"ORU^R01": RecordClass.LAB}

DEPARTMENT_CLASSES: dict[str, RecordClass] = {
    **dict.fromkeys(("nursing", "护理部", "护理"), RecordClass.NURSING),
    **dict.fromkeys(
        ("lab", "laboratory", "clinical-lab", "pathology", "检验科", "检验", "病理科"),
        RecordClass.LAB,
    ),
    **dict.fromkeys(
        ("radiology", "imaging", "ultrasound", "nuclear-medicine", "影像科", "放射科", "超声科"),
        RecordClass.IMAGING,
    ),
    **dict.fromkeys(("emergency", "ed", "er", "急诊科", "急诊"), RecordClass.EMERGENCY),
    **dict.fromkeys(
        ("admin", "administration", "finance", "hr", "medical-records", "oa", "行政", "医务科"),
        RecordClass.ADMINISTRATIVE,
    ),
}

ENCOUNTER_CLASSES: dict[str, RecordClass] = {
    # FHIR R4 Encounter.class (v3 ActCode)
    "AMB": RecordClass.OUTPATIENT,
    "HH": RecordClass.OUTPATIENT,
    "VR": RecordClass.OUTPATIENT,
    "SS": RecordClass.OUTPATIENT,
    "IMP": RecordClass.INPATIENT,
    "ACUTE": RecordClass.INPATIENT,
    "NONAC": RecordClass.INPATIENT,
    "PRENC": RecordClass.OUTPATIENT,
    "OBSENC": RecordClass.EMERGENCY,
    "EMER": RecordClass.EMERGENCY,
    # HL7 v2 PV1-2 patient class (table 0004)
    "O": RecordClass.OUTPATIENT,
    "R": RecordClass.OUTPATIENT,
    "P": RecordClass.OUTPATIENT,
    "I": RecordClass.INPATIENT,
    "B": RecordClass.INPATIENT,
    "E": RecordClass.EMERGENCY,
}

DEFAULT_CLASS = RecordClass.INPATIENT

HIGH = Sensitivity.HIGHLY_SENSITIVE
SENS = Sensitivity.SENSITIVE

RESTRICTED_LOINC: dict[str, Sensitivity] = {
    "75622-1": HIGH,  # HIV 1 and 2 tests - Meaningful Use set
    "7917-8": HIGH,  # HIV 1 Ab [Presence] in Serum
    "5221-7": HIGH,  # HIV 1 Ab [Presence] in Serum by Immunoblot
    "56888-1": HIGH,  # HIV 1+2 Ab + HIV 1 p24 Ag [Presence] in Serum or Plasma
    "68961-2": HIGH,  # HIV 1 Ab [Presence] in Serum, Plasma or Blood by Rapid immunoassay
    "25835-0": HIGH,  # HIV 1 RNA [Presence] in Serum or Plasma by NAA
    "51969-4": HIGH,  # Genetic analysis report
    "55232-3": HIGH,  # Genetic disease analysis overall interpretation
}

_ICD10_RANGES: tuple[tuple[str, str, Sensitivity], ...] = (
    ("B20", "B24", HIGH),  # HIV disease
    ("F01", "F99", HIGH),  # mental and behavioural disorders (substance use included)
    ("Z15", "Z15", HIGH),  # genetic susceptibility to disease
    ("A50", "A64", SENS),  # infections with a predominantly sexual mode of transmission
    ("O00", "O08", SENS),  # pregnancy with abortive outcome
    ("Z30", "Z30", SENS),  # contraceptive management
)

CONFIDENTIALITY: dict[str, Sensitivity] = {
    "U": Sensitivity.NORMAL,
    "L": Sensitivity.NORMAL,
    "M": Sensitivity.NORMAL,
    "N": Sensitivity.NORMAL,
    "R": HIGH,
    "V": HIGH,
    # v3 ActCode sensitivity policies
    "HIV": HIGH,
    "PSY": HIGH,
    "ETH": HIGH,  # substance abuse
    "GDIS": HIGH,  # genetic disease
    "SDV": HIGH,  # sexual assault, abuse, domestic violence
    "STD": SENS,
    "SEX": SENS,
}

DEPARTMENT_SENSITIVITY: dict[str, Sensitivity] = {
    **dict.fromkeys(("psychiatry", "mental-health", "精神科", "心理科"), HIGH),
    **dict.fromkeys(("genetics", "medical-genetics", "遗传科"), HIGH),
    **dict.fromkeys(("reproductive", "reproductive-medicine", "生殖医学科"), SENS),
}

_RANK = {Sensitivity.NORMAL: 0, Sensitivity.SENSITIVE: 1, Sensitivity.HIGHLY_SENSITIVE: 2}

# -- the rules as node configuration ------------------------------------------------------------

_RULE_KEY = re.compile(r"[^\x00-\x20\x7f]([^\x00-\x1f\x7f]{0,62}[^\x00-\x20\x7f])?")
_LOINC_CODE = re.compile(r"\d{1,8}-\d")
_HL7_TYPE = re.compile(r"[A-Z0-9]{3}\^[A-Z0-9]{3}")

ClassTable = dict[str, RecordClass]
GradeTable = dict[str, Sensitivity]


class Icd10Range(BaseModel):
    """ICD-10 categories ``low``..``high`` (three characters each, e.g. F01..F99) → a grade."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}$")]
    high: Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}$")]
    sensitivity: Sensitivity

    @model_validator(mode="after")
    def _ordered(self) -> Icd10Range:
        if self.low > self.high:
            raise ValueError(f"ICD-10 range {self.low}..{self.high}: low is after high")
        return self


def _keys(
    table: Mapping[str, object], name: str, *, upper: bool, pattern: re.Pattern[str] | None = None
) -> dict[str, object]:
    """A rules table with its keys normalised as lookups normalise them (stripped; upper- or
    lower-cased), refusing empty, over-long, control-character or colliding keys."""
    out: dict[str, object] = {}
    for raw, value in table.items():
        key = raw.strip().upper() if upper else raw.strip().lower()
        if not _RULE_KEY.fullmatch(key):
            raise ValueError(f"{name}: key {raw!r} must be 1-64 printable characters")
        if pattern is not None and not pattern.fullmatch(key):
            raise ValueError(f"{name}: key {raw!r} is not a valid code ({pattern.pattern})")
        if key in out:
            raise ValueError(f"{name}: key {raw!r} is listed twice (keys are case-insensitive)")
        out[key] = value
    return out


_ICD10_DEFAULT = tuple(
    {"low": low, "high": high, "sensitivity": grade} for low, high, grade in _ICD10_RANGES
)

_DEFAULT_CLASSES: dict[str, ClassTable] = {
    "report_categories": {
        **dict.fromkeys(sorted(_IMAGING_SECTIONS), RecordClass.IMAGING),
        **dict.fromkeys(sorted(_LAB_SECTIONS), RecordClass.LAB),
    },
    "loinc_documents": LOINC_DOCUMENT_CLASSES,
    "hl7_messages": HL7_MESSAGE_CLASSES,
    "departments": DEPARTMENT_CLASSES,
    "encounter_classes": ENCOUNTER_CLASSES,
}
_DEFAULT_GRADES: dict[str, GradeTable] = {
    "security_labels": CONFIDENTIALITY,
    "restricted_loinc": RESTRICTED_LOINC,
    "department_sensitivity": DEPARTMENT_SENSITIVITY,
}


def _classes(name: str) -> ClassTable:
    return dict(_DEFAULT_CLASSES[name])


def _grades(name: str) -> GradeTable:
    return dict(_DEFAULT_GRADES[name])


class ClassificationRules(BaseModel):
    """The classification and grading rules as data: the node's ``classification`` setting.

    The order in which rule *kinds* are tried is fixed (module doc); each table here says what
    a code of that kind means. A table given in the configuration replaces the default table of
    that name whole (so a hospital can also remove a default entry); tables not given keep the
    default. Keys are matched as the lookups match them: codes stripped and upper-cased,
    department names stripped and lower-cased."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dicom_modality_class: RecordClass = RecordClass.IMAGING
    """Class of any DICOM instance (rule ``dicom-modality``)."""
    report_categories: ClassTable = Field(default_factory=lambda: _classes("report_categories"))
    """DiagnosticReport.category / OBR-24 code → class (rule ``report-category:<code>``)."""
    loinc_documents: ClassTable = Field(default_factory=lambda: _classes("loinc_documents"))
    """LOINC document type → class (rule ``loinc:<code>``)."""
    hl7_messages: ClassTable = Field(default_factory=lambda: _classes("hl7_messages"))
    """HL7 v2 message type (``ORU^R01``) → class (rule ``hl7:<type>``)."""
    departments: ClassTable = Field(default_factory=lambda: _classes("departments"))
    """Source department (code or Chinese name) → class (rule ``department:<name>``)."""
    encounter_classes: ClassTable = Field(default_factory=lambda: _classes("encounter_classes"))
    """FHIR Encounter.class / PV1-2 → class (rule ``encounter-class:<code>``)."""
    default_class: RecordClass = RecordClass.INPATIENT
    """Class when nothing matched (rule ``default``)."""
    security_labels: GradeTable = Field(default_factory=lambda: _grades("security_labels"))
    """Confidentiality / sensitivity-policy code → grade (rule ``security-label:<code>``)."""
    restricted_loinc: GradeTable = Field(default_factory=lambda: _grades("restricted_loinc"))
    """LOINC code → grade (rule ``code:loinc:<code>``)."""
    icd10_ranges: tuple[Icd10Range, ...] = Field(
        default_factory=lambda: tuple(Icd10Range(**r) for r in _ICD10_DEFAULT)
    )
    """ICD-10 category ranges → grade (rule ``code:icd10:<code>``); the highest grade wins."""
    department_sensitivity: GradeTable = Field(
        default_factory=lambda: _grades("department_sensitivity")
    )
    """Source department → grade (rule ``department:<name>``)."""

    @model_validator(mode="before")
    @classmethod
    def _normalise_keys(cls, data: object) -> object:
        if not isinstance(data, Mapping):
            return data
        merged: dict[str, object] = dict(data)
        specs: dict[str, tuple[bool, re.Pattern[str] | None]] = {
            "report_categories": (True, None),
            "loinc_documents": (True, _LOINC_CODE),
            "hl7_messages": (True, _HL7_TYPE),
            "departments": (False, None),
            "encounter_classes": (True, None),
            "security_labels": (True, None),
            "restricted_loinc": (True, _LOINC_CODE),
            "department_sensitivity": (False, None),
        }
        for name, (upper, pattern) in specs.items():
            table = merged.get(name)
            if isinstance(table, Mapping):
                merged[name] = _keys(table, name, upper=upper, pattern=pattern)
        return merged

    @cached_property
    def digest(self) -> str:
        """A short SHA-256 of the rules in canonical JSON: which rules table decided (logged at
        start, so a changed configuration is visible)."""
        import hashlib
        import json

        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


DEFAULT_RULES = ClassificationRules()
"""The embedded rules (the tables above): what a node uses unless configured otherwise."""


@dataclass(frozen=True)
class Coded:
    """A code and its system (``system`` may be empty when the sender gives none)."""

    system: str
    code: str


@dataclass(frozen=True)
class SourceHints:
    """What the sending system told us about a record (codes only, never display text)."""

    class_hint: str | None = None
    sensitivity_hint: Sensitivity | None = None
    modality: str | None = None
    report_category: str | None = None
    document_type: str | None = None  # a LOINC code
    message_type: str | None = None  # e.g. "ORU^R01"
    department: str | None = None
    encounter_class: str | None = None
    security_labels: tuple[str, ...] = ()
    codes: tuple[Coded, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Classification:
    """The decision and the rules that made it."""

    record_class: RecordClass
    class_rule: str
    sensitivity: Sensitivity
    sensitivity_rule: str


def parse_class_hint(value: str) -> RecordClass | None:
    """A class named by its enum value (any case) or its Chinese label; None if unknown."""
    text = value.strip()
    if text in CHINESE_LABELS:
        return CHINESE_LABELS[text]
    try:
        return RecordClass(text.upper())
    except ValueError:
        return None


def _norm(value: str | None) -> str:
    return (value or "").strip()


def record_class_of(
    hints: SourceHints, rules: ClassificationRules | None = None
) -> tuple[RecordClass, str]:
    """The record class and the id of the rule that decided it."""
    table = rules or DEFAULT_RULES
    if hints.class_hint and (hinted := parse_class_hint(hints.class_hint)) is not None:
        return hinted, "hint"
    if _norm(hints.modality):
        return table.dicom_modality_class, "dicom-modality"
    category = _norm(hints.report_category).upper()
    if category in table.report_categories:
        return table.report_categories[category], f"report-category:{category}"
    document = _norm(hints.document_type)
    if document in table.loinc_documents:
        return table.loinc_documents[document], f"loinc:{document}"
    message = _norm(hints.message_type).upper()
    if message in table.hl7_messages:
        return table.hl7_messages[message], f"hl7:{message}"
    department = _norm(hints.department).lower()
    if department in table.departments:
        return table.departments[department], f"department:{department}"
    encounter = _norm(hints.encounter_class).upper()
    if encounter in table.encounter_classes:
        return table.encounter_classes[encounter], f"encounter-class:{encounter}"
    return table.default_class, "default"


def _icd10_grade(code: str, rules: ClassificationRules) -> Sensitivity | None:
    match = re.fullmatch(r"([A-Z])(\d{2})(?:\.?[0-9A-Z]{0,4})", code.upper())
    if match is None:
        return None
    head = match.group(1) + match.group(2)
    grade: Sensitivity | None = None
    for entry in rules.icd10_ranges:
        if entry.low <= head <= entry.high and (
            grade is None or _RANK[entry.sensitivity] > _RANK[grade]
        ):
            grade = entry.sensitivity
    return grade


def _code_grade(coded: Coded, rules: ClassificationRules) -> Sensitivity | None:
    system = coded.system.strip().lower()
    code = coded.code.strip()
    if system in ("", LOINC) and code in rules.restricted_loinc:
        return rules.restricted_loinc[code]
    if system in ("", ICD10, ICD10_CN) or "icd-10" in system or "icd10" in system:
        return _icd10_grade(code, rules)
    return None


def sensitivity_of(
    hints: SourceHints, rules: ClassificationRules | None = None
) -> tuple[Sensitivity, str]:
    """The highest grade any rule gives, and the id of the first rule that gave it."""
    table = rules or DEFAULT_RULES
    found: list[tuple[Sensitivity, str]] = []
    if hints.sensitivity_hint is not None:
        found.append((hints.sensitivity_hint, "hint"))
    for label in hints.security_labels:
        grade = table.security_labels.get(label.strip().upper())
        if grade is not None:
            found.append((grade, f"security-label:{label.strip().upper()}"))
    for coded in hints.codes:
        grade = _code_grade(coded, table)
        if grade is not None:
            found.append((grade, f"code:{_system_name(coded.system)}:{coded.code.strip()}"))
    department = _norm(hints.department).lower()
    if department in table.department_sensitivity:
        found.append((table.department_sensitivity[department], f"department:{department}"))
    best: tuple[Sensitivity, str] = (Sensitivity.NORMAL, "default")
    for grade, rule in found:
        if _RANK[grade] > _RANK[best[0]]:
            best = (grade, rule)
    return best


def _system_name(system: str) -> str:
    lowered = system.strip().lower()
    if lowered == LOINC:
        return "loinc"
    if "icd-10" in lowered or "icd10" in lowered:
        return "icd10"
    return lowered or "unknown"


def classify(hints: SourceHints, rules: ClassificationRules | None = None) -> Classification:
    """Class and sensitivity of a record from what its source said, by ``rules`` (the node's
    configured table; the embedded default when None)."""
    record_class, class_rule = record_class_of(hints, rules)
    sensitivity, sensitivity_rule = sensitivity_of(hints, rules)
    return Classification(record_class, class_rule, sensitivity, sensitivity_rule)


def codes(pairs: Iterable[tuple[str | None, str | None]]) -> tuple[Coded, ...]:
    """``Coded`` values from (system, code) pairs, skipping empty codes."""
    return tuple(Coded(system or "", code) for system, code in pairs if code and code.strip())
