"""KEK rotation: re-wrap every data key held under an old key-encryption key to the current one,
then retire the old KEK from the keystore.

Crash-safe by construction:

1. the keystore gets a new current KEK (saved atomically; the old KEKs stay in the file);
2. the node's own ``WrappedKey`` rows under ``kek:<old id>`` are re-wrapped in batches, one unit of
   work per batch: a row's blob and its ``holder`` (which names the KEK) change together, so at any
   moment every row says which KEK opens it and a half-done rotation still decrypts everything;
3. an old KEK is removed from the keystore only once no row with key material uses it **and** every
   replica holder has this node's key record of each archive sealed under the current KEK
   (``node.services.replicas.stale_records`` empty; docs/recovery.md): until then a holder may
   still keep a record under the old KEK, and ``restore --from-peers`` needs that KEK to open it.
   The rotation then leaves the old KEK in place and the replica job (``ReplicaService.tick``)
   re-sends the records and retires it (``retire_unused``).

A rerun after an interruption finds the old KEKs still in the keystore and continues step 2 with the
same current KEK (it does not start another rotation). Rows whose material was destroyed keep their
``holder`` label: it records which KEK wrapped them when they were destroyed.

The keystore is held by one process at a time: rotate with the node stopped (``archivechain keys
rotate-kek`` refuses while the node runs), or from inside the running node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from node import crypto
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import ConflictError, InputError
from node.keyring import KEK_HOLDER_PREFIX, kek_holder
from node.keystore import Keystore
from node.models import WrappedKey

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000


class KekRotationError(ConflictError):
    """Rotation cannot complete: some rows are wrapped under a KEK the keystore no longer holds."""

    code = "kek_rotation_blocked"


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Reported after each committed batch."""

    batch: int
    rewrapped: int  # in this batch
    total_rewrapped: int  # since this run started
    remaining: int  # rows still under an old KEK


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What one ``rotate`` run did."""

    current_kek_id: str
    resumed: bool  # True when an interrupted rotation was continued (no new KEK made)
    rewrapped: int
    batches: int
    retired_kek_ids: tuple[str, ...]
    records_behind: int = 0  # key records at replica holders still to re-send (old KEKs kept)


ProgressCallback = Callable[[BatchProgress], None]


class KekRotationService:
    """Rotates the node's KEK and re-wraps its data keys (see the module docstring)."""

    def __init__(self, *, keystore: Keystore, db: Database, units: UnitRunner) -> None:
        self.keystore = keystore
        self.db = db
        self.units = units

    def pending_kek_ids(self) -> list[str]:
        """Ids of KEKs still in the keystore that are not current (an unfinished rotation)."""
        current = self.keystore.current_kek_id
        return [info.kek_id for info in self.keystore.keks if info.kek_id != current]

    def rows_under(self, kek_id: str) -> int:
        """Rows with key material still wrapped under ``kek_id``."""
        with self.db.session() as session:
            count = session.execute(
                select(func.count())
                .select_from(WrappedKey)
                .where(WrappedKey.holder == kek_holder(kek_id), WrappedKey.blob.is_not(None))
            ).scalar_one()
        return int(count)

    def rows_not_current(self) -> int:
        """Rows with key material under any KEK other than the current one."""
        current = kek_holder(self.keystore.current_kek_id)
        with self.db.session() as session:
            count = session.execute(
                select(func.count())
                .select_from(WrappedKey)
                .where(
                    WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"),
                    WrappedKey.holder != current,
                    WrappedKey.blob.is_not(None),
                )
            ).scalar_one()
        return int(count)

    def rotate(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
    ) -> RotationReport:
        """Make a new current KEK (unless resuming), re-wrap every row, retire the old KEKs."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise InputError(f"batch size must be between 1 and {MAX_BATCH_SIZE}")
        resumed = bool(self.pending_kek_ids()) or self.rows_not_current() > 0
        if not resumed:
            self.keystore.rotate_kek()
        self._refuse_unknown_keks()
        rewrapped, batches = self._rewrap_all(batch_size, progress)
        retired = self.retire_unused()
        return RotationReport(
            current_kek_id=self.keystore.current_kek_id,
            resumed=resumed,
            rewrapped=rewrapped,
            batches=batches,
            retired_kek_ids=tuple(retired),
            records_behind=self.records_behind() if self.pending_kek_ids() else 0,
        )

    def records_behind(self) -> int:
        """Key records at replica holders not yet sealed under the current state (KEK, versions,
        metadata): while there are any, no old KEK is retired."""
        from node.services.replicas import stale_records

        with self.db.session() as session:
            return len(stale_records(session, self.keystore.address))

    def retire_unused(self) -> list[str]:
        """Remove from the keystore every non-current KEK that no row with key material uses, once
        no replica holder needs one to open a key record (``records_behind`` is 0)."""
        retired: list[str] = []
        pending = self.pending_kek_ids()
        if not pending or self.records_behind() > 0:
            return retired
        for kek_id in pending:
            if self.rows_under(kek_id) == 0:
                self.keystore.retire_kek(kek_id)
                retired.append(kek_id)
        return retired

    def _refuse_unknown_keks(self) -> None:
        known = {kek_holder(info.kek_id) for info in self.keystore.keks}
        with self.db.session() as session:
            holders = session.execute(
                select(WrappedKey.holder)
                .where(
                    WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"), WrappedKey.blob.is_not(None)
                )
                .distinct()
            ).scalars()
            unknown = sorted(set(holders) - known)
        if unknown:
            raise KekRotationError(
                "data keys are wrapped under KEKs this keystore does not hold "
                f"({', '.join(h.removeprefix(KEK_HOLDER_PREFIX) for h in unknown)}); "
                "restore the keystore that has them before rotating"
            )

    def _rewrap_all(self, batch_size: int, progress: ProgressCallback | None) -> tuple[int, int]:
        total = batches = 0
        while True:
            done = self.units.run(self._batch_unit(batch_size))
            if done == 0:
                return total, batches
            total += done
            batches += 1
            if progress is not None:
                progress(BatchProgress(batches, done, total, self.rows_not_current()))

    def _batch_unit(self, batch_size: int) -> Callable[[UnitOfWork], int]:
        """One unit of work: re-wrap up to ``batch_size`` rows to the current KEK."""
        keystore = self.keystore

        def unit(uow: UnitOfWork) -> int:
            new_id, new_kek = keystore.current_kek()
            rows = (
                uow.session.execute(
                    select(WrappedKey)
                    .where(
                        WrappedKey.holder.like(f"{KEK_HOLDER_PREFIX}%"),
                        WrappedKey.holder != kek_holder(new_id),
                        WrappedKey.blob.is_not(None),
                    )
                    .order_by(WrappedKey.id)
                    .limit(batch_size)
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            for row in rows:
                assert row.blob is not None  # filtered above
                old_id = row.holder.removeprefix(KEK_HOLDER_PREFIX)
                row.blob = crypto.rewrap(
                    keystore.kek(old_id),
                    new_kek,
                    row.blob,
                    crypto.kek_wrap_aad(row.archive_id, old_id),
                    crypto.kek_wrap_aad(row.archive_id, new_id),
                )
                row.holder = kek_holder(new_id)
            return len(rows)

        return unit
