"""The verifier against real RFC 6962 logs of several hospitals and recorded chain facts.

``RecordedChain`` is a ChainReader holding checkpoints and custody records exactly as the notary
contract returns them (it accepts a checkpoint only with a valid consistency proof, like the
contract). End-to-end runs against a real anvil live with the anchoring worker's tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anchoring import merkle
from anchoring.bundle import (
    BundleCheckpoint,
    BundleEntry,
    CustodyClaim,
    ProofBundle,
    dump_bundle,
    parse_bundle,
)
from anchoring.chainview import CustodyRecord, CustodyState, OnChainCheckpoint
from anchoring.errors import ChainError, NotANotaryError
from anchoring.events import (
    EVENT_MODELS,
    EventType,
    canonical_bytes,
)
from anchoring.ids import ZERO_ADDRESS
from anchoring.lifecycle import ArchiveState, apply, expected_custody
from anchoring.verifier import Code, Report, Status, Verdict, verify_bundle

A = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
B = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0"
C = "0x22d491Bde2303f2f43325b2108D26f1eAbA1e32b"
NOTARY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31337
ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
OTHER_ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H9"
STAFF = "5f" * 32
C1, X1, R = "c1" * 32, "e1" * 32, "aa" * 32
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DEADLINE = datetime(2024, 6, 1, tzinfo=UTC)


@dataclass
class HospitalLog:
    """One hospital's append-only log, in memory."""

    hospital: str
    leaves: list[bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def append(self, data: bytes) -> int:
        self.leaves.append(merkle.leaf_hash(data))
        return self.size - 1

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.leaves[:size])


@dataclass
class RecordedChain:
    """A ChainReader over recorded checkpoints and custody records (in memory)."""

    chain_id_value: int = CHAIN_ID
    notary: str = NOTARY
    checkpoints: dict[str, list[OnChainCheckpoint]] = field(default_factory=dict)
    records: dict[str, CustodyRecord] = field(default_factory=dict)
    down: bool = False
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def anchor(self, log: HospitalLog, anchored_at: int) -> OnChainCheckpoint:
        existing = self.checkpoints.setdefault(log.hospital, [])
        root = log.root(log.size)
        if existing:  # the contract's rule: grow, with a valid consistency proof
            previous = existing[-1]
            assert log.size > previous.size
            proof = merkle.consistency_proof(previous.size, log.size, log.leaves)
            merkle.verify_consistency(previous.size, log.size, previous.root, root, proof)
        checkpoint = OnChainCheckpoint(log.hospital, len(existing), log.size, root, anchored_at)
        existing.append(checkpoint)
        return checkpoint

    def _call(self, *call: Any) -> None:
        self.calls.append(call)
        if self.down:
            raise ChainError("connection refused: http://127.0.0.1:8545")

    def chain_id(self) -> int:
        self._call("chain_id")
        return self.chain_id_value

    def notary_address(self) -> str:
        self._call("notary_address")
        return self.notary

    def checkpoint_count(self, hospital: str) -> int:
        self._call("checkpoint_count", hospital)
        return len(self.checkpoints.get(hospital, []))

    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint:
        self._call("checkpoint_at", hospital, index)
        found = self.checkpoints.get(hospital, [])
        if index >= len(found):
            raise ChainError(f"execution reverted: NotaryUnknownCheckpoint({hospital}, {index})")
        return found[index]

    def custody(self, archive_id: str) -> CustodyRecord:
        self._call("custody", archive_id)
        return self.records.get(
            archive_id,
            CustodyRecord(
                archive_id,
                ZERO_ADDRESS,
                CustodyState.NONE,
                False,
                False,
                0,
                0,
                bytes(32),
                ZERO_ADDRESS,
                bytes(32),
            ),
        )

    def record_custody(self, state: ArchiveState) -> None:
        """Set the custody record the contract would hold for ``state``."""
        expected = expected_custody(state)
        self.records[state.archive_id] = CustodyRecord(
            archive_id=state.archive_id,
            custodian=expected.custodian,
            state=expected.state,
            on_hold=expected.on_hold,
            hold_by_regulator=expected.hold_by_regulator,
            record_class=expected.record_class or 0,
            retention_deadline=expected.retention_deadline or 0,
            commitment=bytes.fromhex(expected.commitment) if expected.commitment else bytes(32),
            pending_recipient=expected.pending_recipient,
            certificate_hash=bytes.fromhex(state.certificate_hash)
            if state.certificate_hash
            else bytes(32),
        )


KEEP: Any = object()


@dataclass
class Network:
    """Three hospitals' logs, a chain, and one archive's story told across them."""

    chain: RecordedChain = field(default_factory=RecordedChain)
    logs: dict[str, HospitalLog] = field(
        default_factory=lambda: {h: HospitalLog(h) for h in (A, B, C)}
    )
    state: ArchiveState | None = None
    clock: datetime = T0
    placed: list[tuple[str, int, bytes]] = field(default_factory=list)  # (hospital, index, bytes)

    def log(
        self,
        event_type: EventType,
        data: dict[str, Any],
        *,
        hospital: str | None = None,
        prev: Any = KEEP,
        at: datetime | None = None,
        archive_id: str = ARCHIVE,
        track: bool = True,
    ) -> bytes:
        hospital = hospital or (self.state.custodian if self.state else A)
        self.clock = at or self.clock + timedelta(minutes=1)
        if prev is KEEP:
            prev = self.state.head if self.state else None
        log = self.logs[hospital]
        event = EVENT_MODELS[event_type].model_validate(
            {
                "hospital": hospital,
                "log_index": log.size,
                "archive_id": archive_id,
                "actor": STAFF,
                "time": self.clock,
                "prev": prev,
                "data": data,
            }
        )
        data_bytes = canonical_bytes(event)  # type: ignore[arg-type]
        index = log.append(data_bytes)
        if track:
            self.state = apply(self.state, event)  # type: ignore[arg-type]
            self.placed.append((hospital, index, data_bytes))
        return data_bytes

    def noise(self, hospital: str, count: int) -> None:
        """Events of another archive in the same log, so indices interleave."""
        for _ in range(count):
            self.log(
                EventType.CREATE,
                _create_data(),
                hospital=hospital,
                prev=None,
                archive_id=OTHER_ARCHIVE,
                track=False,
            )

    def anchor_all(self, delay: timedelta = timedelta(seconds=3)) -> None:
        at = int((self.clock + delay).timestamp())
        for log in self.logs.values():
            known = self.chain.checkpoints.get(log.hospital, [])
            if log.size and (not known or known[-1].size < log.size):
                self.chain.anchor(log, at)

    def bundle(self, custody: CustodyClaim | None = None) -> ProofBundle:
        """Each event proven against the first checkpoint of its log that includes it."""
        entries = []
        for hospital, index, data in self.placed:
            checkpoint = next(c for c in self.chain.checkpoints[hospital] if c.size > index)
            log = self.logs[hospital]
            entries.append(
                BundleEntry(
                    hospital=hospital,
                    log_index=index,
                    event=data,
                    proof=tuple(merkle.inclusion_proof(index, checkpoint.size, log.leaves)),
                    checkpoint=BundleCheckpoint(
                        hospital, checkpoint.index, checkpoint.size, checkpoint.root
                    ),
                )
            )
        return ProofBundle(CHAIN_ID, NOTARY, ARCHIVE, tuple(entries), custody)


def _create_data() -> dict[str, Any]:
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
    }


def _archive_data() -> dict[str, Any]:
    return {
        "record_class": "INPATIENT",
        "retention_policy": "INPATIENT_30Y",
        "trigger_date": "2024-05-01",
        "retention_deadline": DEADLINE,
        "commitment": C1,
    }


def _access(purpose: str = "treatment", **extra: Any) -> dict[str, Any]:
    return {"purpose": purpose, "scope": "content", "break_glass": False, **extra}


def single_hospital() -> Network:
    """CREATE, ACCESS, ARCHIVE, ACCESS at hospital A, anchored in two batches."""
    net = Network()
    net.noise(A, 3)
    net.log(EventType.CREATE, _create_data())
    net.log(EventType.ACCESS, _access())
    net.anchor_all()
    net.noise(A, 2)
    net.log(EventType.ARCHIVE, _archive_data())
    net.log(EventType.ACCESS, _access("audit"))
    net.noise(A, 4)
    net.anchor_all()
    assert net.state is not None
    net.chain.record_custody(net.state)
    return net


def transferred() -> Network:
    """Created and archived at A, shared with C (who reads it), transferred to B, read at B."""
    net = Network()
    net.noise(B, 5)
    net.log(EventType.CREATE, _create_data())
    net.log(EventType.ARCHIVE, _archive_data())
    net.anchor_all()
    grant = net.log(
        EventType.SHARE_GRANT,
        {"grantee": C, "purpose": "referral", "expires_at": net.clock + timedelta(days=3)},
    )
    grant_hash = merkle.leaf_hash(grant).hex()
    net.log(EventType.ACCESS, _access("referral", grant=grant_hash), hospital=C, prev=grant_hash)
    net.noise(C, 2)
    net.log(EventType.TRANSFER_OFFER, {"to": B, "expires_at": None})
    net.anchor_all()
    offer_hash = net.state.offer_hash  # type: ignore[union-attr]
    net.log(EventType.TRANSFER_ACCEPT, {"from": A, "offer_hash": offer_hash}, hospital=B)
    net.log(EventType.ACCESS, _access())
    net.anchor_all()
    assert net.state is not None
    net.chain.record_custody(net.state)
    return net


def failure_of(report: Report, code: Code, entry: int | None = None) -> str:
    assert report.status is Status.INVALID, report.to_text()
    assert report.failure is not None
    assert report.failure.code is code, report.to_text()
    assert report.failure.entry == entry
    assert not report.ok
    return report.failure.message


# ------------------------------------------------------------------------------------------
# Valid bundles


def test_single_hospital_bundle_verifies() -> None:
    net = single_hospital()
    bundle = net.bundle()
    report = verify_bundle(parse_bundle(dump_bundle(bundle)), net.chain)
    assert report.status is Status.VALID, report.to_text()
    assert report.ok
    assert report.failure is None
    assert report.custody_checked
    assert [e.event_type for e in report.entries] == ["CREATE", "ACCESS", "ARCHIVE", "ACCESS"]
    assert [e.verdict for e in report.entries] == [Verdict.OK] * 4
    assert [e.log_index for e in report.entries] == [3, 4, 7, 8]
    assert [e.checkpoint_index for e in report.entries] == [0, 0, 1, 1]
    first_block = net.chain.checkpoints[A][0].anchored_at
    assert report.entries[0].block_time == first_block
    assert report.final_state is not None
    assert report.final_state.custodian == A
    text = report.to_text()
    assert "VALID: 4 events verified" in text
    assert "ARCHIVE" in text
    as_json = report.to_json()
    assert as_json["status"] == "valid"
    assert as_json["entries"][2]["type"] == "ARCHIVE"
    assert as_json["entries"][0]["block_time"] == first_block
    assert as_json["final_state"]["status"] == "ARCHIVED"


def test_bundle_spanning_three_logs_verifies_with_custody_at_the_receiver() -> None:
    net = transferred()
    report = verify_bundle(net.bundle(), net.chain)
    assert report.ok, report.to_text()
    hospitals = [e.hospital for e in report.entries]
    assert hospitals == [A, A, A, C, A, B, B]
    assert report.final_state is not None
    assert report.final_state.custodian == B
    assert net.chain.records[ARCHIVE].custodian == B


def test_each_checkpoint_is_read_once() -> None:
    net = single_hospital()
    net.chain.calls.clear()
    verify_bundle(net.bundle(), net.chain)
    assert net.chain.calls.count(("checkpoint_count", A)) == 1
    assert net.chain.calls.count(("checkpoint_at", A, 0)) == 1
    assert net.chain.calls.count(("checkpoint_at", A, 1)) == 1
    assert net.chain.calls.count(("custody", ARCHIVE)) == 1


# ------------------------------------------------------------------------------------------
# Tampering: each fails and names the reason


def _with_entry(bundle: ProofBundle, position: int, **changes: Any) -> ProofBundle:
    entries = list(bundle.entries)
    entries[position] = replace(entries[position], **changes)
    return replace(bundle, entries=tuple(entries))


def test_flipped_byte_in_an_event_breaks_inclusion() -> None:
    net = single_hospital()
    bundle = net.bundle()
    event = bundle.entries[2].event
    position = event.index(C1.encode()) + 5
    tampered_event = event[:position] + b"0" + event[position + 1 :]  # still a valid event
    report = verify_bundle(_with_entry(bundle, 2, event=tampered_event), net.chain)
    message = failure_of(report, Code.INCLUSION_INVALID, entry=2)
    assert "inclusion root mismatch: expected" in message
    assert report.entries[2].verdict is Verdict.FAILED
    assert report.entries[3].verdict is Verdict.UNCHECKED  # the sequence stops at the break
    assert report.entries[1].verdict is Verdict.OK


def test_flipped_byte_that_breaks_the_event_encoding() -> None:
    net = single_hospital()
    bundle = net.bundle()
    event = bundle.entries[1].event
    broken = event.replace(b'"v":1', b'"v":2')
    report = verify_bundle(_with_entry(bundle, 1, event=broken), net.chain)
    message = failure_of(report, Code.EVENT_INVALID, entry=1)
    assert "unsupported schema version 2" in message
    assert report.entries[1].event_type is None


def test_flipped_byte_in_a_proof_hash() -> None:
    net = single_hospital()
    bundle = net.bundle()
    proof = list(bundle.entries[0].proof)
    proof[1] = bytes([proof[1][0] ^ 0x01]) + proof[1][1:]
    report = verify_bundle(_with_entry(bundle, 0, proof=tuple(proof)), net.chain)
    assert "mismatch" in failure_of(report, Code.INCLUSION_INVALID, entry=0)


def test_flipped_byte_in_a_checkpoint_root() -> None:
    net = single_hospital()
    bundle = net.bundle()
    checkpoint = bundle.entries[3].checkpoint
    flipped = replace(checkpoint, root=checkpoint.root[:-1] + bytes([checkpoint.root[-1] ^ 0x80]))
    report = verify_bundle(_with_entry(bundle, 3, checkpoint=flipped), net.chain)
    failure_of(report, Code.INCLUSION_INVALID, entry=3)


def test_rewritten_log_with_self_consistent_proof_is_caught_by_the_chain() -> None:
    """The hospital rewrites an event and recomputes the proof and root: only the chain knows."""
    net = single_hospital()
    bundle = net.bundle()
    hospital, index, data = net.placed[2]
    forged = data.replace(b'"INPATIENT_30Y"', b'"INPATIENT_10Y"')
    leaves = list(net.logs[hospital].leaves)
    leaves[index] = merkle.leaf_hash(forged)
    checkpoint = bundle.entries[2].checkpoint
    forged_root = merkle.root_from_leaf_hashes(leaves[: checkpoint.size])
    tampered = _with_entry(
        bundle,
        2,
        event=forged,
        proof=tuple(merkle.inclusion_proof(index, checkpoint.size, leaves)),
        checkpoint=replace(checkpoint, root=forged_root),
    )
    message = failure_of(verify_bundle(tampered, net.chain), Code.CHECKPOINT_MISMATCH, entry=2)
    assert f"expected size {checkpoint.size} root {forged_root.hex()}" in message
    assert f"chain has size {checkpoint.size} root {checkpoint.root.hex()}" in message


def test_reordered_events_break_the_hash_chain() -> None:
    net = single_hospital()
    bundle = net.bundle()
    entries = list(bundle.entries)
    entries[1], entries[2] = entries[2], entries[1]
    report = verify_bundle(replace(bundle, entries=tuple(entries)), net.chain)
    assert "is not the archive's last event" in failure_of(report, Code.PREV_MISMATCH, entry=1)
    assert [e.verdict for e in report.entries[:1]] == [Verdict.OK]


def test_dropped_event_in_the_middle_breaks_the_hash_chain() -> None:
    net = transferred()
    bundle = net.bundle()
    dropped = bundle.entries[:4] + bundle.entries[5:]  # the TRANSFER_OFFER
    report = verify_bundle(replace(bundle, entries=dropped), net.chain)
    message = failure_of(report, Code.PREV_MISMATCH, entry=4)
    assert "TRANSFER_ACCEPT refused in state ARCHIVED" in message


def test_dropped_grantee_access_is_caught_when_a_later_one_follows() -> None:
    net = Network()
    net.log(EventType.CREATE, _create_data())
    grant = net.log(
        EventType.SHARE_GRANT,
        {"grantee": C, "purpose": "referral", "expires_at": net.clock + timedelta(days=3)},
    )
    grant_hash = merkle.leaf_hash(grant).hex()
    first = net.log(
        EventType.ACCESS, _access("referral", grant=grant_hash), hospital=C, prev=grant_hash
    )
    net.log(
        EventType.ACCESS,
        _access("referral", grant=grant_hash),
        hospital=C,
        prev=merkle.leaf_hash(first).hex(),
    )
    net.anchor_all()
    bundle = net.bundle()
    assert verify_bundle(bundle, net.chain).ok
    report = verify_bundle(
        replace(bundle, entries=bundle.entries[:2] + bundle.entries[3:]), net.chain
    )
    assert "grant's last event" in failure_of(report, Code.PREV_MISMATCH, entry=2)


def test_checkpoint_that_does_not_exist_on_chain() -> None:
    net = single_hospital()
    bundle = net.bundle()
    checkpoint = bundle.entries[3].checkpoint
    ghost = _with_entry(bundle, 3, checkpoint=replace(checkpoint, index=2))
    message = failure_of(verify_bundle(ghost, net.chain), Code.CHECKPOINT_MISSING, entry=3)
    assert f"{A} has no checkpoint 2 on chain" in message
    # The chain knows no checkpoint at all for this hospital.
    del net.chain.checkpoints[A]
    failure_of(verify_bundle(bundle, net.chain), Code.CHECKPOINT_MISSING, entry=0)


def test_checkpoint_of_another_hospital_cannot_prove_an_entry() -> None:
    net = transferred()
    bundle = net.bundle()
    b_checkpoint = bundle.entries[5].checkpoint
    report = verify_bundle(_with_entry(bundle, 0, checkpoint=b_checkpoint), net.chain)
    failure_of(report, Code.CHECKPOINT_HOSPITAL_MISMATCH, entry=0)


def test_entry_must_say_where_the_event_says_it_is() -> None:
    net = transferred()
    bundle = net.bundle()
    report = verify_bundle(_with_entry(bundle, 5, hospital=A), net.chain)
    assert "event names hospital" in failure_of(report, Code.HOSPITAL_MISMATCH, entry=5)
    report = verify_bundle(_with_entry(bundle, 1, log_index=0), net.chain)
    assert "event names log index 1, the entry 0" in failure_of(
        report, Code.LOG_INDEX_MISMATCH, entry=1
    )
    other = replace(bundle, archive_id=OTHER_ARCHIVE)
    failure_of(verify_bundle(other, net.chain), Code.ARCHIVE_MISMATCH, entry=0)


def test_legal_evidence_of_an_illegal_sequence_is_refused() -> None:
    """Authentic, anchored events that break the lifecycle (destroyed before its deadline)."""
    net = Network()
    net.log(EventType.CREATE, _create_data())
    net.log(EventType.ARCHIVE, _archive_data())
    # The hospital bypasses its own checks and logs a premature DISPOSITION_START.
    premature = net.log(
        EventType.DISPOSITION_START, {}, at=DEADLINE - timedelta(days=1), track=False
    )
    net.placed.append((A, net.logs[A].size - 1, premature))
    net.anchor_all()
    report = verify_bundle(net.bundle(), net.chain)
    message = failure_of(report, Code.ILLEGAL_TRANSITION, entry=2)
    assert "DISPOSITION_START refused in state ARCHIVED: retention runs until" in message


def _break_glass_network(*, window: bool, read_at: timedelta = timedelta(minutes=5)) -> Network:
    """Archived at A; a BREAK_GLASS window of 4 hours (or none) then a break-glass read logged
    ``read_at`` after the window opened; all anchored."""
    net = Network()
    net.log(EventType.CREATE, _create_data())
    net.log(EventType.ARCHIVE, _archive_data())
    opened = net.clock + timedelta(minutes=1)
    if window:
        net.log(
            EventType.BREAK_GLASS,
            {"reason_hash": R, "purpose": "treatment", "expires_at": opened + timedelta(hours=4)},
            at=opened,
        )
    read = {**_access(), "break_glass": True, "reason_hash": R}
    genuine = window and read_at < timedelta(hours=4)
    event = net.log(EventType.ACCESS, read, at=opened + read_at, track=genuine)
    if not genuine:  # the hospital bypasses its own checks and logs the read anyway
        net.placed.append((A, net.logs[A].size - 1, event))
    net.anchor_all()
    assert net.state is not None
    net.chain.record_custody(net.state)
    return net


def test_a_break_glass_read_inside_its_window_verifies() -> None:
    net = _break_glass_network(window=True)
    report = verify_bundle(parse_bundle(dump_bundle(net.bundle())), net.chain)
    assert report.status is Status.VALID, report.to_text()
    assert [e.event_type for e in report.entries][-2:] == ["BREAK_GLASS", "ACCESS"]


@pytest.mark.parametrize(
    ("window", "read_at", "entry"),
    [
        (False, timedelta(minutes=5), 2),  # a break-glass read with no window at all
        (True, timedelta(hours=4), 3),  # at expires_at: the window is closed
        (True, timedelta(hours=9), 3),  # long after the window
    ],
    ids=["no-window", "at-expiry", "after-expiry"],
)
def test_a_forged_break_glass_read_is_refused(window: bool, read_at: timedelta, entry: int) -> None:
    net = _break_glass_network(window=window, read_at=read_at)
    report = verify_bundle(parse_bundle(dump_bundle(net.bundle())), net.chain)
    message = failure_of(report, Code.BREAK_GLASS_UNOPENED, entry=entry)
    assert "ACCESS refused in state ARCHIVED" in message
    assert "not inside a break-glass window" in message


def test_events_must_not_go_back_in_time_across_logs() -> None:
    net = transferred()
    bundle = net.bundle()
    entries = list(bundle.entries)
    entries[3], entries[4] = entries[4], entries[3]  # the grantee's read after the offer
    report = verify_bundle(replace(bundle, entries=tuple(entries)), net.chain)
    failure_of(report, Code.TIME_ORDER, entry=4)


def test_event_dated_after_its_anchoring_or_after_now() -> None:
    net = single_hospital()
    net.chain.checkpoints[A][0] = replace(
        net.chain.checkpoints[A][0], anchored_at=int((T0 - timedelta(hours=1)).timestamp())
    )
    report = verify_bundle(net.bundle(), net.chain)
    assert "after its checkpoint was anchored" in failure_of(
        report, Code.TIME_AFTER_ANCHOR, entry=0
    )
    text = report.to_text()
    assert "      time_after_anchor: dated 2024-05-01T08:04:00Z" in text
    assert text.splitlines()[-1].startswith("INVALID (entry 0): time_after_anchor: ")
    assert report.to_json()["failure"]["code"] == "time_after_anchor"
    assert report.to_json()["entries"][0]["verdict"] == "failed"

    net = single_hospital()
    assert verify_bundle(net.bundle(), net.chain, now=net.clock).ok
    report = verify_bundle(net.bundle(), net.chain, now=T0 - timedelta(days=1))
    failure_of(report, Code.TIME_IN_FUTURE, entry=0)


# ------------------------------------------------------------------------------------------
# Deployment, custody and chain availability


def test_wrong_chain_or_notary() -> None:
    net = single_hospital()
    net.chain.chain_id_value = 1
    report = verify_bundle(net.bundle(), net.chain)
    assert "serves chain 1" in failure_of(report, Code.CHAIN_ID_MISMATCH, entry=None)
    net = single_hospital()
    net.chain.notary = B
    failure_of(verify_bundle(net.bundle(), net.chain), Code.NOTARY_MISMATCH, entry=None)


def test_custody_record_must_match_the_final_state() -> None:
    net = transferred()
    record = net.chain.records[ARCHIVE]
    net.chain.records[ARCHIVE] = replace(record, custodian=A, on_hold=True)
    report = verify_bundle(net.bundle(), net.chain)
    message = failure_of(report, Code.CUSTODY_MISMATCH, entry=None)
    assert f"custodian: events say {B.lower()}, found {A.lower()}" in message
    assert "on_hold: events say False, found True" in message
    assert all(e.verdict is Verdict.OK for e in report.entries)
    skipped = verify_bundle(net.bundle(), net.chain, check_custody=False)
    assert skipped.ok
    assert not skipped.custody_checked

    net.chain.records[ARCHIVE] = replace(record, retention_deadline=record.retention_deadline - 1)
    message = failure_of(verify_bundle(net.bundle(), net.chain), Code.CUSTODY_MISMATCH)
    assert "retention_deadline" in message


def test_unregistered_archive_expects_an_empty_custody_record() -> None:
    net = Network()
    net.log(EventType.CREATE, _create_data())
    net.anchor_all()
    assert verify_bundle(net.bundle(), net.chain).ok  # NONE on chain, as expected
    net.log(EventType.ARCHIVE, _archive_data())
    net.anchor_all()
    report = verify_bundle(net.bundle(), net.chain)  # archived but never registered
    assert "state: events say ARCHIVED, found NONE" in failure_of(report, Code.CUSTODY_MISMATCH)


def test_custody_claim_in_the_bundle_must_match_its_events() -> None:
    net = transferred()
    good = CustodyClaim(B, CustodyState.ARCHIVED, False, C1)
    assert verify_bundle(net.bundle(custody=good), net.chain).ok
    bad = CustodyClaim(A, CustodyState.ARCHIVED, False, C1)
    report = verify_bundle(net.bundle(custody=bad), net.chain)
    assert "custodian: events say" in failure_of(report, Code.CUSTODY_CLAIM_MISMATCH)


def test_unreachable_chain_is_reported_apart_from_invalid() -> None:
    net = single_hospital()
    net.chain.down = True
    net.chain.calls.clear()
    report = verify_bundle(net.bundle(), net.chain)
    assert report.status is Status.CHAIN_UNAVAILABLE
    assert not report.ok
    assert report.failure is not None
    assert report.failure.code is Code.CHAIN_UNAVAILABLE
    assert "connection refused" in report.failure.message
    assert all(e.verdict is Verdict.UNCHECKED for e in report.entries)
    assert len(net.chain.calls) == 1  # it stops asking after the first error
    assert report.to_json()["status"] == "chain unavailable"
    assert "CHAIN UNAVAILABLE" in report.to_text()

    # Evidence that is wrong on its face is invalid whether or not the chain answers.
    bundle = net.bundle()
    proof = list(bundle.entries[0].proof)
    proof[0] = bytes(32)
    report = verify_bundle(_with_entry(bundle, 0, proof=tuple(proof)), net.chain)
    failure_of(report, Code.INCLUSION_INVALID, entry=0)


def test_chain_failing_midway_marks_the_rest_unchecked() -> None:
    net = single_hospital()

    class Flaky(RecordedChain):
        def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint:
            if index == 1:
                raise ChainError("timed out")
            return super().checkpoint_at(hospital, index)

    flaky = Flaky(checkpoints=net.chain.checkpoints, records=net.chain.records)
    report = verify_bundle(net.bundle(), flaky)
    assert report.status is Status.CHAIN_UNAVAILABLE
    assert [e.verdict for e in report.entries] == [
        Verdict.OK,
        Verdict.OK,
        Verdict.UNCHECKED,
        Verdict.UNCHECKED,
    ]
    assert not report.custody_checked


def test_duplicated_entry_is_refused() -> None:
    net = single_hospital()
    bundle = net.bundle()
    doubled = replace(bundle, entries=(*bundle.entries[:2], bundle.entries[1], *bundle.entries[2:]))
    failure_of(verify_bundle(doubled, net.chain), Code.PREV_MISMATCH, entry=2)


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_any_single_bit_flip_anywhere_in_any_entry_fails(position: int) -> None:
    net = single_hospital()
    bundle = net.bundle()
    entry = bundle.entries[position]
    for bit in (0, 7, 100):
        event = bytearray(entry.event)
        event[(bit // 8) % len(event)] ^= 1 << (bit % 8)
        assert not verify_bundle(_with_entry(bundle, position, event=bytes(event)), net.chain).ok
        for i in range(len(entry.proof)):
            proof = [bytearray(p) for p in entry.proof]
            proof[i][bit // 8 % 32] ^= 1 << (bit % 8)
            tampered = _with_entry(bundle, position, proof=tuple(bytes(p) for p in proof))
            assert not verify_bundle(tampered, net.chain).ok
        root = bytearray(entry.checkpoint.root)
        root[bit // 8 % 32] ^= 1 << (bit % 8)
        tampered = _with_entry(
            bundle, position, checkpoint=replace(entry.checkpoint, root=bytes(root))
        )
        assert not verify_bundle(tampered, net.chain).ok


# ------------------------------------------------------------------------------------------
# Which failure is "first" (§7.5), and when the chain stops being asked


def test_first_failure_is_the_one_at_the_lowest_entry_position() -> None:
    """Entry 3 is wrong on its face, entry 1 only on chain: entry 1's failure is the first, and
    the chain is still asked about entries after it (every entry's own checks run)."""
    net = single_hospital()
    bundle = net.bundle()
    proof = list(bundle.entries[3].proof)
    proof[0] = bytes(32)
    ghost = replace(bundle.entries[1].checkpoint, index=5)
    tampered = _with_entry(_with_entry(bundle, 3, proof=tuple(proof)), 1, checkpoint=ghost)
    report = verify_bundle(tampered, net.chain)
    failure_of(report, Code.CHECKPOINT_MISSING, entry=1)
    assert [(f.entry, f.code) for f in report.failures] == [
        (1, Code.CHECKPOINT_MISSING),
        (3, Code.INCLUSION_INVALID),
    ]
    assert ("checkpoint_at", A, 1) in net.chain.calls  # entry 2's checkpoint, after the failure
    assert report.entries[2].block_time is not None
    assert [e.verdict for e in report.entries] == [
        Verdict.OK,
        Verdict.FAILED,
        Verdict.UNCHECKED,  # its own checks passed; the replay stopped at entry 1
        Verdict.FAILED,
    ]


def test_a_sequence_failure_before_an_entry_failure_comes_first() -> None:
    net = single_hospital()
    bundle = net.bundle()
    entries = list(bundle.entries)
    entries[1], entries[2] = entries[2], entries[1]  # entry 1 breaks the hash chain
    proof = list(entries[3].proof)
    proof[0] = bytes(32)
    entries[3] = replace(entries[3], proof=tuple(proof))
    report = verify_bundle(replace(bundle, entries=tuple(entries)), net.chain)
    failure_of(report, Code.PREV_MISMATCH, entry=1)
    assert [f.code for f in report.failures] == [Code.PREV_MISMATCH, Code.INCLUSION_INVALID]


def test_within_an_entry_the_first_check_of_the_spec_order_names_the_failure() -> None:
    """§7.3 order: event, then where it sits, then inclusion, then the chain. One failure per
    entry is reported, and a wrong entry is not looked up on chain."""
    net = single_hospital()
    bundle = net.bundle()
    moved = _with_entry(bundle, 1, log_index=0)  # also breaks the inclusion proof
    report = verify_bundle(moved, net.chain)
    failure_of(report, Code.LOG_INDEX_MISMATCH, entry=1)
    assert [f.code for f in report.failures] == [Code.LOG_INDEX_MISMATCH]

    proof = list(bundle.entries[3].proof)
    proof[0] = bytes(32)
    ghost = replace(bundle.entries[3].checkpoint, index=7)
    net.chain.calls.clear()
    report = verify_bundle(_with_entry(bundle, 3, proof=tuple(proof), checkpoint=ghost), net.chain)
    failure_of(report, Code.INCLUSION_INVALID, entry=3)
    assert all(call[0] != "checkpoint_at" or call[2] != 7 for call in net.chain.calls)


def test_a_deployment_failure_stops_the_chain_reads() -> None:
    """Regression: after chain_id_mismatch the verifier went on reading checkpoints of the
    wrong chain (and reported their absence at every entry)."""
    net = single_hospital()
    net.chain.chain_id_value = 5
    net.chain.calls.clear()
    report = verify_bundle(net.bundle(), net.chain)
    failure_of(report, Code.CHAIN_ID_MISMATCH)
    assert net.chain.calls == [("chain_id",)]
    assert [f.code for f in report.failures] == [Code.CHAIN_ID_MISMATCH]
    assert all(e.verdict is Verdict.UNCHECKED for e in report.entries)

    net = single_hospital()
    net.chain.notary = B
    net.chain.calls.clear()
    report = verify_bundle(net.bundle(), net.chain)
    assert f"the trusted notary is {B}" in failure_of(report, Code.NOTARY_MISMATCH)
    assert net.chain.calls == [("chain_id",), ("notary_address",)]


def test_notary_addresses_compare_as_bytes_not_text() -> None:
    net = single_hospital()
    net.chain.notary = NOTARY.lower()  # a trusted address may be given in any case
    assert verify_bundle(net.bundle(), net.chain).ok


def test_a_trusted_address_that_holds_no_notary_is_invalid_not_unavailable() -> None:
    net = single_hospital()

    class NoNotary(RecordedChain):
        def checkpoint_count(self, hospital: str) -> int:
            self._call("checkpoint_count", hospital)
            raise NotANotaryError(f"the trusted notary address {NOTARY} holds no contract code")

    chain = NoNotary(checkpoints=net.chain.checkpoints, records=net.chain.records)
    report = verify_bundle(net.bundle(), chain)
    assert "holds no contract code" in failure_of(report, Code.NOTARY_MISMATCH, entry=None)
    assert report.status is Status.INVALID
    assert [e.verdict for e in report.entries] == [Verdict.UNCHECKED] * 4
    assert chain.calls.count(("checkpoint_count", A)) == 1  # then it stops asking
    assert not report.custody_checked


def test_the_custody_claim_is_judged_before_the_custody_record() -> None:
    net = transferred()
    record = net.chain.records[ARCHIVE]
    net.chain.records[ARCHIVE] = replace(record, on_hold=True)
    claim = CustodyClaim(A, CustodyState.ARCHIVED, False, C1)
    report = verify_bundle(net.bundle(custody=claim), net.chain)
    failure_of(report, Code.CUSTODY_CLAIM_MISMATCH)
    assert [f.code for f in report.failures] == [
        Code.CUSTODY_CLAIM_MISMATCH,
        Code.CUSTODY_MISMATCH,
    ]


def test_an_event_with_a_huge_number_is_event_invalid_not_a_crash() -> None:
    """Regression: a 5,000-digit integer in an event's bytes raised ValueError out of
    ``verify_bundle``."""
    net = single_hospital()
    bundle = net.bundle()
    huge = b'{"v":' + b"9" * 5000 + b"}"
    report = verify_bundle(_with_entry(bundle, 2, event=huge), net.chain)
    assert "too many digits" in failure_of(report, Code.EVENT_INVALID, entry=2)


# ------------------------------------------------------------------------------------------
# The same checks against the real ArchiveNotary on anvil (RpcChain as the ChainReader)


def test_bundle_verifies_against_the_real_notary(chain: Any, writer: Any, hospital_a: Any) -> None:
    from anchoring.ids import archive_key

    hospital = hospital_a.address
    net = Network()
    net.logs[hospital] = log = HospitalLog(hospital)
    net.noise(hospital, 2)
    net.log(EventType.CREATE, _create_data(), hospital=hospital)
    net.log(EventType.ARCHIVE, _archive_data())
    sender = writer(hospital_a)
    sender.transact("anchorCheckpoint", [log.size, log.root(log.size), []])
    deadline = int(DEADLINE.timestamp())
    sender.transact(
        "register", [archive_key(ARCHIVE), 2, 0, deadline, bytes.fromhex(C1), bytes(32)]
    )

    anchored = chain.checkpoint_at(hospital, 0)
    entries = tuple(
        BundleEntry(
            hospital=hospital,
            log_index=index,
            event=data,
            proof=tuple(merkle.inclusion_proof(index, anchored.size, log.leaves)),
            checkpoint=BundleCheckpoint(hospital, 0, anchored.size, anchored.root),
        )
        for _, index, data in net.placed
    )
    bundle = ProofBundle(chain.chain_id(), chain.notary_address(), ARCHIVE, entries)
    report = verify_bundle(parse_bundle(dump_bundle(bundle)), chain)
    assert report.ok, report.to_text()
    assert report.custody_checked
    assert report.entries[1].block_time == anchored.anchored_at

    ghost = _with_entry(bundle, 1, checkpoint=replace(entries[1].checkpoint, index=1))
    failure_of(verify_bundle(ghost, chain), Code.CHECKPOINT_MISSING, entry=1)
    sender.transact("placeHold", [archive_key(ARCHIVE), bytes.fromhex(R)])
    report = verify_bundle(bundle, chain)
    assert "on_hold: events say False, found True" in failure_of(report, Code.CUSTODY_MISMATCH)
