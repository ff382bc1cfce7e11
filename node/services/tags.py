"""Smart tags bound to archives: TAG_BIND when a QR label or an RFID tag is attached to an
archive's folder or box, TAG_SCAN for each scan a reader or handheld reports, the last-seen
location per tag, and refused scans (unbound or revoked tags) counted.

A tag is known by its ``tag_hash`` (docs/proof-format.md §4.3). A bulk of scans of one tag is one
unit of work: every TAG_SCAN of the bulk commits together, or none does. A scan of a tag not
bound here, or revoked, logs no event; the refusal is stored (``tag_scan_refusals``) and the
call answers 409 ``tag_unbound`` / ``tag_revoked``. Revocation is local to the node (the TAG_BIND
event stays in the log; the proof format has no revocation event).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import func, select

from anchoring.events import (
    TagBindData,
    TagBindEvent,
    TagKind,
    TagScanData,
    TagScanEvent,
    tag_hash,
)
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import ConflictError, InputError, NotFoundError
from node.ledger import Ledger
from node.models import Tag, TagScanRefusal
from node.principal import Action, Principal

MAX_SCANS: Final = 1000
ScanRefusal = Literal["unbound", "revoked"]
"""Why a scan was refused (``tag_scan_refusals.reason``): no tag bound to the hash, or revoked."""
"""Scans in one bulk report at most."""
CODE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")
"""Reader ids and locations are codes (``reader-7``, ``B2/shelf-14``): never free text."""


@dataclass(frozen=True)
class Scan:
    """One reported scan: which reader, where, when (the reader's clock)."""

    reader: str
    location: str
    time: datetime


@dataclass(frozen=True)
class TagView:
    """A bound tag and where it was last seen."""

    tag_hash: str
    kind: str
    archive_id: str
    label: str
    bound_at: datetime
    revoked: bool
    scan_count: int
    last_seen_at: datetime | None
    last_location: str | None
    last_reader: str | None

    @classmethod
    def of(cls, row: Tag) -> TagView:
        return cls(
            tag_hash=row.tag_hash,
            kind=row.kind,
            archive_id=row.archive_id,
            label=row.label,
            bound_at=row.bound_at,
            revoked=row.revoked_at is not None,
            scan_count=row.scan_count,
            last_seen_at=row.last_seen_at,
            last_location=row.last_location,
            last_reader=row.last_reader,
        )


def check_code(value: str, what: str) -> str:
    if not CODE.fullmatch(value):
        raise InputError(
            f"{what} must be a code of 1-64 letters, digits and _.:/- (no free text)",
            code="invalid_code",
        )
    return value


class TagService:
    """Binds tags, records scans, answers where a tag was last seen."""

    def __init__(
        self,
        *,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        reader_pseudonym: Callable[[str], str],
    ) -> None:
        self.db = db
        self.units = units
        self.ledger = ledger
        self.reader_pseudonym = reader_pseudonym

    def bind(
        self, principal: Principal, archive_id: str, kind: TagKind, payload: bytes, label: str
    ) -> TagView:
        """Log TAG_BIND for the tag whose payload is ``payload`` (QR text bytes or binary EPC)."""
        principal.require(Action.MANAGE_TAGS)
        digest = tag_hash(kind, payload)

        def unit(uow: UnitOfWork) -> TagView:
            existing = uow.session.get(Tag, digest)
            if existing is not None:
                raise ConflictError(
                    f"tag {digest} is already bound to archive {existing.archive_id}",
                    code="tag_bound",
                )
            archive = self.ledger.held(uow.session, principal, archive_id)
            state = self.ledger.state(uow.session, archive)
            data = TagBindData(tag_kind=kind, tag_hash=digest)
            self.ledger.record(uow, archive, state, TagBindEvent, principal.actor, data)
            row = Tag(
                tag_hash=digest,
                kind=kind.value,
                archive_id=archive.id,
                label=label,
                bound_at=uow.now,
                scan_count=0,
            )
            uow.session.add(row)
            return TagView.of(row)

        return self.units.run(unit)

    def revoke(self, principal: Principal, digest: str) -> TagView:
        """Refuse this tag's scans from now on (a lost or damaged label)."""
        principal.require(Action.MANAGE_TAGS)

        def unit(uow: UnitOfWork) -> TagView:
            row = uow.session.get(Tag, digest.lower())
            if row is None:
                raise NotFoundError(f"tag {digest} is not bound here", code="tag_not_found")
            if row.revoked_at is None:
                row.revoked_at = uow.now
            return TagView.of(row)

        return self.units.run(unit)

    def record_scans(self, principal: Principal, digest: str, scans: Sequence[Scan]) -> TagView:
        """Log one TAG_SCAN per scan (one unit of work) and move the tag's last-seen place."""
        principal.require(Action.RECORD_SCANS)
        digest = digest.lower()
        if not 1 <= len(scans) <= MAX_SCANS:
            raise InputError(f"send 1 to {MAX_SCANS} scans", code="invalid_scans")
        for scan in scans:
            check_code(scan.reader, "reader")
            check_code(scan.location, "location")

        def unit(uow: UnitOfWork) -> TagView | str:
            row = uow.session.get(Tag, digest)
            refusal: ScanRefusal | None = (
                "unbound" if row is None else "revoked" if row.revoked_at else None
            )
            if row is None or refusal is not None:
                for scan in scans:  # counted, in this unit, then refused after it commits
                    uow.session.add(
                        TagScanRefusal(
                            tag_hash=digest,
                            reason=refusal or "unbound",
                            reader=scan.reader,
                            location=scan.location,
                            refused_at=uow.now,
                        )
                    )
                return refusal or "unbound"
            archive = self.ledger.held(uow.session, principal, row.archive_id)
            state = self.ledger.state(uow.session, archive)
            for scan in scans:
                data = TagScanData(tag_hash=digest, reader=self.reader_pseudonym(scan.reader))
                state = self.ledger.record(uow, archive, state, TagScanEvent, principal.actor, data)
            newest = max(scans, key=lambda s: s.time)
            if row.last_seen_at is None or newest.time >= row.last_seen_at:
                row.last_seen_at = newest.time
                row.last_location = newest.location
                row.last_reader = newest.reader
            row.scan_count += len(scans)
            return TagView.of(row)

        result = self.units.run(unit)
        if isinstance(result, str):
            raise ConflictError(
                f"tag {digest} is {'revoked' if result == 'revoked' else 'not bound here'}: "
                f"{len(scans)} scan(s) refused and counted",
                code=f"tag_{result}",
            )
        return result

    def tags_of(self, principal: Principal, archive_id: str) -> list[TagView]:
        principal.require(Action.READ_METADATA)
        with self.db.session() as session:
            archive = self.ledger.visible(session, principal, archive_id)
            rows = session.execute(
                select(Tag).where(Tag.archive_id == archive.id).order_by(Tag.bound_at)
            ).scalars()
            return [TagView.of(r) for r in rows]

    def get(self, principal: Principal, digest: str) -> TagView:
        principal.require(Action.READ_METADATA)
        with self.db.session() as session:
            row = session.get(Tag, digest.lower())
            if row is None:
                raise NotFoundError(f"tag {digest} is not bound here", code="tag_not_found")
            self.ledger.visible(session, principal, row.archive_id)
            return TagView.of(row)

    def refusals(self) -> dict[str, int]:
        """Refused scans so far, by reason."""
        with self.db.session() as session:
            rows = session.execute(
                select(TagScanRefusal.reason, func.count()).group_by(TagScanRefusal.reason)
            ).all()
            return {str(reason): int(count) for reason, count in rows}
