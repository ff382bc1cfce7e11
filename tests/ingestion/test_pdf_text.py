"""PDF text for the search index (pypdf): a real PDF's text layer, broken and text-less PDFs give
no text without failing, and an ingested PDF is found by its words through the real app on both
databases."""

from __future__ import annotations

from node.classification import SourceHints
from node.pdftext import pdf_text
from node.services.ingestion import IncomingDocument
from tests.api.conftest import Api


def make_pdf(*pages: str) -> bytes:
    """A valid PDF (Helvetica text, one page per string) with a correct cross-reference table."""
    count = len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(f"{4 + 2 * i} 0 R".encode() for i in range(count))
        + f"] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents " + f"{5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
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


def test_text_layer_of_every_page() -> None:
    text = pdf_text(make_pdf("Coronary angiography normal", "Follow-up cardiology clinic"))
    assert "Coronary angiography normal" in text
    assert "Follow-up cardiology clinic" in text
    assert pdf_text(make_pdf("x" * 500), max_chars=100) == "x" * 100


def test_unreadable_pdfs_give_no_text() -> None:
    good = make_pdf("Some words")
    assert pdf_text(b"") == ""
    assert pdf_text(b"not a pdf at all") == ""
    assert pdf_text(b"%PDF-1.7 discharge summary " * 50) == ""
    assert pdf_text(good[: len(good) // 2]) in ("", "Some words")  # truncated: never raises
    assert pdf_text(make_pdf()) == ""  # no pages


def _ingest_pdf(api: Api, content: bytes, message_id: str) -> str:
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    doc = IncomingDocument(
        content=content,
        media_type="application/pdf",
        patient_id="P-PDF-1",
        source_system="HIS",
        title="Report",
        department="cardiology",
        message_id=message_id,
        hints=SourceHints(class_hint="住院"),
    )
    return api.node.ingestion.ingest(archivist, doc).archive.id


def test_ingested_pdf_is_found_by_its_words(api: Api) -> None:
    found = _ingest_pdf(api, make_pdf("Echocardiogram shows mitral regurgitation"), "PDF-1")
    broken = _ingest_pdf(api, b"%PDF-1.7 broken " * 20, "PDF-2")

    def search(text: str) -> set[str]:
        response = api.client.get(
            "/api/v1/archives", params={"text": text}, headers=api.auth("archivist")
        )
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert search("mitral regurgitation") == {found}
    assert search("echocardiogram") == {found}
    assert search("tricuspid") == set()
    assert broken not in search("broken")  # the raw bytes of a PDF are not indexed as text
