"""De-identified derivatives with lineage (issue 12 §5).

``derive`` reads an archive's content for a purpose (ACCESS, scope content, in the original's
chain), de-identifies it with a named profile (``node.deid``; a format without a profile is refused
before anything is read), and creates a new archive of the copy whose CREATE is followed, in the
same unit of work, by DERIVE: original archive and commitment → derivative commitment, profile,
purpose, recipient. The derivative is an archive like any other (share, transfer, proofs), and its
bundle shows its lineage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from anchoring.events import DeriveData, DeriveEvent, Purpose, RecordClass, Sensitivity
from anchoring.ids import IdentifierError, normalize_address
from node import crypto, deid
from node.db import Database, UnitOfWork
from node.errors import InputError
from node.ledger import Ledger
from node.models import Archive, ArchiveVersion
from node.principal import Action, Principal
from node.services.archives import ArchiveService, NewArchive
from node.services.records import ArchiveView


@dataclass(frozen=True, slots=True)
class DerivationSource:
    """What the derivation needs to know of the original before reading it."""

    archive_id: str
    media_type: str
    version: int
    commitment: str
    record_class: str
    department: str
    trigger_date: date


class DerivativeService:
    """Create de-identified derivatives of archives."""

    def __init__(
        self,
        *,
        db: Database,
        ledger: Ledger,
        archives: ArchiveService,
        pseudonym_secret: bytes,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.archives = archives
        self._secret = pseudonym_secret

    def derive(
        self, principal: Principal, archive_id: str, profile: str, purpose: Purpose, recipient: str
    ) -> ArchiveView:
        """The new derivative archive (CREATE + DERIVE); the original's read is logged."""
        principal.require(Action.DERIVE)
        principal.require(Action.READ_CONTENT)
        source = self._source(principal, archive_id)
        deid.profile_for(profile, source.media_type)  # refuse before reading anything
        recipient = _recipient(recipient)

        def keyed(text: str) -> str:
            return crypto.pseudonym(self._secret, "deid", f"{recipient}:{text}")

        stream = self.archives.open_content(principal, source.archive_id, purpose, source.version)
        content = b"".join(stream.chunks)
        derived = deid.deidentify(profile, content, keyed)
        new = NewArchive(
            record_class=RecordClass(source.record_class),
            sensitivity=Sensitivity.NORMAL,
            department=source.department,
            title=f"De-identified derivative ({profile})",
            # A derivative is not filed under the patient: its own unlinkable pseudonym.
            patient_id=f"derivative:{source.archive_id}:{profile}:{recipient}",
            source_system="deid",
            media_type=source.media_type,
            trigger_date=source.trigger_date,
            metadata={
                "derived_from": source.archive_id,
                "profile": profile,
                "purpose": purpose.value,
                "recipient": recipient,
            },
            text="",  # a copy made for a recipient: found by its title and metadata only
        )

        def within(uow: UnitOfWork, archive: Archive) -> None:
            state = self.ledger.state(uow.session, archive)
            data = DeriveData(
                source_archive=source.archive_id,
                source_commitment=source.commitment,
                commitment=state.current_version.commitment,
                profile=profile,
                purpose=purpose,
                recipient=recipient,
            )
            self.ledger.record(uow, archive, state, DeriveEvent, principal.actor, data)

        return self.archives.create(principal, new, [derived], within=within)

    def _source(self, principal: Principal, archive_id: str) -> DerivationSource:
        with self.db.session() as session:
            archive = self.ledger.visible(session, principal, archive_id)
            version = session.execute(
                select(ArchiveVersion).where(
                    ArchiveVersion.archive_id == archive.id,
                    ArchiveVersion.version == archive.current_version,
                )
            ).scalar_one()
            return DerivationSource(
                archive_id=archive.id,
                media_type=version.media_type,
                version=version.version,
                commitment=version.commitment,
                record_class=archive.record_class,
                department=archive.department,
                trigger_date=archive.trigger_date.date(),
            )


def _recipient(value: str) -> str:
    """A member address (returned EIP-55) or a short code; 400 ``invalid_recipient`` otherwise."""
    value = value.strip()
    if value.startswith("0x"):
        try:
            return normalize_address(value)
        except IdentifierError:
            pass
    elif re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        return value
    raise InputError(
        "recipient must be a member address or a short code (letters, digits, '_', '.', '-')",
        code="invalid_recipient",
    )
