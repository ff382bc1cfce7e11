"""Spliced canonical bytes (``node.eventsplice``), as the fixity audit logs FIXITY_CHECK events:
each rendering equals ``canonical_bytes`` of the event with those values, for passing and
failing checks, other versions, indexes, ids and prev hashes; a field that is not in the event
is refused; and the events a real audit logged in one unit re-encode to the bytes stored."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from anchoring import storage
from anchoring.events import FixityCheckData, FixityCheckEvent, canonical_bytes, parse_event
from node.errors import NodeError
from node.eventsplice import SplicedEvent
from node.services.audits import _SPLICED, MISSING_SHA256, AuditScope
from tests.api.conftest import Api

HOSPITAL = "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"  # EIP-55
IDS = ("01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", "01J0Z8Q6J8ZK3W6Y9V5T3N2M1B")


def _event(index: int, archive_id: str, prev: str, version: int, sha: str, ok: bool) -> object:
    return FixityCheckEvent(
        hospital=HOSPITAL,
        log_index=index,
        archive_id=archive_id,
        actor=HOSPITAL,
        time=datetime(2026, 12, 2, 7, 0, tzinfo=UTC),
        prev=prev,
        data=FixityCheckData(version=version, ciphertext_sha256=sha, ok=ok),
    )


def test_rendering_equals_canonical_bytes() -> None:
    template = _event(7, IDS[0], "11" * 32, 1, "22" * 32, True)
    spliced = SplicedEvent(template, _SPLICED)  # type: ignore[arg-type]
    for index, archive_id, prev, version, sha, ok in (
        (8, IDS[1], "33" * 32, 2, hashlib.sha256(b"x").hexdigest(), True),
        (9_007_199_254_740_991, IDS[0], "44" * 32, 3, MISSING_SHA256, False),
        (0, IDS[1], "55" * 32, 1, "66" * 32, False),
    ):
        expected = canonical_bytes(_event(index, archive_id, prev, version, sha, ok))  # type: ignore[arg-type]
        assert spliced.render(index, archive_id, prev, version, sha, ok) == expected


def test_an_unknown_field_is_refused() -> None:
    template = _event(7, IDS[0], "11" * 32, 1, "22" * 32, True)
    with pytest.raises(NodeError):
        SplicedEvent(template, ("log_index", "data.no_such_field"))  # type: ignore[arg-type]


def test_audit_events_are_canonical(api: Api) -> None:
    ids = [api.create()["id"] for _ in range(3)]
    report = api.node.fixity.audit(None, AuditScope())
    assert (report.checked, report.passed) == (3, 3)
    with api.node.db.session() as session:
        for archive_id in ids:
            rows = storage.entries_for_archive(session, archive_id)
            (entry,) = [row for row in rows if row.event_type == "FIXITY_CHECK"]
            event = parse_event(entry.event)
            assert canonical_bytes(event) == bytes(entry.event)
            assert event.log_index == entry.index
            assert event.prev is not None
