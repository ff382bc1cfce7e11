"""Regulator audit: access events by archive, patient, actor and time, each provable; regulator
holds listed, and placed or released by relaying the regulator's own signed transaction.

- ``access_events``: ACCESS events of this node's log in log order, filtered by archive, patient
  (the node computes the keyed pseudonym from the patient id it is given and never returns the
  id), actor (a member address or staff pseudonym as written in events, or a staff id the node
  pseudonymises) and time range. Each row carries its canonical event bytes, its leaf index and
  an RFC 6962 inclusion proof against the latest checkpoint confirmed on chain (checkpoint index
  and size): with ``ArchiveNotary.checkpointAt(hospital, index)`` a regulator proves the row
  without trusting this node. Rows not yet anchored carry no proof (``proof`` null) and the
  archive's bundle path for later.
- ``holds``: archives held here that are on hold, with who placed the hold.
- ``relay_hold``: the node never signs for a regulator. The regulator signs a legacy (EIP-155),
  EIP-2930 or EIP-1559 ``placeHold``/``releaseHold`` transaction with its key (``archivechain regulator hold|release
  --node``); the node checks that it is exactly that call, to this consortium's notary, on its
  chain, for the archive named, signed by the signed-in regulator, and broadcasts it. The chain
  watcher then logs HOLD_PLACE/HOLD_RELEASE as for any regulator hold.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import select

from anchoring import merkle, storage
from anchoring.chain import RpcChain
from anchoring.errors import AnchoringError
from anchoring.events import AccessEvent, EventType, parse_event
from anchoring.ids import IdentifierError, archive_key, normalize_address
from anchoring.storage import LogEntry
from node.db import Database
from node.errors import ConflictError, InputError, NotFoundError, UnavailableError
from node.ledger import Ledger, normalise_id
from node.models import Archive
from node.principal import Action, Principal
from node.pseudonyms import Pseudonyms

MAX_ROWS = 500
SCAN_PAGE = 1000
MAX_SCAN = 100_000
"""Most log entries one query looks at; the answer's ``next_after`` continues from there."""


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 6962 inclusion of one leaf in the tree of a checkpoint confirmed on chain."""

    checkpoint_index: int
    tree_size: int
    root: str
    hashes: list[str]


@dataclass(frozen=True, slots=True)
class AccessRow:
    """One ACCESS event and its proof."""

    log_index: int
    archive_id: str
    time: datetime
    actor: str
    purpose: str
    scope: str
    break_glass: bool
    grant: str | None
    reason_hash: str | None
    event: str  # canonical event bytes, base64
    leaf_hash: str
    proof: InclusionProof | None
    bundle: str  # path of the archive's proof bundle on this node


@dataclass(frozen=True, slots=True)
class AccessPage:
    """A page of rows; ``next_after`` continues the query (None when the log was read to
    its end)."""

    hospital: str
    chain_id: int
    notary: str
    rows: list[AccessRow]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class HoldView:
    """An archive on hold held by this node."""

    archive_id: str
    state: str
    by_regulator: bool
    placed_by: str | None


class RegulatorService:
    """Audit queries and hold relay for signed-in regulators."""

    def __init__(
        self,
        *,
        hospital: str,
        db: Database,
        ledger: Ledger,
        pseudonyms: Pseudonyms,
        chain: RpcChain,
    ) -> None:
        self.hospital = hospital
        self.db = db
        self.ledger = ledger
        self.pseudonyms = pseudonyms
        self.chain = chain

    # -- access audit ---------------------------------------------------------------------------

    def access_events(
        self,
        principal: Principal,
        *,
        archive_id: str | None = None,
        patient_id: str | None = None,
        actor: str | None = None,
        staff_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> AccessPage:
        """ACCESS events matching every filter given, in log order after ``after``."""
        principal.require(Action.AUDIT_ACCESS)
        if not 1 <= limit <= MAX_ROWS:
            raise InputError(f"limit must be between 1 and {MAX_ROWS}", code="invalid_page")
        if actor is not None and staff_id is not None:
            raise InputError("give actor or staff_id, not both", code="invalid_filter")
        wanted_actor = self.pseudonyms.staff(staff_id) if staff_id else _actor(actor)
        with self.db.session() as session:
            archives: list[str] | None = None
            if archive_id is not None:
                archives = [normalise_id(archive_id)]
            if patient_id is not None:
                pseudonym = self.pseudonyms.patient(patient_id)
                of_patient = list(
                    session.execute(
                        select(Archive.id).where(Archive.patient_pseudonym == pseudonym)
                    ).scalars()
                )
                archives = (
                    of_patient if archives is None else sorted(set(archives) & set(of_patient))
                )
            rows, next_after = self._scan(
                session, archives, wanted_actor, since, until, after or -1, limit
            )
            checkpoint = storage.latest_confirmed_checkpoint(session)
            proven = [self._row(session, entry, event, checkpoint) for entry, event in rows]
        return AccessPage(
            hospital=self.hospital,
            chain_id=self.chain.chain_id(),
            notary=self.chain.notary_address(),
            rows=proven,
            next_after=next_after,
        )

    def _scan(
        self,
        session: Any,
        archives: list[str] | None,
        actor: str | None,
        since: datetime | None,
        until: datetime | None,
        after: int,
        limit: int,
    ) -> tuple[list[tuple[LogEntry, AccessEvent]], int | None]:
        found: list[tuple[LogEntry, AccessEvent]] = []
        if archives == []:
            return found, None
        scanned = 0
        cursor = after
        while True:
            query = (
                select(LogEntry)
                .where(LogEntry.index > cursor, LogEntry.event_type == EventType.ACCESS.value)
                .order_by(LogEntry.index)
                .limit(SCAN_PAGE)
            )
            if archives is not None:
                query = query.where(LogEntry.archive_id.in_(archives))
            if since is not None:
                query = query.where(LogEntry.time >= since)
            if until is not None:
                query = query.where(LogEntry.time < until)
            page = list(session.execute(query).scalars())
            for entry in page:
                cursor = entry.index
                scanned += 1
                event = parse_event(entry.event)
                if not isinstance(event, AccessEvent):  # pragma: no cover (typed by column)
                    continue
                if actor is not None and event.actor != actor:
                    continue
                found.append((entry, event))
                if len(found) == limit:
                    return found, entry.index
            if len(page) < SCAN_PAGE:
                return found, None
            if scanned >= MAX_SCAN:
                return found, cursor

    def _row(
        self,
        session: Any,
        entry: LogEntry,
        event: AccessEvent,
        checkpoint: storage.Checkpoint | None,
    ) -> AccessRow:
        proof: InclusionProof | None = None
        if checkpoint is not None and entry.index < checkpoint.size:
            hashes = storage.inclusion_proof(session, entry.index, checkpoint.size)
            proof = InclusionProof(
                checkpoint_index=int(checkpoint.chain_index or 0),
                tree_size=checkpoint.size,
                root=bytes(checkpoint.root).hex(),
                hashes=[h.hex() for h in hashes],
            )
        data = event.data
        return AccessRow(
            log_index=entry.index,
            archive_id=entry.archive_id,
            time=event.time,
            actor=event.actor,
            purpose=data.purpose.value,
            scope=data.scope.value,
            break_glass=data.break_glass,
            grant=data.grant,
            reason_hash=data.reason_hash,
            event=base64.b64encode(entry.event).decode("ascii"),
            leaf_hash=merkle.leaf_hash(entry.event).hex(),
            proof=proof,
            bundle=f"/api/v1/archives/{entry.archive_id}/proof",
        )

    # -- holds ----------------------------------------------------------------------------------

    def holds(self, principal: Principal) -> list[HoldView]:
        """Archives held here that are on hold, oldest first."""
        principal.require(Action.REGULATOR_HOLD)
        with self.db.session() as session:
            rows = list(
                session.execute(
                    select(Archive).where(Archive.on_hold.is_(True)).order_by(Archive.id)
                ).scalars()
            )
            return [
                HoldView(
                    archive_id=row.id,
                    state=row.state,
                    by_regulator=row.hold_by_regulator,
                    placed_by=self.ledger.state(session, row).hold_placed_by,
                )
                for row in rows
            ]

    def relay_hold(
        self, principal: Principal, archive_id: str, raw_hex: str, *, place: bool
    ) -> str:
        """Check and broadcast the regulator's own signed ``placeHold``/``releaseHold``; returns
        the transaction hash (see the module docstring)."""
        principal.require(Action.REGULATOR_HOLD)
        function = "placeHold" if place else "releaseHold"
        with self.db.session() as session:
            archive = session.get(Archive, normalise_id(archive_id))
            if archive is None or not self.ledger.holds(archive):
                raise NotFoundError(f"archive {archive_id} not found", code="archive_not_found")
            if not self.ledger.holds_live(archive):  # destroyed here: nothing left to hold
                raise ConflictError(f"archive {archive.id} is destroyed", code="destroyed")
            archive_id = archive.id
        tx = _decode_transaction(raw_hex)
        if tx.sender != principal.member:
            raise InputError(
                "the transaction is not signed by the signed-in regulator",
                code="wrong_signer",
            )
        if tx.chain_id != self.chain.chain_id():
            raise InputError("the transaction is for another chain", code="wrong_chain")
        to = tx.to
        if to != self.chain.notary_address():
            raise InputError("the transaction is not addressed to the notary", code="wrong_target")
        data = tx.data
        codec = self.chain.codec("ArchiveNotary")
        expected_prefix = codec.encode_call(function, [archive_key(archive_id), bytes(32)])[:36]
        if len(data) != 68 or data[:36] != expected_prefix:
            raise InputError(
                f"the transaction is not {function}({archive_id}, reasonHash)",
                code="wrong_call",
            )
        try:
            return self.chain.rpc.send_raw(tx.raw)
        except AnchoringError as exc:
            raise UnavailableError(f"the chain refused the transaction: {exc}") from None


@dataclass(frozen=True, slots=True)
class RelayedTransaction:
    """What the relay checks of a signed transaction, whatever its envelope."""

    raw: bytes
    kind: int  # 0 legacy (EIP-155), 1 EIP-2930, 2 EIP-1559
    chain_id: int
    to: str  # EIP-55, or "" for a contract creation / unreadable address
    data: bytes
    sender: str


RELAYED_TYPES = {0: "legacy (EIP-155)", 1: "EIP-2930", 2: "EIP-1559"}
OTHER_TYPES = {3: "EIP-4844 (blob)", 4: "EIP-7702 (set code)"}
"""Typed envelopes refused as such; any other leading byte below 0x80 is no transaction."""


def _decode_transaction(raw_hex: str) -> RelayedTransaction:
    """Decode and recover a signed legacy (EIP-155), EIP-2930 or EIP-1559 transaction.

    Refusals: ``invalid_transaction`` (not hex, malformed RLP, unsigned or a bad signature),
    ``unsupported_transaction_type`` (a blob or set-code envelope, EIP-4844/EIP-7702),
    ``unprotected_transaction`` (a legacy transaction signed without a chain id, v = 27/28:
    replayable on any chain, as EIP-155 was made to prevent)."""
    try:
        raw = bytes.fromhex(raw_hex.removeprefix("0x"))
    except ValueError:
        raise InputError("the transaction is not hex", code="invalid_transaction") from None
    if not raw:
        raise InputError("the transaction is empty", code="invalid_transaction")
    kind = raw[0] if raw[0] < 0x80 else 0
    if raw[0] < 0x80 and kind not in RELAYED_TYPES and kind in OTHER_TYPES:
        raise InputError(
            f"{OTHER_TYPES[kind]} transactions are not relayed: only legacy (EIP-155), EIP-2930 and "
            "EIP-1559 transactions are",
            code="unsupported_transaction_type",
        )
    try:
        if kind not in RELAYED_TYPES:
            raise ValueError(f"unknown transaction type {kind}")
        if kind == 0:
            fields_ = rlp.decode(raw)
            if not isinstance(fields_, list) or len(fields_) != 9:
                raise ValueError("a signed legacy transaction has 9 fields")
            v = int.from_bytes(fields_[6], "big")
            raw_to, data = fields_[3], fields_[5]
            if not isinstance(raw_to, bytes) or not isinstance(data, bytes):
                raise ValueError("to and data are byte strings")
            chain_id = (v - 35) // 2 if v >= 35 else None
        else:
            tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            chain_id = int(tx["chainId"])
            raw_to, data = tx.get("to") or b"", bytes(tx.get("data") or b"")
        sender = Account.recover_transaction(raw)
    except InputError:
        raise
    except Exception:  # malformed RLP, bad field, no or bad signature
        raise InputError(
            "not a signed legacy (EIP-155), EIP-2930 or EIP-1559 transaction",
            code="invalid_transaction",
        ) from None
    if chain_id is None:
        raise InputError(
            "a legacy transaction must be signed with its chain id (EIP-155): v = 27/28 is "
            "replayable on any chain",
            code="unprotected_transaction",
        )
    try:
        to = normalize_address(
            "0x" + bytes(raw_to).hex() if isinstance(raw_to, bytes | bytearray) else str(raw_to)
        )
    except IdentifierError:
        to = ""
    return RelayedTransaction(raw, kind, chain_id, to, bytes(data), sender)


def _actor(actor: str | None) -> str | None:
    if actor is None:
        return None
    actor = actor.strip()
    if len(actor) == 64 and all(c in "0123456789abcdef" for c in actor):
        return actor
    try:
        return normalize_address(actor)
    except IdentifierError:
        raise InputError(
            "actor must be a member address or a 64-hex staff pseudonym", code="invalid_actor"
        ) from None
