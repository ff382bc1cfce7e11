"""Set-based lifecycle states for destruction (``node.ledgerstate``), on SQLite and PostgreSQL:
the state built from the catalogue and the log's entry types equals the replayed one; histories
off the plain disposition path are left to the replay; a chunk that mixes destroyable and refused
items keeps every guard on a cold state cache."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from anchoring.events import RecordClass, Sensitivity
from anchoring.lifecycle import ArchiveStatus
from node.ledger import Ledger
from node.ledgerstate import plain_states, version_rows
from node.models import Archive, DispositionItem, DispositionProposal
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive, NewContent
from tests.fixtures.node import MakeNode


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _setup(
    make_node: MakeNode, database_url: str, count: int
) -> tuple[NodeRuntime, Principal, Principal, list[str]]:
    clock = Clock()
    node = make_node(database_url=database_url, clock=clock)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "archivist").secret)
    manager = node.keys.authenticate(node.keys.issue(Role.RECORDS_MANAGER, "manager").secret)
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="visit note",
        patient_id="P-1",
        source_system="HIS",
        media_type="application/octet-stream",
        trigger_date=(datetime.now(UTC) - timedelta(days=16 * 366)).date(),
    )
    views = node.archives.create_many(
        archivist, [NewContent(new, [os.urandom(300)]) for _ in range(count)]
    )
    ids = sorted(v.id for v in views)
    node.archives.archive_many(archivist, ids)
    return node, archivist, manager, ids


def _pairs(
    session: Session, proposal_id: str, ids: list[str]
) -> tuple[DispositionProposal, list[tuple[DispositionItem, Archive]]]:
    proposal = session.get_one(DispositionProposal, proposal_id)
    items = {
        i.archive_id: i
        for i in session.execute(
            select(DispositionItem).where(DispositionItem.proposal_id == proposal_id)
        ).scalars()
    }
    archives = {
        a.id: a for a in session.execute(select(Archive).where(Archive.id.in_(ids))).scalars()
    }
    return proposal, [(items[i], archives[i]) for i in ids]


def test_built_states_equal_replayed_ones_and_other_histories_are_left_out(
    make_node: MakeNode, database_url: str
) -> None:
    node, archivist, manager, ids = _setup(make_node, database_url, 6)
    plain, read, held_released, _unapproved, tampered, pending = ids
    node.archives.get(archivist, read)  # ACCESS (metadata): neutral, still plain
    node.archives.place_hold(archivist, held_released, "claim")
    node.archives.release_hold(archivist, held_released, "settled")
    assert node.retention.start_dispositions(archivist) == 6
    proposal = node.retention.propose(archivist, ids, "expired").id
    for archive_id in (plain, read, held_released, tampered, pending):
        node.retention.decide(manager, proposal, archive_id, approve=True, reason="ok")
    with node.db.session() as session:
        prop, pairs = _pairs(session, proposal, ids)
        by_id = dict((a.id, (i, a)) for i, a in pairs)
        by_id[tampered][1].last_event_hash = b"\x00" * 32  # catalogue and log disagree
        by_id[pending][0].decision = "PENDING"  # not approved: the row says so
        versions = version_rows(session, [a.id for _, a in pairs])
        for _, archive in pairs:  # plain rows, equal to the mapped versions they stand for
            assert (
                [(v.version, v.cid, v.commitment, v.blob_deleted_at) for v in versions[archive.id]]
                == [(v.version, v.cid, v.commitment, v.blob_deleted_at) for v in archive.versions]
                != []
            )
        built = plain_states(session, node.ledger.hospital, prop, pairs, versions)
        assert set(built) == {plain, read}  # hold history, tampered head, unapproved: replay
        fresh = Ledger(node.ledger.hospital)  # cold cache: a real replay from the log
        replayed = fresh.states(session, [by_id[plain][1], by_id[read][1]])
        assert built == replayed
        assert built[read].event_count == built[plain].event_count + 1
        assert built[plain].status is ArchiveStatus.DISPOSITION_REVIEW
        assert built[plain].disposition_approved_until is not None
        session.rollback()


def test_a_mixed_chunk_on_a_cold_cache_keeps_every_guard(
    make_node: MakeNode, database_url: str
) -> None:
    node, archivist, manager, ids = _setup(make_node, database_url, 7)
    go, go_read, was_held, on_hold, undecided, rejected, expired = ids
    node.archives.get(archivist, go_read)
    node.archives.place_hold(archivist, was_held, "claim")
    node.archives.release_hold(archivist, was_held, "settled")
    assert node.retention.start_dispositions(archivist) == 7
    proposal = node.retention.propose(archivist, ids, "expired").id
    for archive_id in (go, go_read, was_held, on_hold, expired):
        node.retention.decide(manager, proposal, archive_id, approve=True, reason="ok")
    later = (datetime.now(UTC) + timedelta(days=3650)).date()
    node.retention.decide(
        manager, proposal, rejected, approve=False, reason="keep", new_deadline=later
    )
    node.archives.place_hold(archivist, on_hold, "late claim")
    with node.db.session() as session, session.begin():
        item = session.execute(
            select(DispositionItem).where(DispositionItem.archive_id == expired)
        ).scalar_one()
        # an approval whose lifetime ended (as if executed too late)
        item.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    node.retention.ledger = Ledger(node.ledger.hospital)  # cold state cache (a restart)
    outcome = node.retention.destroy_approved(archivist, proposal, chunk=7)
    assert sorted(v.archive_id for v in outcome.destroyed) == sorted([go, go_read, was_held])
    assert sorted(outcome.refused) == sorted(
        [
            (on_hold, "on_hold"),
            (undecided, "not_approved"),
            (rejected, "not_approved"),
            (expired, "approval_expired"),
        ]
    )
    with node.db.session() as session:
        states = {
            a.id: a.state
            for a in session.execute(select(Archive).where(Archive.id.in_(ids))).scalars()
        }
        for archive_id in (go, go_read, was_held):
            assert states[archive_id] == ArchiveStatus.DESTROYED.value
            # the DESTROY logged on the built state replays from the log (cold cache again)
            archive = session.get_one(Archive, archive_id)
            replayed = Ledger(node.ledger.hospital).state(session, archive)
            assert replayed.status is ArchiveStatus.DESTROYED
            assert replayed == node.retention.ledger.state(session, archive)  # what it cached
        assert states[on_hold] == states[undecided] == ArchiveStatus.DISPOSITION_REVIEW.value
        assert states[rejected] == ArchiveStatus.ARCHIVED.value
