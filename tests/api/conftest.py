"""API test fixtures: the real app over a real node (real anvil, SQLite and PostgreSQL, local blob
store), driven over HTTP through the ASGI interface (``httpx.AsyncClient`` on
``httpx.ASGITransport``, run from synchronous tests through an anyio blocking portal, so tests
can call the node's blocking services between requests).

Fixtures:
- ``api`` (function, parametrised over both databases): an ``Api`` with the client, the node and one
  API key per caller kind (``archivist``, ``cardiologist`` and ``oncologist`` clinicians,
  ``auditor``, ``admin``). The node accepts at most ``UPLOAD_LIMIT`` bytes per upload and
  encrypts in ``CHUNK_SIZE`` chunks, so limit and multi-chunk paths are cheap to reach.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.types import ASGIApp

from anchoring import storage
from api.main import create_app
from node.models import Archive, ArchiveVersion, WrappedKey
from node.principal import Role
from node.runtime import NodeRuntime
from tests.fixtures.node import MakeNode

UPLOAD_LIMIT = 64 * 1024
CHUNK_SIZE = 4096


def real_pdf(lines: int = 480) -> bytes:
    """A small, valid one-page PDF (it passes 四性检测's strict pypdf check), written byte by byte
    so every process builds the same bytes; its content stream draws ``lines`` lines."""
    drawing = b"".join(b"%d 100 m %d 700 l S\n" % (i % 500, i % 500) for i in range(lines))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(drawing) + drawing + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


PDF = real_pdf()  # a real PDF of 10.5 KiB: 3 chunks of CHUNK_SIZE


def archive_metadata(**overrides: Any) -> dict[str, Any]:
    """Valid upload metadata (cardiology, inpatient), with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "record_class": "INPATIENT",
        "sensitivity": "NORMAL",
        "department": "cardiology",
        "title": "Discharge summary",
        "patient_id": "MRN-0001",
        "source_system": "HIS",
        "trigger_date": "2024-05-02",
        "metadata": {"ward": "5B", "visit": 3},
    }
    fields.update(overrides)
    return fields


class Client:
    """A synchronous face on ``httpx.AsyncClient(transport=ASGITransport(app))``."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request to the app and return the complete response."""
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def start(self, method: str, url: str, **kwargs: Any) -> Future[httpx.Response]:
        """Send one request without waiting for its answer (the test thread goes on)."""
        return self._portal.start_task_soon(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@contextmanager
def serve(app: ASGIApp) -> Iterator[Client]:
    """A ``Client`` for ``app`` (its event loop runs in a portal thread until exit)."""
    with start_blocking_portal() as portal:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://node.test")
        try:
            yield Client(portal, client)
        finally:
            portal.call(client.aclose)


@dataclass(frozen=True)
class Footprint:
    """What a request may leave behind: blobs, rows and log entries."""

    blobs: frozenset[str]
    archives: int
    versions: int
    wrapped_keys: int
    log_size: int


@dataclass
class Api:
    """The app under test and the callers' keys."""

    node: NodeRuntime
    app: FastAPI
    client: Client
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of caller ``who``."""
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def upload(
        self,
        who: str = "archivist",
        *,
        content: bytes = PDF,
        media_type: str = "application/pdf",
        filename: str = "summary.pdf",
        metadata: dict[str, Any] | str | None = None,
    ) -> httpx.Response:
        """``POST /api/v1/archives`` with one file part and the metadata field."""
        meta = metadata if metadata is not None else archive_metadata()
        text = meta if isinstance(meta, str) else json.dumps(meta)
        return self.client.post(
            "/api/v1/archives",
            headers=self.auth(who),
            files={"file": (filename, content, media_type)},
            data={"metadata": text},
        )

    def create(self, who: str = "archivist", **metadata: Any) -> dict[str, Any]:
        """Upload a valid archive and return its JSON (asserting 201)."""
        response = self.upload(who, metadata=archive_metadata(**metadata))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def footprint(self) -> Footprint:
        """Current blobs (files under the blob dir), rows and log size."""
        blob_dir = self.node.settings.blob_dir
        blobs = frozenset(
            str(p.relative_to(blob_dir)) for p in Path(blob_dir).rglob("*") if p.is_file()
        )
        with self.node.db.session() as session:
            archives = session.execute(select(func.count()).select_from(Archive)).scalar_one()
            versions = session.execute(
                select(func.count()).select_from(ArchiveVersion)
            ).scalar_one()
            wrapped = session.execute(select(func.count()).select_from(WrappedKey)).scalar_one()
            log_size = storage.current_size(session)
        return Footprint(blobs, archives, versions, wrapped, log_size)


def issue_keys(node: NodeRuntime) -> dict[str, str]:
    """One key per caller kind used by the tests."""
    return {
        "archivist": node.keys.issue(Role.ARCHIVIST, "archivist-1").secret,
        "cardiologist": node.keys.issue(Role.CLINICIAN, "dr-heart", "cardiology").secret,
        "oncologist": node.keys.issue(Role.CLINICIAN, "dr-onco", "oncology").secret,
        "auditor": node.keys.issue(Role.AUDITOR, "auditor-1").secret,
        "admin": node.keys.issue(Role.ADMIN, "admin-1").secret,
    }


@pytest.fixture
def api_node(make_node: MakeNode, database_url: str) -> NodeRuntime:
    """A node with a small upload limit and small encryption chunks (both databases)."""
    return make_node(
        database_url=database_url, max_upload_bytes=UPLOAD_LIMIT, chunk_size=CHUNK_SIZE
    )


@pytest.fixture
def api(api_node: NodeRuntime) -> Iterator[Api]:
    """The app over ``api_node`` with a client and one key per caller kind."""
    with serve_api(api_node) as served:
        yield served


@contextmanager
def serve_api(node: NodeRuntime) -> Iterator[Api]:
    """What the ``api`` fixture gives, over a node a test built itself (``make_node``)."""
    app = create_app(node)
    with serve(app) as client:
        yield Api(node=node, app=app, client=client, keys=issue_keys(node))
