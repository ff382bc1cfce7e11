"""``node.ledger.event_time``: an event is dated no earlier than its predecessor when this node's
clock is behind it by at most the tolerance, and keeps the clock's time otherwise; on a real node
whose clock steps back, the archive's next event takes the previous event's time (and its bundle
verifies), while a step back beyond ``clock_skew_tolerance_seconds`` is still refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from anchoring.bundle import parse_bundle
from anchoring.chain import RpcChain
from anchoring.errors import AnchoringError
from anchoring.verifier import verify_bundle
from node.ledger import event_time
from node.principal import Role
from tests.fixtures.node import MakeNode
from tests.support import lab_result

T = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("now", "not_before", "tolerance", "expected"),
    [
        (T, None, 5 * MINUTE, T),  # no predecessor
        (T, T - MINUTE, 5 * MINUTE, T),  # the predecessor is older
        (T, T, 5 * MINUTE, T),  # same instant
        (T, T + MINUTE, 5 * MINUTE, T + MINUTE),  # one minute behind: the predecessor's time
        (T, T + 5 * MINUTE, 5 * MINUTE, T + 5 * MINUTE),  # at the tolerance
        (T, T + 5 * MINUTE + timedelta(microseconds=1), 5 * MINUTE, T),  # beyond: the clock's
        (T, T + timedelta(microseconds=1), timedelta(0), T),  # tolerance 0: never moved
    ],
)
def test_event_time(
    now: datetime, not_before: datetime | None, tolerance: timedelta, expected: datetime
) -> None:
    assert event_time(now, not_before, tolerance) == expected


class SteppedClock:
    def __init__(self) -> None:
        self.back = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) - self.back


def test_a_clock_that_steps_back_does_not_break_an_archive_s_hash_chain(
    make_node: MakeNode, chain: RpcChain
) -> None:
    clock = SteppedClock()
    node = make_node(clock=clock)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    created = node.archives.create(archivist, lab_result(), [b"haemoglobin 13.5 g/dL"])
    other = node.archives.create(archivist, lab_result(), [b"haemoglobin 12.9 g/dL"])

    clock.back = timedelta(seconds=90)  # e.g. NTP stepped the clock back
    node.archives.archive(archivist, created.id)
    times = [e.time for e in node.archives.events(archivist, created.id)]
    assert times[1] == times[0]  # the ARCHIVE event takes the CREATE's time

    clock.back = timedelta(0)  # anchoring waits for the clock to pass the events' log times
    node.worker.run_until_anchored(timeout=30)
    built = node.proofs.bundle(archivist, created.id)
    report = verify_bundle(parse_bundle(built.document), chain)
    assert report.ok, report.to_text()

    clock.back = timedelta(minutes=10)  # beyond the five minutes' tolerance: refused as before
    with pytest.raises(AnchoringError) as refused:
        node.archives.archive(archivist, other.id)
    assert refused.value.code == "time_order"
    assert [e.event_type for e in node.archives.events(archivist, other.id)] == ["CREATE"]
