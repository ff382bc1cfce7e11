"""Destruction notices to grantees, on both sides.

Custodian: when an archive is destroyed, every hospital that ever held a share grant on it gets a
``destruction_notices`` row, queued in the destruction's own unit of work (``queue``). The notice
job (``deliver_due``) POSTs each due row, signed like every node-to-node request, to
``/peer/v1/archives/{id}/destruction-notice`` and retries with exponential backoff (capped at an
hour) until the grantee accepts it (``delivered``) or refuses it for good (a 401/403/404:
``refused``, with the grantee's code). Rows survive restarts.

Grantee: ``receive`` accepts a notice only from the archive's custodian **on chain**, for an archive
the chain shows DESTROYED with the same certificate hash (before the chain shows it: 409
``not_destroyed``, the custodian retries); it appends a ``DESTRUCTION_NOTICE`` side event to this
node's log (``prev`` = the custodian's DESTROY leaf hash) and destroys any key copy this node holds
for the archive, in one unit of work. A repeated notice records nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from anchoring import storage
from anchoring.chainview import ChainReader, CustodyState
from anchoring.errors import AnchoringError
from anchoring.events import (
    DestructionNoticeData,
    DestructionNoticeEvent,
    EventType,
    ShareGrantEvent,
    parse_event,
)
from anchoring.ids import normalize_address
from node.alerts import AlertNotice, AlertSink, LoggingAlertSink, Severity
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import (
    ConflictError,
    InputError,
    NodeError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from node.keyring import KeyRing
from node.ledger import Ledger, normalise_id
from node.models import DestructionNotice
from node.peers import PeerRefusedError
from node.principal import Action, Principal
from node.remote import RemoteNodes

log = logging.getLogger(__name__)

PENDING, DELIVERED, REFUSED = "pending", "delivered", "refused"
NOTICE_STATES = (PENDING, DELIVERED, REFUSED)
REFUSED_ALERT = "destruction_notice_refused"
"""Alert kind raised when a grantee refuses a notice for good (subject ``archive:grantee``)."""
MAX_LIST = 1000
BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 100
FINAL_STATUSES = frozenset({401, 403, 404})
"""A grantee's answers that no retry can change (not a member, not the custodian, unknown
archive); anything else (409 not yet on chain, 5xx, unreachable) is retried."""

_HEX32 = r"^[0-9a-f]{64}$"


class NoticeBody(BaseModel):
    """The body of a destruction notice (no PHI: hashes only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate_hash: str = Field(pattern=_HEX32)
    destroy_event: str = Field(pattern=_HEX32)


@dataclass(frozen=True, slots=True)
class NoticeReceipt:
    """The grantee's answer: whether this notice was recorded now (or before)."""

    archive_id: str
    recorded: bool
    key_copies_destroyed: int


@dataclass(frozen=True, slots=True)
class NoticeView:
    """A queued destruction notice as the custodian sees it (no PHI: ids, addresses, codes)."""

    id: int
    archive_id: str
    grantee: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: DestructionNotice) -> NoticeView:
        return cls(
            row.id,
            row.archive_id,
            row.grantee,
            row.state,
            row.attempts,
            row.next_attempt_at,
            row.last_error,
            row.created_at,
            row.delivered_at,
        )


@dataclass
class DeliveryReport:
    """What one run of the notice job did."""

    delivered: int = 0
    refused: int = 0
    retried: int = 0


def grantees_ever(session: Session, archive_id: str) -> list[str]:
    """Every hospital that held a share grant on the archive, active or past (from the log)."""
    grantees = {
        event.data.grantee
        for entry in storage.entries_for_archive(session, archive_id)
        if entry.event_type == EventType.SHARE_GRANT.value
        and isinstance(event := parse_event(entry.event), ShareGrantEvent)
    }
    return sorted(grantees)


def grantees_ever_many(session: Session, archive_ids: Sequence[str]) -> dict[str, list[str]]:
    """``grantees_ever`` of many archives in one query (archives never shared are absent)."""
    found: dict[str, set[str]] = {}
    for archive_id, raw in session.execute(
        select(storage.LogEntry.archive_id, storage.LogEntry.event).where(
            storage.LogEntry.archive_id.in_(archive_ids),
            storage.LogEntry.event_type == EventType.SHARE_GRANT.value,
        )
    ).tuples():
        if isinstance(event := parse_event(raw), ShareGrantEvent):
            found.setdefault(archive_id, set()).add(event.data.grantee)
    return {archive_id: sorted(grantees) for archive_id, grantees in found.items()}


class DestructionNoticeService:
    """Queues, sends and receives destruction notices."""

    def __init__(
        self,
        *,
        hospital: str,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        keyring: KeyRing,
        remote: RemoteNodes,
        chain: ChainReader,
        alerts: AlertSink | None = None,
    ) -> None:
        self.hospital = hospital
        self.alerts: AlertSink = alerts or LoggingAlertSink()
        self.db = db
        self.units = units
        self.ledger = ledger
        self.keyring = keyring
        self.remote = remote
        self.chain = chain

    # -- the custodian's side ------------------------------------------------------------------

    @staticmethod
    def queue(
        session: Session,
        archive_id: str,
        certificate_hash: str,
        destroy_event: str,
        now: datetime,
    ) -> int:
        """Queue a notice to every grantee the archive ever had (inside the destruction's unit)."""
        grantees = grantees_ever(session, archive_id)
        for grantee in grantees:
            session.add(
                DestructionNotice(
                    archive_id=archive_id,
                    grantee=grantee,
                    certificate_hash=certificate_hash,
                    destroy_event=destroy_event,
                    state=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        return len(grantees)

    @staticmethod
    def queue_many(
        session: Session, destroyed: Sequence[tuple[str, str, str]], now: datetime
    ) -> int:
        """``queue`` for many destroyed archives ``(archive id, certificate hash, DESTROY leaf
        hash)`` in one query and one insert (inside the destruction's unit)."""
        grantees = grantees_ever_many(session, [archive_id for archive_id, _, _ in destroyed])
        rows = [
            {
                "archive_id": archive_id,
                "grantee": grantee,
                "certificate_hash": certificate_hash,
                "destroy_event": destroy_event,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for archive_id, certificate_hash, destroy_event in destroyed
            for grantee in grantees.get(archive_id, ())
        ]
        if rows:
            session.execute(insert(cast(Table, DestructionNotice.__table__)), rows)
        return len(rows)

    def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """Send every due notice once (scheduler job). A grantee's lasting refusal ends the row;
        anything else moves it back with exponential backoff."""
        report = DeliveryReport()
        with self.db.session() as session:
            query = select(DestructionNotice).where(
                DestructionNotice.state == PENDING,
                DestructionNotice.next_attempt_at <= (now or datetime.now(UTC)),
            )
            rows = [
                (row.id, row.archive_id, row.grantee, row.certificate_hash, row.destroy_event)
                for row in session.execute(query.order_by(DestructionNotice.id).limit(BATCH))
                .scalars()
                .all()
            ]
        for row_id, archive_id, grantee, certificate_hash, destroy_event in rows:
            body = NoticeBody(certificate_hash=certificate_hash, destroy_event=destroy_event)
            error: str | None = None
            final = False
            try:
                self.remote.post_json(
                    grantee, f"/archives/{archive_id}/destruction-notice", body.model_dump()
                )
            except PeerRefusedError as exc:
                error, final = f"{exc.status} {exc.peer_code}", exc.status in FINAL_STATUSES
            except (UnavailableError, NotFoundError) as exc:  # down, or no URL configured yet
                error = f"{exc.code}: {exc}"[:200]
            self._record(row_id, error, final)
            if error is None:
                report.delivered += 1
            elif final:
                report.refused += 1
                log.warning("destruction notice %d refused by %s: %s", row_id, grantee, error)
                self.alerts.raise_alert(
                    AlertNotice(
                        kind=REFUSED_ALERT,
                        subject=f"{archive_id}:{grantee}",
                        severity=Severity.WARNING,
                        detail={"notice": row_id, "grantee": grantee, "error": error or ""},
                    )
                )
            else:
                report.retried += 1
        return report

    def _record(self, row_id: int, error: str | None, final: bool) -> None:
        def unit(uow: UnitOfWork) -> None:
            self._update(uow, row_id, error, final)

        self.units.run(unit)

    @staticmethod
    def _update(uow: UnitOfWork, row_id: int, error: str | None, final: bool) -> None:
        row = uow.session.get_one(DestructionNotice, row_id)
        row.attempts += 1
        row.last_error = error
        if error is None:
            row.state, row.delivered_at = DELIVERED, uow.now
        elif final:
            row.state = REFUSED
        else:
            delay = min(BACKOFF_SECONDS * 2 ** (row.attempts - 1), MAX_BACKOFF_SECONDS)
            row.next_attempt_at = uow.now + timedelta(seconds=delay)

    def list_notices(
        self, principal: Principal, state: str | None = None, limit: int = 200
    ) -> list[NoticeView]:
        """Queued notices, newest first, optionally of one state."""
        principal.require(Action.READ_NOTICES)
        if state is not None and state not in NOTICE_STATES:
            raise InputError(
                f"state must be one of {', '.join(NOTICE_STATES)}", code="invalid_state"
            )
        if not 1 <= limit <= MAX_LIST:
            raise InputError(f"limit must be 1 to {MAX_LIST}", code="invalid_limit")
        query = select(DestructionNotice)
        if state is not None:
            query = query.where(DestructionNotice.state == state)
        with self.db.session() as session:
            rows = session.execute(query.order_by(DestructionNotice.id.desc()).limit(limit))
            return [NoticeView.of(row) for row in rows.scalars()]

    def resend(self, principal: Principal, notice_id: int) -> NoticeView:
        """Send a refused notice again: back to ``pending``, due now (the grantee may have been
        fixed: a peer URL, membership, its copy of the chain). Other states answer 409
        ``notice_not_refused``."""
        principal.require(Action.RESEND_NOTICES)

        def unit(uow: UnitOfWork) -> NoticeView:
            row = uow.session.get(DestructionNotice, notice_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"notice {notice_id} not found", code="notice_not_found")
            if row.state != REFUSED:
                raise ConflictError(
                    f"notice {notice_id} is {row.state}: only a refused notice is sent again",
                    code="notice_not_refused",
                )
            row.state = PENDING
            row.next_attempt_at = uow.now
            return NoticeView.of(row)

        return self.units.run(unit)

    # -- the grantee's side --------------------------------------------------------------------

    def receive(self, sender: str, archive_id: str, body: NoticeBody) -> NoticeReceipt:
        """Record a verified peer's notice, if it is the archive's custodian on chain and the
        chain shows the archive destroyed with this certificate hash."""
        sender = normalize_address(sender)
        archive_id = normalise_id(archive_id)
        try:
            custody = self.chain.custody(archive_id)
        except (AnchoringError, NodeError) as exc:
            raise UnavailableError(f"the chain could not be read: {exc}") from None
        if custody.state is CustodyState.NONE:
            raise NotFoundError(f"archive {archive_id} is unknown", code="archive_not_found")
        if normalize_address(custody.custodian) != sender:
            raise PermissionDeniedError(
                f"{sender} is not the custodian of archive {archive_id}", code="not_custodian"
            )
        if custody.state is not CustodyState.DESTROYED:
            raise ConflictError(
                f"the chain does not show archive {archive_id} destroyed", code="not_destroyed"
            )
        if custody.certificate_hash.hex() != body.certificate_hash:
            raise ConflictError(
                "the certificate hash differs from the chain's", code="certificate_mismatch"
            )

        def unit(uow: UnitOfWork) -> NoticeReceipt:
            destroyed = self.keyring.destroy(uow.session, archive_id, uow.now)
            for entry in storage.entries_for_archive(uow.session, archive_id):
                if entry.event_type == EventType.DESTRUCTION_NOTICE.value:
                    return NoticeReceipt(archive_id, False, destroyed)
            event = DestructionNoticeEvent(
                hospital=self.hospital,
                log_index=uow.log.size,
                archive_id=archive_id,
                actor=sender,
                time=uow.now,
                prev=body.destroy_event,
                data=DestructionNoticeData(certificate_hash=body.certificate_hash),
            )
            self.ledger.append_side_event(uow, event)
            return NoticeReceipt(archive_id, True, destroyed)

        return self.units.run(unit)
