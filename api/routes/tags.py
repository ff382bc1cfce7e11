"""Smart tags: bind a QR label or a GIAI-96 RFID tag to an archive (TAG_BIND), report scans in
bulk (TAG_SCAN), see where a tag was last seen, revoke a tag, and print QR labels (SVG, PNG, a
PDF sheet). See ``node.tags`` for the encodings and ``node.services.tags`` for the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from anchoring.events import TagKind
from api.deps import ArchiveIdPath, PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import ARCHIVE_ID_PATTERN
from node.errors import ConflictError, InputError
from node.principal import Action
from node.services.tags import MAX_SCANS, Scan, TagView
from node.tags import Giai96, Label, label_png, label_sheet_pdf, label_svg, qr_payload

router = APIRouter(tags=["tags"])

TagPath = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{64}$", description="The tag's tag_hash.")]
CodeField = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")]
MAX_SHEET_LABELS = 300
_ONE_ID = ARCHIVE_ID_PATTERN.removeprefix("^").removesuffix("$")
"""The project's archive-id rule (``ArchiveIdPath``), once per comma-separated id."""


class TagBindIn(BaseModel):
    """Bind the archive's QR label (``qr``), or a GIAI-96 RFID tag (``rfid_epc``) whose asset
    number is ``asset_reference`` under the node's ``tag_company_prefix``."""

    model_config = ConfigDict(extra="forbid")
    kind: TagKind
    asset_reference: int | None = Field(None, ge=0, lt=2**62)
    filter: int = Field(0, ge=0, le=7, description="GIAI-96 filter value.")


class TagOut(BaseModel):
    """A bound tag and where it was last seen."""

    model_config = ConfigDict(from_attributes=True)
    tag_hash: str
    kind: str
    archive_id: str
    label: str
    bound_at: datetime
    revoked: bool
    scan_count: int
    last_seen_at: datetime | None
    last_location: str | None
    last_reader: str | None

    @classmethod
    def of(cls, view: TagView) -> TagOut:
        return cls.model_validate(view)


class ScanIn(BaseModel):
    """One scan by a reader or handheld."""

    model_config = ConfigDict(extra="forbid")
    reader: CodeField
    location: CodeField
    time: AwareDatetime = Field(
        description="When the reader saw the tag (RFC 3339 with a timezone)."
    )


class ScansIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scans: list[ScanIn] = Field(min_length=1, max_length=MAX_SCANS)


def _qr_label(runtime: RuntimeDep, archive_id: str) -> Label:
    facts = runtime.public.facts(archive_id)
    payload = qr_payload(runtime.settings.base_url, facts.archive_id, facts.commitment_prefix)
    return Label(facts.archive_id, payload)


@router.post(
    "/archives/{archive_id}/tags",
    status_code=201,
    response_model=TagOut,
    summary="Bind a QR label or an RFID tag to the archive (TAG_BIND)",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def bind_tag(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath, body: TagBindIn
) -> TagOut:
    principal.require(Action.MANAGE_TAGS)
    if body.kind is TagKind.QR:
        label = _qr_label(runtime, archive_id)
        payload, text = label.payload.encode("utf-8"), label.payload
    else:
        prefix = runtime.settings.tag_company_prefix
        if prefix is None:
            raise ConflictError(
                "no GS1 company prefix is configured (tag_company_prefix)", code="no_company_prefix"
            )
        if body.asset_reference is None:
            raise InputError("an RFID tag needs asset_reference", code="invalid_tag")
        epc = Giai96(body.filter, prefix, body.asset_reference)
        payload, text = epc.encode(), epc.tag_uri
    return TagOut.of(runtime.tags.bind(principal, archive_id, body.kind, payload, text))


@router.get(
    "/archives/{archive_id}/tags",
    response_model=list[TagOut],
    summary="The archive's tags and where each was last seen",
    responses=error_responses(401, 403, 404, 422, 503),
)
def list_tags(
    runtime: RuntimeDep, principal: PrincipalDep, archive_id: ArchiveIdPath
) -> list[TagOut]:
    return [TagOut.of(v) for v in runtime.tags.tags_of(principal, archive_id)]


@router.get(
    "/archives/{archive_id}/label",
    summary="The archive's printable QR label (SVG or PNG)",
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}},
        **error_responses(401, 403, 404, 422, 503),
    },
)
def archive_label(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    archive_id: ArchiveIdPath,
    format: Annotated[Literal["svg", "png"], Query()] = "svg",
) -> Response:
    runtime.archives.get(principal, archive_id)  # in scope (and the metadata read is logged)
    label = _qr_label(runtime, archive_id)
    if format == "png":
        return Response(label_png(label), media_type="image/png")
    return Response(label_svg(label), media_type="image/svg+xml")


@router.get(
    "/labels.pdf",
    summary="A PDF sheet of QR labels for the archives named in ids (comma-separated)",
    responses={
        200: {"content": {"application/pdf": {}}},
        **error_responses(400, 401, 403, 404, 422, 503),
    },
)
def label_sheet(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    ids: Annotated[
        str,
        Query(
            max_length=MAX_SHEET_LABELS * 27,
            pattern=rf"^{_ONE_ID}(,{_ONE_ID})*$",
            description="Archive ids (26 characters each), separated by commas.",
        ),
    ],
) -> Response:
    archive_ids = [i.strip() for i in ids.split(",") if i.strip()]
    if not 1 <= len(archive_ids) <= MAX_SHEET_LABELS:
        raise InputError(f"name 1 to {MAX_SHEET_LABELS} archives", code="invalid_ids")
    labels = []
    for archive_id in archive_ids:
        runtime.archives.get(principal, archive_id)
        labels.append(_qr_label(runtime, archive_id))
    return Response(label_sheet_pdf(labels), media_type="application/pdf")


@router.post(
    "/tags/{tag}/scans",
    response_model=TagOut,
    summary="Report scans of a tag in bulk (TAG_SCAN each); unbound or revoked: 409, counted",
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
def record_scans(
    runtime: RuntimeDep, principal: PrincipalDep, tag: TagPath, body: ScansIn
) -> TagOut:
    scans = [Scan(s.reader, s.location, s.time) for s in body.scans]
    return TagOut.of(runtime.tags.record_scans(principal, tag, scans))


@router.get(
    "/tags/{tag}",
    response_model=TagOut,
    summary="A bound tag and where it was last seen",
    responses=error_responses(401, 403, 404, 422, 503),
)
def get_tag(runtime: RuntimeDep, principal: PrincipalDep, tag: TagPath) -> TagOut:
    return TagOut.of(runtime.tags.get(principal, tag))


@router.delete(
    "/tags/{tag}",
    response_model=TagOut,
    summary="Revoke a tag: its scans are refused (and counted) from now on",
    responses=error_responses(401, 403, 404, 422, 503),
)
def revoke_tag(runtime: RuntimeDep, principal: PrincipalDep, tag: TagPath) -> TagOut:
    return TagOut.of(runtime.tags.revoke(principal, tag))
