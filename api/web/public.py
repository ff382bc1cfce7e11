"""``/v/{archive id}``: the public verification page, and ``/v/{id}/proof.json``, its proof.

No sign-in: anyone who scans an archive's QR label lands here. The page shows only the facts of
``node.services.public`` (never a title or patient data) and lets the visitor verify, in the
browser (``/assets/app/verify.js``), that the archive's ``ARCHIVE`` event is in the hospital's
log and that the log's checkpoint is on chain. ``?c=`` (the commitment prefix printed on the
label) is compared with the archive's; ``?lang=en`` switches to English.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from anchoring.bundle import PUBLIC_PROOF_FORMAT
from api.web import i18n
from api.web.security import origin_of, page_headers
from api.web.templating import render
from node.errors import NotFoundError
from node.runtime import NodeRuntime

router = APIRouter(include_in_schema=False)


def _runtime(request: Request) -> NodeRuntime:
    runtime: NodeRuntime = request.app.state.runtime
    return runtime


def browser_rpc_url(runtime: NodeRuntime) -> str:
    """The chain endpoint browsers use (``public_rpc_url``, else ``rpc_url``)."""
    return runtime.settings.public_rpc_url or runtime.settings.rpc_url


IMPORT_MAP: Final = json.dumps(
    {
        "imports": {
            "@noble/hashes/": "/assets/noble-hashes/",
            "@noble/curves/": "/assets/noble-curves/",
        }
    },
    separators=(",", ":"),
)
"""The verifier's import map (inline: browsers load no external import map), allowed by the
page's CSP by its exact hash, ``IMPORT_MAP_SHA256``."""
IMPORT_MAP_SHA256: Final = base64.b64encode(hashlib.sha256(IMPORT_MAP.encode()).digest()).decode()


def _headers(runtime: NodeRuntime) -> dict[str, str]:
    origin = origin_of(browser_rpc_url(runtime))
    return page_headers(connect=[origin] if origin else [], script_hashes=[IMPORT_MAP_SHA256])


@router.get("/v/{archive_id}", response_class=HTMLResponse)
def public_page(
    archive_id: str,
    request: Request,
    lang: Annotated[str | None, Query(max_length=2)] = None,
    c: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The safe facts of one archive and the in-browser verifier."""
    runtime = _runtime(request)
    language = i18n.pick(lang)
    t = i18n.words(language)
    try:
        facts = runtime.public.facts(archive_id)
    except NotFoundError:
        html = render("not_found.html", lang=language, t=t)
        return HTMLResponse(html, status_code=404, headers=_headers(runtime))
    label = None
    if c is not None and facts.commitment_prefix is not None:
        label = c.strip().lower() == facts.commitment_prefix
    extra = f"&c={facts.commitment_prefix}" if c is not None and facts.commitment_prefix else ""
    html = render(
        "public.html",
        lang=language,
        t=t,
        facts=facts,
        label=label,
        extra_query=extra,
        rpc_url=browser_rpc_url(runtime),
        script_text=i18n.script_words(language),
        import_map=IMPORT_MAP,
    )
    return HTMLResponse(html, headers=_headers(runtime))


@router.get("/v/{archive_id}/proof.json")
def public_proof(archive_id: str, request: Request) -> Response:
    """The archive's public proof (``archivechain.public-proof/v1``, docs/proof-format.md §11):
    its published events (``ARCHIVE``, ``DESTROY``) with their inclusion proofs, and the signed
    destruction certificate once destroyed; ``409 proof_pending`` before ARCHIVE is anchored."""
    runtime = _runtime(request)
    try:
        facts = runtime.public.facts(archive_id)
        entries = runtime.public.published_entries(archive_id)
    except NotFoundError as exc:
        return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=404)
    if not entries:
        message = f"archive {facts.archive_id} has no anchored ARCHIVE event yet"
        return JSONResponse(
            {"code": "proof_pending", "message": message},
            status_code=409,
            headers={"Cache-Control": "no-store"},
        )
    document: dict[str, Any] = {
        "format": PUBLIC_PROOF_FORMAT,
        "archive_id": facts.archive_id,
        "chain_id": facts.chain_id,
        "notary": facts.notary,
        "entries": [
            {
                "hospital": e.hospital,
                "log_index": e.log_index,
                "event": base64.b64encode(e.event).decode("ascii"),
                "proof": [h.hex() for h in e.proof],
                "checkpoint": {
                    "hospital": e.checkpoint.hospital,
                    "index": e.checkpoint.index,
                    "size": e.checkpoint.size,
                    "root": e.checkpoint.root.hex(),
                },
            }
            for e in entries
        ],
    }
    destroyed = any(_event_type(e.event) == "DESTROY" for e in entries)
    if destroyed and facts.certificate_bytes is not None and facts.certificate_signature:
        document["certificate"] = {
            "document": base64.b64encode(facts.certificate_bytes).decode("ascii"),
            "signature": facts.certificate_signature,
        }
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


def _event_type(event: bytes) -> str | None:
    try:
        value = json.loads(event)
    except ValueError:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None
