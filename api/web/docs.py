"""``/docs``: Swagger UI from the node's own assets (``swagger-ui-dist``, pinned), not a CDN.

FastAPI's default page loads Swagger UI from a CDN and runs an inline script, so on an isolated
hospital network it stays blank. This page links the pinned package's files under ``/assets`` and
starts Swagger UI from ``/assets/app/swagger-init.js``. ReDoc (``/redoc``), also CDN-only, is
switched off.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.web.security import page_headers

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ArchiveChain hospital node API</title>
<link rel="icon" type="image/png" href="/assets/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="/assets/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="/assets/app/swagger-fixes.css">
</head>
<body>
<main id="swagger-ui" data-openapi-url="/openapi.json"></main>
<script src="/assets/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/assets/app/swagger-init.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """The interactive API documentation, every asset same-origin."""
    return HTMLResponse(DOCS_HTML, headers=page_headers(inline_styles=True))
