"""OCR of scanned records (``node.ocr``, ``ocr_enabled``): an image and an image-only PDF,
generated in the test with Chinese and Latin text (WenQuanYi Zen Hei, Debian's fonts-wqy-zenhei),
are recognised by the real Tesseract engine (chi_sim + eng) and found through the real app's
search on both databases; with OCR off (the default) they are archived but not found by their
words; an unreadable image gives no text and no error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from api.main import create_app
from node import ocr
from node.pdftext import pdf_text
from node.runtime import NodeRuntime
from tests.api.conftest import CHUNK_SIZE, UPLOAD_LIMIT, Api, issue_keys, serve
from tests.fixtures.node import MakeNode

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
LINES = ("出院小结 胸痛", "Discharge summary")


def scan(*lines: str) -> Image.Image:
    """A white page with ``lines`` in black, as a scanner would give it."""
    assert FONT.exists(), "the CJK test font is missing: apt-get install fonts-wqy-zenhei"
    font = ImageFont.truetype(str(FONT), 48)
    page = Image.new("RGB", (900, 110 * len(lines) + 60), "white")
    draw = ImageDraw.Draw(page)
    for number, line in enumerate(lines):
        draw.text((40, 40 + 110 * number), line, fill="black", font=font)
    return page


def encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "PDF":
        image.save(buffer, kind, resolution=300.0)
    else:
        image.save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture
def api_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    assert ocr.available(), "tesseract is not installed: apt-get install tesseract-ocr"
    return make_node(
        database_url=database_url,
        max_upload_bytes=UPLOAD_LIMIT,
        chunk_size=CHUNK_SIZE,
        ocr_enabled=True,
    )


def test_an_image_and_an_image_only_pdf_are_read() -> None:
    png = encoded(scan(*LINES), "PNG")
    pdf = encoded(scan(*LINES), "PDF")
    assert pdf_text(pdf) == ""  # no text layer: a scan
    for content, media_type in ((png, "image/png"), (pdf, "application/pdf")):
        text = ocr.ocr_text(content, media_type)
        assert "出院小结" in text, text
        assert "胸痛" in text, text
        assert "discharge" in text.lower(), text
    assert ocr.ocr_text(b"\x89PNG broken", "image/png") == ""
    assert ocr.ocr_text(b"%PDF-1.4 broken", "application/pdf") == ""
    assert ocr.ocr_text(png, "text/plain") == ""


def _ingest(api: Api, content: bytes, name: str, media_type: str, message_id: str) -> str:
    metadata = {
        "patient_id": "MRN-OCR-1",
        "source_system": "SCAN",
        "message_id": message_id,
        "title": "扫描件",
        "class_hint": "住院",
    }
    response = api.client.post(
        "/api/v1/ingest/documents",
        files={"file": (name, content, media_type)},
        data={"metadata": json.dumps(metadata, ensure_ascii=False)},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 201, response.text
    archive_id: str = response.json()["archive_id"]
    return archive_id


def _search(api: Api, text: str) -> set[str]:
    response = api.client.get(
        "/api/v1/archives", params={"text": text}, headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_scans_are_found_by_their_words_when_ocr_is_on(api: Api) -> None:
    image = _ingest(api, encoded(scan(*LINES), "PNG"), "scan.png", "image/png", "OCR-1")
    pdf = _ingest(
        api, encoded(scan("病理报告", "Biopsy"), "PDF"), "scan.pdf", "application/pdf", "OCR-2"
    )
    assert _search(api, "出院小结") == {image}
    assert _search(api, "胸痛") == {image}
    assert _search(api, "discharge") == {image}
    assert _search(api, "病理报告") == {pdf}
    assert _search(api, "biopsy") == {pdf}
    assert _search(api, "肺炎") == set()


def test_without_ocr_a_scan_is_archived_but_not_found_by_its_words(
    make_node: MakeNode, sqlite_url: str
) -> None:
    node = make_node(database_url=sqlite_url, max_upload_bytes=UPLOAD_LIMIT)
    assert node.settings.ocr_enabled is False
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        _ingest(api, encoded(scan(*LINES), "PNG"), "scan.png", "image/png", "OCR-OFF")
        assert _search(api, "出院小结") == set()
