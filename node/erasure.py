"""What destroying an archive erases from the node's database, in one place: the catalogue
columns that may hold PHI, the versions' file names and the keyword-index terms.

Used by the disposition run (``node.services.retention``) and by the tombstone replay at start
(``node.tombstones``), so a backup restored from before a destruction loses exactly what the
destruction erased."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from node.models import Archive, ArchiveVersion, SearchTerm

ERASED_COLUMNS: Final[tuple[tuple[str, Any], ...]] = (
    ("title", ""),
    ("search_text", ""),
    ("metadata_json", {}),
)
"""The catalogue columns that may hold PHI, and what destruction leaves in them."""


def erase_archive_content(session: Session, archive_ids: Sequence[str]) -> None:
    """Erase the PHI-bearing columns and rows of ``archive_ids``, set-based, in the caller's
    transaction (no commit). Objects already loaded in ``session`` are not updated: the caller
    sets them (``set_committed_value``) or lets the commit expire them."""
    session.execute(
        update(Archive)
        .where(Archive.id.in_(archive_ids))
        .values(dict(ERASED_COLUMNS))
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ArchiveVersion)
        .where(ArchiveVersion.archive_id.in_(archive_ids))
        .values(filename=None)
        .execution_options(synchronize_session=False)
    )
    # The keyword index (ingestion) holds fragments of titles and extracted text.
    session.execute(
        delete(SearchTerm)
        .where(SearchTerm.archive_id.in_(archive_ids))
        .execution_options(synchronize_session=False)
    )
