"""Member sign-in (EIP-4361): challenge, verify, who-am-i, sign-out; admins list and revoke member
tokens. docs/regulators.md specifies the protocol."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import PrincipalDep, RuntimeDep
from api.errors import error_responses
from api.schemas import ChallengeOut, MemberTokenOut, SigninIn, TokenOut, WhoAmIOut
from node.services.signin import NODE_ROLES, ROLE_RESOURCE

router = APIRouter(prefix="/auth", tags=["sign-in"])


@router.post(
    "/challenge",
    response_model=ChallengeOut,
    summary="Start a member sign-in: a fresh nonce and the message's required values",
    description="No authentication. The nonce is stored and answerable once until `expires_at`.",
    responses=error_responses(503),
)
def challenge(runtime: RuntimeDep) -> ChallengeOut:
    c = runtime.signin.challenge()
    roles = [r.name.lower() for r in NODE_ROLES if r.name in runtime.settings.signin_roles]
    return ChallengeOut(
        nonce=c.nonce,
        domain=c.domain,
        uri=c.uri,
        chain_id=c.chain_id,
        version=c.version,
        statement=c.statement,
        issued_at=c.issued_at,
        expires_at=c.expires_at,
        audience=c.audience,
        resources=[ROLE_RESOURCE + role for role in roles],
    )


@router.post(
    "/verify",
    response_model=TokenOut,
    summary="Finish a member sign-in: the signed EIP-4361 message for a token",
    description=(
        "No API key: the signature authenticates. Refusals: 400 `invalid_siwe_message`, "
        "`expiration_required`, `role_required`; 401 `wrong_domain`, `wrong_uri`, "
        "`wrong_chain`, `message_expired`, `message_not_yet_valid`, `invalid_signature`, "
        "`unknown_nonce`, `nonce_used`, `nonce_expired`; 403 `not_member`, "
        "`member_not_active`, `wrong_role`; 503 when the registry cannot be read."
    ),
    responses=error_responses(400, 401, 403, 413, 422, 503),
)
def verify(runtime: RuntimeDep, body: SigninIn) -> TokenOut:
    issued = runtime.signin.verify(body.message, body.signature)
    return TokenOut(
        token=issued.token,
        jti=issued.jti,
        sub=issued.member,
        role=issued.role,
        aud=issued.audience,
        iat=issued.issued_at,
        exp=issued.expires_at,
    )


@router.get(
    "/whoami",
    response_model=WhoAmIOut,
    summary="The caller as this node sees it (API key or member token)",
    responses=error_responses(401, 403, 422, 503),
)
def whoami(principal: PrincipalDep) -> WhoAmIOut:
    return WhoAmIOut(
        name=principal.name,
        role=principal.role.value,
        actor=principal.actor,
        department=principal.department,
        member=principal.member,
        member_role=principal.member_role,
        token_id=principal.token_id,
    )


@router.post(
    "/logout",
    status_code=204,
    summary="Revoke the member token used for this request",
    responses=error_responses(400, 401, 403, 422, 503),
)
def logout(runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.signin.logout(principal)
    return Response(status_code=204)


@router.get(
    "/tokens",
    response_model=list[MemberTokenOut],
    summary="Member tokens issued (newest first, at most 500; never the token itself)",
    description="Role: admin.",
    responses=error_responses(400, 401, 403, 422, 503),
)
def list_tokens(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    member: Annotated[str | None, Query(max_length=42, description="Only this member.")] = None,
) -> list[MemberTokenOut]:
    return [MemberTokenOut.model_validate(row) for row in runtime.signin.tokens(principal, member)]


@router.delete(
    "/tokens/{jti}",
    status_code=204,
    summary="Revoke a member token (idempotent)",
    description="Role: admin.",
    responses=error_responses(401, 403, 404, 422, 503),
)
def revoke_token(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    jti: Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$", description="The token id.")],
) -> Response:
    runtime.signin.revoke(principal, jti)
    return Response(status_code=204)
