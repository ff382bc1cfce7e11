"""Static assets of the web pages, served by the node: nothing comes from a CDN.

Third-party files come from npm packages pinned in ``package.json`` (installed by ``make
install`` into ``node_modules``). Each served file is named here with its package and the exact
version pinned; a package whose installed version differs is not served (404 ``asset_missing``)
rather than served unpinned. The project's own files (``api/web/static``) are served under
``/assets/app/``. Every asset answers with ``Cache-Control: public, max-age=3600`` and
``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

ASSET_PREFIX: Final = "/assets"
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEFAULT_NODE_MODULES: Final = Path(__file__).resolve().parents[2] / "node_modules"
"""``node_modules`` of the source tree (an editable install); set ``web_assets_dir`` otherwise."""


@dataclass(frozen=True)
class VendorAsset:
    """One file of a pinned npm package, served as ``/assets/<name>``."""

    package: str
    version: str
    path: str


VENDOR_ASSETS: Final[dict[str, VendorAsset]] = {
    "swagger-ui/swagger-ui-bundle.js": VendorAsset(
        "swagger-ui-dist", "5.35.0", "swagger-ui-bundle.js"
    ),
    "swagger-ui/swagger-ui.css": VendorAsset("swagger-ui-dist", "5.35.0", "swagger-ui.css"),
    "swagger-ui/favicon-32x32.png": VendorAsset("swagger-ui-dist", "5.35.0", "favicon-32x32.png"),
    "htmx/htmx.min.js": VendorAsset("htmx.org", "2.0.11", "dist/htmx.min.js"),
    "chart.js/chart.umd.js": VendorAsset("chart.js", "4.6.1", "dist/chart.umd.js"),
    # The in-browser verifier's Keccak-256 and secp256k1 (ES modules; the public page's import
    # map sends "@noble/hashes/" and "@noble/curves/" here): the files secp256k1.js and sha3.js
    # import, and nothing else.
    **{
        f"noble-hashes/{name}": VendorAsset("@noble/hashes", "2.0.1", name)
        for name in ("sha3.js", "sha2.js", "hmac.js", "utils.js", "_md.js", "_u64.js")
    },
    **{
        f"noble-curves/{name}": VendorAsset("@noble/curves", "2.0.1", name)
        for name in (
            "secp256k1.js",
            "utils.js",
            "abstract/curve.js",
            "abstract/hash-to-curve.js",
            "abstract/modular.js",
            "abstract/weierstrass.js",
        )
    },
}
"""Every third-party file the pages use (kept in step with ``package.json``)."""

_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def installed_version(node_modules: Path, package: str) -> str | None:
    """The version of ``package`` installed under ``node_modules``, or None."""
    try:
        manifest = json.loads((node_modules / package / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


@lru_cache(maxsize=64)
def _vendor_file(node_modules: Path, name: str) -> Path | None:
    asset = VENDOR_ASSETS.get(name)
    if asset is None or installed_version(node_modules, asset.package) != asset.version:
        return None
    path = node_modules / asset.package / asset.path
    return path if path.is_file() else None


def _app_file(name: str) -> Path | None:
    if "/" in name or name.startswith(".") or not name:
        return None
    path = STATIC_DIR / name
    return path if path.is_file() else None


def _missing(name: str) -> Response:
    return JSONResponse(
        {"code": "asset_missing", "message": f"no asset {name!r} is served by this node"},
        status_code=404,
    )


def _file(path: Path) -> Response:
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return FileResponse(
        path,
        media_type=media_type or "application/octet-stream",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


router = APIRouter(include_in_schema=False)


def node_modules_of(request: Request) -> Path:
    """Where this node reads vendor assets (``web_assets_dir`` or the source tree's)."""
    configured: Path | None = request.app.state.runtime.settings.web_assets_dir
    return (configured or DEFAULT_NODE_MODULES).resolve()


@router.get(ASSET_PREFIX + "/app/{name}")
def app_asset(name: str) -> Response:
    """One of the project's own scripts or style sheets."""
    path = _app_file(name)
    return _file(path) if path is not None else _missing(name)


@router.get(ASSET_PREFIX + "/{name:path}")
def vendor_asset(name: str, request: Request) -> Response:
    """One file of a pinned npm package (only the files listed in ``VENDOR_ASSETS``)."""
    path = _vendor_file(node_modules_of(request), name)
    return _file(path) if path is not None else _missing(name)
