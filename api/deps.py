"""Request dependencies: the node runtime and the authenticated caller.

``PrincipalDep`` reads ``Authorization: Bearer <api key>`` and asks ``runtime.keys.authenticate``
(a member token, ``acm_…``, goes to ``runtime.signin.authenticate`` instead; ``RegulatorDep`` and
``InsurerDep`` require a signed-in member of that role);
a missing, malformed, unknown or revoked key is an ``AuthenticationError`` (401 with
``WWW-Authenticate: Bearer``, see ``api.errors``). The dependencies are plain functions, so
FastAPI runs the database lookup in its thread pool, not on the event loop. A request with a body
was already authenticated by ``api.authfirst`` before its body was read; the principal it found is
reused, so each request is authenticated once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.schemas import ARCHIVE_ID_PATTERN
from node.errors import AuthenticationError, PermissionDeniedError
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.signin import TOKEN_PREFIX
from node.services.status import StatusService

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key issued by the node's admin (`POST /api/v1/keys` or the CLI).",
)


def get_runtime(request: Request) -> NodeRuntime:
    """The node this app serves (set by ``api.main.create_app``)."""
    runtime: NodeRuntime = request.app.state.runtime
    return runtime


def get_status_service(request: Request) -> StatusService:
    """The node's status service (built once per app)."""
    status: StatusService = request.app.state.status
    return status


RuntimeDep = Annotated[NodeRuntime, Depends(get_runtime)]
StatusDep = Annotated[StatusService, Depends(get_status_service)]


PRINCIPAL_SCOPE_KEY = "archivechain.principal"
"""Where ``api.authfirst`` leaves the principal it authenticated in the ASGI scope."""


def authenticate(
    runtime: NodeRuntime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller behind a bearer key; ``AuthenticationError`` (401) for anything else."""
    if credentials is None:
        raise AuthenticationError(
            "an API key is required: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    secret = credentials.credentials.strip()
    if secret.startswith(TOKEN_PREFIX):  # a consortium member signed in with EIP-4361
        return runtime.signin.authenticate(secret)
    return runtime.keys.authenticate(secret)


def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller behind the bearer key (authenticated before the body when there is one)."""
    known = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if isinstance(known, Principal):
        return known
    return authenticate(runtime, credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_member_role(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency: the caller must be a consortium member signed in with one of ``roles``
    (403 ``member_required`` otherwise); e.g. ``Depends(require_member_role(Role.REGULATOR))``."""

    def dependency(principal: PrincipalDep) -> Principal:
        if not principal.is_member or principal.role not in roles:
            raise PermissionDeniedError(
                "this route is for consortium members signed in as "
                + " or ".join(role.value for role in roles),
                code="member_required",
            )
        return principal

    return dependency


RegulatorDep = Annotated[Principal, Depends(require_member_role(Role.REGULATOR))]
"""A regulator signed in with its member key."""
InsurerDep = Annotated[Principal, Depends(require_member_role(Role.INSURER))]
"""An insurer signed in with its member key."""


def single_valued_query(request: Request) -> None:
    """Refuse (422) a query parameter given more than once: every parameter of this API is a single
    value, and silently keeping one of several (``?limit=1&limit=500``) hides client mistakes."""
    counts: dict[str, int] = {}
    for key, _ in request.query_params.multi_items():
        counts[key] = counts.get(key, 0) + 1
    repeated = [key for key, count in counts.items() if count > 1]
    if repeated:
        raise RequestValidationError(
            [
                {"loc": ("query", key), "msg": "must be given at most once", "type": "repeated"}
                for key in repeated
            ]
        )


ArchiveIdPath = Annotated[
    str,
    Path(
        pattern=ARCHIVE_ID_PATTERN,
        description="Archive id (ULID, 26 characters).",
        examples=["01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"],
    ),
]
"""The archive id in a route's path: the one rule every route applies (an id that is not a ULID is
refused with 422 before any lookup)."""
