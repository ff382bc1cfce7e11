"""``/console/member``: consortium members (a regulator, an insurer, an auditor) sign in to the
console with EIP-4361, and the pages their role may use.

Sign-in, in three steps, all through ``node.services.signin`` (the same checks as
``POST /api/v1/auth/verify``):
1. the member gives its address and role; the node makes a challenge (a fresh nonce) and shows
   the exact message to sign (domain, URI, chain id, nonce, times, the role resource);
2. the member signs it with its registry key elsewhere — a wallet (EIP-191 ``personal_sign``)
   or ``archivechain sign-message --keystore FILE`` — and pastes the signature;
3. the node verifies it (signature, nonce once, registry: active member with that role) and
   issues a member token; the console session holds that token, so every request checks the
   token again (expiry, revocation, the registry) and signing out revokes it.

The member's pages: a home page (who, role), and for a regulator the legal holds and the access
audit (as ``/api/v1/regulator/holds`` and ``/access-events``). Staff pages stay with the
services' role checks: a member's role does not reach them (403 page).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from anchoring.ids import IdentifierError, normalize_address
from api.errors import status_of_node_error
from api.web import i18n
from api.web.console import home_of
from api.web.deps import Console, ConsoleForm, ConsoleRoute, ConsoleSession
from api.web.session import (
    Form,
    authenticate,
    html_response,
    open_session,
    read_form,
    refused_response,
    runtime_of,
)
from api.web.templating import render
from node.errors import InputError, NodeError, PermissionDeniedError
from node.principal import Role
from node.runtime import NodeRuntime
from node.services.signin import NODE_ROLES, ROLE_RESOURCE
from node.siwe import SiweMessage, format_time

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)

AUDIT_ROWS = 100


def _roles(runtime: NodeRuntime) -> list[str]:
    """The registry roles this node admits for member sign-in, lower case."""
    return [r.name.lower() for r in NODE_ROLES if r.name in runtime.settings.signin_roles]


def _page(request: Request, lang: i18n.Lang, status: int = 200, **context: object) -> Response:
    html = render(
        "console_member_login.html",
        lang=lang,
        t=i18n.words(lang),
        c=i18n.console_words(lang),
        roles=_roles(runtime_of(request)),
        **context,
    )
    return html_response(html, status)


def _refused(request: Request, lang: i18n.Lang, exc: NodeError, **context: object) -> Response:
    status = status_of_node_error(exc) or 500
    code = exc.code if status != 500 else "internal_error"
    return _page(request, lang, status, error=code, **context)


@router.get("/console/member/login")
def member_login_page(request: Request) -> Response:
    return _page(request, i18n.pick(request.query_params.get("lang")))


@router.post("/console/member/challenge")
async def member_challenge(request: Request) -> Response:
    """Step 1: a challenge, and the EIP-4361 message the member is to sign."""
    form = await read_form(request, None)
    if form is None:
        return refused_response()
    lang = i18n.pick(form.one("lang"))
    role = form.one("role")
    try:
        if role not in _roles(runtime_of(request)):
            raise InputError("this node does not admit that role", code="role_required")
        try:
            address = normalize_address(form.one("address"))
        except IdentifierError:
            raise InputError(
                "not an address (0x and 40 hex digits)", code="invalid_address"
            ) from None
        challenge = runtime_of(request).signin.challenge()
    except NodeError as exc:
        return _refused(request, lang, exc, address=form.one("address"))
    message = SiweMessage(
        domain=challenge.domain,
        address=address,
        statement=challenge.statement,
        uri=challenge.uri,
        chain_id=challenge.chain_id,
        nonce=challenge.nonce,
        issued_at=format_time(datetime.now(UTC)),
        expiration_time=format_time(challenge.expires_at),
        resources=(ROLE_RESOURCE + role,),
    )
    return _page(request, lang, message=message.text(), address=address, role=role)


def _message(form: Form) -> str:
    """The message as signed: a textarea posts CRLF line ends, the message has LF."""
    return (form.values.get("message") or [""])[0].replace("\r\n", "\n").strip("\n")


@router.post("/console/member/verify")
async def member_verify(request: Request) -> Response:
    """Step 3: the signed message for a member token, and a console session holding it."""
    form = await read_form(request, None)
    if form is None:
        return refused_response()
    lang = i18n.pick(form.one("lang"))
    text = _message(form)
    runtime = runtime_of(request)
    try:
        issued = runtime.signin.verify(text, form.one("signature"))
        principal = authenticate(runtime, issued.token)
    except NodeError as exc:
        return _refused(request, lang, exc, message=text)
    return open_session(request, issued.token, lang, home_of(principal.role, True))


@router.get("/console/member")
def member_home(console: ConsoleSession) -> Response:
    """Who is signed in, in which role, and the pages that role may use."""
    return console.page("console_member.html")


def _regulator(console: Console) -> None:
    principal = console.principal
    if not principal.is_member or principal.role is not Role.REGULATOR:
        raise PermissionDeniedError(
            "this page is for consortium members signed in as regulator", code="member_required"
        )


@router.get("/console/member/holds")
def regulator_holds(console: ConsoleSession) -> Response:
    """Archives held here that are on legal hold (placing a regulator hold is signed with the
    regulator's own key: ``archivechain regulator hold``)."""
    _regulator(console)
    holds = console.runtime.regulator.holds(console.principal)
    return console.page("console_holds.html", holds=holds)


@router.get("/console/member/audit")
def audit_page(console: ConsoleSession) -> Response:
    _regulator(console)
    return console.page("console_audit.html", page=None, filters={})


@router.post("/console/member/audit")
def audit_query(console: ConsoleSession, form: ConsoleForm) -> Response:
    """Access events by archive, patient and actor (the filters are posted: a patient id never
    travels in a URL; the node answers with events, never the patient's pseudonym)."""
    _regulator(console)
    filters = {name: form.one(name) for name in ("archive_id", "patient_id", "actor", "days")}
    try:
        days = int(filters["days"] or 30)
    except ValueError:
        days = 30
    page = console.runtime.regulator.access_events(
        console.principal,
        archive_id=filters["archive_id"] or None,
        patient_id=filters["patient_id"] or None,
        actor=filters["actor"] or None,
        since=datetime.now(UTC) - timedelta(days=max(1, min(days, 3660))),
        limit=AUDIT_ROWS,
    )
    filters["patient_id"] = ""  # not echoed back into the page
    return console.page("console_audit.html", page=page, filters=filters)
