"""``/v/{archive id}``: the public verification page, and ``/v/{id}/proof.json``, its proof.

No sign-in: anyone who scans an archive's QR label lands here. The page shows only the facts of
``node.services.public`` (never a title or patient data) and lets the visitor verify, in the
browser (``/assets/app/verify.js``), that the archive's ``ARCHIVE`` event is in the hospital's
log and that the log's checkpoint is on chain. ``?c=`` (the commitment prefix printed on the
label) is compared with the archive's; ``?lang=en`` switches to English.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.web import i18n
from api.web.security import origin_of, page_headers
from api.web.templating import render
from node.errors import NotFoundError
from node.runtime import NodeRuntime

PUBLIC_PROOF_FORMAT = "archivechain.public-proof/v1"

router = APIRouter(include_in_schema=False)


def _runtime(request: Request) -> NodeRuntime:
    runtime: NodeRuntime = request.app.state.runtime
    return runtime


def browser_rpc_url(runtime: NodeRuntime) -> str:
    """The chain endpoint browsers use (``public_rpc_url``, else ``rpc_url``)."""
    return runtime.settings.public_rpc_url or runtime.settings.rpc_url


def _headers(runtime: NodeRuntime) -> dict[str, str]:
    origin = origin_of(browser_rpc_url(runtime))
    return page_headers(connect=[origin] if origin else [])


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
    )
    return HTMLResponse(html, headers=_headers(runtime))


@router.get("/v/{archive_id}/proof.json")
def public_proof(archive_id: str, request: Request) -> Response:
    """The archive's published events (``ARCHIVE``, ``DESTROY``) with their inclusion proofs, in
    the entry shape of ``archivechain.proof/v1`` (docs/console.md)."""
    runtime = _runtime(request)
    try:
        facts = runtime.public.facts(archive_id)
        entries = runtime.public.published_entries(archive_id)
    except NotFoundError as exc:
        return JSONResponse({"code": exc.code, "message": str(exc)}, status_code=404)
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
    return JSONResponse(document, headers={"Cache-Control": "no-store"})
