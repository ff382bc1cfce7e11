"""HL7 v2 messages: parsing (with the ``hl7`` package), the fields ingestion reads, and ACKs.

Read from a message (HL7 v2.x field numbers):

| field | use |
|---|---|
| MSH-3, MSH-4 | sending application and facility: the source system (MSH-3 when it is a code) and the ACK's receiver |
| MSH-7 | message time (the encounter time when EVN-2 / PV1-44/45 are absent) |
| MSH-9 | message type and trigger event (``ORU^R01``, ``MDM^T02``, ``ADT^A01``, ``ADT^A03``, ``ADT^A04``) |
| MSH-10 | message control id: the idempotency key, echoed in MSA-2 |
| MSH-12 | version, echoed in the ACK |
| PID-3 | patient identifier list: the first identifier's id (CX.1) is the patient id |
| PV1-2 | patient class (I, O, E, …) |
| PV1-10 | hospital service (department) |
| PV1-19 | visit number: the encounter id |
| PV1-44, PV1-45 | admit / discharge date-time |
| EVN-2 | recorded date-time of the event |
| OBR-4 | universal service id (title, codes) |
| OBR-24 | diagnostic service section (v2 table 0074: LAB, RAD, …) |
| OBX-2, OBX-3, OBX-5 | value type, observation id (codes for sensitivity), value (ED: the document) |
| TXA-2 | document type (a LOINC code when coded LN) |

Nothing here logs field values.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hl7

from node.classification import LOINC, Coded
from node.errors import InputError

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HL7_TIME = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?")
_CODING_SYSTEMS = {"LN": LOINC, "I10": "http://hl7.org/fhir/sid/icd-10", "I10C": "icd-10-cn"}


class Hl7FormatError(InputError):
    """The bytes are not an HL7 v2 message (no MSH, no control id, not decodable)."""

    code = "hl7_malformed"


@dataclass(frozen=True)
class Header:
    """What an ACK needs from the message it answers (all may be empty for an unparsable one)."""

    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    version: str = "2.5.1"
    trigger: str = ""
    field_separator: str = "|"
    encoding_characters: str = "^~\\&"


def decode(raw: bytes) -> str:
    """The message text: UTF-8 (the usual choice in Chinese hospitals' HL7 gateways), falling
    back to GB18030 (the national standard encoding) — both are tried strictly."""
    for encoding in ("utf-8", "gb18030"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    raise Hl7FormatError("the message is neither UTF-8 nor GB18030 text")


def parse(raw: bytes) -> Any:
    """The parsed message; ``Hl7FormatError`` unless it starts with an MSH segment."""
    text = decode(raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7FormatError("an HL7 v2 message starts with an MSH segment")
    try:
        return hl7.parse(text)
    except Exception:  # the parser's own errors are many; the message is refused either way
        raise Hl7FormatError("the message cannot be parsed as HL7 v2") from None


def header_of(raw: bytes) -> Header:
    """The MSH fields an ACK echoes, read without the parser (works on broken messages too)."""
    try:
        text = decode(raw)
    except Hl7FormatError:
        return Header()
    if not text.startswith("MSH") or len(text) < 8:
        return Header()
    separator = text[3]
    first = text.split("\r", 1)[0]
    fields = first.split(separator)

    # fields[0] = "MSH", fields[1] = encoding characters (MSH-2); MSH-n is fields[n - 1].
    def get(n: int) -> str:
        return fields[n - 1] if len(fields) >= n else ""

    component = get(2)[:1] or "^"
    return Header(
        sending_application=get(3).split(component, 1)[0],
        sending_facility=get(4).split(component, 1)[0],
        control_id=get(10),
        version=get(12).split(component, 1)[0] or "2.5.1",
        trigger=get(9).split(component)[1] if len(get(9).split(component)) > 1 else "",
        field_separator=separator,
        encoding_characters=get(2) or "^~\\&",
    )


def field(message: Any, segment: str, number: int, component: int = 1, repeat: int = 1) -> str:
    """One component of one field of the first ``segment`` (empty when absent)."""
    try:
        value = message.extract_field(segment, 1, number, repeat, component)
    except (KeyError, IndexError, ValueError, AttributeError):
        return ""
    return str(value or "").strip()


def segments(message: Any, name: str) -> list[Any]:
    """Every ``name`` segment (none when absent)."""
    try:
        return list(message.segments(name))
    except KeyError:
        return []


def seg_field(segment: Any, number: int, component: int = 1, repeat: int = 1) -> str:
    """One component of a field of one segment (empty when absent)."""
    try:
        value = segment.extract_field(1, number, repeat, component)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        return ""
    return str(value or "").strip()


def coded(system: str, code: str) -> Coded | None:
    """A coded element (CE/CWE) as a ``Coded`` with the system's URI when known."""
    if not code:
        return None
    return Coded(_CODING_SYSTEMS.get(system.upper(), system), code)


def timestamp(value: str) -> datetime | None:
    """An HL7 TS/DTM (``YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]``) as an aware datetime (UTC when
    it carries no offset); None when empty or invalid."""
    match = _HL7_TIME.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    tz: timezone = UTC
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=tz,
        ).astimezone(UTC)
    except ValueError:
        return None


def embedded_document(segment: Any) -> tuple[bytes, str] | None:
    """The document of an OBX whose value type is ED (encapsulated data): OBX-5 is
    ``source^type^subtype^encoding^data``; Base64 data is decoded, the media type is type/subtype.
    None for other value types; ``InputError`` for ED data that does not decode."""
    if seg_field(segment, 2).upper() != "ED":
        return None
    media = seg_field(segment, 5, 2).lower()
    subtype = seg_field(segment, 5, 3).lower()
    encoding = seg_field(segment, 5, 4).lower()
    data = seg_field(segment, 5, 5)
    media_type = f"{media}/{subtype}" if media and subtype else "application/octet-stream"
    if media_type == "application/pdf" or subtype == "pdf":
        media_type = "application/pdf"
    if encoding not in ("base64", "a"):  # table 0299: A = no encoding, Base64
        raise InputError("OBX-5 encapsulated data must be Base64", code="hl7_invalid_document")
    if encoding == "a":
        return data.encode("utf-8"), media_type
    try:
        return base64.b64decode(data, validate=True), media_type
    except (binascii.Error, ValueError):
        raise InputError(
            "OBX-5 encapsulated data is not valid Base64", code="hl7_invalid_document"
        ) from None


def source_of(header: Header, default: str) -> str:
    """The source system: MSH-3 when it is a code, else ``default``."""
    name = header.sending_application.strip()
    return name if _CODE.fullmatch(name) else default


# --------------------------------------------------------------------------------------------
# ACK


def _escape(text: str, header: Header) -> str:
    """Text for a field: separators and escape characters escaped (HL7 §2.7)."""
    escape = header.encoding_characters[2:3] or "\\"
    replacements = [
        (escape, f"{escape}E{escape}"),
        (header.field_separator, f"{escape}F{escape}"),
        (header.encoding_characters[:1] or "^", f"{escape}S{escape}"),
        (header.encoding_characters[1:2] or "~", f"{escape}R{escape}"),
        (header.encoding_characters[3:4] or "&", f"{escape}T{escape}"),
    ]
    for old, new in replacements:
        text = text.replace(old, new)
    return re.sub(r"[\x00-\x1f\x7f]", " ", text)


def ack(
    header: Header,
    code: str,
    text: str,
    *,
    receiving_application: str = "ARCHIVECHAIN",
    receiving_facility: str = "",
    error_code: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """An ACK (MSH, MSA, and ERR for AE/AR) answering ``header``, as UTF-8 bytes without framing.
    ``code``: AA accepted, AE error (resend after fixing), AR rejected (will never be accepted)."""
    sep = header.field_separator if header.field_separator not in ("", "\r") else "|"
    enc = header.encoding_characters or "^~\\&"
    moment = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    safe = Header(field_separator=sep, encoding_characters=enc)
    control = f"A{moment}{secrets.randbelow(10**5):05d}"  # 20 characters (MSH-10 in v2.5)
    message_type = f"ACK{enc[0]}{header.trigger}{enc[0]}ACK" if header.trigger else "ACK"
    msh = sep.join(
        [
            "MSH",
            enc,
            _escape(receiving_application, safe),
            _escape(receiving_facility, safe),
            _escape(header.sending_application, safe),
            _escape(header.sending_facility, safe),
            moment,
            "",
            message_type,
            control,
            "P",
            _escape(header.version, safe) or "2.5.1",
        ]
    )
    msa = sep.join(["MSA", code, _escape(header.control_id, safe), _escape(text[:80], safe)])
    segments_out = [msh, msa]
    if code != "AA":
        err_code = "207" if code == "AE" else "200"  # table 0357: application error / unsupported
        severity = "E"
        segments_out.append(
            sep.join(
                [
                    "ERR",
                    "",
                    "",
                    f"{err_code}{enc[0]}{_escape(error_code or 'error', safe)}{enc[0]}HL70357",
                    severity,
                    "",
                    "",
                    "",
                    _escape(text[:200], safe),
                ]
            )
        )
    return ("\r".join(segments_out) + "\r").encode("utf-8")


def frame(message: bytes) -> bytes:
    """MLLP framing: 0x0B, the message, 0x1C 0x0D."""
    return START_BLOCK + message + END_BLOCK
