"""The member directory: who is in the consortium, with which role and key, read from the
``ConsortiumRegistry``. A registry that cannot be read is a 503 (``UnavailableError``), never a
guess."""

from __future__ import annotations

from anchoring.chain import MemberRecord, Role, RpcChain
from anchoring.errors import AnchoringError
from anchoring.ids import IdentifierError, normalize_address
from node.errors import ConflictError, InputError, UnavailableError


class MemberDirectory:
    """Consortium members as the registry knows them, seen from hospital ``me``."""

    def __init__(self, chain: RpcChain, me: str) -> None:
        self._chain = chain
        self.me = me

    def member(self, address: str) -> MemberRecord:
        """The registry record of ``address`` (role NONE when not a member)."""
        try:
            return self._chain.member(address)
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read the registry: {exc}") from None

    def members(self) -> list[MemberRecord]:
        """Every member ever admitted, in admission order."""
        try:
            return self._chain.members()
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read the registry: {exc}") from None

    def is_active(self, address: str, role: Role) -> bool:
        """Whether ``address`` is an active member with ``role`` right now."""
        try:
            return self._chain.is_active(address, role)
        except AnchoringError as exc:
            raise UnavailableError(f"cannot read the registry: {exc}") from None

    def public_key(self, address: str) -> bytes:
        """The encryption public key ``address`` registered (keys are wrapped to it)."""
        return bytes(self.member(address).public_key)

    def other_hospital(self, who: str) -> str:
        """An active hospital other than this one, from its address or its registered name:
        400 ``unknown_hospital``/``self_target`` or 409 ``not_active_hospital`` otherwise."""
        try:
            address = normalize_address(who)
        except IdentifierError:
            matches = [
                m.address
                for m in self.members()
                if m.role is Role.HOSPITAL and m.name.lower() == who.strip().lower()
            ]
            if len(matches) != 1:
                raise InputError(
                    f"{who!r} names no single consortium hospital", code="unknown_hospital"
                ) from None
            address = matches[0]
        if address == self.me:
            raise InputError("a hospital cannot transfer or share with itself", code="self_target")
        member = self.member(address)
        if member.role is not Role.HOSPITAL or not member.active:
            raise ConflictError(
                f"{address} is not an active hospital of the consortium", code="not_active_hospital"
            )
        return address
