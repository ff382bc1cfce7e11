"""Keyword search with Chinese text: the terms (unigrams and bigrams of CJK runs, lower-cased words)
and the catalogue search over titles, metadata and extracted text, through the real app on both
databases, within the caller's scope, without the query in the log."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from sqlalchemy import select
from ulid import ULID

from node import searchtext, textindex
from node.classification import SourceHints
from node.models import Archive, SearchTerm
from node.services.ingestion import IncomingDocument
from node.textindex import index_terms, query_terms
from tests.api.conftest import Api
from tests.ingestion.test_pdf_text import make_pdf


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


def _page(api: Api, who: str = "archivist", **params: Any) -> Any:
    return api.client.get("/api/v1/archives", params=params, headers=api.auth(who))


def _walk(api: Api, limit: int, who: str = "archivist", **params: Any) -> tuple[list[str], int]:
    """Every page of a search through ``next_cursor``; the ids and how many pages."""
    walked: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = _page(api, who, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        assert body["offset"] == 0
        walked += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return walked, pages
        assert len(body["items"]) == limit  # only a full page has a next one
        assert pages < 100, "the cursor does not advance"


def test_cursor_pages_list_every_match_once_in_order(api: Api) -> None:
    # A batch shares one created_at: the cursor must break those ties by archive id.
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    docs = [
        IncomingDocument(
            content=f"胸痛 第{i}天".encode(),
            media_type="text/plain",
            patient_id="P-1",
            source_system="HIS",
            title=f"出院小结 {i}",
            department="cardiology",
            hints=SourceHints(class_hint="住院"),
        )
        for i in range(9)
    ]
    batch = [r.archive.id for r in api.node.ingestion.ingest_batch(archivist, docs)]
    singles = [_ingest(api, f"出院记录 {i}", "胸痛") for i in range(3)]
    nursing = _ingest(api, "护理记录", "夜间平稳", department="oncology")
    with api.node.db.session() as session:
        rows = session.execute(select(Archive.id, Archive.created_at)).all()
    assert len({at for archive_id, at in rows if archive_id in batch}) == 1  # real ties
    newest_first = [archive_id for archive_id, _ in sorted(rows, key=lambda r: (r[1], r[0]))][::-1]
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        ("archivist", {}, newest_first),
        ("archivist", {"text": "胸痛"}, sorted(batch + singles, reverse=True)),
        ("archivist", {"text": "出院 小结"}, sorted(batch, reverse=True)),
        ("cardiologist", {}, [i for i in newest_first if i != nursing]),
        ("oncologist", {}, [nursing]),
        ("archivist", {"text": "肝"}, []),
    ]
    for who, params, expected in cases:
        for limit in (1, 2, 4, 5, 200):
            walked, pages = _walk(api, limit, who, **params)
            assert walked == expected, (who, params, limit)
            assert pages == max(1, -(-len(expected) // limit)), (who, params, limit)
        first = _page(api, who, **params, limit=max(1, len(expected))).json()
        assert first["next_cursor"] is None  # exactly full and nothing after it
        assert first["total"] == len(expected)
    # Each page's total counts every match, not only those after the cursor.
    second = _page(api, cursor=_page(api, limit=3).json()["next_cursor"], limit=3).json()
    assert second["total"] == len(newest_first)
    assert [i["id"] for i in second["items"]] == newest_first[3:6]


def test_a_bad_cursor_is_refused_with_its_code(api: Api) -> None:
    for i in range(3):
        _ingest(api, f"出院小结 {i}", "胸痛")
    text_cursor = _page(api, text="胸痛", limit=1).json()["next_cursor"]
    plain_cursor = _page(api, limit=1).json()["next_cursor"]
    assert text_cursor
    assert plain_cursor

    def forged(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def filters_of(cursor: str) -> str:  # the keyed hash of the filters a cursor is bound to
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")[-1]

    text_filters, plain_filters = filters_of(text_cursor), filters_of(plain_cursor)
    assert len(text_filters) == 16
    assert text_filters != plain_filters
    assert "胸痛" not in base64.urlsafe_b64decode(text_cursor + "==").decode()
    archive_id = str(ULID())
    refused = [
        ({"cursor": text_cursor}, "invalid_cursor"),  # a text search's cursor, no text
        ({"cursor": plain_cursor, "text": "胸痛"}, "invalid_cursor"),
        ({"cursor": text_cursor, "text": "出院"}, "invalid_cursor"),  # other words
        ({"cursor": plain_cursor, "department": "oncology"}, "invalid_cursor"),  # other filters
        ({"cursor": plain_cursor, "created_from": "2000-01-01T00:00:00Z"}, "invalid_cursor"),
        ({"cursor": "AAAA"}, "invalid_cursor"),
        ({"cursor": "A"}, "invalid_cursor"),  # not base64 of anything
        ({"cursor": forged(f"v1|t|{archive_id}")}, "invalid_cursor"),  # the old format
        ({"cursor": forged(f"v2|t|{archive_id}")}, "invalid_cursor"),  # no filters
        ({"cursor": forged(f"v2|c|yesterday|{archive_id}|{plain_filters}")}, "invalid_cursor"),
        (
            {"cursor": forged(f"v2|c|2026-01-01T00:00:00|not-an-id|{plain_filters}")},
            "invalid_cursor",
        ),
        ({"cursor": forged(f"v2|t|{archive_id}|extra|{text_filters}")}, "invalid_cursor"),
        (
            {"cursor": base64.urlsafe_b64encode("v2|t|档".encode()).decode().rstrip("=")},
            "invalid_cursor",
        ),
        ({"cursor": plain_cursor, "offset": 1}, "invalid_page"),
    ]
    for params, code in refused:
        response = _page(api, **params)
        assert (response.status_code, response.json()["code"]) == (400, code), params
        assert response.json()["message"]
    for hostile in ("a+b/c==", "x" * 129, "", "\u6863"):
        response = _page(api, cursor=hostile)
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
    # a well-formed cursor naming no archive still pages: it is a position, not a lookup
    far = forged(f"v2|t|{'0' * 26}|{text_filters}")
    assert _page(api, text="胸痛", cursor=far).json()["items"] == []
    # the page size and the purpose are not bound: a walk may change them
    assert _page(api, text="胸痛", cursor=text_cursor, limit=2).status_code == 200


def _upload(api: Api, title: str, content: bytes, media_type: str) -> str:
    metadata = {
        "record_class": "OUTPATIENT",
        "department": "cardiology",
        "title": title,
        "source_system": "HIS",
        "patient_id": "P-UPLOAD",
    }
    response = api.client.post(
        "/api/v1/archives",
        files={"file": ("record", content, media_type)},
        data={"metadata": json.dumps(metadata)},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _ids(api: Api, text: str) -> list[str]:
    response = search(api, text)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_an_uploaded_record_is_found_by_the_words_of_its_content(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload through ``POST /archives`` is read for the index as it is stored, like an
    ingested document: plain text and a PDF's text layer; other media types by title only."""
    plain = _upload(api, "Clinic note", "门诊病历：心悸两周。Palpitations.".encode(), "text/plain")
    pdf = _upload(api, "Echo report", make_pdf("Tricuspid regurgitation mild"), "application/pdf")
    other = _upload(api, "Raw export", b"bradycardia " * 10, "application/octet-stream")
    assert _ids(api, "心悸") == [plain]
    assert _ids(api, "palpitations") == [plain]
    assert _ids(api, "tricuspid regurgitation") == [pdf]
    assert _ids(api, "bradycardia") == []  # content of a type search does not read
    assert _ids(api, "raw export") == [other]
    assert _ids(api, "clinic note") == [plain]
    # Only the first MAX_EXTRACTED_BYTES of a PDF are kept to be read: cut short, it gives no
    # text, and the record is found by its title only.
    monkeypatch.setattr(searchtext, "MAX_EXTRACTED_BYTES", 100)
    big = _upload(api, "Stress test", make_pdf("Ischaemia inferior wall"), "application/pdf")
    assert _ids(api, "ischaemia") == []
    assert _ids(api, "stress test") == [big]


def test_an_amendment_adds_the_words_of_its_version(api: Api) -> None:
    """A new version's words join the archive's terms; those of earlier versions stay."""
    archive_id = _upload(api, "Ward note", b"Palpitations at night.", "text/plain")
    other = _upload(api, "Other note", b"Syncope denied.", "text/plain")
    amended = api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        files={
            "file": (
                "v2.txt",
                "Palpitations resolved; syncope once. 晕厥一次。".encode(),
                "text/plain",
            )
        },
        headers=api.auth("archivist"),
    )
    assert amended.status_code == 200, amended.text
    assert _ids(api, "syncope") == [other, archive_id]
    assert _ids(api, "晕厥") == [archive_id]
    assert _ids(api, "palpitations night") == [archive_id]  # version 1's words stay
    assert _ids(api, "resolved") == [archive_id]


def test_an_upload_whose_text_cannot_be_read_leaves_no_blob(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading an upload's text happens after its blob is stored: if it fails (an OCR temp file
    that cannot be written, memory), the blob goes with the request: nothing is half-written."""
    before = api.footprint()

    def broken(*_args: Any, **_kwargs: Any) -> str:
        raise OSError("no space left for the OCR temp file")

    monkeypatch.setattr(searchtext, "searchable_text", broken)
    try:
        response = api.upload(
            content=b"Palpitations at night.", media_type="text/plain", filename="note.txt"
        )
    except OSError:
        pass  # the ASGI transport re-raises what the app did not handle
    else:
        assert response.status_code >= 500, response.text
    assert api.footprint() == before


def test_a_tap_lets_its_bytes_go_once_read() -> None:
    """``TextTap.text`` keeps nothing afterwards: a PDF is not held a second time while its text
    is read, nor while the request waits for the database writer."""
    from node.config import NodeSettings

    tap = searchtext.TextTap([b"Palpitations ", b"at night."], "text/plain", NodeSettings())
    assert b"".join(tap) == b"Palpitations at night."
    assert "Palpitations at night." in tap.text()
    assert tap.text() == ""


def _terms(api: Api, archive_id: str) -> set[str]:
    with api.node.db.session() as session:
        return set(
            session.execute(
                select(SearchTerm.term).where(SearchTerm.archive_id == archive_id)
            ).scalars()
        )


def _amend(api: Api, archive_id: str, content: bytes) -> None:
    amended = api.client.post(
        f"/api/v1/archives/{archive_id}/amend",
        files={"file": ("next.txt", content, "text/plain")},
        headers=api.auth("archivist"),
    )
    assert amended.status_code == 200, amended.text


def test_amendments_keep_an_archive_within_the_term_cap(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive holds at most MAX_TERMS_PER_ARCHIVE terms in all, however often it is amended:
    title and metadata first, then each version's new words in order of first appearance, so
    an amendment adds only as many as remain under the cap — the set a transfer's recipient
    cuts from the same texts together."""
    monkeypatch.setattr(textindex, "MAX_TERMS_PER_ARCHIVE", 10)
    versions = [
        b"Alpha bravo, charlie alpha.",
        b"delta alpha echo foxtrot golf",
        b"hotel india juliet",
        b"kilo",
    ]
    archive_id = _upload(api, "Ward note", versions[0], "text/plain")
    assert _terms(api, archive_id) == {"ward", "note", "alpha", "bravo", "charlie"}
    _amend(api, archive_id, versions[1])
    assert _terms(api, archive_id) == {
        *("ward", "note", "alpha", "bravo", "charlie"),
        *("delta", "echo", "foxtrot", "golf"),
    }
    _amend(api, archive_id, versions[2])  # one term left under the cap: the first new word
    kept = {
        "ward",
        "note",
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
    }
    assert _terms(api, archive_id) == kept
    _amend(api, archive_id, versions[3])  # full: nothing more
    assert _terms(api, archive_id) == kept
    assert _ids(api, "hotel") == [archive_id]
    assert _ids(api, "india") == _ids(api, "kilo") == []
    # What a custody transfer's recipient cuts from the same texts gives the same set.
    with api.node.db.session() as session:
        archive = session.get_one(Archive, archive_id)
        title, metadata = archive.title, dict(archive.metadata_json or {})
    head = textindex.ordered_terms(*textindex.archive_texts(title, metadata))
    assert head == ["ward", "note"]  # the upload's metadata holds no words here
    texts = [v.decode() for v in versions]
    assert textindex.index_terms(*textindex.archive_texts(title, metadata), *texts) == kept
