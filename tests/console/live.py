"""A live HTTP server for browser tests: the real app of a real node, served by uvicorn (the
node's own ``api.server.make_server``) in a thread on a free port; and the Debian chromium that
Playwright drives (``/usr/bin/chromium``, never Playwright's own browser download)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from api.main import create_app
from api.server import HttpLimits, make_server
from node.runtime import NodeRuntime

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
"""Screenshots of each page (gitignored)."""
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def live_server(node: NodeRuntime) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``node`` until exit."""
    port = free_port()
    server = make_server(create_app(node), host="127.0.0.1", port=port, limits=HttpLimits())
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
