"""Classification rules as node configuration: the embedded default is the rules module's
tables, a TOML ``[classification]`` table replaces a default table whole, invalid rules refuse
the start with a message naming the table, and a node ingests by its configured rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from anchoring.events import RecordClass, Sensitivity
from node.classification import (
    DEFAULT_RULES,
    ICD10,
    LOINC_DOCUMENT_CLASSES,
    ClassificationRules,
    Coded,
    SourceHints,
    classify,
)
from node.config import load_settings
from node.errors import ConfigError
from node.models import IngestedMessage
from node.principal import Role
from node.services.ingestion import IncomingDocument
from tests.fixtures.node import MakeNode

CUSTOM = """
mode = "dev"

[classification]
default_class = "OUTPATIENT"

[classification.loinc_documents]
"18842-5" = "EMERGENCY"
"99999-9" = "NURSING"

[classification.departments]
"康复科" = "NURSING"

[[classification.icd10_ranges]]
low = "C00"
high = "D49"
sensitivity = "SENSITIVE"
"""


def _load(tmp_path: Path, text: str) -> ClassificationRules:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path).classification


def test_the_default_is_the_embedded_table() -> None:
    settings = load_settings(None, mode="dev")
    assert settings.classification == DEFAULT_RULES
    assert DEFAULT_RULES.loinc_documents == LOINC_DOCUMENT_CLASSES
    assert DEFAULT_RULES.report_categories["RAD"] is RecordClass.IMAGING
    assert DEFAULT_RULES.report_categories["CH"] is RecordClass.LAB
    assert [(r.low, r.high) for r in DEFAULT_RULES.icd10_ranges][:2] == [
        ("B20", "B24"),
        ("F01", "F99"),
    ]


def test_a_configured_table_replaces_the_default_table(tmp_path: Path) -> None:
    rules = _load(tmp_path, CUSTOM)
    assert rules.digest != DEFAULT_RULES.digest
    assert classify(SourceHints(document_type="18842-5"), rules).record_class is (
        RecordClass.EMERGENCY
    )
    assert classify(SourceHints(document_type="99999-9"), rules).class_rule == "loinc:99999-9"
    # The table was replaced whole: a default LOINC entry not repeated no longer matches.
    assert classify(SourceHints(document_type="34746-8"), rules).class_rule == "default"
    assert classify(SourceHints(), rules).record_class is RecordClass.OUTPATIENT
    assert classify(SourceHints(department=" 康复科 "), rules).class_rule == "department:康复科"
    # ICD-10 ranges replaced: F20 is no longer graded, C50 is.
    assert classify(SourceHints(codes=(Coded(ICD10, "F20"),)), rules).sensitivity is (
        Sensitivity.NORMAL
    )
    cancer = classify(SourceHints(codes=(Coded(ICD10, "C50.9"),)), rules)
    assert (cancer.sensitivity, cancer.sensitivity_rule) == (
        Sensitivity.SENSITIVE,
        "code:icd10:C50.9",
    )
    # Tables not configured keep their default.
    assert rules.security_labels == DEFAULT_RULES.security_labels
    assert classify(SourceHints(report_category="RAD"), rules).record_class is RecordClass.IMAGING


def test_rules_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVECHAIN_CLASSIFICATION", '{"hl7_messages": {"mdm^t02": "INPATIENT"}}')
    rules = load_settings(None, mode="dev").classification
    assert rules.hl7_messages == {"MDM^T02": RecordClass.INPATIENT}  # key normalised
    assert classify(SourceHints(message_type="ORU^R01"), rules).class_rule == "default"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[classification.loinc_documents]\n"18842-5" = "SURGERY"\n', "loinc_documents"),
        ('[classification.loinc_documents]\n"discharge" = "INPATIENT"\n', "not a valid code"),
        ('[classification.hl7_messages]\n"ORU" = "LAB"\n', "not a valid code"),
        ('[classification.departments]\n"Lab" = "LAB"\n"lab " = "LAB"\n', "listed twice"),
        ('[classification.departments]\n" " = "LAB"\n', "printable"),
        ('[classification.security_labels]\n"R" = "SECRET"\n', "security_labels"),
        (
            '[[classification.icd10_ranges]]\nlow = "F99"\nhigh = "F01"\n'
            'sensitivity = "SENSITIVE"\n',
            "low is after high",
        ),
        (
            '[[classification.icd10_ranges]]\nlow = "F1"\nhigh = "F99"\nsensitivity = "NORMAL"\n',
            "icd10_ranges",
        ),
        ("[classification]\nloinc = {}\n", "loinc"),
        ('[classification]\ndefault_class = "UNKNOWN"\n', "default_class"),
    ],
)
def test_invalid_rules_refuse_the_start(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, 'mode = "dev"\n' + table)
    message = str(caught.value)
    assert message.startswith("invalid configuration: ")
    assert "classification" in message
    assert expected in message


def test_a_node_ingests_by_its_configured_rules(make_node: MakeNode, database_url: str) -> None:
    rules = ClassificationRules(
        loinc_documents={"18842-5": RecordClass.EMERGENCY}, default_class=RecordClass.NURSING
    )
    node = make_node(database_url=database_url, classification=rules)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "his").secret)

    def doc(message_id: str, loinc: str) -> IncomingDocument:
        return IncomingDocument(
            content=b"note",
            media_type="text/plain",
            patient_id="MRN-RULES-1",
            source_system="HIS",
            title="note",
            message_id=message_id,
            hints=SourceHints(document_type=loinc),
        )

    first = node.ingestion.ingest(archivist, doc("R-1", "18842-5")).archive
    second = node.ingestion.ingest(archivist, doc("R-2", "34746-8")).archive
    assert (first.record_class, first.metadata["class_rule"]) == ("EMERGENCY", "loinc:18842-5")
    assert (second.record_class, second.metadata["class_rule"]) == ("NURSING", "default")
    with node.db.session() as session:
        rules_recorded = dict(
            session.execute(select(IngestedMessage.message_id, IngestedMessage.class_rule)).all()
        )
    assert rules_recorded == {"R-1": "loinc:18842-5", "R-2": "default"}
