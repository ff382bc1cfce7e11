"""What keyword search reads of a record's content.

One rule for every way a record reaches this node (an upload or a hospital system's message, a
custody transfer from another hospital): the text of a ``text/*`` record itself (its first MiB,
UTF-8, undecodable bytes dropped), the text layer of a PDF (``node.pdftext``) and, when the node
has ``ocr_enabled``, the recognised text of an image or of a PDF without a text layer
(``node.ocr``). The result only feeds the search index (``node.textindex``); it holds PHI and is
never logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from node.config import NodeSettings
from node.ocr import IMAGE_TYPES, ocr_text
from node.pdftext import pdf_text

MAX_PLAIN_TEXT_BYTES = 1024 * 1024
"""Characters of text (and bytes of a ``text/*`` record) read at most for the index."""

MAX_EXTRACTED_BYTES = 64 * 1024 * 1024
"""Bytes of a PDF or an image kept for the index while it is streamed in (an upload, a custody
transfer), so that indexing never holds more of a record in memory; a larger one is read from
this much of its start (a PDF cut short usually gives no text: found by title and metadata)."""


def reads_content(media_type: str, settings: NodeSettings) -> bool:
    """Whether :func:`searchable_text` looks at content of ``media_type`` at all (a caller that
    would have to decrypt a whole version only to pass it here can skip the others)."""
    return (
        media_type.startswith("text/")
        or media_type == "application/pdf"
        or (settings.ocr_enabled and media_type in IMAGE_TYPES)
    )


def searchable_text(
    content: bytes, media_type: str, settings: NodeSettings, *, extracted: str = ""
) -> str:
    """The text keyword search indexes for ``content``: ``extracted`` (what the record's source
    system extracted, e.g. a FHIR narrative or DICOM descriptions) and the content's own text."""
    parts = [extracted]
    layer = ""
    if media_type.startswith("text/"):
        parts.append(content[:MAX_PLAIN_TEXT_BYTES].decode("utf-8", errors="ignore"))
    elif media_type == "application/pdf":
        layer = pdf_text(content, max_chars=MAX_PLAIN_TEXT_BYTES)
        parts.append(layer)
    if settings.ocr_enabled and not layer.strip():
        parts.append(
            ocr_text(
                content,
                media_type,
                languages=settings.ocr_languages,
                timeout=settings.ocr_timeout,
                max_chars=MAX_PLAIN_TEXT_BYTES,
            )
        )
    return "\n".join(part for part in parts if part)


class TextTap:
    """Content passed through as it is streamed in (stored, or checked against its commitment),
    keeping what keyword search reads of it: its first ``MAX_PLAIN_TEXT_BYTES`` (plain text) or
    ``MAX_EXTRACTED_BYTES`` (a PDF or an image); :meth:`text` once it has gone through."""

    def __init__(self, content: Iterable[bytes], media_type: str, settings: NodeSettings) -> None:
        self._content = content
        self._media_type = media_type
        self._settings = settings
        self._limit = (
            MAX_PLAIN_TEXT_BYTES if media_type.startswith("text/") else MAX_EXTRACTED_BYTES
        )
        self._parts: list[bytes] = []
        self._kept = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._content:
            if self._kept < self._limit:
                self._parts.append(chunk[: self._limit - self._kept])
                self._kept += len(self._parts[-1])
            yield chunk

    def text(self) -> str:
        """The searchable text of what went through (the kept bytes are let go: the tap keeps
        nothing once asked, so a PDF is held once, not twice, while its text is read)."""
        content = b"".join(self._parts)
        self._parts = []
        return searchable_text(content, self._media_type, self._settings)
