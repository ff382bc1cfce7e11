"""FHIR R4 resources → incoming documents and encounter reports.

Validation uses the ``fhir.resources`` models of the R4B release (FHIR 4.3.0; ``fhir.resources`` 8
ships R5 by default, R4B and STU3 as sub-packages, and no longer R4 4.0.1). For the five resources
accepted here — DocumentReference, DiagnosticReport, Composition, Encounter, Bundle (and Binary
inside a Bundle) — R4B has the same elements and cardinalities as R4, so R4 clients are served.

What becomes an archive:

- ``DocumentReference``: the bytes of ``content[0].attachment.data`` (or of the ``Binary`` its
  ``attachment.url`` names inside the same Bundle), with the attachment's ``contentType``;
- ``DiagnosticReport``: ``presentedForm[0]`` (e.g. the PDF); without one, the resource itself
  (``application/fhir+json``);
- ``Composition`` (a discharge summary, …): the resource itself, narrative included.

The patient is ``subject`` (``Patient/<id>`` or an identifier ``system|value``); the encounter is
``context.encounter`` / ``encounter``. The idempotency key of a resource is its first identifier
(``system|value``; ``masterIdentifier`` first for a DocumentReference), else the Bundle entry's
``fullUrl``, else its ``id``. Classification hints: LOINC ``type`` codes, DiagnosticReport
``category`` (v2-0074), ``practiceSetting``, ``meta.security`` and ``securityLabel``, the codes of
``DiagnosticReport.code`` / ``conclusionCode`` and ``context.event``, and the class of an Encounter
sent in the same Bundle.

An ``Encounter`` is an encounter report: ``finished`` → a discharge (inpatient classes) or a visit;
``in-progress`` / ``arrived`` of an inpatient class → an admission; other statuses are accepted
and change nothing.

Error messages name fields and rules, never the values sent (they may be PHI).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from pydantic import ValidationError

from node.classification import (
    ENCOUNTER_CLASSES,
    LOINC,
    Coded,
    SourceHints,
)
from node.encounters import EncounterKind, EncounterReport
from node.errors import InputError
from node.services.ingestion import IncomingDocument

FHIR_VERSION = "4.0.1"
"""The FHIR version this endpoint speaks (validated with the R4B models, see the module doc)."""
FHIR_JSON = "application/fhir+json"
DEFAULT_SOURCE = "FHIR"
DOCUMENT_TYPES = ("DocumentReference", "DiagnosticReport", "Composition")
ACCEPTED_TYPES = (*DOCUMENT_TYPES, "Encounter", "Bundle")
_BUNDLE_ENTRY_TYPES = (*DOCUMENT_TYPES, "Encounter", "Binary")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_BUNDLE_ENTRIES = 1000
MAX_VALIDATION_ERRORS = 10
_INPATIENT = {code for code, cls in ENCOUNTER_CLASSES.items() if cls.value == "INPATIENT"}


class FhirInvalidError(InputError):
    """The body is not a valid FHIR resource of an accepted type (400, OperationOutcome)."""

    code = "fhir_invalid"


class FhirUnprocessableError(InputError):
    """A valid resource this node cannot act on (422): no patient, no attachment data, a
    transaction entry that is not a POST, an unsupported status."""

    code = "fhir_unprocessable"


class FhirTypeNotSupportedError(InputError):
    """A resource type this endpoint does not accept (404 unknown type on its URL)."""

    code = "fhir_type_not_supported"


@dataclass(frozen=True)
class EncounterMessage:
    """An Encounter resource as an encounter report, with its idempotency key."""

    report: EncounterReport | None  # None: a status that changes nothing
    message_id: str | None
    encounter_class: str | None


@dataclass(frozen=True)
class Entry:
    """One resource of a request: its type, the document or encounter it carries."""

    resource_type: str
    full_url: str | None
    document: IncomingDocument | None = None
    encounter: EncounterMessage | None = None


@dataclass
class _Context:
    binaries: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    encounter_classes: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# parsing


def parse_body(body: bytes) -> dict[str, Any]:
    """A JSON object (the body was already checked for encoding and depth by the API)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise FhirInvalidError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise FhirInvalidError("a FHIR resource is a JSON object")
    return data


def validate(data: dict[str, Any], expected: str | None = None) -> FHIRResourceModel:
    """The resource as an R4B model; ``FhirInvalidError`` naming each invalid field."""
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirInvalidError("resourceType is missing")
    if expected is not None and resource_type != expected:
        raise FhirInvalidError(f"resourceType must be {expected} on this URL")
    if resource_type not in (*ACCEPTED_TYPES, "Binary"):
        raise FhirTypeNotSupportedError(f"resource type {resource_type} is not accepted here")
    model = get_fhir_model_class(resource_type)
    try:
        return cast(FHIRResourceModel, model.model_validate(data))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or resource_type}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        shown = "; ".join(problems[:MAX_VALIDATION_ERRORS])
        raise FhirInvalidError(f"invalid {resource_type}: {shown}") from None


def entries_of(resource: FHIRResourceModel, *, source_system: str | None = None) -> list[Entry]:
    """The documents and encounters one accepted resource (or Bundle) carries."""
    resource_type = resource.get_resource_type()
    if resource_type != "Bundle":
        if resource_type == "Binary":
            raise FhirUnprocessableError("a Binary is accepted only inside a Bundle")
        return [_entry(resource, None, _Context(), source_system)]
    bundle = cast(Any, resource)
    if bundle.type not in ("transaction", "batch"):
        raise FhirUnprocessableError("only transaction and batch Bundles are accepted")
    raw_entries = list(bundle.entry or [])
    if not 1 <= len(raw_entries) <= MAX_BUNDLE_ENTRIES:
        raise FhirUnprocessableError(f"a Bundle holds 1 to {MAX_BUNDLE_ENTRIES} entries")
    context = _Context()
    for position, entry in enumerate(raw_entries):
        inner = entry.resource
        if inner is None:
            raise FhirUnprocessableError(f"entry {position} has no resource")
        inner_type = inner.get_resource_type()
        if inner_type not in _BUNDLE_ENTRY_TYPES:
            raise FhirUnprocessableError(
                f"entry {position}: resource type {inner_type} is not accepted here"
            )
        request = entry.request
        if request is None or request.method != "POST":
            raise FhirUnprocessableError(f"entry {position}: only POST (create) is accepted")
        if inner_type == "Binary":
            if entry.fullUrl is None or inner.data is None:
                raise FhirUnprocessableError(f"entry {position}: a Binary needs fullUrl and data")
            context.binaries[entry.fullUrl] = (bytes(inner.data), inner.contentType)
        elif inner_type == "Encounter":
            for key in _encounter_keys(inner, entry.fullUrl):
                if inner.class_fhir is not None and inner.class_fhir.code:
                    context.encounter_classes[key] = inner.class_fhir.code
    return [
        _entry(entry.resource, entry.fullUrl, context, source_system)
        for entry in raw_entries
        if entry.resource.get_resource_type() != "Binary"
    ]


# --------------------------------------------------------------------------------------------
# one resource


def _entry(
    resource: Any, full_url: str | None, context: _Context, source_system: str | None
) -> Entry:
    resource_type = resource.get_resource_type()
    source = _source(resource, source_system)
    if resource_type == "Encounter":
        return Entry(resource_type, full_url, encounter=_encounter(resource, full_url, source))
    if resource_type == "DocumentReference":
        document = _document_reference(resource, full_url, context, source)
    elif resource_type == "DiagnosticReport":
        document = _diagnostic_report(resource, full_url, context, source)
    else:
        document = _composition(resource, full_url, context, source)
    return Entry(resource_type, full_url, document=document)


def _document_reference(
    resource: Any, full_url: str | None, context: _Context, source: str
) -> IncomingDocument:
    if resource.status != "current":
        raise FhirUnprocessableError("only DocumentReference.status 'current' is archived")
    attachment = resource.content[0].attachment if resource.content else None
    if attachment is None:
        raise FhirUnprocessableError("DocumentReference.content[0].attachment is required")
    content, media_type = _attachment_bytes(attachment, context, "DocumentReference")
    ctx = resource.context
    encounter_ref = _first_reference(ctx.encounter) if ctx is not None and ctx.encounter else None
    codes = list(_codings(resource.type))
    for event in (ctx.event or []) if ctx is not None else []:
        codes.extend(_codings(event))
    department = _first_code(ctx.practiceSetting) if ctx is not None else None
    identifiers = [resource.masterIdentifier, *(resource.identifier or [])]
    hints = SourceHints(
        document_type=_loinc(resource.type),
        department=department,
        encounter_class=_encounter_class(encounter_ref, context),
        security_labels=_security(resource) + _codes_of_concepts(resource.securityLabel),
        codes=tuple(codes),
    )
    return IncomingDocument(
        content=content,
        media_type=media_type,
        patient_id=_patient(resource.subject, "DocumentReference"),
        source_system=source,
        title=resource.description or _text(resource.type) or "DocumentReference",
        message_id=_message_id(identifiers, full_url, resource.id),
        encounter_id=_reference_id(encounter_ref),
        department=department,
        hints=hints,
        filename=attachment.title,
        trigger_date=_day(resource.date),
        kind="fhir-documentreference",
        metadata=_metadata(hints, "DocumentReference"),
        text=_join(resource.description, _text(resource.type), _narrative(resource)),
    )


def _diagnostic_report(
    resource: Any, full_url: str | None, context: _Context, source: str
) -> IncomingDocument:
    if resource.presentedForm:
        content, media_type = _attachment_bytes(
            resource.presentedForm[0], context, "DiagnosticReport"
        )
    else:
        content, media_type = _resource_bytes(resource), FHIR_JSON
    encounter_ref = _reference(resource.encounter)
    codes = list(_codings(resource.code))
    for concept in resource.conclusionCode or []:
        codes.extend(_codings(concept))
    category = next(
        (code for concept in resource.category or [] for code in _concept_codes(concept)), None
    )
    hints = SourceHints(
        report_category=category,
        document_type=_loinc(resource.code),
        encounter_class=_encounter_class(encounter_ref, context),
        security_labels=_security(resource),
        codes=tuple(codes),
    )
    return IncomingDocument(
        content=content,
        media_type=media_type,
        patient_id=_patient(resource.subject, "DiagnosticReport"),
        source_system=source,
        title=_text(resource.code) or "DiagnosticReport",
        message_id=_message_id(list(resource.identifier or []), full_url, resource.id),
        encounter_id=_reference_id(encounter_ref),
        hints=hints,
        trigger_date=_day(resource.effectiveDateTime or resource.issued),
        kind="fhir-diagnosticreport",
        metadata=_metadata(hints, "DiagnosticReport"),
        text=_join(resource.conclusion, _text(resource.code), _narrative(resource)),
    )


def _composition(
    resource: Any, full_url: str | None, context: _Context, source: str
) -> IncomingDocument:
    encounter_ref = _reference(resource.encounter)
    labels = _security(resource)
    if resource.confidentiality:
        labels = (*labels, resource.confidentiality)
    hints = SourceHints(
        document_type=_loinc(resource.type),
        encounter_class=_encounter_class(encounter_ref, context),
        security_labels=labels,
        codes=tuple(_codings(resource.type)),
    )
    identifiers = [resource.identifier] if resource.identifier is not None else []
    return IncomingDocument(
        content=_resource_bytes(resource),
        media_type=FHIR_JSON,
        patient_id=_patient(resource.subject, "Composition"),
        source_system=source,
        title=resource.title or _text(resource.type) or "Composition",
        message_id=_message_id(identifiers, full_url, resource.id),
        encounter_id=_reference_id(encounter_ref),
        hints=hints,
        trigger_date=_day(resource.date),
        kind="fhir-composition",
        metadata=_metadata(hints, "Composition"),
        text=_join(resource.title, _narrative(resource), *_section_texts(resource.section)),
    )


def _encounter(resource: Any, full_url: str | None, source: str) -> EncounterMessage:
    encounter_class = resource.class_fhir.code if resource.class_fhir is not None else None
    inpatient = (encounter_class or "").upper() in _INPATIENT
    status = resource.status
    period = resource.period
    kind: EncounterKind | None = None
    at: datetime | None = None
    if status == "finished":
        kind = EncounterKind.DISCHARGE if inpatient else EncounterKind.VISIT
        at = (period.end or period.start) if period is not None else None
    elif status in ("in-progress", "arrived") and inpatient:
        kind = EncounterKind.ADMISSION
        at = period.start if period is not None else None
    identifiers = list(resource.identifier or [])
    encounter_id = (
        _identifier_key(identifiers[0]) if identifiers else resource.id
    ) or _reference_id(full_url)
    report = None
    if kind is not None:
        report = EncounterReport(
            patient_id=_patient(resource.subject, "Encounter"),
            kind=kind,
            at=_aware(at) if at is not None else datetime.now(UTC),
            encounter_id=encounter_id,
            department=None,
            source_system=source,
            admitted_at=_aware(period.start)
            if inpatient and period is not None and period.start is not None
            else None,
        )
    message_id = _message_id(identifiers, full_url, resource.id)
    if message_id is not None:
        message_id = f"{message_id}#{status}"  # each status change is its own message
    return EncounterMessage(report=report, message_id=message_id, encounter_class=encounter_class)


# --------------------------------------------------------------------------------------------
# element helpers


def _attachment_bytes(attachment: Any, context: _Context, where: str) -> tuple[bytes, str]:
    if attachment.data is not None:
        content = bytes(attachment.data)
        media_type = attachment.contentType or "application/octet-stream"
    elif attachment.url and attachment.url in context.binaries:
        content, binary_type = context.binaries[attachment.url]
        media_type = attachment.contentType or binary_type
    else:
        raise FhirUnprocessableError(
            f"{where}: the attachment must carry data (or name a Binary of the same Bundle)"
        )
    if not content:
        raise FhirUnprocessableError(f"{where}: the attachment is empty")
    return content, media_type.split(";", 1)[0].strip().lower()


def _resource_bytes(resource: Any) -> bytes:
    return cast(str, resource.model_dump_json(exclude_none=True)).encode("utf-8")


def _reference(ref: Any) -> str | None:
    if ref is None:
        return None
    value = ref.reference
    return value if isinstance(value, str) and value else None


def _first_reference(refs: Any) -> str | None:
    for ref in refs or []:
        value = _reference(ref)
        if value:
            return value
    return None


def _reference_id(reference: str | None) -> str | None:
    """``Encounter/123`` → ``123``; ``urn:uuid:…`` stays as it is."""
    if not reference:
        return None
    if reference.startswith("urn:"):
        return reference
    return reference.rstrip("/").rsplit("/", 1)[-1] or None


def _patient(subject: Any, where: str) -> str:
    if subject is not None:
        reference = _reference(subject)
        if reference and "Patient/" in reference:
            patient = _reference_id(reference)
            if patient:
                return patient
        if subject.identifier is not None and subject.identifier.value:
            return _identifier_key(subject.identifier) or subject.identifier.value
    raise FhirUnprocessableError(
        f"{where}.subject must reference a Patient (Patient/<id> or an identifier)"
    )


def _identifier_key(identifier: Any) -> str | None:
    if identifier is None or not identifier.value:
        return None
    return f"{identifier.system}|{identifier.value}" if identifier.system else identifier.value


def _message_id(
    identifiers: list[Any], full_url: str | None, resource_id: str | None
) -> str | None:
    for identifier in identifiers:
        key = _identifier_key(identifier)
        if key:
            return key[:200]
    if full_url:
        return full_url[:200]
    return resource_id


def _encounter_keys(encounter: Any, full_url: str | None) -> Iterator[str]:
    if full_url:
        yield full_url
    if encounter.id:
        yield f"Encounter/{encounter.id}"


def _encounter_class(reference: str | None, context: _Context) -> str | None:
    return context.encounter_classes.get(reference) if reference else None


def _codings(concept: Any) -> Iterator[Coded]:
    for coding in (concept.coding if concept is not None else None) or []:
        if coding.code:
            yield Coded(coding.system or "", coding.code)


def _concept_codes(concept: Any) -> Iterator[str]:
    for coding in (concept.coding if concept is not None else None) or []:
        if coding.code:
            yield coding.code


def _codes_of_concepts(concepts: Any) -> tuple[str, ...]:
    return tuple(code for concept in concepts or [] for code in _concept_codes(concept))


def _first_code(concept: Any) -> str | None:
    return next(_concept_codes(concept), None)


def _loinc(concept: Any) -> str | None:
    return next((c.code for c in _codings(concept) if c.system == LOINC), None)


def _text(concept: Any) -> str | None:
    if concept is None:
        return None
    if concept.text:
        return cast(str, concept.text)
    for coding in concept.coding or []:
        if coding.display:
            return cast(str, coding.display)
    return None


def _security(resource: Any) -> tuple[str, ...]:
    meta = resource.meta
    return tuple(c.code for c in (meta.security or []) if c.code) if meta is not None else ()


def _source(resource: Any, given: str | None) -> str:
    if given:
        return given
    meta = resource.meta
    candidate = meta.source if meta is not None else None
    if isinstance(candidate, str):
        name = candidate.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        if _CODE.fullmatch(name):
            return name
    return DEFAULT_SOURCE


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return _aware(value).date()
    if isinstance(value, date):
        return value
    return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _metadata(hints: SourceHints, resource_type: str) -> dict[str, Any]:
    """Codes worth keeping with the archive (searchable; never display text or identifiers)."""
    metadata: dict[str, Any] = {"fhir_type": resource_type}
    if hints.document_type:
        metadata["document_type"] = hints.document_type
    if hints.report_category:
        metadata["report_category"] = hints.report_category
    return metadata


_TAG = re.compile(r"<[^>]*>")


def _div_text(div: str | None) -> str:
    """The text of an XHTML narrative ``div`` (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub(" ", div)) if div else ""


def _narrative(resource: Any) -> str:
    narrative = resource.text
    return _div_text(narrative.div) if narrative is not None else ""


def _section_texts(sections: Any, depth: int = 0) -> Iterator[str]:
    for section in sections or []:
        if section.title:
            yield section.title
        if section.text is not None:
            yield _div_text(section.text.div)
        if depth < 8:
            yield from _section_texts(section.section, depth + 1)


def _join(*parts: str | None) -> str:
    return "\n".join(part for part in parts if part)


def b64(data: bytes) -> str:
    """Base64 text of ``data`` (as FHIR attachments carry it)."""
    return base64.b64encode(data).decode("ascii")
