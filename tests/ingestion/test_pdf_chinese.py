"""Chinese PDF text for the search index: the two ways Chinese PDFs carry text, both generated in
the test — a predefined CJK CMap (reportlab's STSong-Light, Adobe-GB1 with UniGB-UCS2-H, the font
not embedded, as many HIS exports are) and an Identity-H composite font whose ``ToUnicode`` CMap
maps glyph ids to characters (how embedded-subset fonts carry text). The text is extracted by
pypdf at ingestion and the PDF is found by Chinese and Latin words through the real app's search
and catalogue, on both databases. A scanned PDF (no text layer) gives no text: OCR is not built."""

from __future__ import annotations

import io
import json

import pytest

from node.pdftext import pdf_text
from tests.api.conftest import Api

reportlab = pytest.importorskip("reportlab", reason="reportlab is a dev dependency")

LINES = ("出院小结 患者主诉胸痛三天", "诊断：急性心肌梗死 Acute MI")


def stsong_pdf(*lines: str) -> bytes:
    """A one-page PDF in STSong-Light (Adobe-GB1, UniGB-UCS2-H) made with reportlab."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    out = io.BytesIO()
    page = canvas.Canvas(out)
    page.setFont("STSong-Light", 14)
    for number, line in enumerate(lines):
        page.drawString(72, 720 - 20 * number, line)
    page.showPage()
    page.save()
    return out.getvalue()


def identity_h_pdf(text: str) -> bytes:
    """A PDF whose only font is an Identity-H Type0 font: glyph ids 1, 2, … in the content
    stream, and a ToUnicode CMap mapping each to its character (the font program itself is not
    embedded: text extraction reads only the CMap)."""
    chars = list(dict.fromkeys(text))
    gid = {char: number + 1 for number, char in enumerate(chars)}
    shown = "".join(f"{gid[char]:04X}" for char in text)
    bfchar = "\n".join(f"<{gid[c]:04X}> <{ord(c):04X}>" for c in chars)
    cmap = (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        f"{len(chars)} beginbfchar\n{bfchar}\nendbfchar\n"
        "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")
    content = f"BT /F1 12 Tf 72 720 Td <{shown}> Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H "
        b"/DescendantFonts [6 0 R] /ToUnicode 7 0 R >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
        b"/FontDescriptor 8 0 R /DW 1000 /CIDToGIDMap /Identity >>",
        f"<< /Length {len(cmap)} >>\nstream\n".encode() + cmap + b"\nendstream",
        b"<< /Type /FontDescriptor /FontName /SimSun /Flags 4 /FontBBox [0 -141 1000 859] "
        b"/ItalicAngle 0 /Ascent 859 /Descent -141 /CapHeight 683 /StemV 80 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def test_text_of_a_stsong_light_pdf() -> None:
    text = pdf_text(stsong_pdf(*LINES))
    for line in LINES:
        assert line in text


def test_text_of_an_identity_h_font_through_its_tounicode_cmap() -> None:
    assert "病理报告：乳腺浸润性导管癌" in pdf_text(identity_h_pdf("病理报告：乳腺浸润性导管癌"))


def _ingest(api: Api, content: bytes, message_id: str) -> str:
    metadata = {
        "patient_id": "MRN-PDF-ZH-1",
        "source_system": "EMR",
        "message_id": message_id,
        "title": "扫描件",
        "class_hint": "住院",
    }
    response = api.client.post(
        "/api/v1/ingest/documents",
        files={"file": (f"{message_id}.pdf", content, "application/pdf")},
        data={"metadata": json.dumps(metadata, ensure_ascii=False)},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 201, response.text
    archive_id: str = response.json()["archive_id"]
    return archive_id


def test_chinese_pdfs_are_found_by_their_words(api: Api) -> None:
    discharge = _ingest(api, stsong_pdf(*LINES), "ZH-1")
    pathology = _ingest(api, identity_h_pdf("病理报告：乳腺浸润性导管癌"), "ZH-2")

    def search(text: str) -> set[str]:
        response = api.client.get(
            "/api/v1/archives", params={"text": text}, headers=api.auth("archivist")
        )
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    def catalogue(text: str) -> set[str]:
        response = api.client.get(
            "/api/v1/catalogue", params={"text": text}, headers=api.auth("archivist")
        )
        assert response.status_code == 200, response.text
        assert "胸痛" not in response.text  # entries carry no title or text
        return {item["id"] for item in response.json()["items"]}

    assert search("胸痛") == {discharge}
    assert search("急性心肌梗死") == {discharge}
    assert search("acute mi") == {discharge}
    assert search("导管癌") == {pathology}
    assert search("报告") == {pathology}
    assert search("肺炎") == set()
    assert catalogue("心肌梗死") == {discharge}
    assert catalogue("乳腺") == {pathology}
    assert catalogue("扫描件") == {discharge, pathology}  # the title is indexed too
