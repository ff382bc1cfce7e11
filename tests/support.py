"""Shared test helpers: locations of external test data and the "must not skip in CI" switches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from node.runtime import NodeRuntime
    from node.services.archives import NewArchive

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


def open_child_runtime(
    data_dir: str, database_url: str, rpc_url: str, deployment_file: str
) -> NodeRuntime:
    """For a child process of a kill -9 test: the hospital node on an existing data directory and
    database (dev mode, as ``archivechain node run`` opens it), the node's fault point armed from
    ``ARCHIVECHAIN_TEST_FAULT_POINT`` with the same seam, the writer started (no background
    jobs). The caller closes it."""
    from archivechain.node import _install_fault_point
    from node.config import NodeSettings
    from node.runtime import NodeRuntime

    settings = NodeSettings(
        mode="dev",
        name="test-node",
        data_dir=Path(data_dir),
        database_url=database_url,
        rpc_url=rpc_url,
        deployment_file=Path(deployment_file),
    )
    runtime = NodeRuntime.open(settings)
    try:
        _install_fault_point(runtime)
        runtime.start(scheduler=False)
    except BaseException:
        runtime.close()
        raise
    return runtime


def lab_result() -> NewArchive:
    """A LAB record's metadata (a blood count from the LIS), for tests that need any record."""
    from anchoring.events import RecordClass, Sensitivity
    from node.services.archives import NewArchive

    return NewArchive(
        record_class=RecordClass.LAB,
        sensitivity=Sensitivity.NORMAL,
        department="laboratory",
        title="Blood count",
        patient_id="MRN-0042",
        source_system="LIS",
        media_type="text/plain",
    )
