"""Opaque keyset cursors of catalogue search pages (docs/ingestion.md, "Bounded queries").

A cursor names the last entry of a page in the order the search walks, so that the next page
starts right after it however deep it is (an offset walks and skips every earlier entry), and the
filters of the search it belongs to. It is URL-safe base64 without padding of an ASCII string:

- ``v2|t|<archive id>|<filters>`` for a text search (walked newest archive id first);
- ``v2|c|<created_at, ISO 8601 with microseconds>|<archive id>|<filters>`` for any other search
  (walked newest ``created_at`` first, then archive id).

``<filters>`` is 16 hex of a keyed hash of the search's filters (``Pseudonyms.search_filters``;
all of them but ``limit``, ``offset``, ``cursor`` and ``purpose``): a cursor given with other
filters than its page's is refused instead of resuming a different search at a meaningless
place. A cursor holds no PHI (archive ids and creation times are in every public proof; the
filters only as a keyed hash) and is not signed: a forged one only moves where the caller's own,
policy-filtered search resumes."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from anchoring.ids import IdentifierError, archive_key
from node.errors import InputError

__all__ = ["SearchCursor", "decode_cursor", "encode_cursor"]

_VERSION = "v2"
_MAX_ENCODED = 128


@dataclass(frozen=True)
class SearchCursor:
    """Where a page ended: the last archive id, and its ``created_at`` unless a text search."""

    archive_id: str
    filters: str
    created_at: datetime | None = None


def encode_cursor(cursor: SearchCursor) -> str:
    """The opaque form of ``cursor``."""
    if cursor.created_at is None:
        raw = f"{_VERSION}|t|{cursor.archive_id}|{cursor.filters}"
    else:
        stamp = cursor.created_at.isoformat(timespec="microseconds")
        raw = f"{_VERSION}|c|{stamp}|{cursor.archive_id}|{cursor.filters}"
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(token: str, *, text_search: bool, filters: str) -> SearchCursor:
    """The cursor ``token`` names, checked against the search it resumes: its kind and its
    ``filters`` (as ``Pseudonyms.search_filters`` gives them).

    Raises ``InputError`` (code ``invalid_cursor``) for anything this module did not write, for
    a cursor of a text search given to another search or the reverse, and for a cursor of a
    search with other filters."""
    raw = _unwrap(token)
    parts = raw.split("|")
    if parts[:1] != [_VERSION]:
        raise _invalid("is not a search cursor of this node")
    if parts[1:2] == ["t"] and len(parts) == 4:
        kind_text, archive_id, created_at = True, parts[2], None
    elif parts[1:2] == ["c"] and len(parts) == 5:
        kind_text, archive_id = False, parts[3]
        try:
            created_at = datetime.fromisoformat(parts[2])
        except ValueError:
            raise _invalid("holds no valid creation time") from None
    else:
        raise _invalid("is not a search cursor of this node")
    try:
        archive_key(archive_id)  # the one archive-id check (a canonical ULID)
    except IdentifierError:
        raise _invalid("holds no valid archive id") from None
    if kind_text != text_search:
        wanted = "a text search" if text_search else "a search without text"
        raise _invalid(f"belongs to another kind of search than this one ({wanted})")
    if parts[-1] != filters:
        raise _invalid("belongs to a search with other filters; keep a page's filters")
    return SearchCursor(archive_id, filters, created_at)


def _unwrap(token: str) -> str:
    if not token or len(token) > _MAX_ENCODED or not token.isascii():
        raise _invalid("is not a search cursor of this node")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise _invalid("is not a search cursor of this node") from None


def _invalid(what: str) -> InputError:
    return InputError(
        f"cursor {what}; pass next_cursor as a page returned it", code="invalid_cursor"
    )
