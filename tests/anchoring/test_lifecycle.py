"""The archive state machine: every legal path, every refusal (naming state and event type), the
per-archive hash chain with grantee side chains, and the projection onto the on-chain record."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anchoring.chainview import CustodyState
from anchoring.errors import (
    BreakGlassWindowError,
    EventTimeOrderError,
    LifecycleError,
    PrevHashMismatchError,
    TransitionRefusedError,
)
from anchoring.events import (
    EVENT_MODELS,
    Event,
    EventType,
    StorageTier,
    event_leaf_hash,
)
from anchoring.ids import ZERO_ADDRESS
from anchoring.lifecycle import (
    ArchiveState,
    ArchiveStatus,
    apply,
    expected_custody,
    replay,
)

A = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
B = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0"
C = "0x22d491Bde2303f2f43325b2108D26f1eAbA1e32b"
REGULATOR = "0xE11BA2b4D45Eaed5996Cd0823791E0C93114882d"
ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
STAFF = "5f" * 32  # a staff pseudonym
MANAGER = "6e" * 32  # another staff member's pseudonym (a records manager)
LIST = "01HZY3Z4Q8Q1V6S9N0M5K2J3H9"  # a disposition list id
LIST2 = "01HZY3Z4Q8Q1V6S9N0M5K2J3HA"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DEADLINE = datetime(2024, 6, 1, tzinfo=UTC)
C1, C2 = "c1" * 32, "c2" * 32  # commitments of versions 1 and 2
X1, X2 = "e1" * 32, "e2" * 32  # ciphertext hashes
R = "aa" * 32  # a reason hash
TAG = "7a" * 32

KEEP: Any = object()


def create_data(**overrides: Any) -> dict[str, Any]:
    return {
        "record_class": "INPATIENT",
        "sensitivity": "NORMAL",
        "department": "ENT",
        "patient": "9d" * 32,
        "source_system": "HIS",
        "version": 1,
        "commitment": C1,
        "ciphertext_sha256": X1,
        "size": 100,
        "media_type": "application/pdf",
        **overrides,
    }


def amend_data(version: int = 2, commitment: str = C2) -> dict[str, Any]:
    return {
        "version": version,
        "commitment": commitment,
        "ciphertext_sha256": X2,
        "size": 120,
        "media_type": "application/pdf",
    }


def archive_data(commitment: str = C2, deadline: datetime = DEADLINE) -> dict[str, Any]:
    return {
        "record_class": "INPATIENT",
        "retention_policy": "INPATIENT_30Y",
        "trigger_date": "2024-05-01",
        "retention_deadline": deadline,
        "commitment": commitment,
    }


def access(purpose: str = "treatment", scope: str = "content", **extra: Any) -> dict[str, Any]:
    return {"purpose": purpose, "scope": scope, "break_glass": False, **extra}


class Story:
    """Builds one archive's events with correct prev hashes, times and custodians by default."""

    def __init__(self) -> None:
        self.state: ArchiveState | None = None
        self.time = T0

    def make(
        self,
        event_type: EventType,
        data: dict[str, Any] | None = None,
        *,
        hospital: str | None = None,
        actor: str = STAFF,
        at: datetime | None = None,
        prev: Any = KEEP,
        archive_id: str = ARCHIVE,
    ) -> Event:
        if hospital is None:
            hospital = self.state.custodian if self.state else A
        when = at if at is not None else self.time + timedelta(minutes=1)
        if prev is KEEP:
            prev = self.state.head if self.state else None
        model = EVENT_MODELS[event_type]
        event = model.model_validate(
            {
                "hospital": hospital,
                "log_index": 0,
                "archive_id": archive_id,
                "actor": actor,
                "time": when,
                "prev": prev,
                "data": data or {},
            }
        )
        return event  # type: ignore[return-value]

    def do(
        self, event_type: EventType, data: dict[str, Any] | None = None, **kw: Any
    ) -> ArchiveState:
        event = self.make(event_type, data, **kw)
        self.state = apply(self.state, event)
        self.time = event.time
        return self.state

    def refuse(
        self,
        event_type: EventType,
        data: dict[str, Any] | None = None,
        match: str = "",
        error: type[LifecycleError] = TransitionRefusedError,
        **kw: Any,
    ) -> TransitionRefusedError:
        before = self.state
        with pytest.raises(error, match=match or None) as caught:
            apply(self.state, self.make(event_type, data, **kw))
        assert self.state is before
        refusal = caught.value
        assert isinstance(refusal, TransitionRefusedError)
        assert refusal.event_type == event_type.value
        expected_state = before.status.value if before else "NONE"
        assert refusal.state == expected_state
        assert f"{event_type.value} refused in state {expected_state}" in str(refusal)
        return refusal


def archived_story(deadline: datetime = DEADLINE) -> Story:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.do(EventType.ARCHIVE, archive_data(commitment=C1, deadline=deadline))
    return story


def grant(story: Story, grantee: str = C, purpose: str = "referral", days: int = 7) -> str:
    state = story.do(
        EventType.SHARE_GRANT,
        {"grantee": grantee, "purpose": purpose, "expires_at": story.time + timedelta(days=days)},
    )
    return state.head


def offered(story: Story, to: str = B, expires_at: datetime | None = None) -> str:
    state = story.do(EventType.TRANSFER_OFFER, {"to": to, "expires_at": expires_at})
    assert state.offer_hash is not None
    return state.offer_hash


# ------------------------------------------------------------------------------------------
# Happy paths


def test_full_life_of_an_archive_across_two_hospitals() -> None:
    story = Story()
    state = story.do(EventType.CREATE, create_data())
    assert state.status is ArchiveStatus.CREATED
    assert (state.custodian, state.creator) == (A, A)
    assert state.current_version.commitment == C1
    assert expected_custody(state).state is CustodyState.NONE

    state = story.do(EventType.AMEND, amend_data())
    assert [v.version for v in state.versions] == [1, 2]
    state = story.do(EventType.ACCESS, access())
    state = story.do(EventType.ARCHIVE, archive_data())
    assert state.status is ArchiveStatus.ARCHIVED
    assert state.commitment == C2
    assert state.record_class.value == "INPATIENT"
    assert state.retention_deadline == DEADLINE

    grant_hash = grant(story, C)
    assert story.state is not None
    state = story.state
    assert state.grant_for(C) is not None
    # The grantee's reads form a side chain hanging off the grant.
    first = story.make(
        EventType.ACCESS, access("referral", grant=grant_hash), hospital=C, prev=grant_hash
    )
    state = story.state = apply(state, first)
    head_after_grant = state.head
    assert head_after_grant == grant_hash  # the main chain did not move
    second = story.make(
        EventType.ACCESS,
        access("referral", "metadata", grant=grant_hash),
        hospital=C,
        prev=event_leaf_hash(first).hex(),
    )
    state = story.state = apply(state, second)
    assert state.head == grant_hash
    assert state.grant_for(C).head == event_leaf_hash(second).hex()  # type: ignore[union-attr]

    story.do(EventType.SHARE_REVOKE, {"grantee": C, "reason": "purpose_fulfilled"})
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False})
    story.do(EventType.HOLD_RELEASE, {"reason_hash": R})
    story.do(EventType.TIER_MOVE, {"from_tier": "hot", "to_tier": "cold"})
    story.do(EventType.FIXITY_CHECK, {"version": 2, "ciphertext_sha256": X2, "ok": True})
    story.do(EventType.TAG_BIND, {"tag_kind": "qr", "tag_hash": TAG})
    story.do(EventType.TAG_SCAN, {"tag_hash": TAG, "reader": STAFF})

    offer_hash = offered(story, B)
    state = story.state
    assert state.status is ArchiveStatus.TRANSFER_PENDING
    assert state.pending_recipient == B
    pending = expected_custody(state)
    assert (pending.state, pending.pending_recipient) == (CustodyState.TRANSFER_PENDING, B)

    state = story.do(EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": offer_hash}, hospital=B)
    assert state.status is ArchiveStatus.ARCHIVED
    assert state.custodian == B
    assert state.pending_recipient is None
    assert state.creator == A

    state = story.do(EventType.ACCESS, access("audit", "proof"))  # now logged by B
    state = story.do(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE + timedelta(days=30)},
    )
    late = DEADLINE + timedelta(days=30)
    story.refuse(
        EventType.DISPOSITION_START, {}, "retention runs until", at=late - timedelta(seconds=1)
    )
    state = story.do(EventType.DISPOSITION_START, {}, at=late)
    assert state.status is ArchiveStatus.DISPOSITION_REVIEW
    assert expected_custody(state).state is CustodyState.ARCHIVED
    approve(story)
    state = story.do(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"})
    assert state.status is ArchiveStatus.DESTROYED
    assert state.certificate_hash == R
    # Evidence outlives content: proof reads and tag scans are still recorded.
    story.do(EventType.ACCESS, access("legal", "proof"))
    story.do(EventType.TAG_SCAN, {"tag_hash": TAG, "reader": STAFF})
    final = story.state
    custody = expected_custody(final)
    assert custody.state is CustodyState.DESTROYED
    assert custody.custodian == B
    assert custody.commitment == C2
    assert custody.record_class == 2  # INPATIENT
    assert custody.retention_deadline == int((DEADLINE + timedelta(days=30)).timestamp())
    assert final.event_count == 24  # with DISPOSITION_PROPOSE and DISPOSITION_APPROVE


def test_replay_equals_stepwise_apply_and_leaf_hash_shortcut() -> None:
    story = Story()
    events = []
    for event_type, data in [
        (EventType.CREATE, create_data()),
        (EventType.AMEND, amend_data()),
        (EventType.ARCHIVE, archive_data()),
    ]:
        event = story.make(event_type, data)
        story.state = apply(story.state, event, leaf_hash=event_leaf_hash(event))
        story.time = event.time
        events.append(event)
    assert replay(events) == story.state
    with pytest.raises(TransitionRefusedError, match="no events"):
        replay([])


def test_expected_custody_of_a_created_archive_is_unregistered() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False})
    custody = expected_custody(story.state)  # type: ignore[arg-type]
    assert custody.state is CustodyState.NONE
    assert custody.custodian == ZERO_ADDRESS
    assert custody.on_hold is False  # a hold before registration is local only
    assert custody.commitment is None


# ------------------------------------------------------------------------------------------
# Chain and order


def test_first_event_must_be_create_and_only_once() -> None:
    story = Story()
    story.refuse(EventType.ACCESS, access(), "first event must be CREATE", prev="00" * 32)
    story.refuse(EventType.CREATE, create_data(version=2), "first version must be 1")
    story.do(EventType.CREATE, create_data())
    story.refuse(EventType.CREATE, create_data(), "already exists", prev=None)


def test_prev_must_be_the_last_event_and_times_must_not_go_back() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    head = story.state.head  # type: ignore[union-attr]
    refusal = story.refuse(
        EventType.AMEND,
        amend_data(),
        "is not the archive's last event",
        PrevHashMismatchError,
        prev="00" * 32,
    )
    assert refusal.code == "prev_mismatch"
    story.do(EventType.AMEND, amend_data())
    # Replaying the earlier head (a dropped or reordered event) is caught too.
    story.refuse(EventType.ACCESS, access(), "last event", PrevHashMismatchError, prev=head)
    refusal = story.refuse(
        EventType.ACCESS,
        access(),
        "before the previous event",
        EventTimeOrderError,
        at=story.time - timedelta(microseconds=1),
    )
    assert refusal.code == "time_order"
    story.do(EventType.ACCESS, access(), at=story.time)  # equal times are fine


def test_an_event_breaking_several_rules_fails_the_first_in_the_specified_order() -> None:
    """docs/proof-format.md §7.4 step 2: the order of the checks within one event, which names
    the failure when an event breaks more than one rule (an independent verifier written from
    the spec could not tell it)."""
    story = archived_story()
    head = story.state.head  # type: ignore[union-attr]
    wrong = "00" * 32
    earlier = story.time - timedelta(minutes=5)
    hold = {"reason_hash": R, "by_regulator": False}
    # custodian events: prev, then time, then the logging hospital, then the row of the table
    story.refuse(
        EventType.HOLD_PLACE,
        hold,
        "last event",
        PrevHashMismatchError,
        hospital=B,
        prev=wrong,
        at=earlier,
    )
    story.refuse(
        EventType.HOLD_PLACE,
        hold,
        "before the previous",
        EventTimeOrderError,
        hospital=B,
        at=earlier,
    )
    refusal = story.refuse(EventType.AMEND, amend_data(), "not the custodian", hospital=B)
    assert refusal.code == "illegal_transition"
    # a second CREATE: refused as such, before its (null) prev is compared
    refusal = story.refuse(EventType.CREATE, create_data(), "already exists", prev=None)
    assert refusal.code == "illegal_transition"
    # a grantee's read: the grant, then the side chain's prev, then its time
    refusal = story.refuse(
        EventType.ACCESS,
        access("referral"),
        "neither the custodian nor holds",
        hospital=C,
        prev=wrong,
        at=earlier,
    )
    assert refusal.code == "illegal_transition"
    grant_hash = grant(story, C, "referral")
    read = access("referral", grant=grant_hash)
    story.refuse(
        EventType.ACCESS,
        read,
        "grant's last event",
        PrevHashMismatchError,
        hospital=C,
        prev=head,
        at=earlier,
    )
    story.refuse(
        EventType.ACCESS,
        read,
        "before the grantee's previous",
        EventTimeOrderError,
        hospital=C,
        prev=grant_hash,
        at=earlier,
    )
    # a destruction notice before DESTROYED: the state, before its prev
    notice = {"certificate_hash": wrong, "reason": "custodian_destroyed"}
    refusal = story.refuse(EventType.DESTRUCTION_NOTICE, notice, hospital=C, prev=wrong)
    assert refusal.code == "illegal_transition"


def test_events_for_another_archive_are_refused() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(
        EventType.ACCESS, access(), "is for archive", archive_id="01HZY3Z4Q8Q1V6S9N0M5K2J3H5"
    )


def test_only_the_custodian_logs_custody_events() -> None:
    story = archived_story()
    story.refuse(EventType.ACCESS, access(), "neither the custodian nor holds", hospital=B)
    story.refuse(
        EventType.HOLD_PLACE,
        {"reason_hash": R, "by_regulator": False},
        "not the custodian",
        hospital=B,
    )
    story.refuse(
        EventType.TRANSFER_OFFER, {"to": C, "expires_at": None}, "not the custodian", hospital=B
    )


# ------------------------------------------------------------------------------------------
# State rules


def test_amend_only_while_created_with_consecutive_versions() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(EventType.AMEND, amend_data(version=3), "version must be 2, not 3")
    story.refuse(EventType.AMEND, amend_data(version=1), "version must be 2, not 1")
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    story.refuse(EventType.AMEND, amend_data(), "only allowed while CREATED")


def test_archive_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(EventType.ARCHIVE, archive_data(commitment=C2), "not the current version")
    story.refuse(
        EventType.ARCHIVE, archive_data(C1, datetime(2024, 4, 30, tzinfo=UTC)), "before its trigger"
    )
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    story.refuse(EventType.ARCHIVE, archive_data(commitment=C1), "only allowed from CREATED")


def test_archive_keeps_the_class_set_by_create() -> None:
    """§8: ARCHIVE's record class is the archive's class (CREATE's); no event changes it.
    Regression: an OUTPATIENT record could be archived as INPATIENT (another retention)."""
    story = Story()
    story.do(EventType.CREATE, create_data(record_class="OUTPATIENT"))
    story.refuse(
        EventType.ARCHIVE,
        archive_data(commitment=C1),
        re.escape("record class INPATIENT differs from the archive's class OUTPATIENT (set by"),
    )
    state = story.do(
        EventType.ARCHIVE, {**archive_data(commitment=C1), "record_class": "OUTPATIENT"}
    )
    assert state.record_class.value == "OUTPATIENT"


def test_custodian_access_rules() -> None:
    story = archived_story()
    story.refuse(EventType.ACCESS, access(grant=R), "names no grant of this archive")
    story.refuse(
        EventType.ACCESS,
        {**access(), "break_glass": True, "reason_hash": R},
        "not inside a break-glass window",
        BreakGlassWindowError,
    )
    story.do(
        EventType.BREAK_GLASS,
        {"reason_hash": R, "purpose": "treatment", "expires_at": story.time + timedelta(hours=4)},
    )
    story.do(EventType.ACCESS, {**access(), "break_glass": True, "reason_hash": R})
    offered(story)
    story.refuse(EventType.ACCESS, access(), "in transit")


def test_a_break_glass_read_needs_a_window_of_the_same_actor_covering_it() -> None:
    """Genuine: BREAK_GLASS then reads inside its window. Forged: no window, another actor,
    another hospital's window, another purpose or reason, a read at or after expires_at."""
    story = archived_story()
    opened_at = story.time + timedelta(minutes=1)
    expires = opened_at + timedelta(hours=4)
    bg = {**access(), "break_glass": True, "reason_hash": R}
    story.refuse(EventType.ACCESS, bg, "not inside a break-glass window", BreakGlassWindowError)
    window = {"reason_hash": R, "purpose": "treatment", "expires_at": expires}
    state = story.do(EventType.BREAK_GLASS, window, at=opened_at)
    assert [(w.actor, w.expires_at) for w in state.break_glass] == [(STAFF, expires)]
    story.do(EventType.ACCESS, bg)  # genuine, and again (a window allows many reads)
    story.do(EventType.ACCESS, {**bg, "scope": "metadata"})
    for forged, kw in (
        (bg, {"actor": MANAGER}),  # another member of staff
        ({**bg, "purpose": "research"}, {}),  # another purpose
        ({**bg, "reason_hash": "bb" * 32}, {}),  # another reason
        (bg, {"at": expires}),  # the window is over (expires_at is exclusive)
        (bg, {"at": expires + timedelta(days=1)}),
    ):
        with pytest.raises(BreakGlassWindowError, match="not inside a break-glass window") as exc:
            story.do(EventType.ACCESS, forged, **kw)
        assert exc.value.code == "break_glass_unopened"
    # a read just before the end is inside; a fresh window opens the door again
    story.do(EventType.ACCESS, bg, at=expires - timedelta(seconds=1))
    story.do(
        EventType.BREAK_GLASS,
        {**window, "expires_at": expires + timedelta(hours=4)},
        at=expires + timedelta(minutes=5),
    )
    state = story.do(EventType.ACCESS, bg)
    assert len(state.break_glass) == 1  # the expired window was dropped when the new one opened
    # an ordinary read never needs a window
    story.do(EventType.ACCESS, access(), actor=MANAGER)


def test_a_window_of_the_former_custodian_does_not_cover_the_new_custodians_reads() -> None:
    story = archived_story()
    expires = story.time + timedelta(hours=4)
    story.do(
        EventType.BREAK_GLASS, {"reason_hash": R, "purpose": "treatment", "expires_at": expires}
    )
    offered(story)
    assert story.state is not None
    story.do(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": story.state.offer_hash},
        hospital=B,
    )
    bg = {**access(), "break_glass": True, "reason_hash": R}
    story.refuse(EventType.ACCESS, bg, "not inside a break-glass window", BreakGlassWindowError)


def test_disclosures_to_a_grantee_in_the_custodians_log() -> None:
    """The custodian logs each hand-over of key, ciphertext or evidence to a grantee as an ACCESS
    naming the grant, with the grantee's address as actor, on the main chain."""
    story = archived_story()
    grant_hash = grant(story, C, "referral", days=1)
    disclosed = access("referral", grant=grant_hash)
    story.refuse(EventType.ACCESS, disclosed, "names actor", actor=STAFF)
    story.refuse(EventType.ACCESS, disclosed, "names actor", actor=B)
    story.refuse(EventType.ACCESS, access("research", grant=grant_hash), "differs", actor=C)
    story.refuse(
        EventType.ACCESS,
        {**disclosed, "break_glass": True, "reason_hash": R},
        "never break-glass",
        actor=C,
    )
    story.refuse(EventType.ACCESS, access("referral", grant=R), "names no grant", actor=C)
    head = story.do(EventType.ACCESS, disclosed, actor=C).head
    story.do(EventType.ACCESS, access("referral", "proof", grant=grant_hash), actor=C)
    assert story.state is not None
    assert story.state.head != head  # on the main chain: it moves the head
    assert story.state.grant_for(C).head == grant_hash  # type: ignore[union-attr]  # side chain not
    expiry = story.state.grant_for(C).expires_at  # type: ignore[union-attr]
    story.refuse(EventType.ACCESS, disclosed, "after the grant expired", actor=C, at=expiry)
    story.do(EventType.SHARE_REVOKE, {"grantee": C, "reason": "revoked"})
    story.refuse(EventType.ACCESS, disclosed, "names no grant", actor=C)


def test_grantee_access_rules() -> None:
    story = archived_story()
    grant_hash = grant(story, C, "referral", days=1)
    ok = access("referral", grant=grant_hash)
    story.refuse(
        EventType.ACCESS,
        access("referral"),
        "must name its SHARE_GRANT",
        hospital=C,
        prev=grant_hash,
    )
    story.refuse(
        EventType.ACCESS,
        access("research", grant=grant_hash),
        "differs from the grant",
        hospital=C,
        prev=grant_hash,
    )
    story.refuse(
        EventType.ACCESS,
        {**ok, "break_glass": True, "reason_hash": R},
        "only possible at the custodian",
        hospital=C,
        prev=grant_hash,
    )
    story.refuse(
        EventType.ACCESS,
        ok,
        "grant's last event",
        PrevHashMismatchError,
        hospital=C,
        prev="00" * 32,
    )
    story.refuse(
        EventType.ACCESS,
        ok,
        "before the grantee's previous",
        EventTimeOrderError,
        hospital=C,
        prev=grant_hash,
        at=story.time - timedelta(seconds=1),
    )
    expiry = story.state.grant_for(C).expires_at  # type: ignore[union-attr]
    story.refuse(
        EventType.ACCESS,
        ok,
        "nor holds an active share grant",
        hospital=C,
        prev=grant_hash,
        at=expiry,
    )
    story.refuse(
        EventType.ACCESS, ok, "nor holds an active share grant", hospital=B, prev=grant_hash
    )
    event = story.make(
        EventType.ACCESS, ok, hospital=C, prev=grant_hash, at=expiry - timedelta(seconds=1)
    )
    state = apply(story.state, event)
    assert state.grant_for(C).head == event_leaf_hash(event).hex()  # type: ignore[union-attr]


def test_grants_end_with_revocation_transfer_and_destruction() -> None:
    story = archived_story()
    grant_hash = grant(story, C)
    story.do(EventType.SHARE_REVOKE, {"grantee": C, "reason": "revoked"})
    story.refuse(
        EventType.ACCESS,
        access("referral", grant=grant_hash),
        "nor holds",
        hospital=C,
        prev=grant_hash,
    )
    grant_hash = grant(story, C)
    offered(story, B)
    story.do(EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": None}, hospital=B)
    assert story.state.grants == ()  # type: ignore[union-attr]
    story.refuse(
        EventType.ACCESS,
        access("referral", grant=grant_hash),
        "nor holds",
        hospital=C,
        prev=grant_hash,
    )


def test_share_grant_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    grant(story, B)  # sharing is possible before archiving
    story.refuse(
        EventType.SHARE_GRANT,
        {"grantee": B, "purpose": "referral", "expires_at": story.time + timedelta(days=9)},
        "already holds an active grant",
    )
    story.refuse(
        EventType.SHARE_GRANT,
        {"grantee": A, "purpose": "referral", "expires_at": story.time + timedelta(days=9)},
        "cannot grant access to itself",
    )
    story.refuse(
        EventType.SHARE_GRANT,
        {"grantee": C, "purpose": "referral", "expires_at": story.time + timedelta(minutes=1)},
        "already be expired",
    )
    # An expired grant may be replaced without a revocation.
    later = story.time + timedelta(days=8)
    state = story.do(
        EventType.SHARE_GRANT,
        {"grantee": B, "purpose": "research", "expires_at": later + timedelta(days=1)},
        at=later,
    )
    assert [g.purpose.value for g in state.grants] == ["research"]
    story.refuse(EventType.SHARE_REVOKE, {"grantee": C, "reason": "revoked"}, "holds no grant")
    story.refuse(
        EventType.SHARE_REVOKE, {"grantee": B, "reason": "expired"}, "before the grant's expiry"
    )
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    offered(story)
    story.refuse(
        EventType.SHARE_GRANT,
        {"grantee": C, "purpose": "referral", "expires_at": story.time + timedelta(days=9)},
        "only allowed while CREATED/ARCHIVED",
    )


def test_transfer_offer_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(
        EventType.TRANSFER_OFFER, {"to": B, "expires_at": None}, "only allowed from ARCHIVED"
    )
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    story.refuse(EventType.TRANSFER_OFFER, {"to": A, "expires_at": None}, "current custodian")
    story.refuse(
        EventType.TRANSFER_OFFER, {"to": B, "expires_at": story.time}, "already be expired"
    )
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False})
    story.refuse(
        EventType.TRANSFER_OFFER, {"to": B, "expires_at": None}, "legal hold: transfer-out"
    )


def test_transfer_accept_rules() -> None:
    story = archived_story()
    grant(story, C)
    offer_hash = offered(story, B, expires_at=story.time + timedelta(hours=1))
    story.refuse(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": None},
        "not the pending recipient",
        hospital=C,
    )
    story.refuse(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": None},
        "not the pending recipient",
        hospital=A,
    )
    story.refuse(
        EventType.TRANSFER_ACCEPT,
        {"from": C, "offer_hash": None},
        "is not the custodian",
        hospital=B,
    )
    story.refuse(EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": R}, "offer_hash", hospital=B)
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": True}, actor=REGULATOR)
    story.refuse(
        EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": offer_hash}, "legal hold", hospital=B
    )
    story.do(EventType.HOLD_RELEASE, {"reason_hash": R}, actor=REGULATOR)
    story.do(EventType.SHARE_REVOKE, {"grantee": C, "reason": "revoked"})  # allowed while pending
    # The recipient chains to the custodian's last event, not to the offer it saw earlier.
    story.refuse(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": offer_hash},
        "last event",
        PrevHashMismatchError,
        hospital=B,
        prev=offer_hash,
    )
    state = story.do(EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": offer_hash}, hospital=B)
    assert state.custodian == B
    story.refuse(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": None},
        "only allowed while TRANSFER_PENDING",
        hospital=B,
    )


def test_an_acceptance_after_the_offers_expiry_stands_until_the_custodian_cancels() -> None:
    """Expiry is enforced by the custodian's cancel (serialised by the contract against the
    acceptance); an acceptance logged after the expiry but before any cancel is legal."""
    story = archived_story()
    offer_hash = offered(story, B, expires_at=story.time + timedelta(minutes=5))
    late = story.do(
        EventType.TRANSFER_ACCEPT,
        {"from": A, "offer_hash": offer_hash},
        hospital=B,
        at=story.time + timedelta(hours=2),
    )
    assert late.custodian == B
    assert late.status is ArchiveStatus.ARCHIVED


def test_transfer_reject_and_cancel_rules() -> None:
    story = archived_story()
    offered(story, B)
    story.refuse(
        EventType.TRANSFER_REJECT,
        {"by": C, "reason_hash": R},
        "not the pending recipient",
        hospital=B,
    )
    story.refuse(
        EventType.TRANSFER_REJECT,
        {"by": B, "reason_hash": R},
        "neither custodian nor recipient",
        hospital=C,
    )
    state = story.do(EventType.TRANSFER_REJECT, {"by": B, "reason_hash": R}, hospital=B)
    assert (state.status, state.custodian, state.pending_recipient) == (
        ArchiveStatus.ARCHIVED,
        A,
        None,
    )
    story.refuse(
        EventType.TRANSFER_CANCEL,
        {"to": B, "reason": "withdrawn"},
        "only allowed while TRANSFER_PENDING",
    )
    offered(story, C)
    story.refuse(
        EventType.TRANSFER_CANCEL, {"to": B, "reason": "withdrawn"}, "not the pending recipient"
    )
    story.refuse(
        EventType.FIXITY_CHECK, {"version": 1, "ciphertext_sha256": X1, "ok": True}, "in transit"
    )
    state = story.do(EventType.TRANSFER_CANCEL, {"to": C, "reason": "expired"})
    assert state.status is ArchiveStatus.ARCHIVED
    assert state.custodian == A


def test_hold_rules_mirror_the_contract() -> None:
    story = archived_story()
    story.refuse(EventType.HOLD_RELEASE, {"reason_hash": R}, "not on hold")
    story.refuse(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": True}, "member address")
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False})
    story.refuse(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False}, "already on hold")
    # A regulator takes over the custodian's hold ...
    state = story.do(
        EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": True}, actor=REGULATOR
    )
    assert (state.on_hold, state.hold_by_regulator, state.hold_placed_by) == (True, True, REGULATOR)
    assert expected_custody(state).hold_by_regulator is True
    story.refuse(
        EventType.HOLD_PLACE,
        {"reason_hash": R, "by_regulator": True},
        "already on hold",
        actor=REGULATOR,
    )
    # ... which the custodian's staff cannot release.
    story.refuse(EventType.HOLD_RELEASE, {"reason_hash": R}, "released by a regulator")
    state = story.do(EventType.HOLD_RELEASE, {"reason_hash": R}, actor=REGULATOR)
    assert (state.on_hold, state.hold_by_regulator, state.hold_placed_by) == (False, False, None)


def test_retention_extension_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE + timedelta(days=1)},
        "once ARCHIVED",
    )
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    story.refuse(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE - timedelta(days=1)},
        "never shortened",
    )
    story.refuse(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE},
        "never shortened",
    )
    story.refuse(
        EventType.RETENTION_EXTEND,
        {
            "previous_deadline": DEADLINE + timedelta(days=1),
            "new_deadline": DEADLINE + timedelta(days=2),
        },
        "not the current retention deadline",
    )
    offered(story)
    state = story.do(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE + timedelta(days=1)},
    )
    assert state.status is ArchiveStatus.TRANSFER_PENDING  # the contract allows it while pending
    story.do(EventType.TRANSFER_CANCEL, {"to": B, "reason": "withdrawn"})
    later = DEADLINE + timedelta(days=1)
    story.do(EventType.DISPOSITION_START, {}, at=later)
    state = story.do(
        EventType.RETENTION_EXTEND,
        {"previous_deadline": later, "new_deadline": later + timedelta(days=365)},
    )
    assert state.status is ArchiveStatus.ARCHIVED  # extending ends the disposition review


def test_disposition_and_destruction_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(EventType.DISPOSITION_START, {}, "only allowed from ARCHIVED", at=DEADLINE)
    story.do(EventType.ARCHIVE, archive_data(commitment=C1))
    story.refuse(
        EventType.DESTROY,
        {"certificate_hash": R, "method": "crypto_erasure"},
        "from DISPOSITION_REVIEW",
    )
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False})
    story.refuse(EventType.DISPOSITION_START, {}, "legal hold: disposition", at=DEADLINE)
    story.do(EventType.HOLD_RELEASE, {"reason_hash": R})
    story.do(EventType.DISPOSITION_START, {}, at=DEADLINE)
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": True}, actor=REGULATOR)
    story.refuse(
        EventType.DESTROY,
        {"certificate_hash": R, "method": "crypto_erasure"},
        "legal hold: destruction",
    )
    story.do(EventType.HOLD_RELEASE, {"reason_hash": R}, actor=REGULATOR)
    story.refuse(
        EventType.DESTROY,
        {"certificate_hash": R, "method": "crypto_erasure"},
        "no approved disposition",
    )
    approve(story)
    state = story.do(
        EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure_and_physical"}
    )
    assert state.status is ArchiveStatus.DESTROYED


def approve(story: Story, proposal: str = LIST, days: int = 30) -> ArchiveState:
    """A disposition list proposed by STAFF and approved by MANAGER (four eyes)."""
    story.do(EventType.DISPOSITION_PROPOSE, {"proposal": proposal, "reason_hash": R})
    expires = story.time + timedelta(days=days)
    return story.do(
        EventType.DISPOSITION_APPROVE,
        {"proposal": proposal, "expires_at": expires, "reason_hash": R},
        actor=MANAGER,
    )


def test_disposition_is_proposed_and_approved_by_two_people_before_destruction() -> None:
    story = archived_story()
    story.refuse(EventType.DISPOSITION_PROPOSE, {"proposal": LIST, "reason_hash": R},
                 "only allowed in DISPOSITION_REVIEW")  # fmt: skip
    story.do(EventType.DISPOSITION_START, {}, at=DEADLINE)
    story.refuse(
        EventType.DISPOSITION_APPROVE,
        {"proposal": LIST, "expires_at": DEADLINE + timedelta(days=30), "reason_hash": R},
        "on no disposition list",
        actor=MANAGER,
    )
    state = story.do(EventType.DISPOSITION_PROPOSE, {"proposal": LIST, "reason_hash": R})
    assert (state.disposition_proposal, state.disposition_proposed_by) == (LIST, STAFF)
    expires = story.time + timedelta(days=30)
    approval = {"proposal": LIST, "expires_at": expires, "reason_hash": R}
    story.refuse(EventType.DISPOSITION_APPROVE, approval, "four eyes")  # the proposer itself
    story.refuse(EventType.DISPOSITION_APPROVE, {**approval, "proposal": LIST2},
                 "not " + LIST2, actor=MANAGER)  # fmt: skip
    story.refuse(EventType.DISPOSITION_APPROVE, {**approval, "expires_at": story.time},
                 "expire after", actor=MANAGER, at=story.time)  # fmt: skip
    story.do(EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": True}, actor=REGULATOR)
    story.refuse(EventType.DISPOSITION_APPROVE, approval, "legal hold: disposition",
                 actor=MANAGER)  # fmt: skip
    story.do(EventType.HOLD_RELEASE, {"reason_hash": R}, actor=REGULATOR)
    state = story.do(EventType.DISPOSITION_APPROVE, approval, actor=MANAGER)
    assert state.disposition_approved_until == expires
    story.refuse(EventType.DISPOSITION_APPROVE, approval, "already approved", actor=MANAGER)
    # An approval lapses: destruction at or after expires_at is refused; a new list starts over.
    story.refuse(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"},
                 "approval expired", at=expires)  # fmt: skip
    state = story.do(EventType.DISPOSITION_PROPOSE, {"proposal": LIST2, "reason_hash": R},
                     at=expires + timedelta(days=1))  # fmt: skip
    assert (state.disposition_proposal, state.disposition_approved_until) == (LIST2, None)
    story.refuse(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"},
                 "no approved disposition")  # fmt: skip
    approve(story, LIST2)
    state = story.do(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"})
    assert state.status is ArchiveStatus.DESTROYED


def test_a_rejection_ends_the_list_and_its_approval() -> None:
    story = archived_story()
    story.do(EventType.DISPOSITION_START, {}, at=DEADLINE)
    state = approve(story)
    later = DEADLINE + timedelta(days=365)
    state = story.do(
        EventType.RETENTION_EXTEND, {"previous_deadline": DEADLINE, "new_deadline": later}
    )
    assert state.status is ArchiveStatus.ARCHIVED
    assert (state.disposition_proposal, state.disposition_approved_until) == (None, None)
    story.do(EventType.DISPOSITION_START, {}, at=later)
    story.refuse(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"},
                 "no approved disposition")  # fmt: skip


DESTROYED_REFUSALS: list[tuple[EventType, dict[str, Any], str]] = [
    (EventType.AMEND, amend_data(), ""),
    (EventType.ARCHIVE, archive_data(), ""),
    (EventType.ACCESS, access(), "content was destroyed"),
    (
        EventType.SHARE_GRANT,
        {"grantee": C, "purpose": "audit", "expires_at": DEADLINE + timedelta(days=99)},
        "",
    ),
    (EventType.SHARE_REVOKE, {"grantee": C, "reason": "revoked"}, ""),
    (EventType.TRANSFER_OFFER, {"to": B, "expires_at": None}, ""),
    (EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": None}, ""),
    (EventType.TRANSFER_REJECT, {"by": B, "reason_hash": R}, ""),
    (EventType.TRANSFER_CANCEL, {"to": B, "reason": "withdrawn"}, ""),
    (EventType.HOLD_PLACE, {"reason_hash": R, "by_regulator": False}, ""),
    (EventType.HOLD_RELEASE, {"reason_hash": R}, ""),
    (
        EventType.RETENTION_EXTEND,
        {"previous_deadline": DEADLINE, "new_deadline": DEADLINE + timedelta(days=1)},
        "",
    ),
    (EventType.DISPOSITION_START, {}, ""),
    (EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"}, ""),
    (EventType.DISPOSITION_PROPOSE, {"proposal": LIST2, "reason_hash": R}, ""),
    (
        EventType.DISPOSITION_APPROVE,
        {"proposal": LIST, "expires_at": DEADLINE + timedelta(days=99), "reason_hash": R},
        "",
    ),
    (
        EventType.FIXITY_CHECK,
        {"version": 1, "ciphertext_sha256": X1, "ok": True},
        "before DESTROYED",
    ),
    (EventType.TIER_MOVE, {"from_tier": "hot", "to_tier": "cold"}, ""),
    (EventType.TAG_BIND, {"tag_kind": "qr", "tag_hash": "7b" * 32}, ""),
]


@pytest.mark.parametrize(
    ("event_type", "data", "match"), DESTROYED_REFUSALS, ids=lambda x: str(x)[:20]
)
def test_nothing_but_evidence_reads_and_tag_scans_after_destruction(
    event_type: EventType, data: dict[str, Any], match: str
) -> None:
    story = archived_story()
    story.do(EventType.TAG_BIND, {"tag_kind": "qr", "tag_hash": TAG})
    story.do(EventType.DISPOSITION_START, {}, at=DEADLINE)
    approve(story)
    story.do(EventType.DESTROY, {"certificate_hash": R, "method": "crypto_erasure"})
    hospital = B if event_type in (EventType.TRANSFER_ACCEPT,) else None
    story.refuse(event_type, data, match, hospital=hospital)
    story.do(EventType.ACCESS, access("audit", "metadata"))
    story.do(EventType.TAG_SCAN, {"tag_hash": TAG, "reader": STAFF})


def test_fixity_tier_and_tag_rules() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(
        EventType.FIXITY_CHECK, {"version": 2, "ciphertext_sha256": X1, "ok": True}, "no version 2"
    )
    story.refuse(
        EventType.FIXITY_CHECK,
        {"version": 1, "ciphertext_sha256": X2, "ok": True},
        "recorded ciphertext hash",
    )
    story.do(
        EventType.FIXITY_CHECK, {"version": 1, "ciphertext_sha256": X2, "ok": False}
    )  # a failure is evidence
    story.refuse(
        EventType.TIER_MOVE, {"from_tier": "cold", "to_tier": "hot"}, "in tier hot, not cold"
    )
    story.refuse(
        EventType.TIER_MOVE, {"from_tier": "hot", "to_tier": "hot"}, "must change the tier"
    )
    state = story.do(EventType.TIER_MOVE, {"from_tier": "hot", "to_tier": "cold"})
    assert state.tier is StorageTier.COLD
    story.refuse(EventType.TAG_SCAN, {"tag_hash": TAG, "reader": STAFF}, "not bound")
    story.do(EventType.TAG_BIND, {"tag_kind": "rfid_epc", "tag_hash": TAG})
    story.refuse(EventType.TAG_BIND, {"tag_kind": "qr", "tag_hash": TAG}, "already bound")
    story.do(EventType.TAG_SCAN, {"tag_hash": TAG, "reader": A})


def test_states_are_immutable_values() -> None:
    story = archived_story()
    state = story.state
    assert state is not None
    with pytest.raises(AttributeError):
        state.custodian = B  # type: ignore[misc]
    changed = replace(state, on_hold=True)
    assert state.on_hold is False
    assert changed.on_hold is True


def test_refusal_message_names_state_and_event() -> None:
    story = archived_story()
    refusal: Callable[..., TransitionRefusedError] = story.refuse
    error = refusal(EventType.AMEND, amend_data(), "archived records are immutable")
    assert str(error).startswith("AMEND refused in state ARCHIVED: ")
    assert error.code == "illegal_transition"
    assert isinstance(error, ValueError)


def test_advancing_a_state_equals_dataclasses_replace() -> None:
    import dataclasses

    from anchoring import lifecycle

    state = archived_story().state
    assert state is not None
    later = state.last_time + timedelta(seconds=5)
    assert lifecycle._advanced(state, "ab" * 32, later, 9) == dataclasses.replace(
        state, head="ab" * 32, last_time=later, event_count=9
    )


# ------------------------------------------------------------------------------------------
# RECLASSIFY: an archivist's correction of the ingestion rules' class and sensitivity


def reclassify_data(**overrides: Any) -> dict[str, Any]:
    return {
        "previous_class": "INPATIENT",
        "previous_sensitivity": "NORMAL",
        "record_class": "LAB",
        "sensitivity": "HIGHLY_SENSITIVE",
        "reason_hash": R,
        **overrides,
    }


def test_reclassify_replaces_class_and_sensitivity_and_archive_follows() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    state = story.do(EventType.RECLASSIFY, reclassify_data())
    assert (state.record_class.value, state.sensitivity.value) == ("LAB", "HIGHLY_SENSITIVE")
    # ARCHIVE must now name the corrected class, no longer CREATE's.
    story.refuse(
        EventType.ARCHIVE,
        archive_data(commitment=C1),
        re.escape("record class INPATIENT differs from the archive's class LAB"),
    )
    state = story.do(EventType.ARCHIVE, {**archive_data(commitment=C1), "record_class": "LAB"})
    assert state.status is ArchiveStatus.ARCHIVED
    archived_deadline = state.retention_deadline
    # Archived: still correctable (the node bounds class changes by retention); the deadline
    # stays until a RETENTION_EXTEND moves it.
    state = story.do(
        EventType.RECLASSIFY,
        reclassify_data(
            previous_class="LAB", previous_sensitivity="HIGHLY_SENSITIVE", record_class="INPATIENT"
        ),
    )
    assert state.status is ArchiveStatus.ARCHIVED
    assert state.record_class.value == "INPATIENT"
    assert state.retention_deadline == archived_deadline


def test_reclassify_refusals() -> None:
    story = Story()
    story.do(EventType.CREATE, create_data())
    story.refuse(
        EventType.RECLASSIFY,
        reclassify_data(previous_class="OUTPATIENT"),
        "previous_class OUTPATIENT is not the archive's class INPATIENT",
    )
    story.refuse(
        EventType.RECLASSIFY,
        reclassify_data(previous_sensitivity="SENSITIVE"),
        "previous_sensitivity SENSITIVE is not the archive's sensitivity NORMAL",
    )
    story.refuse(
        EventType.RECLASSIFY,
        reclassify_data(record_class="INPATIENT", sensitivity="NORMAL"),
        "must change the class or the sensitivity",
    )
    story.refuse(EventType.RECLASSIFY, reclassify_data(), "custodian", hospital=B)
    # A sensitivity-only correction is one.
    state = story.do(EventType.RECLASSIFY, reclassify_data(record_class="INPATIENT"))
    assert (state.record_class.value, state.sensitivity.value) == (
        "INPATIENT",
        "HIGHLY_SENSITIVE",
    )
