"""Shared test helpers: locations of external test data and the "must not skip in CI" switches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def rfc6962_testdata_dir() -> Path:
    """The RFC 6962 vectors (``../shared/testdata/rfc6962`` unless ARCHIVECHAIN_TESTDATA_DIR says)."""
    override = os.environ.get("ARCHIVECHAIN_TESTDATA_DIR")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "testdata" / "rfc6962"


def require_rfc6962_testdata() -> Path:
    """Return the vector folder, or skip (fail when ARCHIVECHAIN_REQUIRE_TESTDATA=1) if it is absent."""
    folder = rfc6962_testdata_dir()
    if not folder.is_dir():
        reason = f"RFC 6962 test vectors not found at {folder}"
        if _flag("ARCHIVECHAIN_REQUIRE_TESTDATA"):
            pytest.fail(reason + " (ARCHIVECHAIN_REQUIRE_TESTDATA=1 forbids skipping)")
        pytest.skip(reason)
    return folder


def postgres_url() -> str | None:
    """SQLAlchemy URL of the test PostgreSQL server, or None when not configured."""
    return os.environ.get("ARCHIVECHAIN_TEST_POSTGRES_URL") or None
