"""Log replication (docs/recovery.md §2): this node ships its log entries to ``log_replica_count``
peers (rendezvous over the key ``log``) and holds other hospitals' shipped entries for them.

A shipment is ``POST /peer/v1/log/entries`` with ``{"start": n, "entries": [base64, …]}``: the
events ``n``, ``n + 1``, … of the sender's log, in their canonical bytes. The holder appends them
after the entries it has (``start`` ≤ what it holds; overlapping entries must be byte-identical,
else 409 ``log_conflict``) and answers ``{"size": entries held}``. Entries carry pseudonyms and
commitments only, never PHI. The subtrees are not shipped: they are a function of the entries and
are recomputed (and checked against the on-chain roots) when a log is rebuilt
(``node.recovery``). ``GET /peer/v1/log/entries?start=&limit=`` returns the sender's own entries.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from anchoring import storage
from node.config import NodeSettings
from node.db import Database, UnitOfWork, UnitRunner
from node.errors import ConflictError, InputError, NodeError
from node.members import MemberDirectory
from node.models import LogShipment, ShippedEntry
from node.peers import PeerRefusedError
from node.remote import RemoteNodes
from node.services.replicas import rendezvous

log = logging.getLogger(__name__)

MAX_SHIPPED_ENTRIES = 10_000
MAX_EVENT_BYTES = 64 * 1024
LOG_KEY = "log"


@dataclass
class ShipReport:
    """What one shipping step did, by peer: entries the peer now holds, or the problem."""

    shipped: dict[str, int] = field(default_factory=dict)
    entries_sent: int = 0
    bytes_sent: int = 0
    problems: list[str] = field(default_factory=list)


def log_peers(candidates: list[str], count: int) -> list[str]:
    """The peers a log is shipped to: the top ``count`` of the rendezvous order for ``log``."""
    return rendezvous(LOG_KEY, candidates, count)


def parse_shipment(body: bytes) -> tuple[int, list[bytes]]:
    """``(start, entries)`` of a shipment body, or ``InputError`` (400 ``invalid_shipment``)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InputError("the shipment is not JSON", code="invalid_shipment") from None
    if not isinstance(document, dict) or set(document) != {"start", "entries"}:
        raise InputError("a shipment is {start, entries}", code="invalid_shipment")
    start, entries = document["start"], document["entries"]
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InputError("start: a non-negative integer", code="invalid_shipment")
    if not isinstance(entries, list) or len(entries) > MAX_SHIPPED_ENTRIES:
        raise InputError(
            f"entries: a list of at most {MAX_SHIPPED_ENTRIES}", code="invalid_shipment"
        )
    raws: list[bytes] = []
    for item in entries:
        if not isinstance(item, str) or len(item) > MAX_EVENT_BYTES * 2:
            raise InputError("entries: base64 strings of events", code="invalid_shipment")
        try:
            raws.append(base64.b64decode(item, validate=True))
        except (ValueError, binascii.Error):
            raise InputError("entries: invalid base64", code="invalid_shipment") from None
    return start, raws


class LogShippingService:
    """Ships this node's log to its log peers and holds the logs other hospitals ship here."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        db: Database,
        units: UnitRunner,
        members: MemberDirectory,
        remote: RemoteNodes,
        hospital: str,
        chain_size: Callable[[str], int] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.units = units
        self.members = members
        self.remote = remote
        self.hospital = hospital
        self.chain_size = chain_size

    # -- sending -------------------------------------------------------------------------------

    def peers(self) -> list[str]:
        """This node's log peers (active hospitals with a configured URL)."""
        from anchoring.chain import Role

        candidates = [
            m.address
            for m in self.members.members()
            if m.role is Role.HOSPITAL
            and m.active
            and m.address != self.hospital
            and m.address in self.settings.peers
        ]
        return log_peers(candidates, self.settings.log_replica_count)

    def ship(self) -> ShipReport:
        """Send every log peer the entries it lacks (batches of ``log_ship_batch``)."""
        report = ShipReport()
        if not self.settings.peers or self.settings.log_replica_count == 0:
            return report  # no peer configured: nothing to ask the registry
        try:
            peers = self.peers()
        except NodeError as exc:
            report.problems.append(f"registry: {exc}")
            return report
        for peer in peers:
            try:
                report.shipped[peer] = self._ship_to(peer, report)
            except NodeError as exc:
                report.problems.append(f"{peer}: {exc}")
                log.warning("log shipment to %s failed: %s", peer, exc)
        return report

    def _ship_to(self, peer: str, report: ShipReport) -> int:
        truncated = False
        with self.db.session() as session:
            row = session.get(LogShipment, peer)
            sent = row.shipped if row is not None else 0
            size = storage.current_size(session)
        while sent < size:
            end = min(size, sent + self.settings.log_ship_batch)
            with self.db.session() as session:
                raws = [
                    bytes(raw)
                    for raw in session.execute(
                        select(storage.LogEntry.event)
                        .where(storage.LogEntry.index >= sent, storage.LogEntry.index < end)
                        .order_by(storage.LogEntry.index)
                    ).scalars()
                ]
            body = json.dumps(
                {"start": sent, "entries": [base64.b64encode(r).decode() for r in raws]}
            ).encode()
            try:
                answer = self.remote.send_json(peer, "POST", "/log/entries", body)
            except PeerRefusedError as exc:
                if exc.peer_code == "log_conflict" and not truncated:
                    # This log was rebuilt from peers without entries past its latest checkpoint
                    # that this peer holds: ask it to drop what is not anchored, then go on.
                    with self.db.session() as session:
                        anchored = storage.anchored_size(session)
                    body = json.dumps({"size": anchored}).encode()
                    answer = self.remote.send_json(peer, "POST", "/log/truncate", body)
                    sent, truncated = min(sent, int(answer.get("size", 0))), True
                    continue
                if exc.peer_code != "log_gap":
                    raise
                sent = 0  # the peer lost entries: start over (idempotent for what it has)
                continue
            held = answer.get("size")
            if not isinstance(held, int) or held < sent:
                raise ConflictError(f"{peer} answered a shipment with {held!r}")
            report.entries_sent += len(raws)
            report.bytes_sent += len(body)
            sent = held
            self.units.run(functools.partial(_cursor, peer=peer, shipped=sent))
        return sent

    # -- holding -------------------------------------------------------------------------------

    def receive(self, sender: str, body: bytes) -> dict[str, int]:
        """Append a shipment of ``sender``'s log (see the module docstring)."""
        start, raws = parse_shipment(body)
        if sender == self.hospital:
            raise InputError("a node does not ship its log to itself", code="self_target")

        def unit(uow: UnitOfWork) -> int:
            held = uow.session.execute(
                select(func.count())
                .select_from(ShippedEntry)
                .where(ShippedEntry.custodian == sender)
            ).scalar_one()
            if start > held:
                raise ConflictError(
                    f"this node holds {held} entries of the sender's log, not {start}",
                    code="log_gap",
                )
            overlap = {
                row.index: bytes(row.event)
                for row in uow.session.execute(
                    select(ShippedEntry).where(
                        ShippedEntry.custodian == sender,
                        ShippedEntry.index >= start,
                        ShippedEntry.index < start + len(raws),
                    )
                ).scalars()
            }
            if start + len(raws) > held and start + len(raws) > self.settings.log_quota_entries:
                raise ConflictError(
                    f"this node holds at most {self.settings.log_quota_entries} entries of a "
                    "hospital's log",
                    code="log_quota_exceeded",
                )
            for offset, raw in enumerate(raws):
                index = start + offset
                if index in overlap:
                    if overlap[index] != raw:
                        raise ConflictError(
                            f"entry {index} differs from the one shipped before (a log is "
                            "append-only)",
                            code="log_conflict",
                        )
                    continue
                uow.session.add(
                    ShippedEntry(custodian=sender, index=index, event=raw, received_at=uow.now)
                )
            return max(held, start + len(raws))

        return {"size": self.units.run(unit)}

    def truncate(self, sender: str, body: bytes) -> dict[str, int]:
        """Drop ``sender``'s shipped entries from ``size`` on (body ``{"size": n}``), only past its
        latest on-chain checkpoint: a log rebuilt from peers without its unanchored tail ships
        new entries at those indices. 409 ``log_anchored`` when ``size`` is below the chain's
        checkpoint (anchored entries are never dropped)."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise InputError("a truncation is {size}", code="invalid_truncation") from None
        size = document.get("size") if isinstance(document, dict) else None
        if (
            not isinstance(document, dict)
            or set(document) != {"size"}
            or isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
        ):
            raise InputError("a truncation is {size: int >= 0}", code="invalid_truncation")
        anchored = self.chain_size(sender) if self.chain_size is not None else None
        if anchored is None or size < anchored:
            raise ConflictError(
                f"entries below the sender's on-chain checkpoint ({anchored}) are kept",
                code="log_anchored",
            )

        def unit(uow: UnitOfWork) -> int:
            uow.session.execute(
                delete(ShippedEntry).where(
                    ShippedEntry.custodian == sender, ShippedEntry.index >= size
                )
            )
            return int(
                uow.session.execute(
                    select(func.count())
                    .select_from(ShippedEntry)
                    .where(ShippedEntry.custodian == sender)
                ).scalar_one()
            )

        return {"size": self.units.run(unit)}

    def serve(self, sender: str, start: int, limit: int) -> dict[str, Any]:
        """``sender``'s own entries from ``start`` (at most ``limit``) and how many are held."""
        with self.db.session() as session:
            held = session.execute(
                select(func.count())
                .select_from(ShippedEntry)
                .where(ShippedEntry.custodian == sender)
            ).scalar_one()
            raws = session.execute(
                select(ShippedEntry.event)
                .where(
                    ShippedEntry.custodian == sender,
                    ShippedEntry.index >= start,
                    ShippedEntry.index < start + limit,
                )
                .order_by(ShippedEntry.index)
            ).scalars()
            entries = [base64.b64encode(bytes(raw)).decode() for raw in raws]
        return {"size": int(held), "start": start, "entries": entries}


def replicated_point(session: Session, *, peers: int) -> int:
    """The log size every one of ``peers`` log peers acknowledged (0 until that many did)."""
    sizes = sorted(session.execute(select(LogShipment.shipped)).scalars(), reverse=True)
    if peers <= 0:
        return storage.current_size(session)
    return int(sizes[peers - 1]) if len(sizes) >= peers else 0


def _cursor(uow: UnitOfWork, peer: str, shipped: int) -> None:
    row = uow.session.get(LogShipment, peer)
    if row is None:
        uow.session.add(LogShipment(peer=peer, shipped=shipped, updated_at=uow.now))
    else:
        row.shipped, row.updated_at = shipped, uow.now
