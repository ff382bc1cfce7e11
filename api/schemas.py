"""Request and response schemas of the HTTP API (the OpenAPI document is generated from them).

Inputs (``…In``) forbid unknown fields and bound every string, list and number, so nothing a
client sends can reach the database or an event in a shape the services do not expect: codes
match the event vocabulary's ``Code`` pattern, free text refuses control characters (PostgreSQL
cannot store NUL), dates and times stay within ranges every backend can store. Outputs
(``…Out``) are built from the services' plain snapshots and never carry a patient identifier in
clear: only its keyed pseudonym.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.json_schema import SkipJsonSchema

from anchoring.events import (
    MAX_SAFE_INTEGER,
    AttestedFact,
    ConsentRevokeReason,
    Purpose,
    RecordClass,
    Sensitivity,
)
from anchoring.storage import CheckpointState
from anchoring.worker import Lag
from node.encounters import EncounterKind, EncounterReport
from node.models import CatalogueState
from node.principal import Role
from node.services.archives import MAX_PAGE, NewArchive, SearchFilters
from node.services.keys import ApiKeyView, IssuedKey
from node.services.proofs import MAX_PROOF_WAIT
from node.services.records import ArchiveView, EventView, Page, VersionView
from node.services.retention import BatchOutcome, CertificateView, ProposalView
from node.services.status import (
    MAX_CHECKPOINT_PAGE,
    CheckpointView,
    Health,
    HealthStatus,
    Problem,
)

__all__ = [
    "ArchiveIn",
    "ArchiveOut",
    "ArchivePageOut",
    "ArchiveRequestIn",
    "CheckpointOut",
    "CheckpointPageOut",
    "CheckpointQuery",
    "ContentQuery",
    "ErrorOut",
    "EventOut",
    "HealthOut",
    "HoldIn",
    "KeyIn",
    "KeyIssuedOut",
    "KeyOut",
    "ProofBundleDocument",
    "ReleaseHoldQuery",
    "SearchQuery",
    "VerifyQuery",
    "VerifyReportOut",
    "VersionOut",
]

# --------------------------------------------------------------------------------------------
# Field types

NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""Printable text: no C0 control character and no DEL (PostgreSQL cannot store NUL)."""
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""The events' ``Code``: department and source-system identifiers as they appear in events."""
META_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
ARCHIVE_ID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
"""A canonical ULID: 26 upper-case Crockford base32 characters, as the API returns them."""
MAX_METADATA_ENTRIES = 32
MAX_METADATA_TEXT = 256
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2100, 12, 31)
MAX_OFFSET = 1_000_000_000
MAX_KEY_ID = 2**31 - 1
MAX_VERSION = 2**31 - 1


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _rfc3339(value: object) -> object:
    """Only RFC 3339 date-times with an offset (pydantic would also take unix numbers, which the
    schema's ``string`` refuses); a ``datetime`` built by the node itself passes."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2024-05-02T08:00:00Z")
    return value


def _iso_date(value: object) -> object:
    """Only ``YYYY-MM-DD`` calendar dates (pydantic would also take unix numbers, which the
    schema's ``string`` refuses); a ``date`` built by the node itself passes."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a calendar date, e.g. 2024-05-02")
    return value


def _in_utc(value: datetime) -> datetime:
    """The same instant in UTC (refused when that leaves the representable range)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the supported time range") from None


Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN), Field(examples=["cardiology"])]
Title = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN
    ),
]
PatientId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROL_PATTERN
    ),
]
FileName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f/\\]*$"
    ),
]
KeyName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN
    ),
]
SearchText = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NO_CONTROL_PATTERN)
]
CalendarDate = Annotated[date, BeforeValidator(_iso_date), Field(ge=EARLIEST_DATE, le=LATEST_DATE)]
UtcDateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]

MetaKey = Annotated[str, StringConstraints(pattern=META_KEY_PATTERN)]
MetaText = Annotated[
    str, StringConstraints(max_length=MAX_METADATA_TEXT, pattern=NO_CONTROL_PATTERN)
]
MetaInt = Annotated[int, Field(strict=True, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
MetaFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Metadata = Annotated[
    dict[MetaKey, MetaText | MetaInt | MetaFloat],
    Field(
        max_length=MAX_METADATA_ENTRIES,
        description=(
            f"Flat catalogue metadata: at most {MAX_METADATA_ENTRIES} entries, keys like "
            f"`{META_KEY_PATTERN}`, values short strings (≤ {MAX_METADATA_TEXT} characters) "
            "or numbers. Searched by the `q` keyword; never written into events."
        ),
        examples=[{"ward": "5B", "visit": 3}],
    ),
]


class _In(BaseModel):
    """Inputs: unknown fields (and unknown query parameters) are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    """Outputs that can be read straight from the services' snapshot dataclasses."""

    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------------------------
# Errors


class ErrorOut(BaseModel):
    """Every error answer: a machine-readable ``code`` and a human-readable ``message``."""

    code: str = Field(examples=["illegal_transition"])
    message: str = Field(examples=["AMEND refused in state ARCHIVED: the archive is immutable"])
    details: dict[str, Any] | None = Field(
        default=None,
        description="Optional structured context: `errors` (validation), `field` (bundle).",
    )


# --------------------------------------------------------------------------------------------
# Archives


class ArchiveIn(_In):
    """The ``metadata`` part of an upload (a JSON object). ``patient_id`` is turned into a keyed
    pseudonym at once and never stored or returned in clear."""

    record_class: RecordClass
    sensitivity: Sensitivity = Sensitivity.NORMAL
    department: Code
    title: Title = Field(examples=["Discharge summary"])
    source_system: Code = Field(examples=["HIS"])

    patient_id: PatientId = Field(examples=["MRN-000123"])
    trigger_date: CalendarDate | None = Field(
        default=None,
        description="Start of the retention clock (last visit or discharge); default: today.",
    )
    metadata: Metadata = Field(default_factory=dict)
    filename: FileName | None = Field(
        default=None, description="Display name; default: the uploaded file's name."
    )

    def to_new_archive(self, media_type: str, upload_name: str | None) -> NewArchive:
        """The service input for this metadata and the uploaded part's media type and name."""
        return NewArchive(
            record_class=self.record_class,
            sensitivity=self.sensitivity,
            department=self.department,
            title=self.title,
            patient_id=self.patient_id,
            source_system=self.source_system,
            media_type=media_type,
            filename=self.filename or upload_name,
            trigger_date=self.trigger_date,
            metadata=dict(self.metadata),
        )


ARCHIVE_IN_EXAMPLE = {
    "record_class": "INPATIENT",
    "sensitivity": "NORMAL",
    "department": "cardiology",
    "title": "Discharge summary",
    "patient_id": "MRN-000123",
    "source_system": "HIS",
    "trigger_date": "2024-05-02",
    "metadata": {"ward": "5B"},
}


class VersionOut(_Out):
    """One stored (encrypted) version of the content."""

    version: int
    size: int = Field(description="Plaintext size in bytes.")
    media_type: str
    filename: str | None
    cid: str = Field(description="Content identifier (CIDv1) of the stored ciphertext.")
    ciphertext_sha256: str = Field(description="Fixity value: SHA-256 of the stored ciphertext.")
    commitment: str = Field(description="SHA-256(salt ‖ plaintext), as in the events.")
    created_at: datetime

    @classmethod
    def of(cls, view: VersionView) -> VersionOut:
        return cls.model_validate(view)


class ArchiveOut(_Out):
    """An archive's catalogue entry and lifecycle state (never content, keys or patient id).
    Output fields are plain: what the node stored is reported, never re-judged."""

    id: str = Field(examples=["01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"])
    record_class: RecordClass
    sensitivity: Sensitivity
    department: str = Field(examples=["cardiology"])
    title: str = Field(examples=["Discharge summary"])
    source_system: str = Field(examples=["HIS"])
    patient_pseudonym: str = Field(description="Keyed pseudonym of the patient (HMAC).")
    metadata: dict[str, Any]
    state: CatalogueState = Field(
        description=(
            "Lifecycle state, or INCOMING (being received from another hospital) or TRANSFERRED "
            "(custody moved to another hospital; only the evidence stays here)."
        )
    )
    custodian: str = Field(description="Member address of the hospital holding custody.")
    trigger_date: date
    retention_policy: str | None
    retention_deadline: datetime | None
    on_hold: bool
    hold_by_regulator: bool
    current_version: int
    event_count: int
    chain_status: str = Field(
        description="On-chain custody registration: none, pending, registered or failed.",
        examples=["registered"],
    )
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    versions: list[VersionOut]

    @classmethod
    def of(cls, view: ArchiveView) -> ArchiveOut:
        return cls(
            id=view.id,
            record_class=RecordClass(view.record_class),
            sensitivity=Sensitivity(view.sensitivity),
            department=view.department,
            title=view.title,
            source_system=view.source_system,
            patient_pseudonym=view.patient_pseudonym,
            metadata=view.metadata,
            state=CatalogueState(view.state),
            custodian=view.custodian,
            trigger_date=view.trigger_date.date(),
            retention_policy=view.retention_policy,
            retention_deadline=view.retention_deadline,
            on_hold=view.on_hold,
            hold_by_regulator=view.hold_by_regulator,
            current_version=view.current_version,
            event_count=view.event_count,
            chain_status=view.chain_status,
            created_at=view.created_at,
            updated_at=view.updated_at,
            archived_at=view.archived_at,
            versions=[VersionOut.of(v) for v in view.versions],
        )


NEXT_CURSOR_FIELD = Field(
    default=None,
    description="Pass as `cursor` (same filters) for the next page; null: this is the last page.",
)
"""A page's ``next_cursor`` (``GET /archives``, ``GET /catalogue``)."""


class ArchivePageOut(BaseModel):
    """One page of catalogue search results."""

    items: list[ArchiveOut]
    total: int = Field(description="Matches in the caller's scope, over all pages.")
    limit: int
    offset: int
    total_exact: bool = Field(
        True,
        description="False when the search counted its matches only up to the cap: at "
        "least `total` match.",
    )
    next_cursor: str | None = NEXT_CURSOR_FIELD

    @classmethod
    def of(cls, page: Page[ArchiveView]) -> ArchivePageOut:
        return cls(
            items=[ArchiveOut.of(v) for v in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
            total_exact=page.total_exact,
            next_cursor=page.next_cursor,
        )


class ArchiveRequestIn(_In):
    """Optional body of ``POST /archives/{id}/archive``."""

    trigger_date: CalendarDate | None = Field(
        default=None, description="Overrides the trigger date given at upload."
    )


class HoldIn(_In):
    """Body of ``POST /archives/{id}/hold``. The reason stays on this node; events carry only
    its SHA-256."""

    reason: str = Field(min_length=1, max_length=2000, examples=["litigation 2024-17"])


class EventOut(BaseModel):
    """One logged lifecycle event of an archive."""

    log_index: int
    leaf_hash: str
    type: str = Field(examples=["CREATE"])
    time: datetime
    anchored: bool = Field(description="Covered by a confirmed on-chain checkpoint.")
    event: dict[str, Any] = Field(description="The event object (its canonical JSON decoded).")

    @classmethod
    def of(cls, view: EventView) -> EventOut:
        return cls(
            log_index=view.log_index,
            leaf_hash=view.leaf_hash,
            type=view.event_type,
            time=view.time,
            anchored=view.anchored,
            event=view.event,
        )


PageCursor = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]
"""An opaque page cursor (``node/searchcursor.py``): base64url, at most 128 characters."""
CURSOR_FIELD = Field(
    default=None,
    description=(
        "The `next_cursor` of the previous page, with the same filters: the page after it, "
        "found without walking the pages before (for deep paging and exports). Not with "
        "`offset`."
    ),
)


class SearchQuery(_In):
    """Query of ``GET /archives``. Unknown parameters are refused, so a misspelt filter can never
    silently widen a search."""

    record_class: RecordClass | None = None
    department: Code | None = None
    state: CatalogueState | None = None
    patient_id: PatientId | None = Field(
        default=None, description="Matched through its keyed pseudonym."
    )
    q: SearchText | None = Field(
        default=None, description="Keyword in title or metadata, or an exact archive id."
    )
    text: SearchText | None = Field(
        default=None,
        description=(
            "Words or Chinese text in the title, metadata or the text extracted from the content "
            "(FHIR narrative, HL7 text, DICOM descriptions, plain text): every word, and every "
            "pair of neighbouring Chinese characters, must occur."
        ),
    )
    created_from: UtcDateTime | None = Field(
        default=None, description="Created at or after (RFC 3339, with an offset)."
    )
    created_to: UtcDateTime | None = Field(default=None, description="Created before.")
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    cursor: PageCursor | None = CURSOR_FIELD
    purpose: Purpose | None = Field(
        default=None,
        description=(
            "Purpose of use of this catalogue read, logged as a metadata ACCESS of every listed "
            "archive. Default: treatment for clinicians, audit for auditors, operations for "
            "archive staff."
        ),
    )

    def to_filters(self) -> SearchFilters:
        """The service's search filters."""
        return SearchFilters(
            record_class=self.record_class,
            department=self.department,
            state=self.state.value if self.state is not None else None,
            patient_id=self.patient_id,
            keyword=self.q,
            text=self.text,
            created_from=self.created_from,
            created_to=self.created_to,
            limit=self.limit,
            offset=self.offset,
            cursor=self.cursor,
            purpose=self.purpose,
        )


class MetadataQuery(_In):
    """Query of ``GET /archives/{id}``."""

    purpose: Purpose | None = Field(
        default=None,
        description=(
            "Purpose of use, logged as a metadata ACCESS. Default: treatment for clinicians, "
            "audit for auditors, operations for archive staff."
        ),
    )


class ContentQuery(_In):
    """Query of ``GET /archives/{id}/content``."""

    purpose: Purpose = Field(description="Purpose of use (written into the ACCESS event).")
    version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="Default: the current version."
    )


class ReleaseHoldQuery(_In):
    """Query of ``DELETE /archives/{id}/hold``."""

    reason: str = Field(min_length=1, max_length=2000, description="Why the hold ends.")


class CheckpointQuery(_In):
    """Query of ``GET /checkpoints``."""

    state: CheckpointState | None = None
    limit: int = Field(default=50, ge=1, le=MAX_CHECKPOINT_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class VerifyQuery(_In):
    """Query of ``POST /verify``."""

    check_custody: bool = Field(
        default=True, description="Also compare the current on-chain custody record."
    )


class ProofQuery(_In):
    """Query of ``GET /archives/{id}/proof``."""

    wait: int = Field(
        default=0,
        ge=0,
        le=MAX_PROOF_WAIT,
        description=(
            "Seconds to wait until every event of the archive recorded when the request arrives "
            "is anchored (then the bundle holds them all); `409 proof_pending` if they are not "
            f"by then. 0: answer at once with what is anchored. At most {MAX_PROOF_WAIT}."
        ),
    )


# --------------------------------------------------------------------------------------------
# Proof bundles and verification


class BundleCheckpointDoc(BaseModel):
    """The checkpoint an entry is proven against (``checkpointAt(hospital, index)``)."""

    hospital: Address
    index: int = Field(ge=0, le=MAX_SAFE_INTEGER)
    size: int = Field(ge=1, le=MAX_SAFE_INTEGER)
    root: Hex32


class BundleEntryDoc(BaseModel):
    """One event, where it sits in which log, and its inclusion proof."""

    hospital: Address
    log_index: int = Field(ge=0, le=MAX_SAFE_INTEGER)
    event: str = Field(description="Canonical event bytes, standard base64 with padding.")
    proof: list[Hex32] = Field(max_length=64)
    checkpoint: BundleCheckpointDoc


class BundleCustodyDoc(BaseModel):
    """The producer's claim about the on-chain custody record."""

    custodian: Address
    state: Literal["NONE", "ARCHIVED", "TRANSFER_PENDING", "DESTROYED"]
    on_hold: bool
    commitment: Hex32 | None


def _no_default(schema: dict[str, Any]) -> None:
    """Document an optional field as absent-or-object (its Python default is not a JSON value)."""
    schema.pop("default", None)


class ProofBundleDocument(BaseModel):
    """An ``archivechain.proof/v1`` document (see docs/proof-format.md). The server parses it
    strictly (no unknown or duplicate fields, canonical base64, EIP-55 addresses)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["archivechain.proof/v1"]
    chain_id: int = Field(ge=1, le=MAX_SAFE_INTEGER)
    notary: Address
    archive_id: str = Field(pattern=r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
    entries: list[BundleEntryDoc] = Field(min_length=1)
    custody: BundleCustodyDoc | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_no_default,
        description="Optional: absent when the producer makes no custody claim (never null).",
    )


class FailureOut(BaseModel):
    """Why a bundle was refused."""

    code: str = Field(examples=["inclusion_invalid"])
    message: str
    entry: int | None = Field(description="0-based entry position; null for the whole bundle.")


class EntryReportOut(BaseModel):
    """The verdict on one entry."""

    position: int
    type: str | None
    time: str | None
    hospital: str
    log_index: int
    checkpoint_index: int
    block_time: int | None = Field(description="Unix time at which the checkpoint was anchored.")
    verdict: Literal["ok", "failed", "unchecked"]
    failure: FailureOut | None


class FinalStateOut(BaseModel):
    """The archive's state after replaying every entry."""

    status: str
    custodian: str
    on_hold: bool
    commitment: str | None


class VerifyReportOut(BaseModel):
    """The verifier's report (``anchoring.verifier.Report.to_json``)."""

    status: Literal["valid", "invalid"]
    ok: bool
    archive_id: str
    chain_id: int
    notary: str
    failure: FailureOut | None
    failures: list[FailureOut]
    custody_checked: bool
    final_state: FinalStateOut | None
    entries: list[EntryReportOut]


# --------------------------------------------------------------------------------------------
# Checkpoints and health


class CheckpointOut(_Out):
    """One checkpoint (tree head) this node planned, and its on-chain fate."""

    id: int
    size: int
    root: str
    state: CheckpointState
    chain_index: int | None = Field(description="Index in `checkpointAt(hospital, index)`.")
    tx_hash: str | None
    block_number: int | None
    block_time: datetime | None
    planned_at: datetime
    confirmed_at: datetime | None

    @classmethod
    def of(cls, view: CheckpointView) -> CheckpointOut:
        return cls.model_validate(view)


class CheckpointPageOut(BaseModel):
    """One page of this node's checkpoints, newest first."""

    hospital: str
    chain_id: int
    notary: str
    items: list[CheckpointOut]
    total: int
    limit: int
    offset: int


class AnchoringOut(BaseModel):
    """How far anchoring trails the log."""

    log_size: int
    anchored_size: int
    events_behind: int
    seconds_behind: float
    pending_transactions: int
    oldest_unconfirmed_seconds: float = Field(
        description="Age of the oldest chain transaction not yet confirmed; over "
        "`outbox_stuck_seconds` the node reports `outbox_stuck`."
    )
    last_checkpoint_at: datetime | None

    @classmethod
    def of(cls, lag: Lag, last: datetime | None) -> AnchoringOut:
        return cls(
            log_size=lag.log_size,
            anchored_size=lag.anchored_size,
            events_behind=lag.events_behind,
            seconds_behind=lag.seconds_behind,
            pending_transactions=lag.pending_transactions,
            oldest_unconfirmed_seconds=lag.oldest_unconfirmed_seconds,
            last_checkpoint_at=last,
        )


class DatabaseHealthOut(BaseModel):
    reachable: bool


class ChainHealthOut(BaseModel):
    reachable: bool
    state_lost: bool = Field(
        description="The chain no longer holds this node's checkpoints (e.g. a wiped dev chain); "
        "see `archivechain anchor replay`."
    )


class WatcherHealthOut(BaseModel):
    stalled: bool = Field(
        description="The chain watcher has been failing (or stuck in one pass) for "
        "`watcher_stall_seconds`: regulator holds, transfer acceptances and member changes on "
        "chain are not being applied."
    )
    cursor: int | None = Field(
        description="The last block the watcher processed (null before its first pass)."
    )


class HealthOut(BaseModel):
    """Node health: ``ok``, ``degraded`` (serving, evidence at risk) or ``down``."""

    status: HealthStatus
    hospital: str
    chain_id: int
    notary: str
    database: DatabaseHealthOut
    chain: ChainHealthOut
    anchoring: AnchoringOut | None
    watcher: WatcherHealthOut
    problems: list[Problem]

    @classmethod
    def of(cls, health: Health) -> HealthOut:
        return cls(
            status=health.status,
            hospital=health.hospital,
            chain_id=health.chain_id,
            notary=health.notary,
            database=DatabaseHealthOut(reachable=health.database_reachable),
            chain=ChainHealthOut(
                reachable=health.chain_reachable, state_lost=health.chain_state_lost
            ),
            anchoring=None
            if health.lag is None
            else AnchoringOut.of(health.lag, health.last_checkpoint_at),
            watcher=WatcherHealthOut(stalled=health.watcher.stalled, cursor=health.watcher.cursor),
            problems=list(health.problems),
        )


# --------------------------------------------------------------------------------------------
# API keys


class KeyIn(_In):
    """A new API key. Clinician keys need a department; other roles must not have one."""

    name: KeyName = Field(examples=["ward-5b-terminal"])
    role: Role
    department: Code | None = None
    member: Address | None = Field(
        default=None, description="The insurer's member address (insurer keys only)."
    )


class KeyOut(_Out):
    """An API key's public description (never its secret)."""

    id: int
    name: str
    prefix: str = Field(description="First characters of the key, to recognise it.")
    role: Role
    department: str | None
    created_at: datetime
    revoked_at: datetime | None
    member: str | None = None

    @classmethod
    def of(cls, view: ApiKeyView) -> KeyOut:
        return cls.model_validate(view)


class KeyIssuedOut(BaseModel):
    """A new key; ``secret`` is shown this once and stored only as a hash."""

    key: KeyOut
    secret: str

    @classmethod
    def of(cls, issued: IssuedKey) -> KeyIssuedOut:
        return cls(key=KeyOut.of(issued.key), secret=issued.secret)


# --------------------------------------------------------------------------------------------
# Retention and disposition

Reason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=2000, pattern=NO_CONTROL_PATTERN
    ),
]
SourceId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROL_PATTERN
    ),
]


class RetentionExtendIn(_In):
    """Body of ``POST /archives/{id}/retention``. The reason stays on this node."""

    new_deadline: CalendarDate = Field(
        description="Keep the archive until midnight UTC of this day (after the current deadline)."
    )
    reason: Reason = Field(examples=["research cohort 2031"])


class EncounterIn(_In):
    """Body of ``POST /patients/{patient_id}/encounters``: a visit, admission or discharge."""

    kind: EncounterKind
    at: UtcDateTime = Field(description="When it happened (RFC 3339 with offset; not future).")
    encounter_id: SourceId | None = None
    department: Code | None = None
    source_system: Code | None = None

    def to_report(self, patient_id: str) -> EncounterReport:
        return EncounterReport(
            patient_id=patient_id,
            kind=self.kind,
            at=self.at,
            encounter_id=self.encounter_id,
            department=self.department,
            source_system=self.source_system,
        )


class DueQuery(_In):
    """Query of ``GET /retention/due``."""

    within: timedelta = Field(
        default=timedelta(days=30),
        description="ISO 8601 duration: deadlines up to now + this (e.g. `P30D`).",
        examples=["P30D"],
    )
    limit: int = Field(default=200, ge=1, le=1000)


class DueOut(_Out):
    """An archive whose retention deadline has passed or falls within the window."""

    archive_id: str
    record_class: RecordClass
    department: str
    state: str
    retention_policy: str | None
    retention_deadline: datetime
    on_hold: bool


class DispositionRunOut(BaseModel):
    """What one run of the disposition job did."""

    moved_to_review: int
    overdue_alerted: int
    """Archives alerted as ``disposition_overdue`` by this run (raised or counted again)."""


class ProposalIn(_In):
    """Body of ``POST /retention/proposals``: a disposition list (销毁清册)."""

    archive_ids: list[Annotated[str, StringConstraints(pattern=ARCHIVE_ID_PATTERN)]] = Field(
        min_length=1, max_length=1000
    )
    reason: Reason


class DecisionIn(_In):
    """Body of ``POST /retention/proposals/{id}/items/{archive_id}``."""

    approve: bool
    reason: Reason
    new_deadline: CalendarDate | None = Field(
        default=None, description="Required when rejecting: keep the archive until this day."
    )


class NoticeQuery(_In):
    """Query of ``GET /retention/notices``."""

    state: Literal["pending", "delivered", "refused"] | None = Field(
        default=None, description="Only notices in this state."
    )
    limit: int = Field(default=200, ge=1, le=1000)


class NoticeOut(_Out):
    """A destruction notice queued for one grantee of a destroyed archive (no PHI)."""

    id: int
    archive_id: str
    grantee: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class ItemOut(_Out):
    """One archive of a disposition list and the decision on it."""

    archive_id: str
    decision: str
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None


class ProposalOut(_Out):
    """A disposition list and its items (the reason stays on this node)."""

    id: str
    proposed_by: str
    created_at: datetime
    items: list[ItemOut]

    @classmethod
    def of(cls, view: ProposalView) -> ProposalOut:
        return cls(
            id=view.id,
            proposed_by=view.proposed_by,
            created_at=view.created_at,
            items=[ItemOut.model_validate(i) for i in view.items],
        )


class DestructionOut(_Out):
    """One archive destroyed."""

    archive_id: str
    certificate_hash: str
    key_copies_destroyed: int
    blobs_deleted: int


class CertificateOut(BaseModel):
    """A destruction certificate: the document (its RFC 8785 form is what is hashed), the hash
    in the DESTROY event and on chain, and the custodian's EIP-712 signature."""

    archive_id: str
    certificate: dict[str, Any]
    certificate_hash: str
    signature: str
    signer: str

    @classmethod
    def of(cls, view: CertificateView) -> CertificateOut:
        return cls(
            archive_id=view.archive_id,
            certificate=json.loads(view.document),
            certificate_hash=view.certificate_hash,
            signature=view.signature,
            signer=view.signer,
        )


class RefusedItemOut(BaseModel):
    """An item of a disposition list that was not executed, and why (an error code)."""

    archive_id: str
    code: str


class BatchDestructionOut(BaseModel):
    """What executing a disposition list did."""

    destroyed: list[DestructionOut]
    refused: list[RefusedItemOut]

    @classmethod
    def of(cls, outcome: BatchOutcome) -> BatchDestructionOut:
        return cls(
            destroyed=[DestructionOut.model_validate(v) for v in outcome.destroyed],
            refused=[RefusedItemOut(archive_id=a, code=c) for a, c in outcome.refused],
        )


# --------------------------------------------------------------------------------------------
# Member sign-in (EIP-4361), access policy, break-glass (docs/regulators.md)


class ChallengeOut(BaseModel):
    """``POST /auth/challenge``: the values the member's EIP-4361 message must carry."""

    nonce: str = Field(description="Put it in `Nonce:`; answerable once, until `expires_at`.")
    domain: str = Field(description="The message's first-line domain.")
    uri: str = Field(description="The message's `URI:`.")
    chain_id: int = Field(description="The message's `Chain ID:` (the consortium chain).")
    version: str = Field(description="The message's `Version:` (always `1`).")
    statement: str = Field(description="A suggested statement (optional in the message).")
    issued_at: datetime
    expires_at: datetime = Field(description="The nonce is refused after this instant.")
    audience: str = Field(description="This hospital's member address (the token's `aud`).")
    resources: list[str] = Field(
        description="Put exactly one of these in `Resources:`: the role you sign in with."
    )


class SigninIn(_In):
    """``POST /auth/verify``: the signed message."""

    message: str = Field(min_length=1, max_length=4096, description="The EIP-4361 text (LF).")
    signature: str = Field(
        pattern=r"^0x[0-9a-fA-F]{130}$", description="EIP-191 personal_sign, 65 bytes hex."
    )


class TokenOut(BaseModel):
    """A member token and its claims. The token is shown once; send it as
    `Authorization: Bearer <token>`."""

    token: str
    token_type: str = "Bearer"  # noqa: S105 (the scheme name)
    jti: str = Field(description="The token's id (revocation).")
    sub: str = Field(description="The member's address.")
    role: str = Field(description="The registry role the member signed in with.")
    aud: str = Field(description="This hospital's member address.")
    iat: datetime
    exp: datetime


class WhoAmIOut(BaseModel):
    """The caller as the node sees it."""

    name: str
    role: str
    actor: str
    department: str | None
    member: str | None
    member_role: str | None
    token_id: str | None


class MemberTokenOut(_Out):
    """A member token as admins see it (never the token itself)."""

    id: str
    member: str
    role: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class BreakGlassIn(_In):
    """``POST /archives/{id}/break-glass``. The reason stays on this node (events carry its
    SHA-256) and is shown to the privacy officer."""

    reason: str = Field(min_length=10, max_length=2000, examples=["unconscious patient in ED"])
    purpose: Purpose = Purpose.TREATMENT


class BreakGlassOut(_Out):
    """A break-glass window."""

    id: int
    archive_id: str
    actor: str
    name: str
    department: str | None
    purpose: Purpose
    reason: str
    reason_hash: str
    event_hash: str = Field(description="Leaf hash of the BREAK_GLASS event that opened it.")
    opened_at: datetime
    expires_at: datetime
    reads: int


class DenialOut(_Out):
    """A read refused by the access policy."""

    id: int
    time: datetime
    actor: str
    role: str
    department: str | None
    archive_id: str
    action: str
    purpose: str
    sensitivity: str
    relation: str
    origin: str
    rule: str


class PolicyRuleOut(_Out):
    """One row of the access policy table."""

    id: str
    effect: str
    roles: list[str]
    sensitivities: list[str]
    relations: list[str]
    purposes: list[str]
    actions: list[str]


# --------------------------------------------------------------------------------------------
# Regulator audit (docs/regulators.md)


class AccessQueryIn(_In):
    """``POST /regulator/access-events``: every filter given must match. The patient id travels
    in the body (never in a URL); the node turns it into the keyed pseudonym and never returns it."""

    archive_id: str | None = Field(default=None, min_length=26, max_length=26)
    patient_id: str | None = Field(default=None, min_length=1, max_length=128)
    actor: str | None = Field(
        default=None, max_length=66, description="A member address or a 64-hex staff pseudonym."
    )
    staff_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Pseudonymised by the node."
    )
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = Field(default=None, ge=-1, description="Continue after this log index.")
    limit: int = Field(default=100, ge=1, le=500)


class InclusionProofOut(_Out):
    """RFC 6962 inclusion of the row's leaf in checkpoint ``checkpoint_index`` of this hospital
    on chain (``ArchiveNotary.checkpointAt(hospital, checkpoint_index)`` = size, root)."""

    checkpoint_index: int
    tree_size: int
    root: str
    hashes: list[str]


class AccessRowOut(_Out):
    """One ACCESS event: its canonical bytes (base64), leaf index and hash, decoded fields and
    its proof (null until anchored; then fetch ``bundle``)."""

    log_index: int
    archive_id: str
    time: datetime
    actor: str
    purpose: str
    scope: str
    break_glass: bool
    grant: str | None
    reason_hash: str | None
    event: str
    leaf_hash: str
    proof: InclusionProofOut | None
    bundle: str


class AccessPageOut(_Out):
    """Rows in log order; ``next_after`` (when set) continues the query as ``after``."""

    hospital: str
    chain_id: int
    notary: str
    rows: list[AccessRowOut]
    next_after: int | None


class HoldOut(_Out):
    """An archive on hold."""

    archive_id: str
    state: str
    by_regulator: bool
    placed_by: str | None


class SignedHoldIn(_In):
    """The regulator's own signed EIP-1559 ``placeHold``/``releaseHold`` transaction (hex)."""

    signed_transaction: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{2,4096}$")


class RelayOut(BaseModel):
    """The relayed transaction; the chain watcher logs the hold once it is mined."""

    tx_hash: str


# Consents and insurer attestations (docs/attestations.md)


class ConsentIn(_In):
    """A patient's consent to attestations for one insurer (CONSENT_GRANT). ``patient_id`` is
    turned into the keyed pseudonym; ``document_hash`` is the SHA-256 of the signed consent form."""

    patient_id: PatientId = Field(examples=["MRN-000123"])
    insurer: Address
    purpose: Purpose = Purpose.INSURANCE
    record_classes: list[RecordClass] = Field(min_length=1, max_length=len(RecordClass))
    facts: list[AttestedFact] = Field(min_length=1, max_length=len(AttestedFact))
    period_start: CalendarDate
    period_end: CalendarDate
    expires_at: UtcDateTime
    document_hash: Hex32


class ConsentRevokeIn(_In):
    """Why the consent ends (CONSENT_REVOKE)."""

    reason: ConsentRevokeReason = ConsentRevokeReason.WITHDRAWN


class ConsentOut(_Out):
    """A consent (the patient never appears)."""

    id: str
    insurer: str
    purpose: str
    record_classes: list[str]
    facts: list[str]
    period_start: date
    period_end: date
    expires_at: datetime
    granted_at: datetime
    revoked_at: datetime | None
    grant_hash: str


class AttestationRequestIn(_In):
    """An insurer's question: a patient, a claim period, the facts it needs (and optionally the
    record classes; by default every class the consent allows)."""

    patient_id: PatientId = Field(examples=["MRN-000123"])
    claim_start: CalendarDate
    claim_end: CalendarDate
    facts: list[AttestedFact] = Field(default_factory=list, max_length=len(AttestedFact))
    record_classes: list[RecordClass] | None = Field(
        default=None, min_length=1, max_length=len(RecordClass)
    )


class AttestationRevokedOut(BaseModel):
    """An attestation revoked here; the on-chain ``revoke`` is sent by the outbox."""

    id: str
    revoked_at: datetime


class DerivativeIn(_In):
    """A de-identified derivative: the profile (`dicom-basic`, `fhir-r4-deid`, `hl7v2-deid`), the
    purpose of use and the recipient (a member address or a short code)."""

    profile: Code = Field(examples=["fhir-r4-deid"])
    purpose: Purpose
    recipient: Annotated[
        str, StringConstraints(pattern=r"^(0x[0-9a-fA-F]{40}|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
    ] = Field(examples=["university-research-unit"])
