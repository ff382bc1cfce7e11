"""Independent verification of a proof bundle: ``verify_bundle(bundle, chain) -> Report``.

Pure: the only outside facts come from the ``ChainReader`` (checkpoints and custody records), and
the only clock is the optional ``now``. For every entry it checks that the event bytes parse and
are canonical, that the event says it sits where the entry says (hospital, log index, archive),
that its leaf hash is included in the named checkpoint, and that this checkpoint is anchored on
chain for that hospital with that size and root (and no earlier than the event's time). Across
entries it checks the per-archive hash chain, non-decreasing times and the lifecycle rules
(``anchoring.lifecycle``), and optionally that the on-chain custody record matches the final
state.

The report separates "invalid" (the evidence is wrong) from "chain unavailable" (it could not
be checked); a definite failure wins over an unreachable chain. A trusted notary address that
holds no ArchiveNotary (the reader raises ``NotANotaryError``) is a definite failure,
``notary_mismatch``. The first failure is the one of the lowest entry position, after the
deployment checks and before the custody checks (docs/proof-format.md §7.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from anchoring import merkle
from anchoring.bundle import BundleEntry, CustodyClaim, ProofBundle
from anchoring.certificate import certificate_hash, parse_certificate
from anchoring.certificate import signer as certificate_signer
from anchoring.chainview import ChainReader, CustodyRecord, CustodyState, OnChainCheckpoint
from anchoring.errors import (
    BreakGlassWindowError,
    BundleFormatError,
    ChainError,
    EventFormatError,
    EventTimeOrderError,
    LifecycleError,
    NotANotaryError,
    PrevHashMismatchError,
    ProofError,
)
from anchoring.events import ArchiveEvent, DestroyEvent, Event, format_time, parse_event
from anchoring.ids import ZERO_ADDRESS
from anchoring.lifecycle import (
    ArchiveState,
    ArchiveStatus,
    ExpectedCustody,
    apply,
    expected_custody,
)

DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
"""Tolerance between a hospital's clock and block times (and ``now``)."""

_T = TypeVar("_T")


class Status(StrEnum):
    """Overall outcome of a verification."""

    VALID = "valid"
    INVALID = "invalid"
    CHAIN_UNAVAILABLE = "chain unavailable"


class Verdict(StrEnum):
    """Outcome for one entry: every check passed, one failed, or some could not run."""

    OK = "ok"
    FAILED = "failed"
    UNCHECKED = "unchecked"


class Code(StrEnum):
    """Machine-readable reasons a bundle is refused."""

    CHAIN_ID_MISMATCH = "chain_id_mismatch"
    NOTARY_MISMATCH = "notary_mismatch"
    EVENT_INVALID = "event_invalid"
    HOSPITAL_MISMATCH = "hospital_mismatch"
    LOG_INDEX_MISMATCH = "log_index_mismatch"
    ARCHIVE_MISMATCH = "archive_mismatch"
    CHECKPOINT_HOSPITAL_MISMATCH = "checkpoint_hospital_mismatch"
    INCLUSION_INVALID = "inclusion_invalid"
    CHECKPOINT_MISSING = "checkpoint_missing"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    TIME_AFTER_ANCHOR = "time_after_anchor"
    TIME_IN_FUTURE = "time_in_future"
    PREV_MISMATCH = "prev_mismatch"
    TIME_ORDER = "time_order"
    ILLEGAL_TRANSITION = "illegal_transition"
    BREAK_GLASS_UNOPENED = "break_glass_unopened"
    CUSTODY_MISMATCH = "custody_mismatch"
    CUSTODY_CLAIM_MISMATCH = "custody_claim_mismatch"
    CHAIN_UNAVAILABLE = "chain_unavailable"
    CERTIFICATE_MISSING = "certificate_missing"
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    CERTIFICATE_SIGNATURE_INVALID = "certificate_signature_invalid"


@dataclass(frozen=True, slots=True)
class Failure:
    """One reason for refusal; ``entry`` is the 0-based entry position, None for the bundle."""

    code: Code
    message: str
    entry: int | None = None


@dataclass(frozen=True, slots=True)
class EntryReport:
    """What was found about one entry (fields are None where the event could not be read)."""

    position: int
    hospital: str
    log_index: int
    checkpoint_index: int
    event_type: str | None
    time: datetime | None
    block_time: int | None  # unix seconds at which the checkpoint was anchored
    verdict: Verdict
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The result of ``verify_bundle``."""

    status: Status
    archive_id: str
    chain_id: int
    notary: str
    entries: tuple[EntryReport, ...]
    failure: Failure | None  # the first definite failure (or the chain error)
    failures: tuple[Failure, ...]
    final_state: ArchiveState | None  # after the last entry, when the whole sequence applied
    custody_checked: bool

    @property
    def ok(self) -> bool:
        """True only when every check ran and passed."""
        return self.status is Status.VALID

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``archivechain verify --json``)."""
        state = self.final_state
        return {
            "status": self.status.value,
            "ok": self.ok,
            "archive_id": self.archive_id,
            "chain_id": self.chain_id,
            "notary": self.notary,
            "failure": _failure_json(self.failure),
            "failures": [_failure_json(f) for f in self.failures],
            "custody_checked": self.custody_checked,
            "final_state": None
            if state is None
            else {
                "status": state.status.value,
                "custodian": state.custodian,
                "on_hold": state.on_hold,
                "commitment": state.commitment,
            },
            "entries": [
                {
                    "position": e.position,
                    "type": e.event_type,
                    "time": format_time(e.time) if e.time else None,
                    "hospital": e.hospital,
                    "log_index": e.log_index,
                    "checkpoint_index": e.checkpoint_index,
                    "block_time": e.block_time,
                    "verdict": e.verdict.value,
                    "failure": _failure_json(e.failure),
                }
                for e in self.entries
            ],
        }

    def to_text(self) -> str:
        """A human-readable report: one line per event, then the verdict."""
        lines = [f"archive {self.archive_id}  chain {self.chain_id}  notary {self.notary}"]
        for e in self.entries:
            when = format_time(e.time) if e.time else "?"
            block = (
                format_time(datetime.fromtimestamp(e.block_time, UTC))
                if e.block_time is not None
                else "?"
            )
            lines.append(
                f"{e.position:>4}  {e.event_type or '?':<18} {when:<28} {e.hospital} "
                f"#{e.log_index} cp {e.checkpoint_index} block {block}  {e.verdict.value}"
            )
            if e.failure is not None:
                lines.append(f"      {e.failure.code.value}: {e.failure.message}")
        if self.ok:
            lines.append(f"VALID: {len(self.entries)} events verified against the chain")
        elif self.failure is not None:
            where = f" (entry {self.failure.entry})" if self.failure.entry is not None else ""
            lines.append(
                f"{self.status.value.upper()}{where}: {self.failure.code.value}: "
                f"{self.failure.message}"
            )
        return "\n".join(lines)


def _failure_json(failure: Failure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {"code": failure.code.value, "message": failure.message, "entry": failure.entry}


# ------------------------------------------------------------------------------------------


@dataclass
class _ChainFacts:
    """Caches chain reads; remembers the first chain error, or that the trusted notary address
    holds no ArchiveNotary, and then stops asking (as it does after a deployment failure)."""

    chain: ChainReader
    error: str | None = None
    not_a_notary: str | None = None
    halted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[tuple[str, int], OnChainCheckpoint] = field(default_factory=dict)

    def read(self, call: Callable[[], _T]) -> _T | None:
        if self.halted:
            return None
        try:
            return call()
        except ChainError as exc:
            self.error = str(exc) or type(exc).__name__
        except NotANotaryError as exc:
            self.not_a_notary = str(exc)
        self.halted = True
        return None

    def checkpoint(self, hospital: str, index: int) -> OnChainCheckpoint | bool | None:
        """The checkpoint, False when the chain has no such checkpoint, None when unreachable."""
        key = (hospital, index)
        if key in self.checkpoints:
            return self.checkpoints[key]
        if hospital not in self.counts:
            count = self.read(lambda: self.chain.checkpoint_count(hospital))
            if count is None:
                return None
            self.counts[hospital] = count
        if index >= self.counts[hospital]:
            return False
        found = self.read(lambda: self.chain.checkpoint_at(hospital, index))
        if found is not None:
            self.checkpoints[key] = found
        return found


@dataclass
class _Entry:
    """Working state of one entry during verification."""

    position: int
    source: BundleEntry
    leaf: bytes
    event: Event | None = None
    block_time: int | None = None
    failure: Failure | None = None
    unchecked: bool = False

    def fail(self, code: Code, message: str) -> None:
        if self.failure is None:
            self.failure = Failure(code, message, self.position)


def verify_bundle(
    bundle: ProofBundle,
    chain: ChainReader,
    *,
    check_custody: bool = True,
    now: datetime | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Report:
    """Verify every entry of ``bundle`` against ``chain`` and the lifecycle rules.

    ``check_custody`` also compares the current on-chain custody record with the final state
    (a bundle built before later custody changes then fails, by design). ``now``, when given,
    refuses events dated after it (beyond ``clock_skew``).
    """
    facts = _ChainFacts(chain)
    failures: list[Failure] = []
    _check_deployment(bundle, facts, failures)

    entries = [
        _Entry(position, source, merkle.leaf_hash(source.event))
        for position, source in enumerate(bundle.entries)
    ]
    for entry in entries:
        _check_entry(bundle, entry, facts, now, clock_skew)

    if bundle.public:
        return _verify_public(bundle, facts, failures, entries, check_custody=check_custody)

    final_state = _check_sequence(entries)

    custody_checked = False
    if final_state is not None:
        expected = expected_custody(final_state)
        if bundle.custody is not None:
            _check_custody_claim(bundle.custody, expected, failures)
        if check_custody:
            record = facts.read(lambda: chain.custody(bundle.archive_id))
            if record is not None:
                custody_checked = True
                _check_custody_record(expected, record, final_state, failures)
        _check_certificate(bundle, final_state, failures)

    return _report(bundle, facts, failures, entries, final_state, custody_checked)


def _report(
    bundle: ProofBundle,
    facts: _ChainFacts,
    failures: list[Failure],
    entries: list[_Entry],
    final_state: ArchiveState | None,
    custody_checked: bool,
) -> Report:
    """§7.5: the outcome and the first failure."""
    if facts.not_a_notary is not None:
        failures.append(Failure(Code.NOTARY_MISMATCH, facts.not_a_notary))
    entry_failures = [e.failure for e in entries if e.failure is not None]
    all_failures = sorted([*failures, *entry_failures], key=_failure_order)
    if all_failures:
        status, first = Status.INVALID, all_failures[0]
    elif facts.error is not None:
        status = Status.CHAIN_UNAVAILABLE
        first = Failure(Code.CHAIN_UNAVAILABLE, f"chain unavailable: {facts.error}")
    else:
        status, first = Status.VALID, None

    return Report(
        status=status,
        archive_id=bundle.archive_id,
        chain_id=bundle.chain_id,
        notary=bundle.notary,
        entries=tuple(_entry_report(e, facts.halted) for e in entries),
        failure=first,
        failures=tuple(all_failures),
        final_state=final_state,
        custody_checked=custody_checked,
    )


# ------------------------------------------------------------------------------------------
# Public proofs (docs/proof-format.md §11)

_PUBLIC_ORDER = ("ARCHIVE", "DESTROY")


def _verify_public(
    bundle: ProofBundle,
    facts: _ChainFacts,
    failures: list[Failure],
    entries: list[_Entry],
    *,
    check_custody: bool,
) -> Report:
    """§11: a public proof holds the ``ARCHIVE`` entry and, once destroyed, the ``DESTROY``
    entry: no ``CREATE``, so no lifecycle replay. Checked instead: that order and time order,
    ARCHIVE's own rule (deadline not before the trigger date), the part of the on-chain custody
    record these two events determine, and the certificate, signed by the ``DESTROY``'s hospital
    (the custodian: nothing changes custody after DESTROY)."""
    published = _check_public_sequence(entries)
    custody_checked = False
    if published is not None:
        archive, destroy = published
        if check_custody:
            record = facts.read(lambda: facts.chain.custody(bundle.archive_id))
            if record is not None:
                custody_checked = True
                _check_public_custody(archive, destroy, record, failures)
        _check_certificate_of(
            bundle,
            destroyed=destroy is not None,
            recorded=destroy.data.certificate_hash if destroy is not None else None,
            custodian=destroy.hospital if destroy is not None else "",
            failures=failures,
        )
    return _report(bundle, facts, failures, entries, None, custody_checked)


def _check_public_sequence(
    entries: list[_Entry],
) -> tuple[ArchiveEvent, DestroyEvent | None] | None:
    archive: ArchiveEvent | None = None
    destroy: DestroyEvent | None = None
    for position, entry in enumerate(entries):
        event = entry.event
        if entry.failure is not None or event is None:
            _mark_unchecked(entries[position + 1 :])
            return None
        if event.type != _PUBLIC_ORDER[position]:
            entry.fail(
                Code.ILLEGAL_TRANSITION,
                f"a public proof holds ARCHIVE, then DESTROY; entry {position} is {event.type}",
            )
            _mark_unchecked(entries[position + 1 :])
            return None
        if isinstance(event, ArchiveEvent):
            data = event.data
            trigger = datetime(
                data.trigger_date.year, data.trigger_date.month, data.trigger_date.day, tzinfo=UTC
            )
            if data.retention_deadline < trigger:
                entry.fail(
                    Code.ILLEGAL_TRANSITION, "the retention deadline is before its trigger date"
                )
                _mark_unchecked(entries[position + 1 :])
                return None
            archive = event
        elif isinstance(event, DestroyEvent):
            if archive is not None and event.time < archive.time:
                entry.fail(
                    Code.TIME_ORDER,
                    f"dated {format_time(event.time)}, before the previous entry "
                    f"({format_time(archive.time)})",
                )
                return None
            destroy = event
    if archive is None:  # pragma: no cover  (the parser refuses an empty list)
        return None
    return archive, destroy


def _check_public_custody(
    archive: ArchiveEvent,
    destroy: DestroyEvent | None,
    record: CustodyRecord,
    failures: list[Failure],
) -> None:
    """What the published events say of ``archive(id)``: its class and commitment (fixed at
    ARCHIVE), and, once destroyed, all of it but the retention deadline; before that the state
    is ARCHIVED or TRANSFER_PENDING (custodian, holds and deadline are not published)."""
    zero = bytes(32).hex()
    pairs: list[tuple[str, object, object]] = []
    if destroy is not None:
        pairs += [
            ("state", CustodyState.DESTROYED.name, record.state.name),
            ("custodian", destroy.hospital.lower(), record.custodian.lower()),
            ("on_hold", False, record.on_hold),
            ("hold_by_regulator", False, record.on_hold and record.hold_by_regulator),
            ("pending_recipient", ZERO_ADDRESS, record.pending_recipient.lower()),
        ]
    else:
        live = (CustodyState.ARCHIVED, CustodyState.TRANSFER_PENDING)
        either = "ARCHIVED or TRANSFER_PENDING"
        pairs.append(("state", either, either if record.state in live else record.state.name))
    pairs += [
        ("commitment", archive.data.commitment, record.commitment.hex()),
        (
            "certificate_hash",
            destroy.data.certificate_hash if destroy is not None else zero,
            record.certificate_hash.hex(),
        ),
        ("record_class", archive.data.record_class.chain_code, record.record_class),
    ]
    differences = _differences(pairs)
    if differences:
        failures.append(
            Failure(
                Code.CUSTODY_MISMATCH,
                "the on-chain custody record disagrees with the events: " + differences,
            )
        )


_DEPLOYMENT_CODES = (Code.CHAIN_ID_MISMATCH, Code.NOTARY_MISMATCH)


def _failure_order(failure: Failure) -> tuple[int, int]:
    """Deployment failures (§7.2) first, then entries by position, then the custody checks
    (§7.4 steps 3-4); ties keep the order in which the checks ran (a stable sort)."""
    if failure.code in _DEPLOYMENT_CODES:
        return (0, 0)
    if failure.entry is not None:
        return (1, failure.entry)
    return (2, 0)


def _check_deployment(bundle: ProofBundle, facts: _ChainFacts, failures: list[Failure]) -> None:
    """§7.2. After a failure here the chain is not asked anything more: its checkpoints and
    custody records are not evidence for this bundle."""
    chain_id = facts.read(facts.chain.chain_id)
    if chain_id is not None and chain_id != bundle.chain_id:
        failures.append(
            Failure(
                Code.CHAIN_ID_MISMATCH,
                f"bundle names chain {bundle.chain_id}, the RPC endpoint serves chain {chain_id}",
            )
        )
        facts.halted = True
    notary = facts.read(facts.chain.notary_address)
    # Addresses compare as 20 bytes: the bundle's is EIP-55, the trusted one may be any case.
    if notary is not None and notary.lower() != bundle.notary.lower():
        failures.append(
            Failure(
                Code.NOTARY_MISMATCH,
                f"bundle names notary {bundle.notary}, the trusted notary is {notary}",
            )
        )
        facts.halted = True


def _check_entry(
    bundle: ProofBundle,
    entry: _Entry,
    facts: _ChainFacts,
    now: datetime | None,
    clock_skew: timedelta,
) -> None:
    source, checkpoint = entry.source, entry.source.checkpoint
    try:
        event = parse_event(source.event)
    except EventFormatError as exc:
        entry.fail(Code.EVENT_INVALID, f"event does not parse: {exc}")
        return
    entry.event = event
    if event.hospital != source.hospital:
        entry.fail(
            Code.HOSPITAL_MISMATCH,
            f"event names hospital {event.hospital}, the entry {source.hospital}",
        )
    if event.log_index != source.log_index:
        entry.fail(
            Code.LOG_INDEX_MISMATCH,
            f"event names log index {event.log_index}, the entry {source.log_index}",
        )
    if event.archive_id != bundle.archive_id:
        entry.fail(
            Code.ARCHIVE_MISMATCH,
            f"event is for archive {event.archive_id}, the bundle for {bundle.archive_id}",
        )
    if checkpoint.hospital != source.hospital:
        entry.fail(
            Code.CHECKPOINT_HOSPITAL_MISMATCH,
            f"checkpoint of {checkpoint.hospital} cannot prove an entry of {source.hospital}",
        )
    try:
        merkle.verify_inclusion(
            source.log_index, checkpoint.size, entry.leaf, source.proof, checkpoint.root
        )
    except ProofError as exc:
        entry.fail(
            Code.INCLUSION_INVALID,
            f"not included in checkpoint {checkpoint.index} (size {checkpoint.size}): {exc}",
        )
    if now is not None and event.time > now + clock_skew:
        entry.fail(Code.TIME_IN_FUTURE, f"dated {format_time(event.time)}, after now")
    if entry.failure is not None:
        return  # no point asking the chain about evidence that is already wrong

    anchored = facts.checkpoint(checkpoint.hospital, checkpoint.index)
    if anchored is None:
        entry.unchecked = True
    elif anchored is False:
        entry.fail(
            Code.CHECKPOINT_MISSING,
            f"{checkpoint.hospital} has no checkpoint {checkpoint.index} on chain",
        )
    elif isinstance(anchored, OnChainCheckpoint):
        entry.block_time = anchored.anchored_at
        if anchored.size != checkpoint.size or anchored.root != checkpoint.root:
            entry.fail(
                Code.CHECKPOINT_MISMATCH,
                f"checkpoint {checkpoint.index} of {checkpoint.hospital}: expected size "
                f"{checkpoint.size} root {checkpoint.root.hex()}, chain has size "
                f"{anchored.size} root {anchored.root.hex()}",
            )
        elif event.time.timestamp() > anchored.anchored_at + clock_skew.total_seconds():
            entry.fail(
                Code.TIME_AFTER_ANCHOR,
                f"dated {format_time(event.time)}, after its checkpoint was anchored "
                f"(block time {anchored.anchored_at})",
            )


def _check_sequence(entries: list[_Entry]) -> ArchiveState | None:
    """Replay the events in bundle order; stops at the first entry that cannot be applied."""
    state: ArchiveState | None = None
    previous_time: datetime | None = None
    for position, entry in enumerate(entries):
        event = entry.event
        if entry.failure is not None or event is None:
            _mark_unchecked(entries[position + 1 :])
            return None
        if previous_time is not None and event.time < previous_time:
            entry.fail(
                Code.TIME_ORDER,
                f"dated {format_time(event.time)}, before the previous entry "
                f"({format_time(previous_time)})",
            )
            _mark_unchecked(entries[position + 1 :])
            return None
        try:
            state = apply(state, event, leaf_hash=entry.leaf)
        except LifecycleError as exc:
            code = Code.ILLEGAL_TRANSITION
            if isinstance(exc, PrevHashMismatchError):
                code = Code.PREV_MISMATCH
            elif isinstance(exc, EventTimeOrderError):
                code = Code.TIME_ORDER
            elif isinstance(exc, BreakGlassWindowError):
                code = Code.BREAK_GLASS_UNOPENED
            entry.fail(code, str(exc))
            _mark_unchecked(entries[position + 1 :])
            return None
        previous_time = event.time
    return state


def _mark_unchecked(rest: list[_Entry]) -> None:
    for entry in rest:
        entry.unchecked = True


def _check_custody_claim(
    claim: CustodyClaim, expected: ExpectedCustody, failures: list[Failure]
) -> None:
    differences = _differences(
        [
            ("state", expected.state.name, claim.state.name),
            ("custodian", expected.custodian, claim.custodian),
            ("on_hold", expected.on_hold, claim.on_hold),
            ("commitment", expected.commitment, claim.commitment),
        ]
    )
    if differences:
        failures.append(
            Failure(
                Code.CUSTODY_CLAIM_MISMATCH,
                "the bundle's custody claim disagrees with its events: " + differences,
            )
        )


def _check_certificate(bundle: ProofBundle, state: ArchiveState, failures: list[Failure]) -> None:
    """§7.4 step 5: a destroyed archive's bundle carries its certificate, whose SHA-256 is the
    DESTROY event's ``certificate_hash`` (and so, by the custody check, the chain's), which names
    this archive, chain and notary, and which the custodian signed (EIP-712)."""
    _check_certificate_of(
        bundle,
        destroyed=state.status is ArchiveStatus.DESTROYED,
        recorded=state.certificate_hash,
        custodian=state.custodian,
        failures=failures,
    )


def _check_certificate_of(
    bundle: ProofBundle,
    *,
    destroyed: bool,
    recorded: str | None,
    custodian: str,
    failures: list[Failure],
) -> None:
    """§7.4 step 5 for a final state (``destroyed``, the DESTROY's ``recorded`` hash and the
    ``custodian`` who must have signed)."""
    claim = bundle.certificate
    if not destroyed:
        if claim is not None:
            failures.append(
                Failure(Code.CERTIFICATE_MISMATCH, "a certificate for an archive not destroyed")
            )
        return
    if claim is None:
        failures.append(
            Failure(
                Code.CERTIFICATE_MISSING,
                "the archive is destroyed; the bundle lacks its certificate",
            )
        )
        return
    digest = certificate_hash(claim.document)
    if digest.hex() != recorded:
        failures.append(
            Failure(
                Code.CERTIFICATE_MISMATCH,
                f"the certificate hashes to {digest.hex()}, the DESTROY event records {recorded}",
            )
        )
        return
    try:
        document = parse_certificate(claim.document)
    except BundleFormatError as exc:
        failures.append(Failure(Code.CERTIFICATE_MISMATCH, exc.reason))
        return
    named = (document.get("archive_id"), document.get("chain_id"), str(document.get("notary")))
    if named != (bundle.archive_id, bundle.chain_id, bundle.notary):
        failures.append(
            Failure(
                Code.CERTIFICATE_MISMATCH,
                "the certificate names another archive, chain or notary than the bundle",
            )
        )
        return
    recovered = certificate_signer(
        chain_id=bundle.chain_id,
        notary=bundle.notary,
        archive_id=bundle.archive_id,
        digest=digest,
        custodian=custodian,
        signature=claim.signature,
    )
    if recovered is None or recovered.lower() != custodian.lower():
        failures.append(
            Failure(
                Code.CERTIFICATE_SIGNATURE_INVALID,
                f"the certificate is not signed by the custodian {custodian}",
            )
        )


def _check_custody_record(
    expected: ExpectedCustody,
    record: CustodyRecord,
    state: ArchiveState,
    failures: list[Failure],
) -> None:
    zero = bytes(32)
    certificate = bytes.fromhex(state.certificate_hash) if state.certificate_hash else zero
    commitment = bytes.fromhex(expected.commitment) if expected.commitment else zero
    pairs: list[tuple[str, object, object]] = [
        ("state", expected.state.name, record.state.name),
        ("custodian", expected.custodian.lower(), record.custodian.lower()),
        ("on_hold", expected.on_hold, record.on_hold),
        (
            "hold_by_regulator",
            expected.hold_by_regulator,
            record.on_hold and record.hold_by_regulator,
        ),
        ("pending_recipient", expected.pending_recipient.lower(), record.pending_recipient.lower()),
        ("commitment", commitment.hex(), record.commitment.hex()),
        ("certificate_hash", certificate.hex(), record.certificate_hash.hex()),
    ]
    if expected.record_class is not None:
        pairs.append(("record_class", expected.record_class, record.record_class))
    if expected.retention_deadline is not None:
        pairs.append(("retention_deadline", expected.retention_deadline, record.retention_deadline))
    differences = _differences(pairs)
    if differences:
        failures.append(
            Failure(
                Code.CUSTODY_MISMATCH,
                "the on-chain custody record disagrees with the events: " + differences,
            )
        )


def _differences(pairs: list[tuple[str, object, object]]) -> str:
    return "; ".join(
        f"{name}: events say {want}, found {got}" for name, want, got in pairs if want != got
    )


def _entry_report(entry: _Entry, chain_down: bool) -> EntryReport:
    event, source = entry.event, entry.source
    if entry.failure is not None:
        verdict = Verdict.FAILED
    elif entry.unchecked or (chain_down and entry.block_time is None):
        verdict = Verdict.UNCHECKED
    else:
        verdict = Verdict.OK
    return EntryReport(
        position=entry.position,
        hospital=source.hospital,
        log_index=source.log_index,
        checkpoint_index=source.checkpoint.index,
        event_type=event.type if event is not None else None,
        time=event.time if event is not None else None,
        block_time=entry.block_time,
        verdict=verdict,
        failure=entry.failure,
    )
