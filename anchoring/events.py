"""Lifecycle event schemas (version 1), their canonical bytes and leaf hashes, keyed pseudonyms.

Every event is a strict, frozen pydantic model: common fields (``v``, ``hospital``,
``log_index``, ``archive_id``, ``type``, ``actor``, ``time``, ``prev``) plus a type-specific
``data`` object, chosen by ``type`` (a discriminated union). The bytes that enter the log are
the RFC 8785 (JCS) canonical JSON of the whole event; ``parse_event`` accepts only such bytes,
so one event has exactly one encoding and one leaf hash.

No field carries PHI: patients and staff appear as keyed pseudonyms (HMAC-SHA-256 under a hospital
secret), content as commitments and hashes, reasons as short codes or hashes of documents kept
elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal, NoReturn

import rfc8785
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from anchoring import merkle
from anchoring.eip55 import is_checksum_address
from anchoring.errors import EventFormatError
from anchoring.ids import ZERO_ADDRESS

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
"""Largest canonical event accepted; real events are a few hundred bytes."""
MAX_STRUCTURES = 16
"""Most objects/arrays (counting brackets anywhere) an event may hold; real events have two."""
MAX_SAFE_INTEGER = 2**53 - 1
"""RFC 8785 numbers are IEEE doubles: integers beyond this cannot be encoded exactly."""


class EventFieldError(EventFormatError):
    """An event field is missing, unknown or invalid; ``field`` is its path (e.g. ``data.size``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# ------------------------------------------------------------------------------------------
# Vocabulary


class EventType(StrEnum):
    """Every lifecycle event type (DESIGN.md "Lifecycle")."""

    CREATE = "CREATE"
    AMEND = "AMEND"
    ARCHIVE = "ARCHIVE"
    ACCESS = "ACCESS"
    SHARE_GRANT = "SHARE_GRANT"
    SHARE_REVOKE = "SHARE_REVOKE"
    TRANSFER_OFFER = "TRANSFER_OFFER"
    TRANSFER_ACCEPT = "TRANSFER_ACCEPT"
    TRANSFER_REJECT = "TRANSFER_REJECT"
    TRANSFER_CANCEL = "TRANSFER_CANCEL"
    HOLD_PLACE = "HOLD_PLACE"
    HOLD_RELEASE = "HOLD_RELEASE"
    RETENTION_EXTEND = "RETENTION_EXTEND"
    DISPOSITION_START = "DISPOSITION_START"
    DESTROY = "DESTROY"
    FIXITY_CHECK = "FIXITY_CHECK"
    TIER_MOVE = "TIER_MOVE"
    TAG_BIND = "TAG_BIND"
    TAG_SCAN = "TAG_SCAN"
    DISPOSITION_PROPOSE = "DISPOSITION_PROPOSE"
    DISPOSITION_APPROVE = "DISPOSITION_APPROVE"
    RECLASSIFY = "RECLASSIFY"
    BREAK_GLASS = "BREAK_GLASS"
    CONSENT_GRANT = "CONSENT_GRANT"
    CONSENT_REVOKE = "CONSENT_REVOKE"
    ATTEST = "ATTEST"
    DERIVE = "DERIVE"
    REPLICA = "REPLICA"
    REPAIR = "REPAIR"
    DESTRUCTION_NOTICE = "DESTRUCTION_NOTICE"


FIRST_EVENT_TYPES = frozenset({EventType.CREATE, EventType.CONSENT_GRANT})
"""The event types that open a chain (``prev`` null): CREATE opens an archive, CONSENT_GRANT a
consent subject (docs/proof-format.md §8.1)."""


class RecordClass(StrEnum):
    """Record classes; the on-chain ``uint8`` is the position in this order (0..6)."""

    OUTPATIENT = "OUTPATIENT"
    EMERGENCY = "EMERGENCY"
    INPATIENT = "INPATIENT"
    LAB = "LAB"
    IMAGING = "IMAGING"
    NURSING = "NURSING"
    ADMINISTRATIVE = "ADMINISTRATIVE"

    @property
    def chain_code(self) -> int:
        """The ``uint8`` the contract stores for this class."""
        return list(RecordClass).index(self)


class Sensitivity(StrEnum):
    """Sensitivity grade of a record, used by access policy (role x sensitivity x department)."""

    NORMAL = "NORMAL"
    SENSITIVE = "SENSITIVE"
    HIGHLY_SENSITIVE = "HIGHLY_SENSITIVE"


class Purpose(StrEnum):
    """Purpose of use of an access or a share grant."""

    TREATMENT = "treatment"
    REFERRAL = "referral"
    RESEARCH = "research"
    INSURANCE = "insurance"
    AUDIT = "audit"
    LEGAL = "legal"
    QUALITY = "quality"
    PATIENT_REQUEST = "patient_request"
    OPERATIONS = "operations"
    """Records management by the hospital's own archive staff (cataloguing, custody work)."""


class AccessScope(StrEnum):
    """What an access read: decrypted content, catalogue metadata, or evidence (events, proofs)."""

    CONTENT = "content"
    METADATA = "metadata"
    PROOF = "proof"


class StorageTier(StrEnum):
    """Storage tiers of the encrypted payload."""

    HOT = "hot"
    COLD = "cold"


class TagKind(StrEnum):
    """Kinds of smart tag bound to an archive or its physical folder."""

    QR = "qr"
    RFID_EPC = "rfid_epc"


class DestructionMethod(StrEnum):
    """How an archive was destroyed: cryptographic erasure, plus physical destruction of paper."""

    CRYPTO_ERASURE = "crypto_erasure"
    CRYPTO_ERASURE_AND_PHYSICAL = "crypto_erasure_and_physical"


class AttestedFact(StrEnum):
    """What an insurer attestation may state about a record (docs/attestations.md). A consent
    lists the facts it allows; a record entry always states that the record exists."""

    RECORD_CLASS = "record_class"
    STATE = "state"
    CUSTODIAN = "custodian"
    DATES = "dates"
    COMMITMENT = "commitment"
    ARCHIVE_ID = "archive_id"


class ConsentRevokeReason(StrEnum):
    """Why a consent ended before its expiry."""

    WITHDRAWN = "withdrawn"
    SUPERSEDED = "superseded"
    RECORDED_IN_ERROR = "recorded_in_error"


class RevokeReason(StrEnum):
    """Why a share grant ended early or was closed."""

    REVOKED = "revoked"
    EXPIRED = "expired"
    PURPOSE_FULFILLED = "purpose_fulfilled"
    MEMBER_SUSPENDED = "member_suspended"


class ReplicaAction(StrEnum):
    """What happened to an encrypted replica of a version at a peer hospital."""

    PLACED = "placed"
    VERIFIED = "verified"
    FAILED = "failed"
    DROPPED = "dropped"


class CancelReason(StrEnum):
    """Why the custodian withdrew a pending transfer offer."""

    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    RECIPIENT_UNAVAILABLE = "recipient_unavailable"
    MEMBER_SUSPENDED = "member_suspended"


# ------------------------------------------------------------------------------------------
# Field types

_HEX32 = re.compile(r"[0-9a-f]{64}")
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{6}))?Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


def check_hex32(value: str) -> str:
    """``value`` if it is 64 lowercase hex characters, else ``ValueError``."""
    if not _HEX32.fullmatch(value):
        raise ValueError("must be 64 lowercase hex characters (a SHA-256 hash, no 0x)")
    return value


def check_archive_id(value: str) -> str:
    """``value`` if it is a canonical (upper-case) ULID string, else ``ValueError``."""
    if not _ULID.fullmatch(value):
        raise ValueError("must be a 26-character upper-case Crockford base32 ULID")
    return value


def check_address(value: str) -> str:
    """``value`` if it is a non-zero EIP-55 checksummed address, else ``ValueError``."""
    if not is_checksum_address(value):
        raise ValueError("must be an EIP-55 checksummed address")
    if value == ZERO_ADDRESS:
        raise ValueError("must not be the zero address")
    return value


def _actor(value: str) -> str:
    if _HEX32.fullmatch(value):
        return value
    try:
        return check_address(value)
    except ValueError:
        raise ValueError(
            "must be a member address (EIP-55) or a keyed pseudonym (64 lowercase hex)"
        ) from None


def _code(value: str) -> str:
    if not _CODE.fullmatch(value):
        raise ValueError("must be a short code: letters, digits, '_', '.', '-' (max 64)")
    return value


def _media_type(value: str) -> str:
    if not _MEDIA_TYPE.fullmatch(value):
        raise ValueError("must be a lower-case media type 'type/subtype' without parameters")
    return value


def parse_time(value: object) -> datetime:
    """An RFC 3339 UTC instant in canonical form (``…SSZ`` or ``…SS.ffffffZ``), or a tz-aware
    ``datetime`` whose offset is zero; returns an aware UTC ``datetime``."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() != UTC.utcoffset(None):
            raise ValueError("must be a timezone-aware UTC datetime")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 UTC time string")
    match = _TIME.fullmatch(value)
    if not match:
        raise ValueError("must be RFC 3339 UTC 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z'")
    year, month, day, hour, minute, second, fraction = match.groups()
    if fraction == "000000":
        raise ValueError("zero microseconds must be omitted (canonical form)")
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(fraction or 0),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"is not a valid time: {exc}") from None


@lru_cache(maxsize=1024)
def format_time(value: datetime) -> str:
    """The canonical text of an instant: UTC, ``Z``, microseconds only when non-zero."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def _parse_date(value: object) -> date:
    if isinstance(value, datetime):
        raise ValueError("must be a calendar date, not a datetime")
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a date 'YYYY-MM-DD'")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid date: {exc}") from None


Hex32 = Annotated[str, AfterValidator(check_hex32)]
"""A SHA-256 hash (or HMAC) as 64 lowercase hex characters."""
ArchiveId = Annotated[str, AfterValidator(check_archive_id)]
Address = Annotated[str, AfterValidator(check_address)]
Actor = Annotated[str, AfterValidator(_actor)]
Pseudonym = Hex32
Code = Annotated[str, AfterValidator(_code)]
MediaType = Annotated[str, AfterValidator(_media_type)]
Timestamp = Annotated[
    datetime, BeforeValidator(parse_time), PlainSerializer(format_time, return_type=str)
]
CalendarDate = Annotated[
    date, BeforeValidator(_parse_date), PlainSerializer(date.isoformat, return_type=str)
]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
Version = Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)]

# Enum fields accept their string value (JSON) as well as the member (Python).
RecordClassField = Annotated[RecordClass, Strict(False)]
SensitivityField = Annotated[Sensitivity, Strict(False)]
PurposeField = Annotated[Purpose, Strict(False)]
ScopeField = Annotated[AccessScope, Strict(False)]
TierField = Annotated[StorageTier, Strict(False)]
TagKindField = Annotated[TagKind, Strict(False)]
MethodField = Annotated[DestructionMethod, Strict(False)]
RevokeReasonField = Annotated[RevokeReason, Strict(False)]
CancelReasonField = Annotated[CancelReason, Strict(False)]
FactField = Annotated[AttestedFact, Strict(False)]
ConsentRevokeReasonField = Annotated[ConsentRevokeReason, Strict(False)]


def _recipient(value: str) -> str:
    try:
        return check_address(value)
    except ValueError:
        pass
    if not _CODE.fullmatch(value):
        raise ValueError("must be a member address (EIP-55) or a short code") from None
    return value


Recipient = Annotated[str, AfterValidator(_recipient)]
ReplicaActionField = Annotated[ReplicaAction, Strict(False)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


# ------------------------------------------------------------------------------------------
# Type-specific data


class CreateData(_Strict):
    """First capture of a record: classification, patient pseudonym and version 1 of the content."""

    record_class: RecordClassField
    sensitivity: SensitivityField
    department: Code
    patient: Pseudonym
    source_system: Code
    version: Version
    commitment: Hex32
    ciphertext_sha256: Hex32
    size: Count
    media_type: MediaType


class AmendData(_Strict):
    """A new content version while the record is still CREATED."""

    version: Version
    commitment: Hex32
    ciphertext_sha256: Hex32
    size: Count
    media_type: MediaType


class ArchiveData(_Strict):
    """Archiving: the record becomes immutable and its retention clock is set."""

    record_class: RecordClassField
    retention_policy: Code
    trigger_date: CalendarDate
    retention_deadline: Timestamp
    commitment: Hex32


class AccessData(_Strict):
    """A read. ``grant`` is the leaf hash of the SHARE_GRANT used by a grantee hospital;
    ``reason_hash`` (hash of the justification record) is present exactly for break-glass
    access: required with it, ``null`` without it (one encoding for an ordinary read)."""

    purpose: PurposeField
    scope: ScopeField
    break_glass: bool
    grant: Hex32 | None = None
    reason_hash: Hex32 | None = None

    @model_validator(mode="after")
    def _reason_exactly_for_break_glass(self) -> AccessData:
        if self.break_glass and self.reason_hash is None:
            raise ValueError("reason_hash: break-glass access needs a reason")
        if not self.break_glass and self.reason_hash is not None:
            raise ValueError("reason_hash: must be null unless break_glass is true")
        return self


class ShareGrantData(_Strict):
    """The custodian grants another hospital read access for a purpose until ``expires_at``."""

    grantee: Address
    purpose: PurposeField
    expires_at: Timestamp


class ShareRevokeData(_Strict):
    """An active grant ends before (or at) its expiry."""

    grantee: Address
    reason: RevokeReasonField


class TransferOfferData(_Strict):
    """The custodian offers custody to another hospital (optionally until ``expires_at``)."""

    to: Address
    expires_at: Timestamp | None = None


class TransferAcceptData(_Strict):
    """The recipient accepts custody, in its own log. ``offer_hash`` is the offer's leaf hash."""

    from_: Address = Field(alias="from")
    offer_hash: Hex32 | None = None


class TransferRejectData(_Strict):
    """The recipient refuses the offer (e.g. a content check failed)."""

    by: Address
    reason_hash: Hex32


class TransferCancelData(_Strict):
    """The custodian withdraws a pending offer (also used when the offer expires)."""

    to: Address
    reason: CancelReasonField


class HoldPlaceData(_Strict):
    """A legal hold: blocks transfer-out, disposition and destruction."""

    reason_hash: Hex32
    by_regulator: bool


class HoldReleaseData(_Strict):
    """The hold is lifted."""

    reason_hash: Hex32


class RetentionExtendData(_Strict):
    """The retention deadline moves later (never earlier)."""

    previous_deadline: Timestamp
    new_deadline: Timestamp


class DispositionStartData(_Strict):
    """Retention has expired; the archive enters disposition review. No data."""


class DispositionProposeData(_Strict):
    """An archivist puts the archive on a disposition list (销毁清册). ``proposal`` is the list's
    id (a ULID); ``reason_hash`` the SHA-256 of the reason, which stays on the node (it may hold
    PHI). The event's actor is the proposer."""

    proposal: ArchiveId
    reason_hash: Hex32


class DispositionApproveData(_Strict):
    """A records manager who is not the proposer approves destroying the archive under list
    ``proposal`` until ``expires_at`` (the approval lapses unless executed before). The event's
    actor is the approver; ``reason_hash`` as for the proposal."""

    proposal: ArchiveId
    expires_at: Timestamp
    reason_hash: Hex32


class DestructionNoticeData(_Strict):
    """In a grantee's own log: the custodian told this hospital (a signed peer notice) that it
    destroyed the archive, with the destruction certificate's hash; ``prev`` is the DESTROY's
    leaf hash. The grantee's access, and any key copy it held, ended."""

    certificate_hash: Hex32
    reason: Literal["custodian_destroyed"] = "custodian_destroyed"


class DestroyData(_Strict):
    """Cryptographic erasure; ``certificate_hash`` is the hash of the destruction certificate."""

    certificate_hash: Hex32
    method: MethodField


class FixityCheckData(_Strict):
    """A periodic check of a stored version's ciphertext hash; ``ok`` false records a failure."""

    version: Version
    ciphertext_sha256: Hex32
    ok: bool


class TierMoveData(_Strict):
    """The encrypted payload moved between storage tiers."""

    from_tier: TierField
    to_tier: TierField


class ReplicaData(_Strict):
    """An encrypted replica of ``version`` at hospital ``peer``: placed, verified by a
    challenge, failed a challenge (``ciphertext_sha256`` the recorded hash), or dropped."""

    action: ReplicaActionField
    peer: Address
    version: Version
    ciphertext_sha256: Hex32


class RepairData(_Strict):
    """A local blob that was missing or failed fixity was restored from ``source``'s replica,
    after its SHA-256 matched ``ciphertext_sha256`` (the version's recorded hash)."""

    version: Version
    ciphertext_sha256: Hex32
    source: Address


def tag_hash(kind: TagKind, payload: bytes) -> str:
    """The ``tag_hash`` of a tag: SHA-256 over the kind's name in ASCII, one zero byte, and the
    tag's payload (a QR symbol's decoded bytes; an RFID tag's binary EPC), as 64 lowercase hex.
    docs/proof-format.md §4.3 defines the payload bytes exactly."""
    return hashlib.sha256(kind.value.encode("ascii") + b"\x00" + payload).hexdigest()


class TagBindData(_Strict):
    """A smart tag (QR or RFID EPC) is bound; only its hash is recorded (``tag_hash``)."""

    tag_kind: TagKindField
    tag_hash: Hex32


class TagScanData(_Strict):
    """A bound tag was scanned by ``reader`` (a reader pseudonym or member address)."""

    tag_hash: Hex32
    reader: Actor


class ReclassifyData(_Strict):
    """An archivist corrects the class and/or sensitivity the ingestion rules gave a record
    (while CREATED); ``reason_hash`` is the hash of the correction's justification record."""

    previous_class: RecordClassField
    previous_sensitivity: SensitivityField
    record_class: RecordClassField
    sensitivity: SensitivityField
    reason_hash: Hex32


class BreakGlassData(_Strict):
    """A clinician opens an emergency read outside the access policy: the reads of the window
    (until ``expires_at``) are ACCESS events with ``break_glass`` true and this ``reason_hash``
    (the SHA-256 of the stated reason, which the node keeps off the log)."""

    reason_hash: Hex32
    purpose: PurposeField
    expires_at: Timestamp


def _sorted_unique(values: list[Any], field: str) -> None:
    if not values:
        raise ValueError(f"{field}: must not be empty")
    texts = [str(v) for v in values]
    if texts != sorted(set(texts)):
        raise ValueError(f"{field}: must be sorted and without repeats (one encoding)")


class ConsentGrantData(_Strict):
    """A patient's consent that the hospital may attest facts about the patient's records to one
    insurer for one purpose: record classes, a period of record dates, the facts allowed, an
    expiry. ``document_hash`` is the SHA-256 of the signed consent form the hospital keeps."""

    patient: Pseudonym
    insurer: Address
    purpose: PurposeField
    record_classes: list[RecordClassField]
    period_start: CalendarDate
    period_end: CalendarDate
    facts: list[FactField]
    expires_at: Timestamp
    document_hash: Hex32

    @model_validator(mode="after")
    def _scope_is_canonical(self) -> ConsentGrantData:
        _sorted_unique(list(self.record_classes), "record_classes")
        _sorted_unique(list(self.facts), "facts")
        if self.period_end < self.period_start:
            raise ValueError("period_end: must not be before period_start")
        return self


class ConsentRevokeData(_Strict):
    """The consent ends (the patient withdrew it, …); no attestation is issued under it after."""

    reason: ConsentRevokeReasonField


class AttestData(_Strict):
    """An attestation was issued under the consent: ``attestation_id`` and ``digest`` (the EIP-712
    digest the hospital signed) identify it; no record fact is logged here."""

    attestation_id: Hex32
    digest: Hex32
    insurer: Address
    records: Count
    expires_at: Timestamp


class DeriveData(_Strict):
    """The archive is a de-identified derivative: ``source_commitment`` of ``source_archive``
    (its archived or current content) became ``commitment`` (this archive's version 1) by
    ``profile``, for ``purpose``, for ``recipient`` (a member address or a short code)."""

    source_archive: ArchiveId
    source_commitment: Hex32
    commitment: Hex32
    profile: Code
    purpose: PurposeField
    recipient: Recipient


# ------------------------------------------------------------------------------------------
# Events


class _EventBase(_Strict):
    v: Literal[1] = 1
    hospital: Address
    log_index: Count
    archive_id: ArchiveId
    actor: Actor
    time: Timestamp
    prev: Hex32 | None

    @model_validator(mode="after")
    def _prev_only_null_for_create(self) -> _EventBase:
        event_type = getattr(self, "type", None)
        is_first = event_type in FIRST_EVENT_TYPES
        if is_first and self.prev is not None:
            raise ValueError(f"prev: must be null for {event_type}")
        if not is_first and self.prev is None:
            raise ValueError("prev: required for every event but CREATE and CONSENT_GRANT")
        return self

    @property
    def event_type(self) -> EventType:
        """The type as the enum."""
        return EventType(getattr(self, "type"))  # noqa: B009  (defined by each subclass)


class CreateEvent(_EventBase):
    type: Literal["CREATE"] = "CREATE"
    data: CreateData


class AmendEvent(_EventBase):
    type: Literal["AMEND"] = "AMEND"
    data: AmendData


class ArchiveEvent(_EventBase):
    type: Literal["ARCHIVE"] = "ARCHIVE"
    data: ArchiveData


class AccessEvent(_EventBase):
    type: Literal["ACCESS"] = "ACCESS"
    data: AccessData


class ShareGrantEvent(_EventBase):
    type: Literal["SHARE_GRANT"] = "SHARE_GRANT"
    data: ShareGrantData


class ShareRevokeEvent(_EventBase):
    type: Literal["SHARE_REVOKE"] = "SHARE_REVOKE"
    data: ShareRevokeData


class TransferOfferEvent(_EventBase):
    type: Literal["TRANSFER_OFFER"] = "TRANSFER_OFFER"
    data: TransferOfferData


class TransferAcceptEvent(_EventBase):
    type: Literal["TRANSFER_ACCEPT"] = "TRANSFER_ACCEPT"
    data: TransferAcceptData


class TransferRejectEvent(_EventBase):
    type: Literal["TRANSFER_REJECT"] = "TRANSFER_REJECT"
    data: TransferRejectData


class TransferCancelEvent(_EventBase):
    type: Literal["TRANSFER_CANCEL"] = "TRANSFER_CANCEL"
    data: TransferCancelData


class HoldPlaceEvent(_EventBase):
    type: Literal["HOLD_PLACE"] = "HOLD_PLACE"
    data: HoldPlaceData


class HoldReleaseEvent(_EventBase):
    type: Literal["HOLD_RELEASE"] = "HOLD_RELEASE"
    data: HoldReleaseData


class RetentionExtendEvent(_EventBase):
    type: Literal["RETENTION_EXTEND"] = "RETENTION_EXTEND"
    data: RetentionExtendData


class DispositionStartEvent(_EventBase):
    type: Literal["DISPOSITION_START"] = "DISPOSITION_START"
    data: DispositionStartData


class DispositionProposeEvent(_EventBase):
    type: Literal["DISPOSITION_PROPOSE"] = "DISPOSITION_PROPOSE"
    data: DispositionProposeData


class DispositionApproveEvent(_EventBase):
    type: Literal["DISPOSITION_APPROVE"] = "DISPOSITION_APPROVE"
    data: DispositionApproveData


class DestroyEvent(_EventBase):
    type: Literal["DESTROY"] = "DESTROY"
    data: DestroyData


class DestructionNoticeEvent(_EventBase):
    type: Literal["DESTRUCTION_NOTICE"] = "DESTRUCTION_NOTICE"
    data: DestructionNoticeData


class FixityCheckEvent(_EventBase):
    type: Literal["FIXITY_CHECK"] = "FIXITY_CHECK"
    data: FixityCheckData


class TierMoveEvent(_EventBase):
    type: Literal["TIER_MOVE"] = "TIER_MOVE"
    data: TierMoveData


class TagBindEvent(_EventBase):
    type: Literal["TAG_BIND"] = "TAG_BIND"
    data: TagBindData


class TagScanEvent(_EventBase):
    type: Literal["TAG_SCAN"] = "TAG_SCAN"
    data: TagScanData


class ReclassifyEvent(_EventBase):
    type: Literal["RECLASSIFY"] = "RECLASSIFY"
    data: ReclassifyData


class BreakGlassEvent(_EventBase):
    type: Literal["BREAK_GLASS"] = "BREAK_GLASS"
    data: BreakGlassData


class ConsentGrantEvent(_EventBase):
    type: Literal["CONSENT_GRANT"] = "CONSENT_GRANT"
    data: ConsentGrantData


class ConsentRevokeEvent(_EventBase):
    type: Literal["CONSENT_REVOKE"] = "CONSENT_REVOKE"
    data: ConsentRevokeData


class AttestEvent(_EventBase):
    type: Literal["ATTEST"] = "ATTEST"
    data: AttestData


class DeriveEvent(_EventBase):
    type: Literal["DERIVE"] = "DERIVE"
    data: DeriveData


class ReplicaEvent(_EventBase):
    type: Literal["REPLICA"] = "REPLICA"
    data: ReplicaData


class RepairEvent(_EventBase):
    type: Literal["REPAIR"] = "REPAIR"
    data: RepairData


Event = Annotated[
    CreateEvent
    | AmendEvent
    | ArchiveEvent
    | AccessEvent
    | ShareGrantEvent
    | ShareRevokeEvent
    | TransferOfferEvent
    | TransferAcceptEvent
    | TransferRejectEvent
    | TransferCancelEvent
    | HoldPlaceEvent
    | HoldReleaseEvent
    | RetentionExtendEvent
    | DispositionStartEvent
    | DestroyEvent
    | FixityCheckEvent
    | TierMoveEvent
    | TagBindEvent
    | TagScanEvent
    | DispositionProposeEvent
    | DispositionApproveEvent
    | ReclassifyEvent
    | BreakGlassEvent
    | ConsentGrantEvent
    | ConsentRevokeEvent
    | AttestEvent
    | DeriveEvent
    | ReplicaEvent
    | RepairEvent
    | DestructionNoticeEvent,
    Field(discriminator="type"),
]
"""Any lifecycle event; ``type`` selects the model."""

EVENT_MODELS: dict[EventType, type[_EventBase]] = {
    EventType(model.model_fields["type"].default): model
    for model in (
        CreateEvent,
        AmendEvent,
        ArchiveEvent,
        AccessEvent,
        ShareGrantEvent,
        ShareRevokeEvent,
        TransferOfferEvent,
        TransferAcceptEvent,
        TransferRejectEvent,
        TransferCancelEvent,
        HoldPlaceEvent,
        HoldReleaseEvent,
        RetentionExtendEvent,
        DispositionStartEvent,
        DestroyEvent,
        FixityCheckEvent,
        TierMoveEvent,
        TagBindEvent,
        TagScanEvent,
        DispositionProposeEvent,
        DispositionApproveEvent,
        ReclassifyEvent,
        BreakGlassEvent,
        ConsentGrantEvent,
        ConsentRevokeEvent,
        AttestEvent,
        DeriveEvent,
        ReplicaEvent,
        RepairEvent,
        DestructionNoticeEvent,
    )
}
"""The model of each event type."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


# ------------------------------------------------------------------------------------------
# Canonical bytes, parsing, hashing


def event_to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON object (every field present, ``null`` for absent optionals)."""
    return event.model_dump(mode="json", by_alias=True)


def canonical_bytes(event: Event) -> bytes:
    """RFC 8785 (JCS) canonical JSON of the event: the exact bytes that are logged and hashed.

    Every string field of every event model is constrained to ASCII (codes, hex, addresses,
    ULIDs, enums, RFC 3339 times) and every integer to ±(2^53 - 1), so JCS here is exactly
    Python's sorted, compact ``json.dumps`` (see ``jcs``); a test checks every event type
    against the reference encoder."""
    return json.dumps(
        event_to_json(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON of ``value``.

    Events hold only strings, booleans, null, objects with ASCII keys and integers within
    ±(2^53 - 1). For such values JCS is exactly Python's sorted, compact, non-ASCII-preserving
    ``json.dumps`` (same escapes: ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other controls as
    lower-case ``\\u00xx``; code-point key order equals UTF-16 order for ASCII keys), which is
    about four times faster than the general ``rfc8785`` encoder. Anything else (floats, large
    integers, non-ASCII keys) goes through ``rfc8785``; a property test checks the two agree.
    """
    if _fast_jcs_applies(value):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return rfc8785.dumps(value)


def _fast_jcs_applies(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not (isinstance(key, str) and key.isascii()):
                    return False
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False  # lone surrogates: let rfc8785 refuse them
        else:
            return False
    return True


def event_leaf_hash(event: Event) -> bytes:
    """The event's Merkle leaf hash: SHA-256(0x00 ‖ canonical bytes)."""
    return merkle.leaf_hash(canonical_bytes(event))


def _refuse(field: str, message: str) -> NoReturn:
    raise EventFieldError(field, message)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _refuse(key, "duplicate key")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    _refuse("(document)", f"{name} is not allowed in events")


def _reject_float(text: str) -> NoReturn:
    _refuse("(document)", f"non-integer number {text} is not allowed in events")


def _error_path(loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in EVENT_MODELS:  # the discriminated union puts the tag first
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(event)"


def _first_difference(given: Any, canonical: Any, path: str) -> str:
    """The first field where a parsed document differs from its canonical form."""
    if isinstance(given, dict) and isinstance(canonical, dict):
        for key in sorted(set(given) | set(canonical)):
            here = f"{path}.{key}" if path else key
            if key not in given:
                return f"{here}: missing (canonical form lists every field, null when absent)"
            if key not in canonical:
                return f"{here}: not part of the canonical form"
            found = _first_difference(given[key], canonical[key], here)
            if found:
                return found
        return ""
    if given != canonical or type(given) is not type(canonical):
        return f"{path or '(event)'}: not in canonical form (expected {json.dumps(canonical)})"
    return ""


_NAMED_FIELD = re.compile(r"([a-z_][a-z0-9_]*): (.*)", re.DOTALL)


def _field_error(exc: ValidationError, event_type: object) -> EventFieldError:
    """The first validation error as an ``EventFieldError`` with a dotted field path."""
    first = exc.errors(include_url=False)[0]
    path = _error_path(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    named = _NAMED_FIELD.fullmatch(message)
    if named and first["type"] == "value_error":
        # model validators name their field in the message ("prev: must be null for CREATE")
        field, message = named.groups()
        path = field if path == "(event)" else f"{path}.{field}"
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "union_tag_invalid":
        path, message = "type", f"unknown event type {event_type!r}"
    elif first["type"] == "union_tag_not_found":
        path, message = "type", "missing"
    return EventFieldError(path, message)


def validate_event(obj: object) -> Event:
    """Validate a decoded JSON object as an event (no canonical-bytes check)."""
    if not isinstance(obj, dict):
        _refuse("(event)", "must be a JSON object")
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        _refuse("v", f"unsupported schema version {version!r} (supported: {SCHEMA_VERSION})")
    try:
        return _EVENT_ADAPTER.validate_python(obj, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _field_error(exc, obj.get("type")) from None


def parse_event(data: bytes) -> Event:
    """Parse canonical event bytes; refuses anything that is not exactly ``canonical_bytes``.

    Raises ``EventFormatError`` (an ``EventFieldError`` naming the field when one is at fault)
    for oversize or non-UTF-8 input, duplicate keys, floats, unknown versions, types or fields,
    invalid values, and non-canonical encodings.
    """
    if len(data) > MAX_EVENT_BYTES:
        _refuse("(document)", f"event is {len(data)} bytes, more than {MAX_EVENT_BYTES}")
    if data.count(b"{") + data.count(b"[") > MAX_STRUCTURES:
        # bounds nesting before the recursive JSON decoder sees the bytes
        _refuse("(document)", f"more than {MAX_STRUCTURES} objects or arrays")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse("(document)", "event bytes are not UTF-8")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except json.JSONDecodeError as exc:
        _refuse("(document)", f"not JSON: {exc.msg.removesuffix(' at')} at offset {exc.pos}")
    except EventFormatError:
        raise
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        _refuse("(document)", "a number has too many digits")
    event = validate_event(obj)
    encoded = canonical_bytes(event)
    if encoded != data:
        difference = _first_difference(obj, event_to_json(event), "")
        raise EventFormatError(
            "event bytes are not RFC 8785 canonical"
            + (f": {difference}" if difference else " (key order, whitespace or escaping)")
        )
    return event
