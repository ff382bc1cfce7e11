"""``/console``: the archivist console, server-rendered (Jinja2) with htmx for partial updates.

Security (docs/console.md):
- Sign-in with an API key here, or as a consortium member with EIP-4361 (``api.web.console_member``).
  The credential is kept only in this process's memory (``api.web.session``), under a random
  session id (256 bits) sent as the cookie ``ac_session``: ``Secure``, ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/console``. Every request authenticates it again, so a revoked key
  ends its sessions at once. A session ends after ``SESSION_IDLE`` without a request or
  ``SESSION_MAX`` in all. Pages take the session as a dependency (``api.web.deps``).
- CSRF: every state-changing form (POST) carries the session's random token (``csrf``), compared
  in constant time; a POST whose ``Origin`` is another origin is refused too.
- Strict CSP (``api.web.security``): scripts and styles only from the node, no inline script.
- No PHI in URLs: search terms are POSTed, never put in a query string; logs hold no form data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from anchoring.events import Purpose, RecordClass, Sensitivity
from api.schemas import MAX_VERSION, ArchiveIn
from api.streaming import content_response
from api.web import i18n
from api.web.deps import (
    Console,
    ConsoleData,
    ConsoleForm,
    ConsoleRoute,
    ConsoleSession,
    ConsoleUpload,
)
from api.web.security import page_headers
from api.web.session import (
    COOKIE,
    Form,
    html_response,
    open_session,
    read_form,
    refused_response,
    runtime_of,
    signed_in,
    store_of,
)
from api.web.templating import render
from node.errors import InputError, NodeError
from node.filenames import display_name
from node.principal import Action, Role
from node.services.archives import SearchFilters

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)
log = logging.getLogger(__name__)

MEMBER_HOME: dict[Role, str] = {Role.REGULATOR: "/console/member/holds"}
"""Where a signed-in consortium member lands (the pages its role may use)."""


def home_of(console_role: Role, member: bool) -> str:
    """The first page after sign-in: the catalogue for staff, the role's own page for members."""
    if member:
        return MEMBER_HOME.get(console_role, "/console/member")
    return "/console/archives"


# -- sign-in -----------------------------------------------------------------------------------


@router.get("/console")
def console_root(request: Request) -> Response:
    found = signed_in(request)
    to = "/console/login" if found is None else home_of(found[1].role, found[0].member)
    return RedirectResponse(to, status_code=303)


def login_html(lang: i18n.Lang, error: bool) -> str:
    return render(
        "console_login.html",
        lang=lang,
        t=i18n.words(lang),
        c=i18n.console_words(lang),
        error=error,
    )


@router.get("/console/login")
def login_page(request: Request, error: bool = False) -> Response:
    lang = i18n.pick(request.query_params.get("lang"))
    return html_response(login_html(lang, error), 401 if error else 200)


@router.post("/console/login")
async def login(request: Request) -> Response:
    form = await read_form(request, None)
    if form is None:
        return refused_response()
    lang = i18n.pick(form.one("lang"))
    key = form.one("api_key")
    try:
        runtime_of(request).keys.authenticate(key)
    except NodeError:
        return html_response(login_html(lang, True), 401)
    return open_session(request, key, lang, "/console/archives")


@router.post("/console/logout")
async def logout(request: Request, console: ConsoleSession, form: ConsoleForm) -> Response:
    if console.session.member:  # the member token ends too, not only this session
        console.runtime.signin.logout(console.principal)
    store_of(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console", secure=True, httponly=True, samesite="strict")
    return response


# -- catalogue -----------------------------------------------------------------------------------


@router.get("/console/archives")
def catalogue(console: ConsoleSession) -> Response:
    filters = SearchFilters(limit=20, purpose=Purpose.OPERATIONS)
    page = console.runtime.archives.search(console.principal, filters)
    return console.page("console_archives.html", results=page, query="")


@router.post("/console/search")
def search(request: Request, console: ConsoleSession, form: ConsoleForm) -> Response:
    """Catalogue search; the terms come in the POST body (never in a URL). htmx swaps the
    results table; without JavaScript the whole page comes back."""
    query = form.one("q")[:200]
    filters = SearchFilters(text=query or None, limit=50, purpose=Purpose.OPERATIONS)
    page = console.runtime.archives.search(console.principal, filters)
    partial = request.headers.get("hx-request") == "true"
    name = "console_results.html" if partial else "console_archives.html"
    return console.page(name, results=page, query=query)


@router.get("/console/archives/{archive_id}")
def detail(console: ConsoleSession, archive_id: str) -> Response:
    runtime, principal = console.runtime, console.principal
    archive = runtime.archives.get(principal, archive_id, Purpose.OPERATIONS)
    events = runtime.archives.events(principal, archive_id)
    tags = runtime.tags.tags_of(principal, archive_id)
    return console.page(
        "console_detail.html",
        archive=archive,
        events=events,
        tags=tags,
        purposes=[p.value for p in Purpose],
        can_read=console.can(Action.READ_CONTENT),
    )


@router.post("/console/archives/{archive_id}/action")
def action(console: ConsoleSession, form: ConsoleForm, archive_id: str) -> Response:
    """A lifecycle action from the detail page: archive, hold, release or share. Each form has
    a required confirmation checkbox; the service's refusal is shown, nothing half-done."""
    back = RedirectResponse(f"/console/archives/{archive_id}", status_code=303)
    if not console.confirmed(form):
        return back
    archives, principal = console.runtime.archives, console.principal
    kind, reason = form.one("action"), form.one("reason") or "console"
    if kind == "archive":
        console.outcome(kind, lambda: archives.archive(principal, archive_id, None))
    elif kind == "hold":
        console.outcome(kind, lambda: archives.place_hold(principal, archive_id, reason))
    elif kind == "release":
        console.outcome(kind, lambda: archives.release_hold(principal, archive_id, reason))
    elif kind == "share":

        def share() -> None:
            expires = datetime.now(UTC) + timedelta(days=int(form.one("days") or 30))
            console.runtime.shares.grant(
                principal, archive_id, form.one("to"), Purpose(form.one("purpose")), expires
            )

        console.outcome(kind, share)
    else:
        console.session.flash = console.words["unknown_action"]
    return back


@router.post("/console/archives/{archive_id}/content")
def read_content(
    request: Request, console: ConsoleSession, form: ConsoleForm, archive_id: str
) -> Response:
    """The record's content, downloaded from the detail page: the same service calls as
    ``GET /api/v1/archives/{id}/content``: ``ArchiveService.open_content`` (access policy,
    ACCESS logged with the purpose before the first byte) and, once the body is sent,
    ``ReportService.record_read`` (the read's timing, the tier it came from and the archive's
    last access, which the tier policy reads). A POST: the read is logged, so it carries the
    CSRF token like every other form, and the purpose stays out of the URL. Always an
    attachment (never rendered in the console's origin)."""
    try:
        purpose = Purpose(form.one("purpose"))
        version = int(form.one("version")) if form.one("version") else None
    except ValueError:
        raise InputError("choose a purpose (and a version number)", code="invalid_input") from None
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise InputError(f"version must be 1..{MAX_VERSION}", code="invalid_input")
    stream = console.runtime.archives.open_content(console.principal, archive_id, purpose, version)
    headers = page_headers()
    headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return content_response(request, console.runtime, stream, purpose.value, headers)


# -- upload ------------------------------------------------------------------------------------


@router.get("/console/upload")
def upload_page(console: ConsoleSession) -> Response:
    return _upload_page(console)


def _upload_page(console: Console, error: str | None = None, status: int = 200) -> Response:
    return console.page(
        "console_upload.html",
        status,
        classes=[c.value for c in RecordClass],
        sensitivities=[s.value for s in Sensitivity],
        error=error,
    )


def _chunks(upload: UploadFile, limit: int, size: int) -> Iterator[bytes]:
    upload.file.seek(0)
    total = 0
    while chunk := upload.file.read(size):
        total += len(chunk)
        if total > limit:
            raise InputError("the file is larger than this node accepts", code="payload_too_large")
        yield chunk


@dataclass(frozen=True)
class Content:
    """An uploaded file part as the services take it: media type, file name, bytes (streamed
    from the spooled file in ``chunk_size`` pieces, refused past ``max_upload_bytes``)."""

    media_type: str
    filename: str | None
    chunks: Iterator[bytes]


def _content(console: Console, form: Form) -> Content | None:
    """The form's file part (None when no file was chosen); shared by upload and amend."""
    file = form.upload
    if file is None or not file.filename:
        return None
    settings = console.runtime.settings
    media_type = (file.content_type or "application/octet-stream").split(";")[0].strip()
    chunks = _chunks(file, settings.max_upload_bytes, settings.chunk_size)
    return Content(media_type, display_name(file.filename), chunks)


async def _closed(form: Form) -> None:
    if form.upload is not None:
        await form.upload.close()


@router.post("/console/upload")
async def upload(console: ConsoleSession, form: ConsoleUpload) -> Response:
    """A record uploaded from the console: the same service call as ``POST /api/v1/archives``
    (checked, encrypted, CREATE logged, all or nothing). The session is checked before the body
    is read; the body is an upload (``api.main.is_upload``): streamed to a spooled file."""
    try:
        content = _content(console, form)
        if content is None:
            return _upload_page(console, "file", 400)
        runtime = console.runtime
        fields = ArchiveIn.model_validate(
            {
                "record_class": form.one("record_class"),
                "sensitivity": form.one("sensitivity") or "NORMAL",
                "department": form.one("department"),
                "title": form.one("title"),
                "source_system": "CONSOLE",
                "patient_id": form.one("patient_id"),
            }
        )
        view = await run_in_threadpool(
            runtime.archives.create,
            console.principal,
            fields.to_new_archive(content.media_type, content.filename),
            content.chunks,
        )
    except ValidationError as exc:
        names = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        return _upload_page(console, names, 422)
    except NodeError as exc:
        return _upload_page(console, exc.code, 400)
    finally:
        await _closed(form)
    console.session.flash = console.words["uploaded"]
    return RedirectResponse(f"/console/archives/{view.id}", status_code=303)


@router.post("/console/archives/{archive_id}/amend")
async def amend(console: ConsoleSession, form: ConsoleUpload, archive_id: str) -> Response:
    """A new version of a CREATED archive from its detail page: the same service call as
    ``POST /api/v1/archives/{id}/amend`` (the lifecycle rule, the media type and the size limit
    checked, the version encrypted and stored, AMEND logged, all or nothing). Unconfirmed or
    without a file: back to the detail page with the reason, nothing done; the service's
    refusal (409 for an archive that is not CREATED, 413 too large…) is the console's error
    page, nothing changed."""
    back = RedirectResponse(f"/console/archives/{archive_id}", status_code=303)
    try:
        if not console.confirmed(form):
            return back
        content = _content(console, form)
        if content is None:
            console.session.flash = f"{console.words['refused']}: file_required"
            return back
        await run_in_threadpool(
            console.runtime.archives.amend,
            console.principal,
            archive_id,
            content.media_type,
            content.filename,
            content.chunks,
        )
    finally:
        await _closed(form)
    console.session.flash = console.words["amended"]
    return back


# -- dashboards ---------------------------------------------------------------------------------


@router.get("/console/dashboard")
def dashboard(console: ConsoleSession) -> Response:
    runtime, principal = console.runtime, console.principal
    try:
        alerts, open_alerts = runtime.alert_store.list(principal, limit=20)
    except NodeError:
        alerts, open_alerts = [], 0
    try:
        due = runtime.retention.due(principal, timedelta(days=365), limit=20)
    except NodeError:
        due = []
    return console.page(
        "console_dashboard.html",
        alerts=alerts,
        open_alerts=open_alerts,
        due=due,
        now=datetime.now(UTC),
    )


@router.get("/console/dashboard.json")
def dashboard_data(console: ConsoleData) -> Response:
    """The charts' figures (``node.services.reports``), last 30 days."""
    runtime, principal = console.runtime, console.principal
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    try:
        use = runtime.reports.utilisation(principal, start, now)
        compliance = runtime.reports.compliance(principal, start, now)
    except NodeError as exc:
        return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=403)
    buckets = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0]
    histogram = [0] * (len(buckets) + 1)
    for seconds in use.retrieval_total.first_byte:
        histogram[next((i for i, b in enumerate(buckets) if seconds <= b), len(buckets))] += 1
    per_day: dict[str, int] = {}
    for counts in compliance.by_class_and_state.values():
        for state, n in counts.items():
            per_day[state] = per_day.get(state, 0) + n
    document = {
        "retrieval": {
            "buckets": [f"≤{b:g}s" for b in buckets] + [f">{buckets[-1]:g}s"],
            "counts": histogram,
        },
        "utilisation": {"held": use.archives_held, "read": use.archives_read},
        "sharing": dict(use.sharing),
        "ingest_by_state": per_day,
        "ingest_per_day": runtime.reports.ingest_per_day(principal, start, now),
        "anchoring": compliance.anchoring,
    }
    return JSONResponse(document, headers={"Cache-Control": "no-store"})
