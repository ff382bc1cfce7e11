"""Console request dependencies, as ``api.deps`` is for the JSON API.

- ``ConsoleSession``: the signed-in session, its caller (authenticated again on every request)
  and the node. Signed out, the request is answered with a redirect to the sign-in page
  (``ConsoleData``: a JSON 401 instead, for the pages' own data requests). A session opened by
  a consortium member reaches only the member pages (``MEMBER_PATHS``); the others answer 403.
- ``ConsoleForm`` (``ConsoleLongForm`` for the disposition list's many ticks, ``ConsoleUpload``
  for a multipart form with one file: upload and amend): the posted form, read only after the
  session was checked, same origin and carrying the session's CSRF token; otherwise 403
  ``csrf_failed`` and nothing happens.
- ``ConsoleRoute``: the route class of the console's routers. It turns those refusals into their
  answers and a ``NodeError`` (or a lifecycle refusal, ``anchoring.errors.LifecycleError``) the
  handler let through into the console's error page, with the status ``api.errors`` gives that
  error (403 "not allowed", 404 "not found", 409 "refused"…).
  The JSON API keeps its own mapping (``api.errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from anchoring.errors import LifecycleError
from api.errors import status_of_node_error
from api.web import i18n
from api.web.session import (
    Form,
    Session,
    html_response,
    read_form,
    refused_response,
    render_page,
    runtime_of,
    signed_in,
    to_login,
)
from api.web.templating import render
from node.errors import NodeError, PermissionDeniedError
from node.principal import Action, Principal
from node.runtime import NodeRuntime

log = logging.getLogger(__name__)

MEMBER_PATHS = ("/console/member", "/console/logout")
"""The pages a session opened by a consortium member may use; the staff pages refuse it (403)."""
MAX_LIST_FIELDS = 220
"""Form fields on the disposition list form: the ticked archives plus csrf, reason and confirm."""


class SignedOut(Exception):
    """No valid session: answered with the sign-in page (or a JSON 401 for data requests)."""

    def __init__(self, data: bool = False) -> None:
        super().__init__("signed out")
        self.data = data


class FormRefused(Exception):
    """A POST without the session's CSRF token, from another origin, or with broken parts."""


@dataclass(frozen=True)
class Console:
    """A signed-in console request: the session, its caller and the node."""

    session: Session
    principal: Principal
    runtime: NodeRuntime

    @property
    def words(self) -> dict[str, str]:
        return i18n.console_words(self.session.lang)

    def page(self, name: str, status: int = 200, **context: Any) -> Response:
        """The page ``name`` rendered for this session (navigation, CSRF token, flash)."""
        return html_response(render_page(name, self.session, self.principal, **context), status)

    def can(self, action: Action) -> bool:
        """Whether the caller's role allows ``action`` (to hide forms; services still decide)."""
        try:
            self.principal.require(action)
        except NodeError:
            return False
        return True

    def outcome(self, what: str, call: Callable[[], object]) -> bool:
        """Run ``call`` (one service call) and leave its outcome, or its refusal, in the flash;
        whether it was done."""
        c = self.words
        try:
            call()
        except (NodeError, ValueError) as exc:
            code = getattr(exc, "code", "invalid_input")
            self.session.flash = f"{c['refused']}: {code}: {exc}"
            return False
        self.session.flash = f"{c['done']} {what}"
        return True

    def confirmed(self, form: Form) -> bool:
        """Whether the form was confirmed; if not, the flash says a confirmation is needed."""
        if form.confirmed:
            return True
        self.session.flash = self.words["confirm_needed"]
        return False


def console_session(request: Request) -> Console:
    found = signed_in(request)
    if found is None:
        raise SignedOut()
    console = Console(found[0], found[1], runtime_of(request))
    request.state.console = console
    if console.session.member and not request.url.path.startswith(MEMBER_PATHS):
        raise PermissionDeniedError(
            "consortium members use the member pages (/console/member)", code="staff_only"
        )
    return console


def console_data(request: Request) -> Console:
    found = signed_in(request)
    if found is None:
        raise SignedOut(data=True)
    return Console(found[0], found[1], runtime_of(request))


ConsoleSession = Annotated[Console, Depends(console_session)]
ConsoleData = Annotated[Console, Depends(console_data)]


async def console_form(request: Request, console: ConsoleSession) -> Form:
    form = await read_form(request, console.session)
    if form is None:
        raise FormRefused()
    return form


async def console_long_form(request: Request, console: ConsoleSession) -> Form:
    form = await read_form(request, console.session, max_fields=MAX_LIST_FIELDS)
    if form is None:
        raise FormRefused()
    return form


async def console_upload(request: Request, console: ConsoleSession) -> Form:
    """A multipart form with at most one file part, spooled by Starlette (the body limit is the
    upload limit: ``api.main.is_upload`` names the console's upload paths)."""
    form = await read_form(request, console.session, max_files=1)
    if form is None:
        raise FormRefused()
    return form


ConsoleForm = Annotated[Form, Depends(console_form)]
ConsoleLongForm = Annotated[Form, Depends(console_long_form)]
ConsoleUpload = Annotated[Form, Depends(console_upload)]


def error_page(request: Request, exc: NodeError | LifecycleError) -> Response:
    """The console's page for a node error or a lifecycle refusal (409, as ``api.errors``
    answers it): its status and code, the heading by status."""
    status = 409 if isinstance(exc, LifecycleError) else status_of_node_error(exc)
    if status is None:  # the node itself failed: no detail leaves the log
        log.error(
            "%s %s failed inside the node: %s", request.method, request.url.path, type(exc).__name__
        )
    console = getattr(request.state, "console", None)
    context: dict[str, Any] = {
        "error_status": status or 500,
        "code": exc.code if status is not None else "internal_error",
        "message": str(exc) if status is not None else "",
    }
    if isinstance(console, Console):
        return console.page("console_error.html", status or 500, **context)
    lang = i18n.pick(request.query_params.get("lang"))
    html = render(
        "console_error.html", lang=lang, t=i18n.words(lang), c=i18n.console_words(lang), **context
    )
    return html_response(html, status or 500)


class ConsoleRoute(APIRoute):
    """Console routes: signed out → the sign-in page, a refused form → 403 ``csrf_failed``,
    a ``NodeError`` or a ``LifecycleError`` → the console's error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignedOut as exc:
                if exc.data:
                    return JSONResponse(
                        {"code": "signed_out", "message": "sign in first"}, status_code=401
                    )
                return to_login()
            except FormRefused:
                return refused_response()
            except (NodeError, LifecycleError) as exc:
                return error_page(request, exc)

        return route
