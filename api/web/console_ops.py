"""``/console`` operations pages: alerts (acknowledge), retention (due, disposition review,
destruction of approved archives, extension of an archive's retention), the destruction
certificate, transfers (offer, withdraw, the lists) and smart tags (bind, revoke, a scan entered
by hand, the printable label and a PDF sheet of labels).

Same rules as ``api.web.console``: the session is a dependency (``api.web.deps``), every POST
carries the CSRF token and comes from the console's origin, every state-changing form has a
required confirmation checkbox, the node's services are called exactly as the API calls them
(one service call, one transaction; refusals shown, nothing half-done; four eyes and the other
rules stay in the services), no PHI in URLs (only archive, alert, tag and list ids appear there).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from anchoring.events import TagKind
from api.routes.tags import MAX_SHEET_LABELS, ScanIn
from api.schemas import ARCHIVE_ID_PATTERN
from api.web.deps import ConsoleForm, ConsoleLongForm, ConsoleRoute, ConsoleSession
from node.errors import InputError
from node.ledger import normalise_id
from node.principal import Action, Principal
from node.runtime import NodeRuntime
from node.services.alerts import AlertState
from node.services.tags import Scan
from node.tags import Giai96, Label, label_sheet_pdf, label_svg, qr_payload

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)

_ARCHIVE_ID = re.compile(ARCHIVE_ID_PATTERN)
TagHash = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"{name} must be YYYY-MM-DD", code="invalid_date") from exc


# -- alerts --------------------------------------------------------------------------------------


@router.get("/console/alerts")
def alerts_page(console: ConsoleSession) -> Response:
    store, principal = console.runtime.alert_store, console.principal
    open_alerts, open_total = store.list(principal, limit=100)
    seen, _ = store.list(principal, state=AlertState.ACKNOWLEDGED, limit=20)
    return console.page(
        "console_alerts.html",
        open_alerts=open_alerts,
        open_total=open_total,
        seen=seen,
        can_ack=console.can(Action.ACK_ALERTS),
    )


@router.post("/console/alerts/{alert_id}/ack")
def acknowledge(console: ConsoleSession, form: ConsoleForm, alert_id: int) -> Response:
    if console.confirmed(form):
        store = console.runtime.alert_store
        console.outcome(f"ack #{alert_id}", lambda: store.acknowledge(console.principal, alert_id))
    return _back("/console/alerts")


# -- retention and disposition review -----------------------------------------------------------


@router.get("/console/retention")
def retention_page(console: ConsoleSession) -> Response:
    service, principal = console.runtime.retention, console.principal
    return console.page(
        "console_retention.html",
        due=service.due(principal, timedelta(days=365), limit=200),
        proposals=service.open_proposals(principal),
        approved=service.awaiting_destruction(principal),
        can_run=console.can(Action.RUN_DISPOSITION),
        can_propose=console.can(Action.PROPOSE_DISPOSITION),
        can_decide=console.can(Action.DECIDE_DISPOSITION),
        can_execute=console.can(Action.EXECUTE_DISPOSITION),
        today=date.today().isoformat(),
    )


@router.post("/console/retention/review")
def start_review(console: ConsoleSession, form: ConsoleForm) -> Response:
    """Move every due archive (deadline passed, not on hold) into DISPOSITION_REVIEW now."""
    if console.confirmed(form):
        service = console.runtime.retention
        console.outcome("review", lambda: service.start_dispositions(console.principal))
    return _back("/console/retention")


@router.post("/console/retention/propose")
def propose(console: ConsoleSession, form: ConsoleLongForm) -> Response:
    """An archivist's disposition list of the ticked archives (the service refuses any archive
    not in review, on hold or already on an open list: then no list is made)."""
    if console.confirmed(form):
        service, ids, reason = console.runtime.retention, form.all("archive_id"), form.one("reason")
        console.outcome("propose", lambda: service.propose(console.principal, ids, reason))
    return _back("/console/retention")


@router.post("/console/retention/decide")
def decide(console: ConsoleSession, form: ConsoleForm) -> Response:
    """A records manager approves or rejects one item (four eyes: the service refuses the
    proposer); a rejection needs the date until which the archive is kept."""
    if console.confirmed(form):
        approve = form.one("decision") == "approve"
        text = form.one("new_deadline")

        def call() -> None:
            new_deadline = _day(text, "new_deadline") if text else None
            console.runtime.retention.decide(
                console.principal,
                form.one("proposal_id"),
                form.one("archive_id"),
                approve=approve,
                reason=form.one("reason"),
                new_deadline=None if approve else new_deadline,
            )

        console.outcome("approve" if approve else "reject", call)
    return _back("/console/retention")


@router.post("/console/retention/destroy")
def destroy(console: ConsoleSession, form: ConsoleForm) -> Response:
    """Execute an approved destruction (crypto-shredding, the certificate signed), one item or
    every approved item of a list. The service checks the role, the unexpired approval (given
    by another person than the proposer), holds and the archive's state."""
    if not console.confirmed(form):
        return _back("/console/retention")
    service, principal = console.runtime.retention, console.principal
    proposal_id, archive_id = form.one("proposal_id"), form.one("archive_id")
    if archive_id:
        if console.outcome(
            f"destroy {archive_id}", lambda: service.destroy(principal, proposal_id, archive_id)
        ):
            return _back(f"/console/archives/{normalise_id(archive_id)}/certificate")
        return _back("/console/retention")

    def every() -> None:
        outcome = service.destroy_approved(principal, proposal_id)
        skipped = ", ".join(f"{a}: {code}" for a, code in outcome.refused)
        if not outcome.destroyed and skipped:
            raise InputError(f"nothing destroyed ({skipped})", code="nothing_destroyed")

    console.outcome(f"destroy list {proposal_id}", every)
    return _back("/console/retention")


@router.get("/console/archives/{archive_id}/retention")
def retention_of(console: ConsoleSession, archive_id: str) -> Response:
    """An archive's retention: its deadline and the form that extends it (never shortens)."""
    archive = console.runtime.archives.get(console.principal, archive_id)
    return console.page(
        "console_extend.html",
        archive=archive,
        can_extend=console.can(Action.EXTEND_RETENTION),
    )


@router.post("/console/archives/{archive_id}/retention")
def extend(console: ConsoleSession, form: ConsoleForm, archive_id: str) -> Response:
    """``POST /api/v1/archives/{id}/retention`` from the console: a later deadline and a reason
    (a shorter one is refused by the service: ``retention_shortened``, nothing changed)."""
    if console.confirmed(form):

        def call() -> None:
            new_deadline = _day(form.one("new_deadline"), "new_deadline")
            console.runtime.retention.extend(
                console.principal, archive_id, new_deadline, form.one("reason")
            )

        console.outcome("extend", call)
    return _back(f"/console/archives/{archive_id}/retention")


@router.get("/console/archives/{archive_id}/certificate")
def certificate_page(console: ConsoleSession, archive_id: str) -> Response:
    """A destroyed archive's destruction certificate: its hash, signer, signature, document."""
    view = console.runtime.retention.certificate(console.principal, archive_id)
    try:
        document = json.dumps(json.loads(view.document), indent=2, ensure_ascii=False)
    except ValueError:  # pragma: no cover  (the node writes canonical JSON)
        document = view.document.decode("utf-8", "replace")
    return console.page("console_certificate.html", cert=view, document=document)


@router.get("/console/archives/{archive_id}/certificate.json")
def certificate_download(console: ConsoleSession, archive_id: str) -> Response:
    """The certificate as the node signed it (the exact bytes whose SHA-256 went on chain)."""
    view = console.runtime.retention.certificate(console.principal, archive_id)
    return Response(
        view.document,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="certificate-{view.archive_id}.json"',
            "X-Certificate-SHA256": view.certificate_hash,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- transfers ----------------------------------------------------------------------------------


@router.get("/console/transfers")
def transfers_page(console: ConsoleSession) -> Response:
    rows = console.runtime.transfers.transfers(console.principal)
    return console.page(
        "console_transfers.html",
        outgoing=[r for r in rows if r.direction.value == "out"],
        incoming=[r for r in rows if r.direction.value != "out"],
    )


@router.post("/console/transfers")
def transfer_action(console: ConsoleSession, form: ConsoleForm) -> Response:
    """Offer custody of an archive to another hospital, or withdraw a pending offer."""
    if console.confirmed(form):
        service, principal = console.runtime.transfers, console.principal
        archive_id, kind = form.one("archive_id"), form.one("action")
        if kind == "offer":
            to = form.one("to")
            console.outcome("offer", lambda: service.offer(principal, archive_id, to))
        elif kind == "cancel":
            console.outcome("cancel", lambda: service.cancel(principal, archive_id))
        else:
            console.session.flash = console.words["unknown_action"]
    return _back("/console/transfers")


# -- tags and labels ----------------------------------------------------------------------------


def _label(runtime: NodeRuntime, principal: Principal, archive_id: str) -> Label:
    runtime.archives.get(principal, archive_id)  # in scope (the metadata read is logged)
    facts = runtime.public.facts(archive_id)
    payload = qr_payload(runtime.settings.base_url, facts.archive_id, facts.commitment_prefix)
    return Label(facts.archive_id, payload)


@router.get("/console/archives/{archive_id}/tags")
def tags_page(console: ConsoleSession, archive_id: str) -> Response:
    runtime, principal = console.runtime, console.principal
    archive = runtime.archives.get(principal, archive_id)
    tags = runtime.tags.tags_of(principal, archive_id)
    return console.page(
        "console_tags.html",
        archive=archive,
        tags=tags,
        rfid=runtime.settings.tag_company_prefix is not None,
        can_manage=console.can(Action.MANAGE_TAGS),
        can_scan=console.can(Action.RECORD_SCANS),
        now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
    )


@router.post("/console/archives/{archive_id}/tags")
def bind_tag(console: ConsoleSession, form: ConsoleForm, archive_id: str) -> Response:
    """Bind the archive's QR label or a GIAI-96 RFID tag (as ``POST /api/v1/archives/{id}/tags``)."""
    back = f"/console/archives/{archive_id}/tags"
    if not console.confirmed(form):
        return _back(back)
    runtime, principal, kind = console.runtime, console.principal, form.one("kind")

    def call() -> None:
        principal.require(Action.MANAGE_TAGS)
        if kind == "qr":
            label = _label(runtime, principal, archive_id)
            runtime.tags.bind(
                principal, archive_id, TagKind.QR, label.payload.encode(), label.payload
            )
            return
        prefix = runtime.settings.tag_company_prefix
        reference = form.one("asset_reference")
        if kind != "rfid_epc" or prefix is None or not reference.isdigit():
            raise InputError(
                "an RFID tag needs a configured prefix and a number", code="invalid_tag"
            )
        epc = Giai96(int(form.one("filter") or 0), prefix, int(reference))
        runtime.tags.bind(principal, archive_id, TagKind.RFID_EPC, epc.encode(), epc.tag_uri)

    console.outcome(f"bind {kind}", call)
    return _back(back)


@router.post("/console/archives/{archive_id}/tags/{tag}/revoke")
def revoke_tag(
    console: ConsoleSession, form: ConsoleForm, archive_id: str, tag: TagHash
) -> Response:
    """Revoke a tag (as ``DELETE /api/v1/tags/{tag}``): its scans are refused from now on."""
    if console.confirmed(form):
        tags = console.runtime.tags
        console.outcome(f"revoke {tag[:12]}", lambda: tags.revoke(console.principal, tag))
    return _back(f"/console/archives/{archive_id}/tags")


@router.post("/console/archives/{archive_id}/tags/{tag}/scans")
def record_scan(
    console: ConsoleSession, form: ConsoleForm, archive_id: str, tag: TagHash
) -> Response:
    """A scan entered by hand (a folder found on a shelf): reader, location and time, checked
    as the API checks a reader's report; TAG_SCAN logged, or refused (and counted) for an
    unbound or revoked tag."""
    if console.confirmed(form):

        def call() -> None:
            seen = form.one("time")
            try:
                when = datetime.fromisoformat(seen) if seen else datetime.now(UTC)
            except ValueError as exc:
                raise InputError("time must be YYYY-MM-DDTHH:MM", code="invalid_time") from exc
            if when.tzinfo is None:  # the form's local time field: read as UTC
                when = when.replace(tzinfo=UTC)
            try:
                scan = ScanIn(
                    reader=form.one("reader") or "console", location=form.one("location"), time=when
                )
            except ValidationError as exc:
                names = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
                raise InputError(f"invalid {names}", code="invalid_scan") from None
            tags = console.runtime.tags
            tags.record_scans(console.principal, tag, [Scan(scan.reader, scan.location, scan.time)])

        console.outcome("scan", call)
    return _back(f"/console/archives/{archive_id}/tags")


@router.get("/console/archives/{archive_id}/label")
def label_page(console: ConsoleSession, archive_id: str) -> Response:
    """A printable page: the archive's QR label and its id (the browser's print dialog)."""
    label = _label(console.runtime, console.principal, archive_id)
    return console.page("console_label.html", label=label)


@router.get("/console/archives/{archive_id}/label.svg")
def label_image(console: ConsoleSession, archive_id: str) -> Response:
    label = _label(console.runtime, console.principal, archive_id)
    return Response(
        label_svg(label),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/console/labels")
def labels_page(console: ConsoleSession) -> Response:
    """The form for a PDF sheet of QR labels (archive ids, one a line)."""
    return console.page("console_labels.html", max_labels=MAX_SHEET_LABELS)


@router.post("/console/labels.pdf")
def labels_pdf(console: ConsoleSession, form: ConsoleForm) -> Response:
    """A PDF sheet of the named archives' QR labels (as ``GET /api/v1/labels.pdf``). The ids
    are posted, so they stay out of URLs and logs; each is checked with the archive-id rule."""
    ids = [normalise_id(i) for i in form.one("ids").replace(",", " ").split()]
    if not 1 <= len(ids) <= MAX_SHEET_LABELS or not all(_ARCHIVE_ID.match(i) for i in ids):
        refused = console.words["refused"]
        console.session.flash = f"{refused}: invalid_ids: name 1 to {MAX_SHEET_LABELS} archive ids"
        return _back("/console/labels")
    labels = [_label(console.runtime, console.principal, i) for i in ids]
    return Response(
        label_sheet_pdf(labels),
        media_type="application/pdf",
        headers={
            "Content-Disposition": 'attachment; filename="labels.pdf"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
