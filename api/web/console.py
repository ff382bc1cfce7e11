"""``/console``: the archivist console, server-rendered (Jinja2) with htmx for partial updates.

Security (docs/console.md):
- Sign-in with an API key (member sign-in comes with the regulator issue). The key is checked by
  ``runtime.keys.authenticate`` and kept only in this process's memory, under a random session id
  (256 bits) sent as the cookie ``ac_session``: ``Secure``, ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/console``. Every request re-authenticates the key, so a revoked key ends its sessions
  at once. A session ends after ``SESSION_IDLE`` without a request or ``SESSION_MAX`` in all.
- CSRF: every state-changing form (POST) carries the session's random token (``csrf``), compared
  in constant time; a POST whose ``Origin`` is another origin is refused too.
- Strict CSP (``api.web.security``): scripts and styles only from the node, no inline script.
- No PHI in URLs: search terms are POSTed, never put in a query string; logs hold no form data.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from anchoring.events import Purpose, RecordClass, Sensitivity
from api.schemas import ArchiveIn
from api.web import i18n
from api.web.security import page_headers
from api.web.templating import render
from node.errors import InputError, NodeError
from node.principal import Principal
from node.runtime import NodeRuntime
from node.services.archives import SearchFilters

COOKIE: Final = "ac_session"
SESSION_IDLE: Final = 30 * 60.0
"""Seconds without a request after which a session ends."""
SESSION_MAX: Final = 8 * 3600.0
"""Seconds after sign-in after which a session ends whatever happens."""
MAX_SESSIONS: Final = 10_000


@dataclass
class Session:
    api_key: str
    csrf: str
    lang: i18n.Lang
    created: float
    seen: float
    flash: str | None = None


@dataclass
class SessionStore:
    """Console sessions, in memory (a restart signs everyone out)."""

    sessions: dict[str, Session] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, api_key: str, lang: i18n.Lang) -> tuple[str, Session]:
        now = time.monotonic()
        with self.lock:
            self._expire(now)
            if len(self.sessions) >= MAX_SESSIONS:  # the oldest goes
                oldest = min(self.sessions, key=lambda s: self.sessions[s].created)
                del self.sessions[oldest]
            sid = secrets.token_urlsafe(32)
            session = Session(api_key, secrets.token_urlsafe(32), lang, now, now)
            self.sessions[sid] = session
            return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self.lock:
            session = self.sessions.get(sid)
            if session is None:
                return None
            if now - session.seen > SESSION_IDLE or now - session.created > SESSION_MAX:
                del self.sessions[sid]
                return None
            session.seen = now
            return session

    def close(self, sid: str | None) -> None:
        with self.lock:
            self.sessions.pop(sid or "", None)

    def _expire(self, now: float) -> None:
        for sid, s in list(self.sessions.items()):
            if now - s.seen > SESSION_IDLE or now - s.created > SESSION_MAX:
                del self.sessions[sid]


router = APIRouter(include_in_schema=False)


def runtime_of(request: Request) -> NodeRuntime:
    runtime: NodeRuntime = request.app.state.runtime
    return runtime


def _store(request: Request) -> SessionStore:
    store = getattr(request.app.state, "console_sessions", None)
    if store is None:
        store = request.app.state.console_sessions = SessionStore()
    return store


def html_response(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=page_headers())


def signed_in(request: Request) -> tuple[Session, Principal] | None:
    session = _store(request).get(request.cookies.get(COOKIE))
    if session is None:
        return None
    try:
        principal = runtime_of(request).keys.authenticate(session.api_key)
    except NodeError:
        _store(request).close(request.cookies.get(COOKIE))
        return None
    lang = request.query_params.get("lang")
    if lang in i18n.LANGS:
        session.lang = i18n.pick(lang)
    return session, principal


def to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def _form(request: Request, session: Session | None) -> dict[str, str] | None:
    """The posted form when it is same-origin and (signed in) carries the session's token."""
    found = await _form_with_file(request, session, max_files=0)
    return found[0] if found is not None else None


async def _form_with_file(
    request: Request, session: Session | None, *, max_files: int
) -> tuple[dict[str, str], UploadFile | None] | None:
    """The form's text fields and its one file part (when ``max_files`` is 1), checked as in
    ``_form``. Text fields are at most 64 KiB each, at most 16 fields."""
    if not same_origin(request):
        return None
    try:
        form = await request.form(max_files=max_files, max_fields=16, max_part_size=64 * 1024)
    except HTTPException:
        return None
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
    if session is not None and not hmac.compare_digest(
        values.get("csrf", "").encode(), session.csrf.encode()
    ):
        return None
    return values, upload


def render_page(name: str, session: Session, principal: Principal, **context: Any) -> str:
    flash, session.flash = session.flash, None
    return render(
        name,
        lang=session.lang,
        t=i18n.words(session.lang),
        c=i18n.console_words(session.lang),
        csrf=session.csrf,
        who=principal,
        flash=flash,
        **context,
    )


_FORBIDDEN = "csrf_failed"


def refused_response() -> Response:
    return JSONResponse(
        {"code": _FORBIDDEN, "message": "the form's CSRF token or origin is not valid"},
        status_code=403,
    )


# -- sign-in -----------------------------------------------------------------------------------


@router.get("/console")
def console_root(request: Request) -> Response:
    return RedirectResponse(
        "/console/archives" if signed_in(request) else "/console/login", status_code=303
    )


@router.get("/console/login")
def login_page(request: Request, error: bool = False) -> Response:
    lang = i18n.pick(request.query_params.get("lang"))
    html = render(
        "console_login.html",
        lang=lang,
        t=i18n.words(lang),
        c=i18n.console_words(lang),
        error=error,
    )
    return html_response(html, 401 if error else 200)


@router.post("/console/login")
async def login(request: Request) -> Response:
    form = await _form(request, None)
    if form is None:
        return refused_response()
    lang = i18n.pick(form.get("lang"))
    key = form.get("api_key", "").strip()
    try:
        runtime_of(request).keys.authenticate(key)
    except NodeError:
        html = render(
            "console_login.html",
            lang=lang,
            t=i18n.words(lang),
            c=i18n.console_words(lang),
            error=True,
        )
        return html_response(html, 401)
    sid, _ = _store(request).open(key, lang)
    response = RedirectResponse("/console/archives", status_code=303)
    response.set_cookie(
        COOKIE,
        sid,
        max_age=int(SESSION_MAX),
        path="/console",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    if await _form(request, found[0]) is None:
        return refused_response()
    _store(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console", secure=True, httponly=True, samesite="strict")
    return response


# -- catalogue -----------------------------------------------------------------------------------


@router.get("/console/archives")
def catalogue(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    page = runtime.archives.search(principal, SearchFilters(limit=20, purpose=Purpose.OPERATIONS))
    return html_response(
        render_page("console_archives.html", session, principal, results=page, query="")
    )


@router.post("/console/search")
async def search(request: Request) -> Response:
    """Catalogue search; the terms come in the POST body (never in a URL). htmx swaps the
    results table; without JavaScript the whole page comes back."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _form(request, session)
    if form is None:
        return refused_response()
    query = form.get("q", "").strip()[:200]
    filters = SearchFilters(text=query or None, limit=50, purpose=Purpose.OPERATIONS)
    page = runtime_of(request).archives.search(principal, filters)
    partial = request.headers.get("hx-request") == "true"
    name = "console_results.html" if partial else "console_archives.html"
    return html_response(render_page(name, session, principal, results=page, query=query))


@router.get("/console/archives/{archive_id}")
def detail(request: Request, archive_id: str) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    try:
        archive = runtime.archives.get(principal, archive_id, Purpose.OPERATIONS)
        events = runtime.archives.events(principal, archive_id)
        tags = runtime.tags.tags_of(principal, archive_id)
    except NodeError as exc:
        return html_response(render_page("console_error.html", session, principal, error=exc), 404)
    return html_response(
        render_page(
            "console_detail.html",
            session,
            principal,
            archive=archive,
            events=events,
            tags=tags,
            purposes=[p.value for p in Purpose],
        )
    )


@router.post("/console/archives/{archive_id}/action")
async def action(request: Request, archive_id: str) -> Response:
    """A lifecycle action from the detail page: archive, hold, release or share. Each form has
    a required confirmation checkbox; the service's refusal is shown, nothing half-done."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    form = await _form(request, session)
    if form is None:
        return refused_response()
    runtime = runtime_of(request)
    c = i18n.console_words(session.lang)
    kind = form.get("action", "")
    if form.get("confirm") != "yes":
        session.flash = c["confirm_needed"]
        return RedirectResponse(f"/console/archives/{archive_id}", status_code=303)
    try:
        if kind == "archive":
            runtime.archives.archive(principal, archive_id, None)
        elif kind == "hold":
            runtime.archives.place_hold(principal, archive_id, form.get("reason", "") or "console")
        elif kind == "release":
            runtime.archives.release_hold(
                principal, archive_id, form.get("reason", "") or "console"
            )
        elif kind == "share":
            expires = datetime.now(UTC) + timedelta(days=int(form.get("days", "30") or 30))
            runtime.shares.grant(
                principal, archive_id, form.get("to", ""), Purpose(form.get("purpose", "")), expires
            )
        else:
            session.flash = c["unknown_action"]
            return RedirectResponse(f"/console/archives/{archive_id}", status_code=303)
        session.flash = c["done"] + " " + kind
    except (NodeError, ValueError) as exc:
        code = getattr(exc, "code", "invalid_input")
        session.flash = f"{c['refused']}: {code}: {exc}"
    return RedirectResponse(f"/console/archives/{archive_id}", status_code=303)


# -- upload ------------------------------------------------------------------------------------


@router.get("/console/upload")
def upload_page(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    return html_response(_upload_page(session, principal))


def _upload_page(session: Session, principal: Principal, error: str | None = None) -> str:
    return render_page(
        "console_upload.html",
        session,
        principal,
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


@router.post("/console/upload")
async def upload(request: Request) -> Response:
    """A record uploaded from the console: the same service call as ``POST /api/v1/archives``
    (checked, encrypted, CREATE logged, all or nothing). The session is checked before the body
    is read; the body is an upload (``api.main.is_upload``): streamed to a spooled file."""
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    parsed = await _form_with_file(request, session, max_files=1)
    if parsed is None:
        return refused_response()
    form, file = parsed
    runtime = runtime_of(request)
    if file is None or not file.filename:
        return html_response(_upload_page(session, principal, "file"), 400)
    try:
        fields = ArchiveIn.model_validate(
            {
                "record_class": form.get("record_class", ""),
                "sensitivity": form.get("sensitivity", "NORMAL"),
                "department": form.get("department", ""),
                "title": form.get("title", ""),
                "source_system": "CONSOLE",
                "patient_id": form.get("patient_id", ""),
            }
        )
        media_type = (file.content_type or "application/octet-stream").split(";")[0].strip()
        settings = runtime.settings
        view = await run_in_threadpool(
            runtime.archives.create,
            principal,
            fields.to_new_archive(media_type, file.filename),
            _chunks(file, settings.max_upload_bytes, settings.chunk_size),
        )
    except ValidationError as exc:
        names = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        return html_response(_upload_page(session, principal, names), 422)
    except NodeError as exc:
        return html_response(_upload_page(session, principal, exc.code), 400)
    finally:
        await file.close()
    session.flash = i18n.console_words(session.lang)["uploaded"]
    return RedirectResponse(f"/console/archives/{view.id}", status_code=303)


# -- dashboards ---------------------------------------------------------------------------------


@router.get("/console/dashboard")
def dashboard(request: Request) -> Response:
    found = signed_in(request)
    if found is None:
        return to_login()
    session, principal = found
    runtime = runtime_of(request)
    now = datetime.now(UTC)
    try:
        alerts, open_alerts = runtime.alert_store.list(principal, limit=20)
    except NodeError:
        alerts, open_alerts = [], 0
    try:
        due = runtime.retention.due(principal, timedelta(days=365), limit=20)
    except NodeError:
        due = []
    return html_response(
        render_page(
            "console_dashboard.html",
            session,
            principal,
            alerts=alerts,
            open_alerts=open_alerts,
            due=due,
            now=now,
        )
    )


@router.get("/console/dashboard.json")
def dashboard_data(request: Request) -> Response:
    """The charts' figures (``node.services.reports``), last 30 days."""
    found = signed_in(request)
    if found is None:
        return JSONResponse({"code": "signed_out", "message": "sign in first"}, status_code=401)
    _session, principal = found
    runtime = runtime_of(request)
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
