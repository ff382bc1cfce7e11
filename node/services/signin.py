"""Member sign-in (EIP-4361, "Sign-In with Ethereum"): a consortium member — a regulator, an
insurer, optionally an auditor — proves control of its registry key and gets a short-lived bearer
token for this node. API keys stay for in-hospital staff and systems.

1. ``challenge()``: a fresh nonce (stored, answerable once until it expires) and the values the
   member's message must carry: this node's ``domain`` and ``uri``, the chain id, the role resource.
2. ``verify(message, signature)``: the message is parsed by the ``siwe`` package and strictly
   (``node.siwe``); then domain, uri, chain id, times, the role resource, the nonce (consumed in
   the transaction that issues the token: a replay finds it used, also after a restart) and the
   registry (active member with that role, a role this node admits); the EIP-191 signature is
   verified by ``siwe`` (``SiweMessage.verify``) after the time checks.
3. The token is opaque (``acm_`` + 256 random bits); the node stores its SHA-256 with its claims
   (``sub`` member address, ``role``, ``aud`` this hospital's address, ``iat``, ``exp``, ``jti``,
   the registry key's fingerprint). Every use checks expiry, revocation and the registry again:
   a suspended member, a changed role or a rotated public key ends every token of the member.

docs/regulators.md specifies the protocol for independent clients.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from ulid import ULID

from anchoring.chain import MemberRecord
from anchoring.chain import Role as RegistryRole
from anchoring.ids import IdentifierError, normalize_address
from node.config import NodeSettings
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import (
    AuthenticationError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from node.members import MemberDirectory
from node.models import MemberToken, SigninNonce
from node.principal import Action, Principal, Role
from node.siwe import SiweFormatError, SiweMessage, parse_message, parse_time, verify_signature

TOKEN_PREFIX = "acm_"  # noqa: S105 (a prefix, not a secret)
"""Every member token starts with this (API keys start with ``ack_``)."""
ROLE_RESOURCE = "urn:archivechain:role:"
"""The message's ``resources`` must hold exactly one ``urn:archivechain:role:<role>``."""
STATEMENT = "Sign in to an ArchiveChain hospital node as a consortium member."
MAX_MESSAGE_CHARS = 4096
MAX_OPEN_CHALLENGES = 10_000
"""Unanswered, unexpired challenges allowed at once: the challenge route needs no credential, so
this bounds what anonymous callers can make the node store (503 ``too_many_challenges``)."""
CLOCK_SKEW = timedelta(minutes=2)
"""How far a message's ``issued-at`` may lie in the node's future (client clocks drift)."""
_NONCE = re.compile(r"[A-Za-z0-9]{16,64}")

NODE_ROLES: dict[RegistryRole, Role] = {
    RegistryRole.REGULATOR: Role.REGULATOR,
    RegistryRole.INSURER: Role.INSURER,
    RegistryRole.AUDITOR: Role.AUDITOR,
}
"""The node role a signed-in member acts in, by registry role (hospitals sign node-to-node
requests instead: /peer/v1)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a member needs to write its EIP-4361 message."""

    nonce: str
    domain: str
    uri: str
    chain_id: int
    version: str
    statement: str
    issued_at: datetime
    expires_at: datetime
    audience: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token and its claims; the token is shown once and stored only as a hash."""

    token: str
    jti: str
    member: str
    role: str
    audience: str
    issued_at: datetime
    expires_at: datetime


def fingerprint(public_key: bytes) -> str:
    """SHA-256 (hex) of a member's registered public key: a rotation changes it."""
    return hashlib.sha256(public_key).hexdigest()


def hash_token(token: str) -> str:
    """SHA-256 (hex) of a token: the only form stored (256 random bits need no salt)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SigninService:
    """Challenges, verification, token authentication and revocation."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        members: MemberDirectory,
        chain_id: Callable[[], int],
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.members = members
        self.chain_id = chain_id
        self.clock = clock
        self.audience = members.me
        self.domain = settings.resolved_signin_domain
        self.uri = settings.base_url

    # -- challenge ------------------------------------------------------------------------------

    def challenge(self) -> Challenge:
        """A new nonce, stored until it is used or expires (expired ones are purged here)."""
        nonce = secrets.token_hex(16)
        now = self.clock()
        expires = now + timedelta(minutes=self.settings.signin_nonce_minutes)

        def unit(uow: UnitOfWork) -> None:
            uow.session.execute(
                delete(SigninNonce).where(SigninNonce.expires_at < now - timedelta(days=1))
            )
            open_now = uow.session.execute(
                select(func.count())
                .select_from(SigninNonce)
                .where(SigninNonce.expires_at > now, SigninNonce.used_at.is_(None))
            ).scalar_one()
            if open_now >= MAX_OPEN_CHALLENGES:
                raise UnavailableError(
                    "too many open sign-in challenges; retry later", code="too_many_challenges"
                )
            uow.session.add(SigninNonce(nonce=nonce, issued_at=now, expires_at=expires))

        self.units.run(unit)
        return Challenge(
            nonce=nonce,
            domain=self.domain,
            uri=self.uri,
            chain_id=self.chain_id(),
            version="1",
            statement=STATEMENT,
            issued_at=now,
            expires_at=expires,
            audience=self.audience,
        )

    # -- verify ---------------------------------------------------------------------------------

    def verify(self, message: str, signature: str) -> IssuedToken:
        """Check a signed EIP-4361 message and issue a token (see the module docstring)."""
        parsed = self._parse(message)
        now = self.clock()
        self._check_message(parsed, signature, now)
        address = normalize_address(parsed.address)
        wanted = _role_resource(parsed.resources)
        member = self.members.member(address)
        self._check_member(member, wanted)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        jti = str(ULID())
        expires = now + timedelta(minutes=self.settings.signin_token_minutes)
        if parsed.expiration_time is not None:  # never outlive the signed message
            expires = min(expires, parse_time(parsed.expiration_time))
        nonce = parsed.nonce
        key = fingerprint(bytes(member.public_key))

        def unit(uow: UnitOfWork) -> None:
            consumed = uow.session.execute(
                update(SigninNonce)
                .where(
                    SigninNonce.nonce == nonce,
                    SigninNonce.used_at.is_(None),
                    SigninNonce.expires_at > now,
                )
                .values(used_at=now, used_by=address)
            )
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                row = uow.session.get(SigninNonce, nonce)
                if row is None:
                    raise AuthenticationError(
                        "the nonce was not issued by this node", code="unknown_nonce"
                    )
                if row.used_at is not None:
                    raise AuthenticationError("the nonce was already used", code="nonce_used")
                raise AuthenticationError("the challenge expired", code="nonce_expired")
            uow.session.add(
                MemberToken(
                    id=jti,
                    token_hash=hash_token(token),
                    member=address,
                    role=member.role.name,
                    audience=self.audience,
                    nonce=nonce,
                    key_fingerprint=key,
                    issued_at=now,
                    expires_at=expires,
                )
            )

        self.units.run(unit)
        return IssuedToken(
            token=token,
            jti=jti,
            member=address,
            role=member.role.name,
            audience=self.audience,
            issued_at=now,
            expires_at=expires,
        )

    def _parse(self, message: str) -> SiweMessage:
        if not message or len(message) > MAX_MESSAGE_CHARS:
            raise InputError(
                f"the message must be 1 to {MAX_MESSAGE_CHARS} characters",
                code="invalid_siwe_message",
            )
        try:
            return parse_message(message)
        except SiweFormatError as exc:
            raise InputError(
                f"not an EIP-4361 message: {exc}", code="invalid_siwe_message"
            ) from None

    def _check_message(self, parsed: SiweMessage, signature: str, now: datetime) -> None:
        if parsed.domain != self.domain:
            raise AuthenticationError(
                f"the message is for domain {parsed.domain!r}, this node is {self.domain!r}",
                code="wrong_domain",
            )
        if parsed.chain_id != self.chain_id():
            raise AuthenticationError(
                f"the message is for chain {parsed.chain_id}, the consortium chain is "
                f"{self.chain_id()}",
                code="wrong_chain",
            )
        if parsed.uri != self.uri:
            raise AuthenticationError(f"the message's uri must be {self.uri!r}", code="wrong_uri")
        if not _NONCE.fullmatch(parsed.nonce):
            raise AuthenticationError("the nonce was not issued by this node", code="unknown_nonce")
        if parsed.expiration_time is None:
            raise InputError(
                "the message must carry an Expiration Time", code="expiration_required"
            )
        if parse_time(parsed.expiration_time) <= now:
            raise AuthenticationError("the signed message has expired", code="message_expired")
        if parsed.not_before is not None and parse_time(parsed.not_before) > now:
            raise AuthenticationError("the message is not valid yet", code="message_not_yet_valid")
        if parse_time(parsed.issued_at) > now + CLOCK_SKEW:
            raise AuthenticationError("Issued At lies in the future", code="message_not_yet_valid")
        try:
            verify_signature(parsed, signature, now)
        except (ValueError, TypeError):
            raise AuthenticationError(
                "the signature does not match the message's address", code="invalid_signature"
            ) from None

    def _check_member(self, member: MemberRecord, wanted: RegistryRole) -> None:
        if member.role is RegistryRole.NONE:
            raise PermissionDeniedError(
                f"{member.address} is not a consortium member", code="not_member"
            )
        if not member.active:
            raise PermissionDeniedError(
                f"{member.address} is not an active member ({member.status.name.lower()})",
                code="member_not_active",
            )
        if member.role is not wanted:
            raise PermissionDeniedError(
                f"{member.address} holds role {member.role.name}, not {wanted.name}",
                code="wrong_role",
            )
        if member.role.name not in self.settings.signin_roles or member.role not in NODE_ROLES:
            raise PermissionDeniedError(
                f"members with role {member.role.name} cannot sign in to this node",
                code="wrong_role",
            )

    # -- using tokens ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The member behind a token: unknown, expired, revoked, or no longer backed by the
        registry (suspended, role changed, key rotated) are refused with their own codes."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise AuthenticationError("invalid member token", code="invalid_token")
        with self.db.session() as session:
            row = session.execute(
                select(MemberToken).where(MemberToken.token_hash == hash_token(token))
            ).scalar_one_or_none()
            if row is not None:
                session.expunge(row)
        if row is None or row.audience != self.audience:
            raise AuthenticationError("invalid member token", code="invalid_token")
        if row.revoked_at is not None:
            raise AuthenticationError("the token was revoked", code="token_revoked")
        if row.expires_at <= self.clock():
            raise AuthenticationError("the token has expired", code="token_expired")
        member = self.members.member(row.member)
        if not member.active or member.role.name != row.role:
            raise AuthenticationError(
                "the member is no longer active with the role it signed in with",
                code="member_not_active",
            )
        if fingerprint(bytes(member.public_key)) != row.key_fingerprint:
            raise AuthenticationError(
                "the member rotated its key after signing in: sign in again", code="key_rotated"
            )
        return Principal(
            key_id=0,
            name=member.name[:64],
            role=NODE_ROLES[member.role],
            actor=row.member,
            member=row.member,
            member_role=row.role,
            token_id=row.id,
        )

    def logout(self, principal: Principal) -> None:
        """Revoke the token the member is using."""
        if principal.token_id is None:
            raise InputError("only a member token can be signed out", code="not_member_token")
        self._revoke(principal.token_id, principal.actor)

    def revoke(self, principal: Principal, jti: str) -> None:
        """An admin revokes a member token by its id (``jti``)."""
        principal.require(Action.MANAGE_KEYS)
        self._revoke(jti, principal.actor)

    def _revoke(self, jti: str, by: str) -> None:
        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get(MemberToken, jti)
            if row is None:
                raise NotFoundError(f"token {jti} not found", code="token_not_found")
            if row.revoked_at is None:
                row.revoked_at = uow.now
                row.revoked_by = by

        self.units.run(unit)

    def tokens(self, principal: Principal, member: str | None = None) -> list[MemberToken]:
        """Tokens issued (newest first, at most 500), optionally of one member; admin only."""
        principal.require(Action.MANAGE_KEYS)
        query = select(MemberToken).order_by(MemberToken.issued_at.desc()).limit(500)
        if member:
            try:
                query = query.where(MemberToken.member == normalize_address(member))
            except IdentifierError:
                raise InputError("member must be an address", code="invalid_address") from None
        with self.db.session() as session:
            rows = list(session.execute(query).scalars())
            for row in rows:
                session.expunge(row)
            return rows


def _role_resource(resources: tuple[str, ...]) -> RegistryRole:
    named = [r for r in resources if r.startswith(ROLE_RESOURCE)]
    if len(named) != 1:
        raise InputError(
            f"the message's resources must name exactly one {ROLE_RESOURCE}<role>",
            code="role_required",
        )
    name = named[0].removeprefix(ROLE_RESOURCE).upper()
    if name not in {"REGULATOR", "INSURER", "AUDITOR", "HOSPITAL"}:
        raise InputError(f"unknown role {name!r}", code="role_required")
    return RegistryRole[name]
