"""Console sessions and the helpers every console page shares: the in-memory session store, the
signed-in check, the form reader (same origin, CSRF token, bounded parts) and page rendering.

- A session holds the credential it was opened with: an API key (staff) or a member token
  (``acm_…``, a consortium member signed in with EIP-4361). Every request authenticates it again,
  so a revoked key or token, a suspended member or a changed role ends the session at once.
- The cookie ``ac_session`` carries only a random id (256 bits): ``Secure``, ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/console``. A session ends after ``SESSION_IDLE`` without a request
  or ``SESSION_MAX`` in all (a member session also when its token expires).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api.web import i18n
from api.web.security import page_headers
from api.web.templating import render
from node.errors import InputError, NodeError
from node.principal import Principal
from node.runtime import NodeRuntime
from node.services.signin import TOKEN_PREFIX

COOKIE: Final = "ac_session"
SESSION_IDLE: Final = 30 * 60.0
"""Seconds without a request after which a session ends."""
SESSION_MAX: Final = 8 * 3600.0
"""Seconds after sign-in after which a session ends whatever happens."""
MAX_SESSIONS: Final = 10_000
MAX_FIELDS: Final = 16
MAX_PART: Final = 64 * 1024
CSRF_FAILED: Final = "csrf_failed"


@dataclass
class Session:
    secret: str
    """The API key or member token the session was opened with (kept in memory only)."""
    csrf: str
    lang: i18n.Lang
    created: float
    seen: float
    flash: str | None = None

    @property
    def member(self) -> bool:
        """Whether a consortium member (EIP-4361 token) opened the session."""
        return self.secret.startswith(TOKEN_PREFIX)


@dataclass
class SessionStore:
    """Console sessions, in memory (a restart signs everyone out)."""

    sessions: dict[str, Session] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, secret: str, lang: i18n.Lang) -> tuple[str, Session]:
        now = time.monotonic()
        with self.lock:
            self._expire(now)
            if len(self.sessions) >= MAX_SESSIONS:  # the oldest goes
                oldest = min(self.sessions, key=lambda s: self.sessions[s].created)
                del self.sessions[oldest]
            sid = secrets.token_urlsafe(32)
            session = Session(secret, secrets.token_urlsafe(32), lang, now, now)
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


def runtime_of(request: Request) -> NodeRuntime:
    runtime: NodeRuntime = request.app.state.runtime
    return runtime


def store_of(request: Request) -> SessionStore:
    store = getattr(request.app.state, "console_sessions", None)
    if store is None:
        store = request.app.state.console_sessions = SessionStore()
    return store


def html_response(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=page_headers())


def authenticate(runtime: NodeRuntime, secret: str) -> Principal:
    """The caller behind an API key or a member token (``NodeError`` when neither is valid)."""
    if secret.startswith(TOKEN_PREFIX):
        return runtime.signin.authenticate(secret)
    return runtime.keys.authenticate(secret)


def signed_in(request: Request) -> tuple[Session, Principal] | None:
    """The request's session and its caller, authenticated again; None when signed out."""
    store = store_of(request)
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        return None
    try:
        principal = authenticate(runtime_of(request), session.secret)
    except NodeError:
        store.close(request.cookies.get(COOKIE))
        return None
    lang = request.query_params.get("lang")
    if lang in i18n.LANGS:
        session.lang = i18n.pick(lang)
    return session, principal


def open_session(request: Request, secret: str, lang: i18n.Lang, to: str) -> Response:
    """A new session for ``secret`` (already authenticated): its cookie, and a redirect to ``to``."""
    sid, _ = store_of(request).open(secret, lang)
    response = RedirectResponse(to, status_code=303)
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


def to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


@dataclass(frozen=True)
class Form:
    """A posted form's text fields (every value of each name) and its one file part, if any."""

    values: dict[str, list[str]]
    upload: UploadFile | None = None

    def one(self, name: str) -> str:
        """The first value of ``name``, stripped ("" when absent)."""
        return (self.values.get(name) or [""])[0].strip()

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    @property
    def confirmed(self) -> bool:
        """Whether the form's confirmation checkbox was ticked."""
        return self.one("confirm") == "yes"


async def read_form(
    request: Request,
    session: Session | None,
    *,
    max_fields: int = MAX_FIELDS,
    max_files: int = 0,
) -> Form | None:
    """The posted form when it is same-origin and (signed in) carries the session's CSRF token;
    None otherwise (or when its parts break the limits). Text parts are at most 64 KiB and hold
    no NUL (``InputError`` ``invalid_encoding``, 400: no field needs one, and PostgreSQL text
    cannot hold it), as ``api.jsonbody`` refuses it in JSON bodies."""
    if not same_origin(request):
        return None
    try:
        form = await request.form(
            max_files=max_files, max_fields=max_fields, max_part_size=MAX_PART
        )
    except HTTPException:
        return None
    values: dict[str, list[str]] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, str):
            if "\x00" in value or "\x00" in key:
                raise InputError("form fields cannot hold NUL characters", code="invalid_encoding")
            values.setdefault(key, []).append(value)
        elif upload is None:
            upload = value
    found = Form(values, upload)
    if session is not None and not hmac.compare_digest(
        found.one("csrf").encode(), session.csrf.encode()
    ):
        return None
    return found


def render_page(name: str, session: Session, principal: Principal, **context: Any) -> str:
    flash, session.flash = session.flash, None
    return render(
        name,
        lang=session.lang,
        t=i18n.words(session.lang),
        c=i18n.console_words(session.lang),
        csrf=session.csrf,
        who=principal,
        member=session.member,
        flash=flash,
        **context,
    )


def refused_response() -> Response:
    return JSONResponse(
        {"code": CSRF_FAILED, "message": "the form's CSRF token or origin is not valid"},
        status_code=403,
    )
