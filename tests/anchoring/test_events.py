"""Event schemas: canonical bytes (RFC 8785), strict parsing with named fields, and leaf hashes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from anchoring import events as ev
from anchoring.errors import AnchoringError, EventFormatError
from anchoring.events import (
    EVENT_MODELS,
    FIRST_EVENT_TYPES,
    EventFieldError,
    EventType,
    canonical_bytes,
    event_leaf_hash,
    event_to_json,
    parse_event,
)

HOSPITAL_A = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
HOSPITAL_B = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0"
A_ADDR = HOSPITAL_B  # a valid address for fields that must not be there at all
REGULATOR = "0x22d491Bde2303f2f43325b2108D26f1eAbA1e32b"
ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
T0 = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
H1, H2, H3 = ("11" * 32, "22" * 32, "33" * 32)

SAMPLE_DATA: dict[EventType, dict[str, Any]] = {
    EventType.CREATE: {
        "record_class": "INPATIENT",
        "sensitivity": "SENSITIVE",
        "department": "CARDIOLOGY",
        "patient": H1,
        "source_system": "HIS",
        "version": 1,
        "commitment": H2,
        "ciphertext_sha256": H3,
        "size": 4096,
        "media_type": "application/fhir+json",
    },
    EventType.AMEND: {
        "version": 2,
        "commitment": H2,
        "ciphertext_sha256": H3,
        "size": 10,
        "media_type": "application/pdf",
    },
    EventType.ARCHIVE: {
        "record_class": "INPATIENT",
        "retention_policy": "INPATIENT_30Y",
        "trigger_date": "2024-04-30",
        "retention_deadline": "2054-04-30T00:00:00Z",
        "commitment": H2,
    },
    EventType.ACCESS: {
        "purpose": "treatment",
        "scope": "content",
        "break_glass": True,
        "grant": None,
        "reason_hash": H1,
    },
    EventType.SHARE_GRANT: {
        "grantee": HOSPITAL_B,
        "purpose": "referral",
        "expires_at": "2024-06-01T00:00:00Z",
    },
    EventType.SHARE_REVOKE: {"grantee": HOSPITAL_B, "reason": "purpose_fulfilled"},
    EventType.TRANSFER_OFFER: {"to": HOSPITAL_B, "expires_at": None},
    EventType.TRANSFER_ACCEPT: {"from": HOSPITAL_A, "offer_hash": H3},
    EventType.TRANSFER_REJECT: {"by": HOSPITAL_B, "reason_hash": H1},
    EventType.TRANSFER_CANCEL: {"to": HOSPITAL_B, "reason": "withdrawn"},
    EventType.HOLD_PLACE: {"reason_hash": H1, "by_regulator": True},
    EventType.HOLD_RELEASE: {"reason_hash": H2},
    EventType.RETENTION_EXTEND: {
        "previous_deadline": "2054-04-30T00:00:00Z",
        "new_deadline": "2064-04-30T00:00:00Z",
    },
    EventType.DISPOSITION_START: {},
    EventType.DESTROY: {"certificate_hash": H3, "method": "crypto_erasure"},
    EventType.FIXITY_CHECK: {"version": 1, "ciphertext_sha256": H3, "ok": True},
    EventType.TIER_MOVE: {"from_tier": "hot", "to_tier": "cold"},
    EventType.TAG_BIND: {"tag_kind": "rfid_epc", "tag_hash": H1},
    EventType.TAG_SCAN: {"tag_hash": H1, "reader": H2},
    EventType.DISPOSITION_PROPOSE: {"proposal": "01HZY3Z4Q8Q1V6S9N0M5K2J3H9", "reason_hash": H1},
    EventType.DISPOSITION_APPROVE: {
        "proposal": "01HZY3Z4Q8Q1V6S9N0M5K2J3H9",
        "expires_at": "2054-05-30T00:00:00Z",
        "reason_hash": H2,
    },
    EventType.RECLASSIFY: {
        "previous_class": "INPATIENT",
        "previous_sensitivity": "NORMAL",
        "record_class": "LAB",
        "sensitivity": "HIGHLY_SENSITIVE",
        "reason_hash": H2,
    },
    EventType.BREAK_GLASS: {
        "reason_hash": H1,
        "purpose": "treatment",
        "expires_at": "2026-01-01T04:00:00Z",
    },
    EventType.CONSENT_GRANT: {
        "patient": H1,
        "insurer": HOSPITAL_B,
        "purpose": "insurance",
        "record_classes": ["INPATIENT", "OUTPATIENT"],
        "period_start": "2024-01-01",
        "period_end": "2024-12-31",
        "facts": ["dates", "record_class"],
        "expires_at": "2025-05-01T00:00:00Z",
        "document_hash": H2,
    },
    EventType.CONSENT_REVOKE: {"reason": "withdrawn"},
    EventType.ATTEST: {
        "attestation_id": H1,
        "digest": H2,
        "insurer": HOSPITAL_B,
        "records": 2,
        "expires_at": "2024-06-01T00:00:00Z",
    },
    EventType.DERIVE: {
        "source_archive": "01HZY3Z4Q8Q1V6S9N0M5K2J3H5",
        "source_commitment": H1,
        "commitment": H2,
        "profile": "fhir-r4-deid",
        "purpose": "research",
        "recipient": "uni-research",
    },
    EventType.REPLICA: {
        "action": "placed",
        "peer": HOSPITAL_B,
        "version": 1,
        "ciphertext_sha256": H3,
    },
    EventType.REPAIR: {"version": 1, "ciphertext_sha256": H3, "source": HOSPITAL_B},
    EventType.DESTRUCTION_NOTICE: {"certificate_hash": H2, "reason": "custodian_destroyed"},
}


def document(event_type: EventType = EventType.CREATE, **overrides: Any) -> dict[str, Any]:
    """A valid event as a JSON object."""
    doc: dict[str, Any] = {
        "v": 1,
        "hospital": HOSPITAL_A,
        "log_index": 7,
        "archive_id": ARCHIVE,
        "type": event_type.value,
        "actor": REGULATOR if event_type is EventType.HOLD_PLACE else H1,
        "time": "2024-05-01T08:30:00.250000Z",
        "prev": None if event_type in FIRST_EVENT_TYPES else H3,
        "data": dict(SAMPLE_DATA[event_type]),
    }
    doc.update(overrides)
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    try:
        return rfc8785.dumps(doc)
    except rfc8785.IntegerDomainError:  # out-of-range numbers: plain sorted compact JSON
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def refused(doc: dict[str, Any] | bytes) -> EventFormatError:
    data = doc if isinstance(doc, bytes) else encode(doc)
    with pytest.raises(EventFormatError) as caught:
        parse_event(data)
    return caught.value


# ------------------------------------------------------------------------------------------
# Happy paths


def test_every_event_type_has_a_model_and_a_sample() -> None:
    assert set(EVENT_MODELS) == set(EventType)
    assert set(SAMPLE_DATA) == set(EventType)
    assert len(EventType) == 30


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_round_trips_through_canonical_bytes(event_type: EventType) -> None:
    data = encode(document(event_type))
    event = parse_event(data)
    assert type(event) is EVENT_MODELS[event_type]
    assert event.type == event_type.value
    assert event.event_type is event_type
    assert canonical_bytes(event) == data
    assert canonical_bytes(event) == rfc8785.dumps(event_to_json(event))  # the reference encoder
    assert event_leaf_hash(event) == hashlib.sha256(b"\x00" + data).digest()
    assert event.time == datetime(2024, 5, 1, 8, 30, 0, 250000, tzinfo=UTC)


def test_canonical_bytes_are_jcs_sorted_compact_utf8() -> None:
    event = parse_event(encode(document()))
    text = canonical_bytes(event).decode()
    assert text.startswith('{"actor":"')
    assert ", " not in text
    assert ": " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert '"prev":null' in text


def test_python_construction_with_enums_and_aware_datetimes() -> None:
    event = ev.CreateEvent(
        hospital=HOSPITAL_A,
        log_index=0,
        archive_id=ARCHIVE,
        actor=H1,
        time=datetime(2024, 5, 1, 16, 30, tzinfo=timezone(timedelta(hours=8))).astimezone(UTC),
        prev=None,
        data=ev.CreateData(
            record_class=ev.RecordClass.LAB,
            sensitivity=ev.Sensitivity.NORMAL,
            department="LAB-01",
            patient="5" * 64,
            source_system="LIS",
            version=1,
            commitment=H2,
            ciphertext_sha256=H3,
            size=0,
            media_type="text/plain",
        ),
    )
    data = canonical_bytes(event)
    assert b'"time":"2024-05-01T08:30:00Z"' in data
    assert b'"record_class":"LAB"' in data
    assert parse_event(data) == event
    with pytest.raises(ValidationError):
        event.log_index = 3  # type: ignore[misc]


def test_transfer_accept_uses_the_json_key_from() -> None:
    event = ev.TransferAcceptEvent(
        hospital=HOSPITAL_B,
        log_index=0,
        archive_id=ARCHIVE,
        actor=H1,
        time=T0,
        prev=H2,
        data=ev.TransferAcceptData(from_=HOSPITAL_A),
    )
    data = canonical_bytes(event)
    assert b'"from":"0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"' in data
    assert b"from_" not in data
    assert parse_event(data) == event


def test_record_class_chain_codes_follow_the_architecture_order() -> None:
    assert [rc.chain_code for rc in ev.RecordClass] == list(range(7))
    assert ev.RecordClass.OUTPATIENT.chain_code == 0
    assert ev.RecordClass.ADMINISTRATIVE.chain_code == 6


# ------------------------------------------------------------------------------------------
# Refusals, each naming the field


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d.update(v=2), "v", "unsupported schema version 2"),
        (lambda d: d.update(v="1"), "v", "unsupported schema version '1'"),
        (lambda d: d.update(v=True), "v", "unsupported schema version True"),
        (lambda d: d.pop("v"), "v", "unsupported schema version None"),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d["data"].update(note="free text"), "data.note", "unknown field"),
        (lambda d: d.pop("actor"), "actor", "Field required"),
        (lambda d: d["data"].pop("patient"), "data.patient", "Field required"),
        (lambda d: d.update(type="DELETE"), "type", "unknown event type 'DELETE'"),
        (lambda d: d.pop("type"), "type", "missing"),
        (lambda d: d.update(data=SAMPLE_DATA[EventType.ACCESS]), "data.record_class", "required"),
        (lambda d: d.update(hospital=HOSPITAL_A.lower()), "hospital", "EIP-55"),
        (lambda d: d.update(hospital="0x" + "0" * 40), "hospital", "zero address"),
        (lambda d: d.update(hospital="0x1234"), "hospital", "EIP-55"),
        (lambda d: d.update(archive_id=ARCHIVE.lower()), "archive_id", "ULID"),
        (lambda d: d.update(archive_id="8" + ARCHIVE[1:]), "archive_id", "ULID"),
        (lambda d: d.update(archive_id=ARCHIVE[:-1] + "U"), "archive_id", "ULID"),
        (lambda d: d.update(actor="Dr. Zhang"), "actor", "pseudonym"),
        (lambda d: d.update(log_index=-1), "log_index", "greater than or equal to 0"),
        (lambda d: d.update(log_index=2**53), "log_index", "less than or equal to"),
        (lambda d: d.update(log_index=True), "log_index", "valid integer"),
        (lambda d: d.update(log_index="7"), "log_index", "valid integer"),
        (lambda d: d.update(time="2024-05-01T08:30:00+00:00"), "time", "RFC 3339"),
        (lambda d: d.update(time="2024-05-01T08:30:00"), "time", "RFC 3339"),
        (lambda d: d.update(time="2024-05-01T08:30:00.5Z"), "time", "RFC 3339"),
        (lambda d: d.update(time="2024-05-01T08:30:00.000000Z"), "time", "zero microseconds"),
        (lambda d: d.update(time="2024-02-30T08:30:00Z"), "time", "not a valid time"),
        (lambda d: d.update(time=1714552200), "time", "RFC 3339"),
        (lambda d: d.update(prev=H1), "prev", "must be null for CREATE"),
        (lambda d: d.update(prev="AB" * 32), "prev", "64 lowercase hex"),
        (lambda d: d["data"].update(commitment="0x" + H1[2:]), "data.commitment", "hex"),
        (lambda d: d["data"].update(size=-1), "data.size", "greater than or equal to 0"),
        (lambda d: d["data"].update(version=0), "data.version", "greater than or equal to 1"),
        (lambda d: d["data"].update(department="心内科 张三"), "data.department", "short code"),
        (lambda d: d["data"].update(media_type="text/plain; charset=utf-8"), "data.media_type", ""),
        (lambda d: d["data"].update(media_type="Text/Plain"), "data.media_type", "media type"),
        (lambda d: d["data"].update(record_class="SURGERY"), "data.record_class", "Input should"),
        (lambda d: d["data"].update(sensitivity="normal"), "data.sensitivity", "Input should"),
    ],
)
def test_create_refusals_name_the_field(mutate: Any, field: str, message: str) -> None:
    doc = document()
    mutate(doc)
    error = refused(doc)
    assert isinstance(error, EventFieldError)
    assert error.field == field
    assert message in str(error)
    assert str(error).startswith(f"{field}: ")
    assert error.code == "event_invalid"
    assert isinstance(error, AnchoringError)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("event_type", "mutate", "field"),
    [
        (EventType.AMEND, lambda d: d.update(prev=None), "prev"),
        (EventType.ACCESS, lambda d: d["data"].update(reason_hash=None), "data.reason_hash"),
        (EventType.ACCESS, lambda d: d["data"].update(break_glass=False), "data.reason_hash"),
        (EventType.ACCESS, lambda d: d["data"].update(scope="everything"), "data.scope"),
        (EventType.ACCESS, lambda d: d["data"].update(purpose="curiosity"), "data.purpose"),
        (EventType.ACCESS, lambda d: d["data"].update(break_glass=1), "data.break_glass"),
        (
            EventType.ARCHIVE,
            lambda d: d["data"].update(trigger_date="2024-4-30"),
            "data.trigger_date",
        ),
        (
            EventType.ARCHIVE,
            lambda d: d["data"].update(trigger_date="2024-02-30"),
            "data.trigger_date",
        ),
        (EventType.TRANSFER_ACCEPT, lambda d: d["data"].update({"from": "nobody"}), "data.from"),
        (EventType.TRANSFER_ACCEPT, lambda d: d["data"].update({"from_": A_ADDR}), "data.from_"),
        (EventType.SHARE_REVOKE, lambda d: d["data"].update(reason="because"), "data.reason"),
        (EventType.DESTROY, lambda d: d["data"].update(method="shredder"), "data.method"),
        (EventType.TIER_MOVE, lambda d: d["data"].update(to_tier="tape"), "data.to_tier"),
        (EventType.TAG_BIND, lambda d: d["data"].update(tag_kind="nfc"), "data.tag_kind"),
        (EventType.DISPOSITION_START, lambda d: d["data"].update(x=1), "data.x"),
    ],
)
def test_type_specific_refusals_name_the_field(
    event_type: EventType, mutate: Any, field: str
) -> None:
    doc = document(event_type)
    mutate(doc)
    error = refused(doc)
    assert isinstance(error, EventFieldError)
    assert error.field == field


def test_non_canonical_encodings_are_refused() -> None:
    doc = document(EventType.ACCESS)
    canonical = encode(doc)
    spaced = json.dumps(doc, sort_keys=True).encode()
    assert "not RFC 8785 canonical" in str(refused(spaced))
    unsorted = json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")).encode()
    assert "not RFC 8785 canonical" in str(refused(unsorted))
    escaped = canonical.replace(b'"ACCESS"', b'"\\u0041CCESS"')
    assert "not RFC 8785 canonical" in str(refused(escaped))
    assert "not RFC 8785 canonical" in str(refused(canonical + b"\n"))
    # An optional field left out: the canonical form lists it as null.
    del doc["data"]["grant"]
    error = refused(encode(doc))
    assert "data.grant: missing" in str(error)
    parse_event(canonical)  # the original is fine


def test_malformed_documents_are_refused() -> None:
    good = encode(document())
    assert "duplicate key" in str(refused(good[:-1] + b',"v":1}'))
    assert "non-integer number" in str(refused(good.replace(b'"size":4096', b'"size":4096.0')))
    assert "NaN" in str(refused(good.replace(b'"size":4096', b'"size":NaN')))
    assert "not UTF-8" in str(refused(good.replace(b"CARDIOLOGY", b"CARDIO\xff")))
    assert "not JSON" in str(refused(good[:-1]))
    assert str(refused(b'{"v":"x')).endswith("not JSON: Unterminated string starting at offset 5")
    assert "JSON object" in str(refused(b"[1,2]"))
    assert "objects or arrays" in str(refused(b"[" * 30_000 + b"]" * 30_000))
    assert "objects or arrays" in str(refused(b'{"a":' * 17 + b"1" + b"}" * 17))
    assert "more than" in str(refused(b" " * (ev.MAX_EVENT_BYTES + 1)))


def test_python_construction_refuses_naive_and_non_utc_times() -> None:
    base = document(EventType.HOLD_RELEASE)
    base.pop("type")
    for bad_time in (
        datetime(2024, 5, 1),
        datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=8))),
    ):
        with pytest.raises(ValidationError, match="UTC"):
            ev.HoldReleaseEvent(**{**base, "time": bad_time})
    with pytest.raises(ValidationError):
        ev.ArchiveData(
            record_class=ev.RecordClass.LAB,
            retention_policy="LAB_5Y",
            trigger_date=datetime(2024, 1, 1, tzinfo=UTC),
            retention_deadline=T0,
            commitment=H1,
        )
    ok = ev.ArchiveData(
        record_class=ev.RecordClass.LAB,
        retention_policy="LAB_5Y",
        trigger_date=date(2024, 1, 1),
        retention_deadline=T0,
        commitment=H1,
    )
    assert ok.model_dump(mode="json")["trigger_date"] == "2024-01-01"


@settings(max_examples=60, deadline=None)
@given(
    log_index=st.integers(0, 2**53 - 1),
    micros=st.integers(0, 999_999),
    seconds=st.integers(0, 4_000_000_000),
    purpose=st.sampled_from(list(ev.Purpose)),
    scope=st.sampled_from(list(ev.AccessScope)),
)
def test_any_valid_access_event_round_trips(
    log_index: int, micros: int, seconds: int, purpose: ev.Purpose, scope: ev.AccessScope
) -> None:
    when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    event = ev.AccessEvent(
        hospital=HOSPITAL_A,
        log_index=log_index,
        archive_id=ARCHIVE,
        actor=H1,
        time=when,
        prev=H2,
        data=ev.AccessData(purpose=purpose, scope=scope, break_glass=False),
    )
    data = canonical_bytes(event)
    assert parse_event(data) == event
    assert parse_event(data).time == when


# ------------------------------------------------------------------------------------------
# The fast JCS path agrees with the reference rfc8785 encoder


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec="ascii"), max_size=8), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(_json_values)
@settings(max_examples=400, deadline=None)
def test_fast_jcs_equals_rfc8785(value: object) -> None:
    assert ev.jcs(value) == rfc8785.dumps(value)


def test_jcs_falls_back_for_values_outside_the_fast_path() -> None:
    for value in ({"é": 1}, {"x": 1.5}, {"b": "z", "a": ["\u2028", 2**53 - 1]}):
        assert ev.jcs(value) == rfc8785.dumps(value)
    with pytest.raises(rfc8785.IntegerDomainError):
        ev.jcs({"n": 2**60})  # refused, as by the reference


def test_reason_hash_is_present_exactly_for_break_glass_access() -> None:
    """One encoding per meaning: an ordinary read carries no reason (regression: a reason on a
    non-break-glass access used to be accepted)."""
    ordinary = document(EventType.ACCESS)
    ordinary["data"].update(break_glass=False, reason_hash=None)
    assert parse_event(encode(ordinary)).data.reason_hash is None  # type: ignore[union-attr]
    ordinary["data"]["reason_hash"] = H1
    error = refused(ordinary)
    assert isinstance(error, EventFieldError)
    assert (error.field, str(error)) == (
        "data.reason_hash",
        "data.reason_hash: must be null unless break_glass is true",
    )
    with pytest.raises(ValidationError, match="must be null unless break_glass"):
        ev.AccessData(purpose="treatment", scope="content", break_glass=False, reason_hash=H1)
    with pytest.raises(ValidationError, match="break-glass access needs a reason"):
        ev.AccessData(purpose="treatment", scope="content", break_glass=True)


def test_tag_hash_is_sha256_of_kind_zero_byte_payload() -> None:
    """The definition and the test vectors of docs/proof-format.md §4.3."""
    epc = bytes.fromhex("3074257bf7194e4000001a85")  # a 96-bit SGTIN EPC
    assert (
        ev.tag_hash(ev.TagKind.RFID_EPC, epc) == hashlib.sha256(b"rfid_epc\x00" + epc).hexdigest()
    )
    assert ev.tag_hash(ev.TagKind.RFID_EPC, epc) == (
        "0e65b4f50ef3fa13b40c9699054eb62cee6fe6322312cc08fceae80e26740a4e"
    )
    qr = b"ARCHIVECHAIN:01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
    assert ev.tag_hash(ev.TagKind.QR, qr) == (
        "e97a7b7a7dc8311b8a4a88dadbd4ee6d2cf34a8a456a836f1ec9532d41f23213"
    )
    assert ev.tag_hash(ev.TagKind.QR, epc) != ev.tag_hash(ev.TagKind.RFID_EPC, epc)


def test_a_number_with_too_many_digits_is_an_event_format_error() -> None:
    """Regression: a 5,000-digit integer raised a plain ValueError out of ``parse_event``,
    which the verifier did not catch."""
    error = refused(b'{"v":' + b"1" * 5000 + b"}")
    assert "too many digits" in str(error)
