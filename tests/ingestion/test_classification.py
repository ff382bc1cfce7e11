"""The classification rules: class by the first matching rule, sensitivity by the highest grade,
and the id of the deciding rule every time."""

from __future__ import annotations

import pytest

from anchoring.events import RecordClass, Sensitivity
from node.classification import (
    ICD10,
    LOINC,
    Coded,
    SourceHints,
    classify,
    parse_class_hint,
    record_class_of,
    sensitivity_of,
)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("门诊", RecordClass.OUTPATIENT),
        ("住院", RecordClass.INPATIENT),
        ("急诊", RecordClass.EMERGENCY),
        ("检验", RecordClass.LAB),
        ("影像", RecordClass.IMAGING),
        ("护理", RecordClass.NURSING),
        ("行政", RecordClass.ADMINISTRATIVE),
        ("lab", RecordClass.LAB),
        (" Imaging ", RecordClass.IMAGING),
    ],
)
def test_class_hints_in_chinese_and_english(label: str, expected: RecordClass) -> None:
    assert parse_class_hint(label) is expected
    assert record_class_of(SourceHints(class_hint=label)) == (expected, "hint")


def test_unknown_hint_falls_through_to_the_next_rule() -> None:
    assert parse_class_hint("surgery") is None
    hints = SourceHints(class_hint="surgery", encounter_class="AMB")
    assert record_class_of(hints) == (RecordClass.OUTPATIENT, "encounter-class:AMB")


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (
            SourceHints(modality="CT", encounter_class="IMP"),
            (RecordClass.IMAGING, "dicom-modality"),
        ),
        (SourceHints(report_category="RAD"), (RecordClass.IMAGING, "report-category:RAD")),
        (SourceHints(report_category="lab"), (RecordClass.LAB, "report-category:LAB")),
        (SourceHints(report_category="HM"), (RecordClass.LAB, "report-category:HM")),
        (SourceHints(document_type="18842-5"), (RecordClass.INPATIENT, "loinc:18842-5")),
        (SourceHints(document_type="34111-5"), (RecordClass.EMERGENCY, "loinc:34111-5")),
        (SourceHints(document_type="34746-8"), (RecordClass.NURSING, "loinc:34746-8")),
        (SourceHints(document_type="59284-0"), (RecordClass.ADMINISTRATIVE, "loinc:59284-0")),
        (SourceHints(message_type="ORU^R01"), (RecordClass.LAB, "hl7:ORU^R01")),
        (SourceHints(department="护理部"), (RecordClass.NURSING, "department:护理部")),
        (SourceHints(department="Radiology"), (RecordClass.IMAGING, "department:radiology")),
        (SourceHints(encounter_class="EMER"), (RecordClass.EMERGENCY, "encounter-class:EMER")),
        (SourceHints(encounter_class="I"), (RecordClass.INPATIENT, "encounter-class:I")),
        (SourceHints(encounter_class="O"), (RecordClass.OUTPATIENT, "encounter-class:O")),
        (SourceHints(), (RecordClass.INPATIENT, "default")),
        (
            SourceHints(encounter_class="XYZ", department="cardiology"),
            (RecordClass.INPATIENT, "default"),
        ),
    ],
)
def test_record_class_rules_in_order(hints: SourceHints, expected: tuple[RecordClass, str]) -> None:
    assert record_class_of(hints) == expected


def test_a_more_specific_rule_wins_over_the_encounter() -> None:
    # A lab report written during an inpatient stay is a lab record (rule 3 before rule 7).
    hints = SourceHints(report_category="LAB", encounter_class="IMP", document_type="18842-5")
    assert classify(hints).record_class is RecordClass.LAB
    assert classify(hints).class_rule == "report-category:LAB"


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (SourceHints(), (Sensitivity.NORMAL, "default")),
        (
            SourceHints(codes=(Coded(LOINC, "75622-1"),)),
            (Sensitivity.HIGHLY_SENSITIVE, "code:loinc:75622-1"),
        ),
        (
            SourceHints(codes=(Coded(ICD10, "B20.1"),)),
            (Sensitivity.HIGHLY_SENSITIVE, "code:icd10:B20.1"),
        ),
        (
            SourceHints(codes=(Coded(ICD10, "F32.9"),)),
            (Sensitivity.HIGHLY_SENSITIVE, "code:icd10:F32.9"),
        ),
        (
            SourceHints(codes=(Coded("", "51969-4"),)),
            (Sensitivity.HIGHLY_SENSITIVE, "code:unknown:51969-4"),
        ),
        (SourceHints(codes=(Coded(ICD10, "A54"),)), (Sensitivity.SENSITIVE, "code:icd10:A54")),
        (SourceHints(codes=(Coded(ICD10, "I21.0"),)), (Sensitivity.NORMAL, "default")),
        (SourceHints(codes=(Coded(LOINC, "718-7"),)), (Sensitivity.NORMAL, "default")),
        (SourceHints(security_labels=("R",)), (Sensitivity.HIGHLY_SENSITIVE, "security-label:R")),
        (SourceHints(security_labels=("N",)), (Sensitivity.NORMAL, "default")),
        (SourceHints(department="精神科"), (Sensitivity.HIGHLY_SENSITIVE, "department:精神科")),
        (
            SourceHints(department="reproductive"),
            (Sensitivity.SENSITIVE, "department:reproductive"),
        ),
    ],
)
def test_sensitivity_rules(hints: SourceHints, expected: tuple[Sensitivity, str]) -> None:
    assert sensitivity_of(hints) == expected


def test_the_highest_grade_wins_and_a_hint_cannot_lower_it() -> None:
    hints = SourceHints(
        sensitivity_hint=Sensitivity.NORMAL,
        codes=(Coded(ICD10, "A54"), Coded(LOINC, "56888-1")),
    )
    assert sensitivity_of(hints) == (Sensitivity.HIGHLY_SENSITIVE, "code:loinc:56888-1")
    raised = SourceHints(sensitivity_hint=Sensitivity.SENSITIVE)
    assert sensitivity_of(raised) == (Sensitivity.SENSITIVE, "hint")


def test_codes_of_other_systems_are_not_read_as_icd10() -> None:
    # "F20" in a local code system is not schizophrenia.
    hints = SourceHints(codes=(Coded("urn:oid:1.2.3", "F20"),))
    assert sensitivity_of(hints) == (Sensitivity.NORMAL, "default")
