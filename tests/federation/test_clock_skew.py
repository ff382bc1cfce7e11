"""Clock skew between hospitals (``node.ledger.event_time``): A runs on the wall clock, B's clock
is two minutes behind (an injected clock for its events; its HTTP signatures stay on the wall
clock, within the peers' window). B's read under A's grant takes the grant's time instead of
preceding it, B's TRANSFER_ACCEPT takes A's offer's time and B's next event the accept's, so
every bundle verifies (before, B's read was dated before the grant and failed ``time_order``
forever, and B could not log the accept until its clock caught up). With B ten minutes behind,
more than ``clock_skew_tolerance_seconds``, B refuses the read (409 ``clock_skew``) before
anything is disclosed or logged on either side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.verifier import verify_bundle
from tests.federation.conftest import Hospital, running_hospitals, wait_keys_registered
from tests.federation.test_flows import grant_share, transfer_and_verify, upload_and_archive
from tests.fixtures.chain import Consortium

BEHIND = timedelta(minutes=2)


class SkewedClock:
    """The wall clock minus ``behind`` (changed by the test)."""

    def __init__(self, behind: timedelta) -> None:
        self.behind = behind

    def __call__(self) -> datetime:
        return datetime.now(UTC) - self.behind


@pytest.fixture
def skewed(
    consortium: Consortium,
    chain: RpcChain,
    tmp_path: Path,
    hospital_a: LocalAccount,
    hospital_b: LocalAccount,
) -> Iterator[tuple[Hospital, Hospital, SkewedClock]]:
    clock = SkewedClock(BEHIND)
    accounts = {"A": hospital_a, "B": hospital_b}
    per_hospital = {"B": {"clock": clock}}
    with running_hospitals(
        consortium, accounts, tmp_path, per_hospital=per_hospital, replica_tick=3600.0
    ) as started:
        wait_keys_registered(chain, started.values())
        yield started["A"], started["B"], clock


def timed_events(document: bytes) -> list[tuple[str, str, datetime]]:
    """``(hospital, type, time)`` of each entry of a bundle, in bundle order."""
    found = []
    for entry in parse_bundle(document).entries:
        event = json.loads(entry.event)
        found.append((entry.hospital, event["type"], datetime.fromisoformat(event["time"])))
    return found


def event_count(hospital: Hospital, archive_id: str, kind: str) -> int:
    with hospital.client("auditor") as api:
        events = api.get(f"/archives/{archive_id}/events")
        if events.status_code == 404:
            return 0
        assert events.status_code == 200, events.text
        return sum(1 for event in events.json() if event["type"] == kind)


def test_a_node_whose_clock_is_behind_dates_events_no_earlier_than_their_predecessors(
    skewed: tuple[Hospital, Hospital, SkewedClock], chain: RpcChain
) -> None:
    a, b, clock = skewed
    archive_id = upload_and_archive(a)
    grant_share(a, archive_id, b)
    shared = f"/shared/{a.address}/{archive_id}"
    with b.client() as api:
        read = api.get(f"{shared}/content", params={"purpose": "referral"})
        assert read.status_code == 200, read.text

    a.runtime.worker.run_until_anchored(timeout=30)
    b.runtime.worker.run_until_anchored(timeout=30)
    with b.client("auditor") as api:
        document = api.get(f"{shared}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
    events = timed_events(document)
    [granted] = [t for h, kind, t in events if (h, kind) == (a.address, "SHARE_GRANT")]
    [b_read] = [t for h, kind, t in events if (h, kind) == (b.address, "ACCESS")]
    assert b_read == granted  # B's own clock said two minutes earlier

    # Ten minutes behind is more than the tolerance: refused before any disclosure or log.
    clock.behind = timedelta(minutes=10)
    disclosures = event_count(a, archive_id, "ACCESS")
    with b.client() as api:
        refused = api.get(f"{shared}/content", params={"purpose": "referral"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "clock_skew"
    assert event_count(a, archive_id, "ACCESS") == disclosures
    with b.client("auditor") as api:
        again = api.get(f"{shared}/proof").content
    assert [kind for h, kind, _ in timed_events(again) if h == b.address] == ["ACCESS"]

    # Two minutes behind again: B accepts a transfer at A's offer's time, then reads it itself.
    clock.behind = BEHIND
    order = transfer_and_verify(a, b, archive_id, chain)
    assert order[-1] == (b.address, "TRANSFER_ACCEPT")
    with b.client() as api:
        own = api.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
        assert own.status_code == 200, own.text
    b.runtime.worker.run_until_anchored(timeout=30)
    with b.client("auditor") as api:
        document = api.get(f"/archives/{archive_id}/proof").content
    report = verify_bundle(parse_bundle(document), chain)
    assert report.ok, report.to_text()
    events = timed_events(document)
    [offered] = [t for h, kind, t in events if (h, kind) == (a.address, "TRANSFER_OFFER")]
    [accepted] = [t for h, kind, t in events if (h, kind) == (b.address, "TRANSFER_ACCEPT")]
    assert accepted == offered
    assert events[-1][:2] == (b.address, "ACCESS")
    assert events[-1][2] == accepted
