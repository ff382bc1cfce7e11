"""Usability checks of 四性检测 (DA/T 70-2018): does the content open in its declared format?

Pure functions over plaintext bytes (the caller decrypts): a PDF must parse with pypdf in strict
mode and every page must load; DICOM must parse with pydicom (a DICM preamble, every element
complete, uncompressed pixel data as long as its dimensions say); FHIR JSON must be a JSON object
naming a ``resourceType`` that validates against that type's ``fhir.resources`` model (the R4B
models, as ``node.fhir`` uses: ``fhir.resources`` 8 no longer ships R4 4.0.1, and R4B has R4's
elements and cardinalities for the clinical resources); text must decode in its declared charset
(UTF-8 when none is declared). Other formats are not checked (``None``).
Answers a stable problem code, or ``None`` when the content opens.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

log = logging.getLogger(__name__)

_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([A-Za-z0-9._-]+)\"?", re.IGNORECASE)
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


def usability_problem(media_type: str, content: bytes) -> str | None:
    """The problem code of ``content`` in ``media_type``, or None when it opens."""
    base = media_type.split(";", 1)[0].strip().lower()
    if base == "application/pdf":
        return _pdf(content)
    if base == "application/dicom":
        return _dicom(content)
    if base == "application/fhir+json":
        return _fhir(content)
    if base.startswith("text/"):
        match = _CHARSET.search(media_type)
        return _text(content, match.group(1) if match else "utf-8")
    return None


def _pdf(content: bytes) -> str | None:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(content), strict=True)
            for page in reader.pages:
                page.get_contents()
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        log.info("PDF does not open: %s", type(exc).__name__)
        return "pdf_unreadable"
    return None


def _dicom(content: bytes) -> str | None:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = dcmread(io.BytesIO(content), force=False)
            for _element in dataset.iterall():  # every element read (lazily loaded values too)
                pass
            if "PixelData" in dataset and _pixel_data_short(dataset):
                return "dicom_unreadable"
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        log.info("DICOM does not open: %s", type(exc).__name__)
        return "dicom_unreadable"
    return None


def _pixel_data_short(dataset: object) -> bool:
    """Uncompressed pixel data shorter than its rows × columns × samples × bytes × frames (a
    truncated file: pydicom reads what is there without complaint)."""
    get = getattr
    syntax = get(get(dataset, "file_meta", None), "TransferSyntaxUID", None)
    data = get(dataset, "PixelData", b"")
    if not data:
        return True
    if syntax is None or get(syntax, "is_compressed", True):
        return False
    try:
        expected = (
            int(get(dataset, "Rows"))
            * int(get(dataset, "Columns"))
            * int(get(dataset, "SamplesPerPixel", 1))
            * (int(get(dataset, "BitsAllocated")) // 8)
            * int(get(dataset, "NumberOfFrames", 1) or 1)
        )
    except (AttributeError, TypeError, ValueError):
        return False
    return len(data) < expected


def _fhir(content: bytes) -> str | None:
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "fhir_invalid"
    if not isinstance(document, dict):
        return "fhir_invalid"
    resource_type = document.get("resourceType")
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
        return "fhir_invalid"
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError):  # not a resource type of the standard
        log.info("FHIR resource type unknown")
        return "fhir_invalid"
    try:
        model.model_validate(document)
    except (ValidationError, ValueError, TypeError, RecursionError) as exc:
        log.info("FHIR resource does not validate: %s", type(exc).__name__)
        return "fhir_invalid"
    return None


def _text(content: bytes, charset: str) -> str | None:
    try:
        content.decode(charset, errors="strict")
    except LookupError:
        return "unknown_charset"
    except UnicodeDecodeError:
        return "text_wrong_charset"
    return None


# -- security: no plaintext under the data directory --------------------------------------------

_BINARY_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "pdf"),
    (128, b"DICM", "dicom"),
    (0, b"PK\x03\x04", "zip"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
)
SNIFF_BYTES = 4096


def plaintext_kind(head: bytes, *, text_too: bool) -> str | None:
    """What readable format the first bytes of a file are in (``pdf``, ``dicom``, ``zip``,
    ``png``, ``jpeg``; with ``text_too`` also ``json`` and ``text``), or None. Ciphertext (random
    bytes) matches none of them: a magic number has odds of 2^-24 or less, and 4 KiB of random
    bytes decode as UTF-8 without a control character with negligible odds. Under 16 bytes
    nothing is called text."""
    for offset, magic, kind in _BINARY_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if not text_too or len(head) < 16:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not only a character cut at the end of the sample
            return None
        text = head[: exc.start].decode("utf-8")
    if any(ord(ch) < 32 and ch not in "\t\r\n\f" for ch in text):
        return None
    stripped = text.lstrip()
    return "json" if stripped[:1] in ("{", "[") else "text"
