"""The one rule for a record's displayable file name, whichever way it came in (an uploaded part's
name, an ingested document's, a FHIR attachment's title, the console's upload)."""

from __future__ import annotations

import re
from typing import Final

MAX_FILENAME: Final = 255
"""Longest stored file name (``archive_versions.filename`` is 256 characters)."""

_SEPARATORS = re.compile(r"[\\/]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_name(raw: str | None) -> str | None:
    """``raw``'s base name (after its last ``/`` or ``\\``) without control characters, stripped
    and cut to ``MAX_FILENAME``; None when nothing is left. PostgreSQL cannot store NUL, and a
    path could carry the sender's directory names."""
    if not raw:
        return None
    name = _CONTROL.sub("", _SEPARATORS.split(raw)[-1]).strip()[:MAX_FILENAME]
    return name or None
