"""Text of a PDF's pages for the keyword search index (pypdf).

Only what search needs: the text layer of the first ``MAX_PAGES`` pages, cut at ``max_chars``.
A PDF that cannot be read (malformed, encrypted, scanned without a text layer) gives no text —
never an error: the record is archived all the same, only not findable by its words. pypdf's own
warnings about malformed files are kept out of the node's log at WARNING level (they may quote
bytes of the file).
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader

MAX_PAGES = 200
"""Pages read at most (a long scan of text-less pages costs little; a hostile one is cut short)."""

log = logging.getLogger(__name__)
logging.getLogger("pypdf").setLevel(logging.ERROR)


def pdf_text(content: bytes, *, max_chars: int = 1024 * 1024) -> str:
    """The text layer of ``content`` (a PDF), or "" when it has none or cannot be read."""
    if not content.startswith(b"%PDF-") and b"%PDF-" not in content[:1024]:
        return ""
    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            return ""
        for number, page in enumerate(reader.pages):
            if number >= MAX_PAGES or size >= max_chars:
                break
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
    except Exception as exc:
        log.info("no text from a PDF (%s)", type(exc).__name__)
        return ""
    return "\n".join(parts)[:max_chars]
