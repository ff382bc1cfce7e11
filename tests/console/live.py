"""A live HTTP server for browser tests: the real app of a real node, served by uvicorn (the
node's own ``api.server.make_server``) in a thread on a free port; and the Debian chromium that
Playwright drives (``/usr/bin/chromium``, never Playwright's own browser download) with the
axe-core check every browser test runs (``Browser``; the ``browser`` fixture is in conftest)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.main import create_app
from api.server import HttpLimits, make_server
from node.ports import free_port
from node.runtime import NodeRuntime

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
"""Screenshots of each page (gitignored)."""
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
AXE = NODE_MODULES / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = ["--no-sandbox"]


@dataclass(frozen=True)
class Browser:
    """The launched chromium (``new_context``, ``new_page`` as Playwright's ``Browser``) and the
    axe-core check."""

    chromium: Any

    def new_context(self, **options: Any) -> Any:
        return self.chromium.new_context(**options)

    def new_page(self, **options: Any) -> Any:
        return self.chromium.new_page(**options)

    def axe(
        self,
        url: str,
        cookies: Iterable[dict[str, Any]] = (),
        then: Callable[[Any], None] | None = None,
    ) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on ``url`` (after ``then(page)`` if given:
        a click, a wait for what the page's script renders). axe is injected as an inline
        script, which the pages' CSP rightly forbids, so it runs in a second context that
        bypasses the CSP, with ``cookies`` (the signed-in session); the functional steps run
        with the CSP enforced. The findings are printed (shown when the test fails)."""
        context = self.chromium.new_context(bypass_csp=True)
        try:
            cookies = list(cookies)
            if cookies:
                context.add_cookies(cookies)
            page = context.new_page()
            page.goto(url)
            if then is not None:
                then(page)
            page.add_script_tag(path=str(AXE))
            result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
        finally:
            context.close()
        found = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
        if found:
            nodes = [
                [
                    v["id"],
                    [(n["html"][:200], n.get("failureSummary", "")[:300]) for n in v["nodes"][:4]],
                ]
                for v in found
            ]
            print(url, json.dumps(nodes, indent=1))
        return found

    def serious(
        self,
        url: str,
        cookies: Iterable[dict[str, Any]] = (),
        then: Callable[[Any], None] | None = None,
    ) -> list[str]:
        """``axe``'s findings as ``id: help`` lines (empty when the page passes)."""
        return [f"{v['id']}: {v['help']}" for v in self.axe(url, cookies, then)]


@contextmanager
def live_server(node: NodeRuntime, limits: HttpLimits | None = None) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``node`` until exit (``limits``: the server's
    timeouts, the node's defaults unless given)."""
    port = free_port()
    server = make_server(
        create_app(node), host="127.0.0.1", port=port, limits=limits or HttpLimits()
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
