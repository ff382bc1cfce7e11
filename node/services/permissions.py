"""The access gate: every read of an archive's content or metadata is judged here, once, by the
policy table (``node.policy``), with break-glass as the only way around it.

- ``check`` asks the policy; an allowed read goes on; a denied one is recorded (table
  ``access_denials``: countable in ``/metrics`` as ``archivechain_access_denials``, listed for
  auditors, never a chain event) and refused — 404 for a department-bound caller on another
  department's record (its existence does not leak, as before the policy), 403 ``policy_denied``
  otherwise — unless the caller has an open break-glass window on that archive for that purpose.
- ``open_break_glass``: a clinician states a reason (mandatory) and opens a window of
  ``break_glass_hours`` (default 4) on one archive held here: a BREAK_GLASS event is logged, the
  privacy officer gets a ``break_glass`` alert, and each read in the window is an ACCESS with
  ``break_glass`` true and the window's ``reason_hash``. ``break_glass_report`` lists windows
  with their read counts for the privacy officer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from anchoring.events import BreakGlassData, BreakGlassEvent, Purpose, Sensitivity
from node.alerts import AlertNotice, AlertSink, Severity
from node.config import NodeSettings
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import InputError, NotFoundError, PermissionDeniedError
from node.ledger import Ledger
from node.models import AccessDenial, BreakGlassWindow
from node.policy import AccessPolicy, PolicyAction, Relation, relation
from node.principal import Action, Principal

MIN_REASON_CHARS = 10
MAX_REASON_CHARS = 2000
MAX_ROWS = 1000


class Origin:
    """Where the record read comes from (recorded with a denial)."""

    LOCAL = "local"
    """Held here: created here or received by transfer."""
    SHARED = "shared"
    """Read at this node as the grantee of another hospital's share."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """An allowed read: by the policy (``rule``), or by break-glass (``reason_hash`` set)."""

    rule: str
    reason_hash: str | None = None
    window_id: int | None = None

    @property
    def break_glass(self) -> bool:
        """Whether the read is allowed only by a break-glass window."""
        return self.reason_hash is not None


@dataclass(frozen=True, slots=True)
class WindowView:
    """A break-glass window as the report shows it."""

    id: int
    archive_id: str
    actor: str
    name: str
    department: str | None
    purpose: Purpose
    reason: str
    reason_hash: str
    event_hash: str
    opened_at: datetime
    expires_at: datetime
    reads: int

    @classmethod
    def of(cls, row: BreakGlassWindow) -> WindowView:
        return cls(
            id=row.id,
            archive_id=row.archive_id,
            actor=row.actor,
            name=row.name,
            department=row.department,
            purpose=Purpose(row.purpose),
            reason=row.reason,
            reason_hash=row.reason_hash,
            event_hash=row.event_hash,
            opened_at=row.opened_at,
            expires_at=row.expires_at,
            reads=row.reads,
        )


@dataclass(frozen=True, slots=True)
class DenialView:
    """One recorded denial (no PHI: pseudonyms, codes, the archive id)."""

    id: int
    time: datetime
    actor: str
    role: str
    department: str | None
    archive_id: str
    action: str
    purpose: str
    sensitivity: str
    relation: str
    origin: str
    rule: str


class AccessGate:
    """The policy, the denial record and break-glass windows."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        ledger: Ledger,
        alerts: AlertSink,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.policy = AccessPolicy(settings.access_policy)
        self.db = db
        self.units = units
        self.ledger = ledger
        self.alerts = alerts
        self.clock = clock

    # -- judging reads --------------------------------------------------------------------------

    def check(
        self,
        principal: Principal,
        *,
        archive_id: str,
        sensitivity: Sensitivity | str,
        department: str,
        purpose: Purpose,
        action: PolicyAction,
        origin: str = Origin.LOCAL,
    ) -> Verdict:
        """Allow (``Verdict``) or refuse one read; see the module docstring."""
        sensitivity = Sensitivity(sensitivity)
        rel = relation(principal.department, department)
        decision = self.policy.decide(principal.role, sensitivity, rel, purpose, action)
        if decision.allowed:
            return Verdict(rule=decision.rule)
        if origin == Origin.LOCAL:
            window = self._open_window(principal.actor, archive_id, purpose)
            if window is not None:
                return Verdict(
                    rule="break_glass", reason_hash=window.reason_hash, window_id=window.id
                )
        self._record_denial(
            principal, archive_id, sensitivity, rel, purpose, action, origin, decision.rule
        )
        if principal.department_scoped and rel is Relation.OTHER:
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
        raise PermissionDeniedError(
            f"the access policy does not allow role {principal.role.value} to "
            f"{action.value.replace('_', ' ')} of a {sensitivity.value} record "
            f"(department relation {rel.value}) for purpose {purpose.value} "
            f"(rule {decision.rule})",
            code="policy_denied",
        )

    def _open_window(
        self, actor: str, archive_id: str, purpose: Purpose
    ) -> BreakGlassWindow | None:
        now = self.clock()
        with self.db.session() as session:
            row = session.execute(
                select(BreakGlassWindow)
                .where(
                    BreakGlassWindow.actor == actor,
                    BreakGlassWindow.archive_id == archive_id,
                    BreakGlassWindow.purpose == purpose.value,
                    BreakGlassWindow.expires_at > now,
                )
                .order_by(BreakGlassWindow.expires_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            if row is not None:
                session.expunge(row)
            return row

    def _record_denial(
        self,
        principal: Principal,
        archive_id: str,
        sensitivity: Sensitivity,
        rel: Relation,
        purpose: Purpose,
        action: PolicyAction,
        origin: str,
        rule: str,
    ) -> None:
        def unit(uow: UnitOfWork) -> None:
            uow.session.add(
                AccessDenial(
                    time=uow.now,
                    actor=principal.actor,
                    role=principal.role.value,
                    department=principal.department,
                    archive_id=archive_id,
                    action=action.value,
                    purpose=purpose.value,
                    sensitivity=sensitivity.value,
                    relation=rel.value,
                    origin=origin,
                    rule=rule,
                )
            )

        self.units.run(unit)

    def count_read(self, uow: UnitOfWork, verdict: Verdict) -> None:
        """Count a break-glass read on its window (inside the read's unit of work)."""
        if verdict.window_id is not None:
            row = uow.session.get(BreakGlassWindow, verdict.window_id)
            if row is not None:
                row.reads += 1

    # -- break-glass ----------------------------------------------------------------------------

    def open_break_glass(
        self,
        principal: Principal,
        archive_id: str,
        reason: str,
        purpose: Purpose = Purpose.TREATMENT,
    ) -> WindowView:
        """Open a time-boxed window of reads outside the policy (see the module docstring)."""
        principal.require(Action.BREAK_GLASS)
        reason = (reason or "").strip()
        if not MIN_REASON_CHARS <= len(reason) <= MAX_REASON_CHARS:
            raise InputError(
                f"break-glass needs a reason of {MIN_REASON_CHARS} to {MAX_REASON_CHARS} "
                "characters",
                code="reason_required",
            )
        reason_hash = hashlib.sha256(reason.encode("utf-8")).hexdigest()
        hours = timedelta(hours=self.settings.break_glass_hours)

        def unit(uow: UnitOfWork) -> WindowView:
            archive = self.ledger.held(uow.session, None, archive_id)
            state = self.ledger.state(uow.session, archive)
            expires = uow.now + hours
            after = self.ledger.record(
                uow,
                archive,
                state,
                BreakGlassEvent,
                principal.actor,
                BreakGlassData(reason_hash=reason_hash, purpose=purpose, expires_at=expires),
            )
            row = BreakGlassWindow(
                archive_id=archive.id,
                actor=principal.actor,
                name=principal.name,
                department=principal.department,
                purpose=purpose.value,
                reason=reason,
                reason_hash=reason_hash,
                event_hash=after.head,
                opened_at=uow.now,
                expires_at=expires,
                reads=0,
            )
            uow.session.add(row)
            uow.session.flush()
            return WindowView.of(row)

        window = self.units.run(unit)
        self.alerts.raise_alert(
            AlertNotice(
                kind="break_glass",
                subject=window.archive_id,
                severity=Severity.WARNING,
                detail={
                    "actor": window.actor,
                    "department": window.department or "",
                    "purpose": window.purpose.value,
                    "window": window.id,
                    "expires_at": window.expires_at.isoformat(),
                },
            )
        )
        return window

    def break_glass_report(
        self, principal: Principal, since: datetime | None = None, until: datetime | None = None
    ) -> list[WindowView]:
        """Break-glass windows opened in ``[since, until)``, newest first, with read counts."""
        principal.require(Action.READ_DENIALS)
        query = select(BreakGlassWindow).order_by(BreakGlassWindow.opened_at.desc())
        if since is not None:
            query = query.where(BreakGlassWindow.opened_at >= since)
        if until is not None:
            query = query.where(BreakGlassWindow.opened_at < until)
        with self.db.session() as session:
            return [WindowView.of(r) for r in session.execute(query.limit(MAX_ROWS)).scalars()]

    # -- denials for auditors -------------------------------------------------------------------

    def denials(
        self,
        principal: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor: str | None = None,
        archive_id: str | None = None,
        limit: int = 100,
    ) -> list[DenialView]:
        """Recorded denials, newest first."""
        principal.require(Action.READ_DENIALS)
        if not 1 <= limit <= MAX_ROWS:
            raise InputError(f"limit must be between 1 and {MAX_ROWS}", code="invalid_page")
        query = select(AccessDenial).order_by(AccessDenial.id.desc()).limit(limit)
        if since is not None:
            query = query.where(AccessDenial.time >= since)
        if until is not None:
            query = query.where(AccessDenial.time < until)
        if actor:
            query = query.where(AccessDenial.actor == actor)
        if archive_id:
            query = query.where(AccessDenial.archive_id == archive_id.strip().upper())
        with self.db.session() as session:
            return [
                DenialView(
                    id=r.id,
                    time=r.time,
                    actor=r.actor,
                    role=r.role,
                    department=r.department,
                    archive_id=r.archive_id,
                    action=r.action,
                    purpose=r.purpose,
                    sensitivity=r.sensitivity,
                    relation=r.relation,
                    origin=r.origin,
                    rule=r.rule,
                )
                for r in session.execute(query).scalars()
            ]

    def denial_counts(self) -> dict[tuple[str, str, str], int]:
        """Denials ever recorded, by (role, action, rule): the ``/metrics`` counter."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    AccessDenial.role, AccessDenial.action, AccessDenial.rule, func.count()
                ).group_by(AccessDenial.role, AccessDenial.action, AccessDenial.rule)
            ).all()
        return {(role, action, rule): int(count) for role, action, rule, count in rows}
