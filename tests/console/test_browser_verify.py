"""The public verification page in a real browser (Debian chromium driven by Playwright): the
in-browser verifier (WebCrypto SHA-256, eth_call over JSON-RPC to the real anvil, which must
allow the page's origin: CORS) agrees with ``archivechain verify`` on a genuine bundle (VALID,
each step shown) and on tampered ones (INVALID, same failure code); the public proof of the
page verifies; no serious or critical axe-core violations; screenshots saved."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import archive_metadata, issue_keys, real_pdf
from tests.console.live import ARTIFACTS, CHROMIUM, NODE_MODULES, live_server
from tests.fixtures.node import MakeNode

playwright_api = pytest.importorskip("playwright.sync_api")

if not CHROMIUM.exists():  # .ci/run installs it; a developer without it is told, not failed
    pytest.skip("needs Debian chromium at /usr/bin/chromium", allow_module_level=True)

AXE = NODE_MODULES / "axe-core" / "axe.min.js"


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def axe_violations(browser: Any, url: str, click: str | None = None) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page at ``url`` (after clicking ``click``
    and waiting for the verifier's outcome). axe-core is injected as an inline script, which the
    page's own CSP forbids, so this page alone is opened with CSP bypassed."""
    context = browser.new_context(bypass_csp=True)
    try:
        page = context.new_page()
        page.goto(url)
        if click is not None:
            page.click(click)
            page.wait_for_selector("#outcome[data-outcome]", timeout=30_000)
        page.add_script_tag(path=str(AXE))
        result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
        return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    finally:
        context.close()


def cli_verify(bundle: Path, rpc_url: str, notary: str) -> dict[str, Any]:
    """``archivechain verify --json`` on ``bundle`` (the reference verifier, as a user runs it)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "archivechain",
            "verify",
            str(bundle),
            "--rpc",
            rpc_url,
            "--notary",
            notary,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    line["exit"] = result.returncode
    return line


def browser_verify(page: Any, bundle: Path) -> dict[str, str]:
    page.set_input_files("#bundle-file", str(bundle))
    page.wait_for_selector("#outcome[data-outcome]", timeout=30_000)
    outcome = page.locator("#outcome")
    return {
        "outcome": outcome.get_attribute("data-outcome") or "",
        "code": outcome.get_attribute("data-code") or "",
        "text": outcome.inner_text(),
    }


def _tamper_event(document: dict[str, Any], position: int) -> dict[str, Any]:
    """Change the time of one event (still canonical JSON): its leaf hash changes."""
    copy = json.loads(json.dumps(document))
    event = json.loads(base64.b64decode(copy["entries"][position]["event"]))
    event["time"] = event["time"].replace("T", "T", 1)[:-2] + "9Z"
    raw = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    copy["entries"][position]["event"] = base64.b64encode(raw).decode()
    return copy


def _tamper_root(document: dict[str, Any], position: int) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    root = copy["entries"][position]["checkpoint"]["root"]
    copy["entries"][position]["checkpoint"]["root"] = ("0" if root[0] != "0" else "1") + root[1:]
    return copy


def test_browser_verifier_agrees_with_the_cli(
    make_node: MakeNode, browser: Any, tmp_path: Path
) -> None:
    import httpx

    node = make_node()
    keys = issue_keys(node)
    auth = {"Authorization": f"Bearer {keys['archivist']}"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(node) as base, httpx.Client(base_url=base, timeout=30) as http:
        created = http.post(
            "/api/v1/archives",
            headers=auth,
            files={"file": ("s.pdf", real_pdf(), "application/pdf")},
            data={"metadata": json.dumps(archive_metadata())},
        )
        assert created.status_code == 201, created.text
        archive_id = created.json()["id"]
        assert http.post(f"/api/v1/archives/{archive_id}/archive", headers=auth).status_code == 200
        node.worker.run_until_anchored(timeout=30)
        bundle = http.get(f"/api/v1/archives/{archive_id}/proof", headers=auth)
        assert bundle.status_code == 200, bundle.text
        document = json.loads(bundle.content)
        notary = document["notary"]
        rpc = node.settings.rpc_url

        page = browser.new_page()
        page.goto(f"{base}/v/{archive_id}?lang=en")
        assert page.locator("h1").inner_text() == "Public archive verification"

        # the node's public proof (ARCHIVE event only), verified in the page
        page.click("#verify-here")
        page.wait_for_selector("#outcome[data-outcome]", timeout=30_000)
        assert page.locator("#outcome").get_attribute("data-outcome") == "VALID"
        steps = page.locator("#steps li").all_inner_texts()
        assert any("eth_chainId" in s for s in steps)
        assert any("leaf hash SHA-256(0x00 ‖ event)" in s for s in steps)
        assert any("inclusion proof" in s for s in steps)
        assert any("eth_call checkpointAt" in s for s in steps)
        assert any("on-chain checkpoint agrees" in s for s in steps)
        page.screenshot(path=str(ARTIFACTS / "public-valid-en.png"), full_page=True)
        assert axe_violations(browser, f"{base}/v/{archive_id}?lang=en", "#verify-here") == []

        cases = {
            "genuine": document,
            "event_tampered": _tamper_event(document, 1),
            "root_tampered": _tamper_root(document, 0),
            "other_notary": {**document, "notary": "0x" + "11" * 20},
        }
        for name, doc in cases.items():
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(doc))
            reference = cli_verify(path, rpc, notary)
            seen = browser_verify(page, path)
            if name == "genuine":
                assert reference["exit"] == 0, reference
                assert seen["outcome"] == "VALID", seen
            else:
                assert reference["exit"] == 1, reference
                code = reference["failure"]["code"]
                assert seen["outcome"] == "INVALID", (name, seen, reference)
                assert seen["code"] == code, (name, seen, reference)
                assert code in seen["text"]
            if name == "event_tampered":
                page.screenshot(path=str(ARTIFACTS / "public-invalid-en.png"), full_page=True)

        zh = browser.new_page()
        zh.goto(f"{base}/v/{archive_id}")
        assert zh.locator("html").get_attribute("lang") == "zh-CN"
        zh.click("#verify-here")
        zh.wait_for_selector("#outcome[data-outcome]", timeout=30_000)
        assert "有效" in zh.locator("#outcome").inner_text()
        zh.screenshot(path=str(ARTIFACTS / "public-valid-zh.png"), full_page=True)
        assert axe_violations(browser, f"{base}/v/{archive_id}", "#verify-here") == []
        assert axe_violations(browser, f"{base}/docs") == []
