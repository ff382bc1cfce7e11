"""Text of scanned records for the keyword search index: OCR with the Tesseract engine.

Off by default (``ocr_enabled``); when on, ingestion runs it on images (PNG, JPEG, TIFF, BMP)
and on PDFs without a text layer (the images embedded in their first ``MAX_PAGES`` pages, read
with pypdf, which needs Pillow to decode them). The ``tesseract`` program (Debian:
``apt-get install tesseract-ocr tesseract-ocr-chi-sim``) is run once per image, with the
configured languages (``ocr_languages``, default ``chi_sim+eng``), a time limit and no shell; its
output never reaches the log (it is PHI). Any failure — no engine, a broken image, a time-out —
gives no text, never an error: the record is archived all the same, only not findable by the
words of its scan. Spaces Tesseract puts between Chinese characters are removed, so that the
index's bigrams (``node.textindex``) match the words.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pypdf import PdfReader

MAX_PAGES = 50
"""PDF pages whose images are read at most."""
MAX_IMAGES = 100
"""Images recognised per record at most."""
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/bmp"})

log = logging.getLogger(__name__)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")


def available() -> bool:
    """Whether the ``tesseract`` program is installed."""
    return shutil.which("tesseract") is not None


def ocr_text(
    content: bytes,
    media_type: str,
    *,
    languages: str = "chi_sim+eng",
    timeout: float = 60.0,
    max_chars: int = 1024 * 1024,
) -> str:
    """The recognised text of an image or of a PDF's page images ("" when there is none)."""
    if media_type in IMAGE_TYPES:
        images = [content]
    elif media_type == "application/pdf":
        images = _pdf_images(content)
    else:
        return ""
    engine = shutil.which("tesseract")
    if engine is None or not images:
        return ""
    parts: list[str] = []
    size = 0
    with tempfile.TemporaryDirectory(prefix="archivechain-ocr-") as tmp:
        for number, image in enumerate(images):
            if size >= max_chars:
                break
            path = Path(tmp) / f"{number}.img"
            path.write_bytes(image)
            try:
                done = subprocess.run(  # a fixed program and arguments, no shell
                    [engine, str(path), "stdout", "-l", languages],
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.info("OCR gave no text (%s)", type(exc).__name__)
                continue
            if done.returncode != 0:
                log.info("OCR gave no text (tesseract exit %d)", done.returncode)
                continue
            text = _CJK_GAP.sub("", done.stdout.decode("utf-8", errors="ignore"))
            parts.append(text)
            size += len(text)
    return "\n".join(parts)[:max_chars]


def _pdf_images(content: bytes) -> list[bytes]:
    """The encoded images of the PDF's first pages (none when it cannot be read)."""
    images: list[bytes] = []
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            return []
        for number, page in enumerate(reader.pages):
            if number >= MAX_PAGES or len(images) >= MAX_IMAGES:
                break
            images.extend(image.data for image in page.images)
    except Exception as exc:
        log.info("no images from a PDF (%s)", type(exc).__name__)
        return []
    return images[:MAX_IMAGES]
