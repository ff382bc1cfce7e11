"""The node-to-node API (``/peer/v1``): only other consortium hospitals call it, with requests
signed by their member key (see ``node.peers``). Forged, replayed, expired or suspended-member
requests are refused with 401 and logged. No business rule lives here."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from anchoring.bundle import bundle_to_json
from anchoring.events import Purpose
from api.authfirst import PEER_DIGEST_SCOPE_KEY
from api.deps import ArchiveIdPath, RuntimeDep
from api.errors import error_responses
from node.errors import InputError
from node.peers import CONTENT_SHA256, CONTENT_SHA256_FORMAT, PEER_PREFIX, PeerAuthError
from node.protocol import WRAPPED_KEY_HEADER
from node.services.notices import NoticeBody

# Not part of the public OpenAPI document: only other nodes call it, authenticated by signature
# (documented in docs/federation.md), never by API key.
router = APIRouter(prefix=PEER_PREFIX, tags=["node-to-node"], include_in_schema=False)


async def peer_sender(request: Request, runtime: RuntimeDep) -> str:
    """The verified sender of a signed node-to-node request (401 otherwise). A request whose
    signature over its announced digest was checked before its body was read
    (``api.authfirst``) is the sender's once its body hashes to that digest."""
    body = await request.body()
    verified = request.scope.get(PEER_DIGEST_SCOPE_KEY)
    if verified is not None:
        sender, digest = verified
        if hashlib.sha256(body).hexdigest() != digest:
            raise PeerAuthError("digest", f"the body does not hash to its {CONTENT_SHA256}")
        return str(sender)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return await run_in_threadpool(
        runtime.peer_verifier.verify, request.method, target, body, request.headers
    )


PeerDep = Annotated[str, Depends(peer_sender)]
PEER_ERRORS = error_responses(401, 404, 409, 503)


@router.get(
    "/archives/{archive_id}/transfer",
    summary="Transfer package (pending recipient only)",
    responses=PEER_ERRORS,
)
def transfer_package(runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath) -> Any:
    return runtime.transfers.transfer_package(sender, archive_id).model_dump(mode="json")


@router.get(
    "/archives/{archive_id}/transfer/terms",
    summary="Search terms of an offered archive, sealed (pending recipient only)",
    responses=PEER_ERRORS,
)
def transfer_terms(runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath) -> Any:
    return runtime.transfers.transfer_terms(sender, archive_id).model_dump(mode="json")


@router.get(
    "/archives/{archive_id}/share",
    summary="Share package (active grantee only)",
    responses=PEER_ERRORS,
)
def share_package(runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath) -> Any:
    return runtime.shares.descriptor(sender, archive_id).model_dump(mode="json")


@router.get(
    "/archives/{archive_id}/shared/versions/{version}",
    summary="Disclosure to an active grantee: wrapped key (header) and ciphertext, logged first",
    response_class=StreamingResponse,
    responses=PEER_ERRORS,
)
def shared_version(
    runtime: RuntimeDep,
    sender: PeerDep,
    archive_id: ArchiveIdPath,
    version: Annotated[int, Path(ge=1, le=1_000_000)],
    purpose: Annotated[Purpose, Query()],
) -> StreamingResponse:
    wrapped, chunks = runtime.shares.disclose_content(sender, archive_id, version, purpose)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={WRAPPED_KEY_HEADER: base64.b64encode(wrapped).decode("ascii")},
    )


@router.get(
    "/archives/{archive_id}/versions/{version}/ciphertext",
    summary="Ciphertext of one version (pending recipient of a transfer only)",
    response_class=StreamingResponse,
    responses=PEER_ERRORS,
)
def ciphertext(
    runtime: RuntimeDep,
    sender: PeerDep,
    archive_id: ArchiveIdPath,
    version: Annotated[int, Path(ge=1, le=1_000_000)],
) -> StreamingResponse:
    chunks: Iterator[bytes] = runtime.transfers.ciphertext(sender, archive_id, version)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.get(
    "/archives/{archive_id}/bundle",
    summary="Proof bundle of the archive (active grantee, logged; or the pending recipient)",
    responses=PEER_ERRORS,
)
def bundle(runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath) -> Any:
    return bundle_to_json(runtime.shares.disclose_bundle(sender, archive_id))


# -- disaster recovery (docs/recovery.md): replicas and log shipping --------------------------

VersionPath = Annotated[int, Path(ge=1, le=1_000_000)]


@router.put(
    "/replicas/{archive_id}/versions/{version}",
    summary="Store the sender's encrypted replica of a version (ciphertext only, within quota)",
    responses=error_responses(400, 401, 409, 413, 503),
)
async def put_replica(
    request: Request,
    runtime: RuntimeDep,
    archive_id: ArchiveIdPath,
    version: VersionPath,
) -> Any:
    """Streamed: the signature covers the announced SHA-256 (``X-ArchiveChain-Content-SHA256``)
    and is checked before a byte is read; the bytes go to the replica store as they arrive and
    must hash to the announced digest (the upload limit applies)."""
    digest = request.headers.get(CONTENT_SHA256, "")
    if not CONTENT_SHA256_FORMAT.fullmatch(digest):
        raise PeerAuthError("unsigned", f"missing or malformed {CONTENT_SHA256}")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    sender = await run_in_threadpool(
        runtime.peer_verifier.verify_digest, request.method, target, digest, request.headers
    )
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            if chunk:
                yield chunk

    return await run_in_threadpool(
        runtime.replica_holder.accept_stream,
        sender,
        archive_id,
        version,
        chunks(),
        digest,
        declared,
    )


@router.get(
    "/replicas/{archive_id}/versions/{version}",
    summary="The sender's own replica (to the custodian that placed it only)",
    response_class=StreamingResponse,
    responses=PEER_ERRORS,
)
def get_replica(
    runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath, version: VersionPath
) -> StreamingResponse:
    chunks = runtime.replica_holder.fetch(sender, archive_id, version)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put(
    "/replicas/{archive_id}/record",
    summary="Store the sender's key record of an archive (KEK-wrapped key, sealed metadata)",
    responses=error_responses(400, 401, 404, 409, 413, 503),
)
async def put_record(
    request: Request, runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath
) -> Any:
    body = await request.body()
    return await run_in_threadpool(runtime.replica_holder.accept_record, sender, archive_id, body)


@router.get(
    "/replicas/{archive_id}/record",
    summary="The sender's own key record of an archive (to that custodian only)",
    responses=PEER_ERRORS,
)
def get_record(runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath) -> Response:
    record = runtime.replica_holder.fetch_record(sender, archive_id)
    return Response(record, media_type="application/json")


@router.post(
    "/replicas/{archive_id}/versions/{version}/challenge",
    summary="Hash a byte range of the sender's replica after a nonce",
    responses=error_responses(400, 401, 404, 503),
)
async def challenge_replica(
    request: Request,
    runtime: RuntimeDep,
    sender: PeerDep,
    archive_id: ArchiveIdPath,
    version: VersionPath,
) -> Any:
    body = await request.body()
    return await run_in_threadpool(runtime.replica_holder.answer, sender, archive_id, version, body)


@router.delete(
    "/replicas/{archive_id}/versions/{version}",
    summary="Delete the sender's replica",
    responses=PEER_ERRORS,
)
def delete_replica(
    runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath, version: VersionPath
) -> Any:
    return runtime.replica_holder.drop(sender, archive_id, version)


@router.post(
    "/log/entries",
    summary="Append shipped entries of the sender's log",
    responses=error_responses(400, 401, 409, 413, 503),
)
async def ship_log(request: Request, runtime: RuntimeDep, sender: PeerDep) -> Any:
    body = await request.body()
    return await run_in_threadpool(runtime.log_shipping.receive, sender, body)


@router.post(
    "/log/truncate",
    summary="Drop the sender's shipped entries past its on-chain checkpoint (after a rebuild)",
    responses=error_responses(400, 401, 409, 503),
)
async def truncate_log(request: Request, runtime: RuntimeDep, sender: PeerDep) -> Any:
    body = await request.body()
    return await run_in_threadpool(runtime.log_shipping.truncate, sender, body)


@router.get(
    "/log/entries",
    summary="Entries of the sender's own log held here (to that hospital only)",
    responses=PEER_ERRORS,
)
def shipped_log(
    runtime: RuntimeDep,
    sender: PeerDep,
    start: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    return runtime.log_shipping.serve(sender, start, limit)


@router.post(
    "/archives/{archive_id}/destruction-notice",
    summary="The custodian tells a grantee it destroyed the archive (custodian on chain only)",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def destruction_notice(
    request: Request, runtime: RuntimeDep, sender: PeerDep, archive_id: ArchiveIdPath
) -> Any:
    """The body is parsed only once the signature over it verified (``sender``)."""
    try:
        body = NoticeBody.model_validate_json(await request.body())
    except ValidationError:
        raise InputError(
            "a destruction notice is {certificate_hash, destroy_event}: lower-case hex64 each",
            code="invalid_notice",
        ) from None
    receipt = await run_in_threadpool(runtime.notices.receive, sender, archive_id, body)
    return {
        "archive_id": receipt.archive_id,
        "recorded": receipt.recorded,
        "key_copies_destroyed": receipt.key_copies_destroyed,
    }
