"""Who is calling, and what each role may do.

Roles: ``admin`` (API keys, configuration, reading alerts; no archive access), ``archivist``
(everything on archives, including recording batches of access events reported by hospital
systems, acknowledging alerts, running audits, reports),
``clinician`` (create, amend and read content — their own department only), ``auditor``
(metadata, events, proofs, alerts and reports; never content), ``records_manager`` (the second
pair of eyes of disposition: approves or rejects what an archivist proposed; reads metadata, events,
proofs, retention, alerts and reports; never content), ``regulator`` (a consortium member
signed in with its key: metadata, events, proofs, the access audit and regulator holds; never
content), ``insurer`` (a signed-in consortium member; what it may ask is added by the attestation
service). Which record an allowed role may read, for which purpose, is decided by the access
policy (``node.policy``). An archive outside the caller's scope is
reported as not found, so its existence does not leak.

An insurer is authenticated today by an API key bound to its member address
(``ApiKeyService.issue(Role.INSURER, name, member=address)``); member sign-in (EIP-4361) yields the
same ``Principal`` (role ``insurer``, ``member`` = the signed-in address), so the attestation
service does not care which door the insurer came through.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from anchoring.events import Purpose
from node.errors import NotFoundError, PermissionDeniedError


class Role(StrEnum):
    """API roles."""

    ADMIN = "admin"
    ARCHIVIST = "archivist"
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    RECORDS_MANAGER = "records_manager"
    REGULATOR = "regulator"
    """A consortium regulator signed in with its member key (EIP-4361; ``node.services.signin``)."""
    INSURER = "insurer"
    """A consortium insurer signed in with its member key."""


class Action(StrEnum):
    """What a caller may ask of the archive services."""

    CREATE = "create"
    AMEND = "amend"
    ARCHIVE = "archive"
    READ_METADATA = "read_metadata"
    READ_CONTENT = "read_content"
    READ_EVENTS = "read_events"
    READ_PROOF = "read_proof"
    HOLD = "hold"
    RECORD_ACCESS = "record_access"
    TRANSFER = "transfer"
    SHARE = "share"
    MANAGE_KEYS = "manage_keys"
    READ_ALERTS = "read_alerts"
    ACK_ALERTS = "ack_alerts"
    RUN_AUDITS = "run_audits"
    READ_REPORTS = "read_reports"
    EXTEND_RETENTION = "extend_retention"
    REPORT_ENCOUNTER = "report_encounter"
    READ_RETENTION = "read_retention"
    RUN_DISPOSITION = "run_disposition"
    PROPOSE_DISPOSITION = "propose_disposition"
    DECIDE_DISPOSITION = "decide_disposition"
    EXECUTE_DISPOSITION = "execute_disposition"
    RECLASSIFY = "reclassify"
    BREAK_GLASS = "break_glass"
    """Open a time-boxed emergency read of an archive outside the access policy."""
    READ_DENIALS = "read_denials"
    """See the access policy's denials and the break-glass report."""
    AUDIT_ACCESS = "audit_access"
    """Query access events across archives, patients, actors and time (regulator audit)."""
    REGULATOR_HOLD = "regulator_hold"
    """List, place and release regulator holds (the regulator's key signs)."""
    RECORD_CONSENT = "record_consent"
    REQUEST_ATTESTATION = "request_attestation"
    REVOKE_ATTESTATION = "revoke_attestation"
    DERIVE = "derive"
    MANAGE_TAGS = "manage_tags"
    RECORD_SCANS = "record_scans"
    READ_NOTICES = "read_notices"
    RESEND_NOTICES = "resend_notices"


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(
        {Action.MANAGE_KEYS, Action.READ_ALERTS, Action.READ_NOTICES, Action.RESEND_NOTICES}
    ),
    Role.ARCHIVIST: frozenset(
        set(Action)
        - {
            Action.MANAGE_KEYS,
            Action.DECIDE_DISPOSITION,
            Action.BREAK_GLASS,
            Action.AUDIT_ACCESS,
            Action.REGULATOR_HOLD,
            Action.REQUEST_ATTESTATION,
            Action.RESEND_NOTICES,
        }
    ),
    Role.CLINICIAN: frozenset(
        {
            Action.CREATE,
            Action.AMEND,
            Action.READ_METADATA,
            Action.READ_CONTENT,
            Action.BREAK_GLASS,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            Action.READ_METADATA,
            Action.READ_EVENTS,
            Action.READ_PROOF,
            Action.READ_ALERTS,
            Action.READ_REPORTS,
            Action.READ_DENIALS,
        }
    ),
    Role.RECORDS_MANAGER: frozenset(
        {
            Action.READ_METADATA,
            Action.READ_EVENTS,
            Action.READ_PROOF,
            Action.READ_RETENTION,
            Action.RUN_DISPOSITION,
            Action.DECIDE_DISPOSITION,
            Action.READ_ALERTS,
            Action.READ_REPORTS,
            Action.READ_DENIALS,
            Action.READ_NOTICES,
            Action.RESEND_NOTICES,
        }
    ),
    Role.REGULATOR: frozenset(
        {
            Action.READ_METADATA,
            Action.READ_EVENTS,
            Action.READ_PROOF,
            Action.AUDIT_ACCESS,
            Action.REGULATOR_HOLD,
        }
    ),
    Role.INSURER: frozenset({Action.REQUEST_ATTESTATION}),
}


_DEFAULT_PURPOSE: dict[Role, Purpose] = {
    Role.ADMIN: Purpose.OPERATIONS,
    Role.ARCHIVIST: Purpose.OPERATIONS,
    Role.CLINICIAN: Purpose.TREATMENT,
    Role.AUDITOR: Purpose.AUDIT,
    Role.RECORDS_MANAGER: Purpose.OPERATIONS,
    Role.REGULATOR: Purpose.AUDIT,
    Role.INSURER: Purpose.INSURANCE,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``actor`` is the keyed pseudonym written into events (for a
    consortium member signed in with EIP-4361: its member address). ``member`` and
    ``member_role`` are set only for such members (``member_role`` is the registry role name,
    e.g. ``REGULATOR``); ``token_id`` is then the id of the sign-in token (``key_id`` is 0)."""

    key_id: int
    name: str
    role: Role
    actor: str
    department: str | None = None
    member: str | None = None
    member_role: str | None = None
    token_id: str | None = None

    @property
    def is_member(self) -> bool:
        """Whether the caller acts for a consortium member: signed in with its key (EIP-4361),
        or an insurer's API key bound to its member address."""
        return self.member is not None

    def require(self, action: Action) -> None:
        """Refuse (403) an action the role never allows."""
        if action not in _ALLOWED[self.role]:
            raise PermissionDeniedError(f"role {self.role.value} may not {action.value}")

    @property
    def default_purpose(self) -> Purpose:
        """The purpose written into the ACCESS event of a metadata read that names none:
        clinicians read for treatment, auditors for audit, archive staff for operations."""
        return _DEFAULT_PURPOSE[self.role]

    @property
    def department_scoped(self) -> bool:
        """True when the caller only sees its own department's archives."""
        return self.role is Role.CLINICIAN

    def can_see(self, department: str) -> bool:
        """Whether an archive of ``department`` is inside the caller's scope."""
        return not self.department_scoped or department == self.department

    def require_visible(self, archive_id: str, department: str) -> None:
        """Answer as if the archive did not exist when it is outside the caller's scope."""
        if not self.can_see(department):
            raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
