"""Console and public-page tests reuse the API fixtures: the real app over a real node (real
anvil, both databases, local blob store), over HTTP through the ASGI interface. The browser
tests (``test_browser_*``) share one ``browser`` fixture: Debian chromium launched through
Playwright, with the axe-core check (``tests.console.live.Browser``)."""

import importlib.util
from collections.abc import Iterator

import pytest

from tests.api.conftest import api, api_node  # noqa: F401  (fixtures)
from tests.console.live import CHROMIUM, CHROMIUM_ARGS, Browser


def browser_missing() -> str | None:
    """Why no browser test can run here (None when Playwright and chromium are both there)."""
    if importlib.util.find_spec("playwright") is None:
        return "needs Playwright (pip package playwright)"
    if not CHROMIUM.exists():  # .ci/run installs it
        return f"needs Debian chromium at {CHROMIUM}"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using ``browser`` are skipped before their other fixtures (a node, anvil) are built
    when the browser is missing: a developer without it is told, not failed."""
    missing = browser_missing()
    if missing is None:
        return
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=missing))


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium (``/usr/bin/chromium``, never Playwright's own download), closed after
    the test; skipped, not failed, where Playwright or chromium is missing (.ci/run installs
    both)."""
    missing = browser_missing()
    if missing is not None:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Browser(chromium)
        finally:
            chromium.close()
