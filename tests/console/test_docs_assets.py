"""``/docs`` is Swagger UI from the node's own, pinned assets: every script, style sheet and
image it references is same-origin and served; nothing points at a CDN."""

from __future__ import annotations

import json
import re
from pathlib import Path

from api.web.assets import DEFAULT_NODE_MODULES, VENDOR_ASSETS, installed_version
from tests.api.conftest import Api

ROOT = Path(__file__).resolve().parents[2]


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_references_only_same_origin_assets_and_each_is_served(api: Api) -> None:
    response = api.client.get("/docs")
    assert response.status_code == 200
    html = response.text
    assert "cdn" not in html.lower()
    assert "//" not in "".join(_references(html))
    refs = _references(html)
    assert "/assets/swagger-ui/swagger-ui-bundle.js" in refs
    assert "/assets/swagger-ui/swagger-ui.css" in refs
    for ref in refs:
        assert ref.startswith("/"), ref
        served = api.client.get(ref)
        assert served.status_code == 200, ref
        assert served.headers["x-content-type-options"] == "nosniff"
        assert len(served.content) > 0
    bundle = api.client.get("/assets/swagger-ui/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    init = api.client.get("/assets/app/swagger-init.js").text
    assert "/openapi.json" not in init
    assert "validatorUrl: null" in init
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert api.client.get("/openapi.json").status_code == 200
    assert api.client.get("/redoc").status_code == 404  # CDN-only, switched off


def test_only_listed_pinned_files_are_served(api: Api) -> None:
    # Another file of the same package, a path escape, an unknown app file: all 404.
    for path in (
        "/assets/swagger-ui-dist/package.json",
        "/assets/swagger-ui/../../package.json",
        "/assets/app/..%2Fpublic.py",
        "/assets/app/nothing.js",
    ):
        response = api.client.get(path)
        assert response.status_code == 404, path
    assert api.client.get("/assets/app/../public.py").status_code == 404


def test_served_versions_are_the_ones_pinned_in_package_json() -> None:
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for asset in VENDOR_ASSETS.values():
        assert pins[asset.package] == asset.version, asset.package
        assert installed_version(DEFAULT_NODE_MODULES, asset.package) == asset.version
