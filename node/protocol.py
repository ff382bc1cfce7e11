"""The node-to-node protocol (``/peer/v1``): the documents one hospital's node sends another, as
typed models shared by sender and receiver. A receiver parses with the model (unknown fields,
missing fields and wrong types are refused), so both sides agree on one definition.

Version 1. A change that an older receiver would misread gets a new path prefix (``/peer/v2``) and
new models; fields are never repurposed. Key material never appears in clear: it travels wrapped
(ECIES) to the receiver's registered key, base64 in the documents, and descriptive metadata that may
hold PHI travels sealed the same way (``SealedMetadata``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from anchoring.events import Purpose, RecordClass, Sensitivity
from node.textindex import MAX_TERM_LENGTH, MAX_TERMS_PER_ARCHIVE

PROTOCOL_VERSION: Literal[1] = 1

WRAPPED_KEY_HEADER = "X-ArchiveChain-Wrapped-Key"
"""Response header of a disclosure to a grantee: the key material wrapped to it, base64."""


def _b64decode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(lambda raw: base64.b64encode(raw).decode("ascii"), return_type=str),
]
"""Bytes carried as standard base64 text."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal[1] = PROTOCOL_VERSION


class VersionInfo(BaseModel):
    """One stored version of an archive, as a peer may know it (no content, no hashes of it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    media_type: str = Field(min_length=1, max_length=128)
    size: int = Field(ge=0)


class SealedMetadata(BaseModel):
    """Descriptive metadata of a transferred archive (may hold PHI): sealed to the recipient."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    metadata: dict[str, Any]
    patient_pseudonym: str
    filenames: dict[str, str | None]


class TransferPackage(_Message):
    """``GET /peer/v1/archives/{id}/transfer``: what the pending recipient of an offer needs to
    check and take custody: the key and metadata sealed to it, the versions, the custodian's head
    and its proof bundle (``archivechain.proof/v1`` JSON)."""

    archive_id: str
    custodian: str
    recipient: str
    record_class: RecordClass
    sensitivity: Sensitivity
    department: str
    source_system: str
    trigger_date: date
    wrapped_key: Base64Bytes
    sealed_metadata: Base64Bytes
    versions: list[VersionInfo]
    head: str = Field(pattern=r"^[0-9a-f]{64}$")
    bundle: dict[str, Any]


class SealedTerms(BaseModel):
    """The former custodian's keyword-search terms of a transferred archive (fragments of PHI):
    sealed to the recipient. They carry the words of text a source system extracted at ingestion
    (FHIR narrative, HL7 text observations, DICOM descriptions), which the recipient cannot cut
    from the content itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terms: list[Annotated[str, Field(min_length=1, max_length=MAX_TERM_LENGTH)]] = Field(
        max_length=MAX_TERMS_PER_ARCHIVE
    )


class TransferTerms(_Message):
    """``GET /peer/v1/archives/{id}/transfer/terms``: the custodian's search terms of an archive,
    sealed to the pending recipient of its offer. An optional companion of ``TransferPackage``
    (added within version 1): a recipient asking a node that predates it gets 404 ``not_found``
    and indexes the terms it cuts itself."""

    archive_id: str
    custodian: str
    recipient: str
    sealed_terms: Base64Bytes


class ShareDescriptor(_Message):
    """``GET /peer/v1/archives/{id}/share``: an active grant as its grantee may know it, so the
    grantee applies its own access rules (department, sensitivity) before anything is disclosed.
    No key material and no PHI."""

    archive_id: str
    custodian: str
    grant: str = Field(pattern=r"^[0-9a-f]{64}$")
    purpose: Purpose
    expires_at: datetime
    granted_at: datetime | None = None
    """The SHARE_GRANT event's time: the grantee's reads may not be dated before it (None from a
    custodian older than this field)."""
    record_class: RecordClass
    sensitivity: Sensitivity
    department: str
    versions: list[VersionInfo]
    current_version: int = Field(ge=1)

    def version(self, number: int) -> VersionInfo:
        """The descriptor of version ``number`` (``LookupError`` when absent)."""
        for info in self.versions:
            if info.version == number:
                return info
        raise LookupError(f"version {number} is not listed")
