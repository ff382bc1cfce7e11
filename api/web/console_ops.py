"""``/console`` operations pages: alerts (acknowledge), retention due and disposition review
(propose, approve, reject), transfers (offer, cancel, the list of outgoing and incoming ones)
and an archive's tags (bind a QR or RFID tag, where it was last seen, print its QR label).

Same rules as ``api.web.console``: the session cookie, a CSRF token and a same-origin check on
every POST, a required confirmation checkbox on every state-changing form, the node's services
called exactly as the API calls them (one service call, one transaction; refusals shown, nothing
half-done), no PHI in URLs (only archive ids, alert ids and disposition list ids appear there).
"""

from __future__ import annotations

import hmac
from datetime import date, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from anchoring.events import TagKind
from api.web import i18n
from api.web.console import (
    Session,
    html_response,
    refused_response,
    render_page,
    runtime_of,
    same_origin,
    signed_in,
    to_login,
)
from node.errors import InputError, NodeError
from node.principal import Action, Principal
from node.runtime import NodeRuntime
from node.services.alerts import AlertState
from node.tags import Giai96, Label, label_svg, qr_payload

router = APIRouter(include_in_schema=False)

MAX_PROPOSAL_FIELDS = 220
"""Form fields on the propose form: the checked archives plus csrf, reason and confirm."""


async def _fields(
    request: Request, session: Session, max_fields: int = 16
) -> dict[str, list[str]] | None:
    """The posted form (every value of each name) when same-origin with the session's token."""
    if not same_origin(request):
        return None
    try:
        form = await request.form(max_files=0, max_fields=max_fields, max_part_size=64 * 1024)
    except HTTPException:
        return None
    values: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    token = (values.get("csrf") or [""])[0]
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        return None
    return values


def _can(principal: Principal, action: Action) -> bool:
    """Whether the role allows ``action`` (only to hide forms; the service still decides)."""
    try:
        principal.require(action)
    except NodeError:
        return False
    return True


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def _outcome(session: Session, what: str, call: object) -> None:
    """Run ``call`` (a no-argument callable) and leave its outcome in the flash."""
    c = i18n.console_words(session.lang)
    try:
        assert callable(call)
        call()
        session.flash = f"{c['done']} {what}"
    except (NodeError, ValueError) as exc:
        code = getattr(exc, "code", "invalid_input")
        session.flash = f"{c['refused']}: {code}: {exc}"


def _confirmed(session: Session, form: dict[str, list[str]]) -> bool:
    if _one(form, "confirm") == "yes":
        return True
    session.flash = i18n.console_words(session.lang)["confirm_needed"]
    return False


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


# -- alerts --------------------------------------------------------------------------------------


@router.get("/console/alerts")
def alerts_page(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    try:
        open_alerts, open_total = runtime.alert_store.list(principal, limit=100)
        seen, _ = runtime.alert_store.list(principal, state=AlertState.ACKNOWLEDGED, limit=20)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 403)
    return html_response(
        render_page(
            "console_alerts.html",
            session,
            principal,
            open_alerts=open_alerts,
            open_total=open_total,
            seen=seen,
            can_ack=_can(principal, Action.ACK_ALERTS),
        )
    )


@router.post("/console/alerts/{alert_id}/ack")
async def acknowledge(request: Request, alert_id: int) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session)
    if form is None:
        return refused_response()
    if _confirmed(session, form):
        store = runtime_of(request).alert_store
        _outcome(session, f"ack #{alert_id}", lambda: store.acknowledge(principal, alert_id))
    return _back("/console/alerts")


# -- retention and disposition review -----------------------------------------------------------


@router.get("/console/retention")
def retention_page(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    try:
        due = runtime.retention.due(principal, timedelta(days=365), limit=200)
        proposals = runtime.retention.open_proposals(principal)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 403)
    return html_response(
        render_page(
            "console_retention.html",
            session,
            principal,
            due=due,
            proposals=proposals,
            can_run=_can(principal, Action.RUN_DISPOSITION),
            can_propose=_can(principal, Action.PROPOSE_DISPOSITION),
            can_decide=_can(principal, Action.DECIDE_DISPOSITION),
            today=date.today().isoformat(),
        )
    )


@router.post("/console/retention/review")
async def start_review(request: Request) -> Response:
    """Move every due archive (deadline passed, not on hold) into DISPOSITION_REVIEW now."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session)
    if form is None:
        return refused_response()
    if _confirmed(session, form):
        service = runtime_of(request).retention
        _outcome(session, "review", lambda: service.start_dispositions(principal))
    return _back("/console/retention")


@router.post("/console/retention/propose")
async def propose(request: Request) -> Response:
    """An archivist's disposition list of the ticked archives (the service refuses any archive
    not in review, on hold or already on an open list: then no list is made)."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session, MAX_PROPOSAL_FIELDS)
    if form is None:
        return refused_response()
    if _confirmed(session, form):
        service = runtime_of(request).retention
        ids = form.get("archive_id", [])
        reason = _one(form, "reason")
        _outcome(session, "propose", lambda: service.propose(principal, ids, reason))
    return _back("/console/retention")


@router.post("/console/retention/decide")
async def decide(request: Request) -> Response:
    """A records manager approves or rejects one item (four eyes: the service refuses the
    proposer); a rejection needs the date until which the archive is kept."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session)
    if form is None:
        return refused_response()
    if _confirmed(session, form):
        runtime = runtime_of(request)
        approve = _one(form, "decision") == "approve"
        text = _one(form, "new_deadline")

        def call() -> None:
            try:
                new_deadline = date.fromisoformat(text) if text else None
            except ValueError as exc:
                raise InputError("new_deadline must be YYYY-MM-DD", code="invalid_date") from exc
            runtime.retention.decide(
                principal,
                _one(form, "proposal_id"),
                _one(form, "archive_id"),
                approve=approve,
                reason=_one(form, "reason"),
                new_deadline=None if approve else new_deadline,
            )

        _outcome(session, "approve" if approve else "reject", call)
    return _back("/console/retention")


# -- transfers ----------------------------------------------------------------------------------


@router.get("/console/transfers")
def transfers_page(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    try:
        rows = runtime_of(request).transfers.transfers(principal)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 403)
    return html_response(
        render_page(
            "console_transfers.html",
            session,
            principal,
            outgoing=[r for r in rows if r.direction.value == "out"],
            incoming=[r for r in rows if r.direction.value != "out"],
        )
    )


@router.post("/console/transfers")
async def transfer_action(request: Request) -> Response:
    """Offer custody of an archive to another hospital, or withdraw a pending offer."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session)
    if form is None:
        return refused_response()
    if _confirmed(session, form):
        service = runtime_of(request).transfers
        archive_id, kind = _one(form, "archive_id"), _one(form, "action")
        if kind == "offer":
            to = _one(form, "to")
            _outcome(session, "offer", lambda: service.offer(principal, archive_id, to))
        elif kind == "cancel":
            _outcome(session, "cancel", lambda: service.cancel(principal, archive_id))
        else:
            session.flash = i18n.console_words(session.lang)["unknown_action"]
    return _back("/console/transfers")


# -- tags and labels ----------------------------------------------------------------------------


def _label(runtime: NodeRuntime, principal: Principal, archive_id: str) -> Label:
    runtime.archives.get(principal, archive_id)  # in scope (the metadata read is logged)
    facts = runtime.public.facts(archive_id)
    payload = qr_payload(runtime.settings.base_url, facts.archive_id, facts.commitment_prefix)
    return Label(facts.archive_id, payload)


@router.get("/console/archives/{archive_id}/tags")
def tags_page(request: Request, archive_id: str) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    try:
        archive = runtime.archives.get(principal, archive_id)
        tags = runtime.tags.tags_of(principal, archive_id)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 404)
    return html_response(
        render_page(
            "console_tags.html",
            session,
            principal,
            archive=archive,
            tags=tags,
            rfid=runtime.settings.tag_company_prefix is not None,
        )
    )


@router.post("/console/archives/{archive_id}/tags")
async def bind_tag(request: Request, archive_id: str) -> Response:
    """Bind the archive's QR label or a GIAI-96 RFID tag (as ``POST /api/v1/archives/{id}/tags``)."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _fields(request, session)
    if form is None:
        return refused_response()
    back = f"/console/archives/{archive_id}/tags"
    if not _confirmed(session, form):
        return _back(back)
    runtime = runtime_of(request)
    kind = _one(form, "kind")

    def call() -> None:
        principal.require(Action.MANAGE_TAGS)
        if kind == "qr":
            label = _label(runtime, principal, archive_id)
            runtime.tags.bind(
                principal, archive_id, TagKind.QR, label.payload.encode(), label.payload
            )
            return
        prefix = runtime.settings.tag_company_prefix
        reference = _one(form, "asset_reference")
        if kind != "rfid_epc" or prefix is None or not reference.isdigit():
            raise InputError(
                "an RFID tag needs a configured prefix and a number", code="invalid_tag"
            )
        epc = Giai96(int(_one(form, "filter") or 0), prefix, int(reference))
        runtime.tags.bind(principal, archive_id, TagKind.RFID_EPC, epc.encode(), epc.tag_uri)

    _outcome(session, f"bind {kind}", call)
    return _back(back)


@router.get("/console/archives/{archive_id}/label")
def label_page(request: Request, archive_id: str) -> Response:
    """A printable page: the archive's QR label and its id (the browser's print dialog)."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    try:
        label = _label(runtime_of(request), principal, archive_id)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 404)
    return html_response(render_page("console_label.html", session, principal, label=label))


@router.get("/console/archives/{archive_id}/label.svg")
def label_image(request: Request, archive_id: str) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    _session, principal = found
    try:
        label = _label(runtime_of(request), principal, archive_id)
    except NodeError:
        return Response(status_code=404)
    return Response(
        label_svg(label),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
