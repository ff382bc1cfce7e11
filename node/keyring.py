"""The key ring: every wrapped copy of every archive's key material, through one interface.

An archive's key material (data key + commitment salt) exists only wrapped: this node's copy under
its current key-encryption key (holder ``kek:<id>``), and copies wrapped (ECIES) to other members'
registered public keys for a share grant or a pending transfer (holder ``member:<address>``).
Destroying a copy deletes its wrapped bytes and keeps the row (when, which holder) as evidence.
Cryptographic erasure of an archive is ``destroy(..., holder=None)``: every copy at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node import crypto
from node.errors import ConflictError, NotFoundError
from node.keystore import Keystore
from node.models import WrappedKey

KEK_HOLDER_PREFIX = "kek:"
MEMBER_HOLDER_PREFIX = "member:"


def kek_holder(kek_id: str) -> str:
    """The ``holder`` of a copy wrapped under this node's KEK ``kek_id``."""
    return f"{KEK_HOLDER_PREFIX}{kek_id}"


def member_holder(address: str) -> str:
    """The ``holder`` of a copy wrapped to member ``address``."""
    return f"{MEMBER_HOLDER_PREFIX}{address}"


class KeyRing:
    """Wraps, unwraps and destroys archives' key material with this node's keystore."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore

    # -- this node's copy ----------------------------------------------------------------------

    def store_own(
        self, session: Session, archive_id: str, material: crypto.KeyMaterial, now: datetime
    ) -> None:
        """Keep ``material`` for this node, wrapped under the current KEK."""
        kek_id, kek = self._keystore.current_kek()
        session.add(
            WrappedKey(
                archive_id=archive_id,
                holder=kek_holder(kek_id),
                blob=crypto.wrap_key_material(
                    kek, material, crypto.kek_wrap_aad(archive_id, kek_id)
                ),
                created_at=now,
            )
        )

    def own_rows(
        self, materials: Sequence[tuple[str, crypto.KeyMaterial]], now: datetime
    ) -> list[dict[str, Any]]:
        """The ``wrapped_keys`` rows ``store_own`` would add for each (archive id, material), as
        values for a Core multi-row insert (bulk creation)."""
        kek_id, kek = self._keystore.current_kek()
        holder = kek_holder(kek_id)
        return [
            {
                "archive_id": archive_id,
                "holder": holder,
                "blob": crypto.wrap_key_material(
                    kek, material, crypto.kek_wrap_aad(archive_id, kek_id)
                ),
                "purpose": None,
                "expires_at": None,
                "created_at": now,
                "destroyed_at": None,
            }
            for archive_id, material in materials
        ]

    def own(self, session: Session, archive_id: str) -> crypto.KeyMaterial:
        """This node's copy of the archive's key material (409 ``no_key`` when it holds none:
        transferred or destroyed)."""
        row = session.execute(
            select(WrappedKey)
            .where(
                WrappedKey.archive_id == archive_id,
                WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"),
                WrappedKey.destroyed_at.is_(None),
            )
            .order_by(WrappedKey.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None or row.blob is None:
            raise ConflictError(
                f"this node holds no key for archive {archive_id} (transferred or destroyed)",
                code="no_key",
            )
        kek_id = row.holder.removeprefix(KEK_HOLDER_PREFIX)
        return crypto.unwrap_key_material(
            self._keystore.kek(kek_id), row.blob, crypto.kek_wrap_aad(archive_id, kek_id)
        )

    # -- copies for other members --------------------------------------------------------------

    def wrap_for_member(
        self,
        session: Session,
        archive_id: str,
        member: str,
        public_key: bytes,
        material: crypto.KeyMaterial,
        now: datetime,
        *,
        purpose: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Keep a copy of ``material`` wrapped to ``member``'s registered ``public_key`` (a share
        grant, with its purpose and expiry, or a transfer offer)."""
        session.add(
            WrappedKey(
                archive_id=archive_id,
                holder=member_holder(member),
                blob=crypto.ecies_wrap_key_material(
                    public_key, material, crypto.member_wrap_aad(archive_id, member)
                ),
                purpose=purpose,
                expires_at=expires_at,
                created_at=now,
            )
        )

    def member_copy(self, session: Session, archive_id: str, member: str) -> bytes:
        """The live copy wrapped to ``member`` (404 ``no_access`` when there is none)."""
        row = session.execute(
            select(WrappedKey)
            .where(
                WrappedKey.archive_id == archive_id,
                WrappedKey.holder == member_holder(member),
                WrappedKey.destroyed_at.is_(None),
            )
            .order_by(WrappedKey.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if row is None or row.blob is None:
            raise NotFoundError(
                f"no key of archive {archive_id} is held for {member}", code="no_access"
            )
        return row.blob

    def open_member_copy(self, archive_id: str, wrapped: bytes) -> crypto.KeyMaterial:
        """Key material another member wrapped to this node (``CryptoError`` if it does not
        open with this node's encryption key)."""
        return crypto.ecies_unwrap_key_material(
            self._keystore.encryption_private_key,
            wrapped,
            crypto.member_wrap_aad(archive_id, self._keystore.address),
        )

    def open_sealed(self, blob: bytes, aad: bytes) -> bytes:
        """Bytes another member sealed (ECIES) to this node's key (``CryptoError`` otherwise)."""
        return crypto.ecies_decrypt(self._keystore.encryption_private_key, blob, aad)

    def expired_member_copies(self, session: Session, now: datetime) -> list[tuple[str, str]]:
        """``(archive id, member address)`` of live share copies past their expiry."""
        rows = session.execute(
            select(WrappedKey.archive_id, WrappedKey.holder).where(
                WrappedKey.holder.like(f"{MEMBER_HOLDER_PREFIX}%"),
                WrappedKey.expires_at < now,
                WrappedKey.destroyed_at.is_(None),
            )
        ).all()
        return [
            (archive_id, holder.removeprefix(MEMBER_HOLDER_PREFIX)) for archive_id, holder in rows
        ]

    # -- destruction ---------------------------------------------------------------------------

    def destroy(
        self, session: Session, archive_id: str, now: datetime, *, member: str | None = None
    ) -> int:
        """Destroy the live copies of the archive's key material: the one wrapped to ``member``,
        or (``member=None``) every copy, this node's included. Returns how many."""
        query = select(WrappedKey).where(
            WrappedKey.archive_id == archive_id, WrappedKey.destroyed_at.is_(None)
        )
        if member is not None:
            query = query.where(WrappedKey.holder == member_holder(member))
        destroyed = 0
        for row in session.execute(query).scalars():
            row.blob = None
            row.destroyed_at = now
            destroyed += 1
        return destroyed

    def live_holders(self, session: Session, archive_ids: Sequence[str]) -> dict[str, list[str]]:
        """The holders of the live copies of each archive's key material (archives with none
        are absent), sorted: one query for the whole set."""
        found: dict[str, list[str]] = {}
        for archive_id, holder in session.execute(
            select(WrappedKey.archive_id, WrappedKey.holder)
            .where(WrappedKey.archive_id.in_(archive_ids), WrappedKey.destroyed_at.is_(None))
            .order_by(WrappedKey.archive_id, WrappedKey.holder)
        ).tuples():
            found.setdefault(archive_id, []).append(holder)
        return found

    def destroy_all(self, session: Session, archive_ids: Sequence[str], now: datetime) -> int:
        """Cryptographic erasure of many archives in one statement: every live copy of their key
        material (this node's and members') loses its wrapped bytes. Returns how many copies.
        The caller checks with ``live_holders`` afterwards that none survived."""
        if not archive_ids:
            return 0
        result = session.execute(
            update(WrappedKey)
            .where(WrappedKey.archive_id.in_(archive_ids), WrappedKey.destroyed_at.is_(None))
            .values(blob=None, destroyed_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
