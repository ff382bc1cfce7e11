"""Keyword search with Chinese text: the terms (unigrams and bigrams of CJK runs, lower-cased words)
and the catalogue search over titles, metadata and extracted text, through the real app on both
databases, within the caller's scope, without the query in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from node.classification import SourceHints
from node.services.ingestion import IncomingDocument
from node.textindex import index_terms, query_terms
from tests.api.conftest import Api


def test_terms_of_chinese_and_latin_text() -> None:
    terms = index_terms("出院小结 CT Chest", "ＣＴ")
    assert {"出", "院", "小", "结", "出院", "院小", "小结", "ct", "chest"} <= terms
    assert "出院小结" not in terms  # bigrams, not whole runs
    assert query_terms("出院小结") == ["出院", "院小", "小结"]
    assert query_terms("肺") == ["肺"]
    assert query_terms("Chest  CT chest") == ["chest", "ct"]
    assert query_terms("!!! ...") == []
    assert len(index_terms("字" * 10 + "x " * 10_000)) <= 4000


def _ingest(api: Api, title: str, text: str, department: str = "cardiology", **kw: Any) -> str:
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    doc = IncomingDocument(
        content=text.encode("utf-8"),
        media_type="text/plain",
        patient_id=kw.pop("patient_id", "P-1"),
        source_system="HIS",
        title=title,
        department=department,
        hints=SourceHints(class_hint="住院"),
        **kw,
    )
    return api.node.ingestion.ingest(archivist, doc).archive.id


def search(api: Api, text: str, who: str = "archivist") -> Any:
    response = api.client.get("/api/v1/archives", params={"text": text}, headers=api.auth(who))
    return response


def test_catalogue_search_finds_chinese_and_latin_text(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    discharge = _ingest(
        api, "出院小结", "患者胸痛三天，冠状动脉造影后好转出院。Follow-up in two weeks."
    )
    ct = _ingest(api, "胸部CT报告", "双肺纹理清晰，未见明显异常。", department="radiology")
    nursing = _ingest(api, "护理记录", "夜间血压平稳，pain score 2。", department="oncology")
    with caplog.at_level(logging.DEBUG):
        found = {
            query: {item["id"] for item in search(api, query).json()["items"]}
            for query in ("出院", "胸痛", "胸", "冠状动脉", "CT", "follow-up", "Pain", "异常", "肝")
        }
    assert found["出院"] == {discharge}
    assert found["胸痛"] == {discharge}
    assert found["胸"] == {discharge, ct}  # 胸痛 and 胸部
    assert found["冠状动脉"] == {discharge}
    assert found["CT"] == {ct}
    assert found["follow-up"] == {discharge}
    assert found["Pain"] == {nursing}
    assert found["异常"] == {ct}
    assert found["肝"] == set()
    assert "胸痛" not in caplog.text
    assert "冠状动脉" not in caplog.text
    # Scope: a clinician finds only their department's records.
    onco = {item["id"] for item in search(api, "pain", who="oncologist").json()["items"]}
    assert onco == {nursing}
    assert search(api, "出院", who="oncologist").json()["items"] == []
    # Combined with other filters.
    response = api.client.get(
        "/api/v1/archives",
        params={"text": "出院", "patient_id": "P-other"},
        headers=api.auth("archivist"),
    )
    assert response.json()["total"] == 0
    refused = search(api, "!!!")
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_search_text")


def test_fhir_narrative_is_searchable(api: Api) -> None:
    composition = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
        "subject": {"reference": "Patient/P-2"},
        "date": "2024-05-02T08:00:00Z",
        "author": [{"display": "Dr. Example"}],
        "title": "Discharge summary",
        "section": [
            {
                "title": "诊断",
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>急性心肌梗死 &amp; 高血压</p></div>',
                },
            }
        ],
    }
    response = api.client.post(
        "/fhir/r4/Composition",
        json=composition,
        headers={**api.auth("archivist"), "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 201, response.text
    archive_id = response.headers["location"].rsplit("/", 1)[-1]
    assert [i["id"] for i in search(api, "心肌梗死").json()["items"]] == [archive_id]
    assert [i["id"] for i in search(api, "高血压").json()["items"]] == [archive_id]
    assert search(api, "amp").json()["items"] == []  # entities decoded, tags dropped
    assert search(api, "xhtml").json()["items"] == []


def test_plain_api_uploads_are_searchable_by_title(api: Api) -> None:
    archive_id = api.create(title="门诊病历 王五")["id"]
    assert [i["id"] for i in search(api, "病历").json()["items"]] == [archive_id]
    assert [i["id"] for i in search(api, "王五", who="auditor").json()["items"]] == [archive_id]
