"""API keys: created once (the plaintext is shown once and stored only as a hash), looked up by
hash on every request, revoked by id. An insurer key is issued only for an active INSURER member of
the consortium (read from the registry at issue time; each request checks again)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from anchoring.chain import Role as MemberRole
from anchoring.ids import IdentifierError, normalize_address
from node import crypto
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import AuthenticationError, ConflictError, InputError, NotFoundError
from node.members import MemberDirectory
from node.models import ApiKey
from node.principal import Action, Principal, Role
from node.pseudonyms import Pseudonyms

KEY_PREFIX_CHARS = 10


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """An API key's public description (never its secret)."""

    id: int
    name: str
    prefix: str
    role: Role
    department: str | None
    created_at: datetime
    revoked_at: datetime | None
    member: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: ``secret`` is returned once and never stored."""

    key: ApiKeyView
    secret: str


def _view(row: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=Role(row.role),
        department=row.department,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        member=row.member,
    )


class ApiKeyService:
    """Issue, authenticate, list and revoke API keys."""

    def __init__(
        self, *, db: Database, units: UnitRunner, pseudonyms: Pseudonyms, members: MemberDirectory
    ) -> None:
        self.db = db
        self.units = units
        self.pseudonyms = pseudonyms
        self.members = members

    def issue(
        self, role: Role, name: str, department: str | None = None, member: str | None = None
    ) -> IssuedKey:
        """Create a key (no caller check: used by the CLI and by ``issue_as``). An ``insurer`` key
        names the insurer's member address (``member``), which must be an active INSURER member
        on chain now (409 ``not_active_insurer`` otherwise: a hospital, the regulator, a stranger,
        a suspended insurer; 503 when the registry cannot be read); no other key names one."""
        name = name.strip()
        if not name or len(name) > 64:
            raise InputError("key name must be 1 to 64 characters", code="invalid_key_name")
        if role is Role.REGULATOR:
            raise InputError(
                "regulators sign in with their member key (EIP-4361), not API keys",
                code="member_role",
            )
        if role is Role.CLINICIAN and not department:
            raise InputError("a clinician key needs a department", code="department_required")
        if role is not Role.CLINICIAN and department:
            raise InputError(
                "only clinician keys carry a department", code="department_not_allowed"
            )
        if role is Role.INSURER:
            try:
                member = normalize_address(member or "")
            except IdentifierError:
                raise InputError(
                    "an insurer key needs the insurer's member address", code="member_required"
                ) from None
            if not self.members.is_active(member, MemberRole.INSURER):
                raise ConflictError(
                    f"{member} is not an active insurer member of the consortium",
                    code="not_active_insurer",
                )
        elif member:
            raise InputError("only insurer keys carry a member address", code="member_not_allowed")
        secret = crypto.generate_api_key()
        actor = self.pseudonyms.staff(name)

        def unit(uow: UnitOfWork) -> ApiKeyView:
            row = ApiKey(
                name=name,
                key_hash=crypto.hash_api_key(secret),
                prefix=secret[:KEY_PREFIX_CHARS],
                role=role.value,
                department=department,
                actor_id=actor,
                created_at=uow.now,
                member=member,
            )
            uow.session.add(row)
            uow.session.flush()
            return _view(row)

        return IssuedKey(key=self.units.run(unit), secret=secret)

    def issue_as(
        self,
        principal: Principal,
        role: Role,
        name: str,
        department: str | None = None,
        member: str | None = None,
    ) -> IssuedKey:
        """Create a key on behalf of an admin."""
        principal.require(Action.MANAGE_KEYS)
        return self.issue(role, name, department, member)

    def authenticate(self, secret: str) -> Principal:
        """The principal of a bearer key; unknown or revoked keys are refused alike."""
        if not secret or len(secret) > 256:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        digest = crypto.hash_api_key(secret)
        with self.db.session() as session:
            row = session.execute(
                select(ApiKey).where(ApiKey.key_hash == digest)
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        return Principal(
            key_id=row.id,
            name=row.name,
            role=Role(row.role),
            actor=row.actor_id,
            department=row.department,
            member=row.member,
        )

    def list(self, principal: Principal) -> list[ApiKeyView]:
        """Every key, newest first."""
        principal.require(Action.MANAGE_KEYS)
        with self.db.session() as session:
            rows = session.execute(select(ApiKey).order_by(ApiKey.id.desc())).scalars()
            return [_view(row) for row in rows]

    def revoke(self, principal: Principal, key_id: int) -> ApiKeyView:
        """Revoke a key (idempotent); an admin cannot revoke the key it is using."""
        principal.require(Action.MANAGE_KEYS)
        if key_id == principal.key_id:
            raise InputError("an admin cannot revoke its own key", code="revoke_self")

        def unit(uow: UnitOfWork) -> ApiKeyView:
            row = uow.session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"API key {key_id} not found", code="key_not_found")
            if row.revoked_at is None:
                row.revoked_at = uow.now
            return _view(row)

        return self.units.run(unit)
