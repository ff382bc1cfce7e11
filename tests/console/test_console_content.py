"""Reading a record's content from the console (``POST /console/archives/{id}/content``), over
HTTP through the ASGI app on a real node with a cold tier (real files, both databases): the read
goes through the same service calls as ``GET /api/v1/archives/{id}/content`` — the ACCESS event
with the purpose, and ``record_read``, which keeps the archive's last access and the tier it was
served from — so the idle-time tier policy sees console reads: a read archive stays hot, an
unread one goes cold, a cold one read from the console is recalled. Refused reads (signed out,
no CSRF token, another origin, no purpose, an auditor, hostile bodies) log nothing and leave the
last access unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from anchoring.events import RecordClass, Sensitivity
from api.main import create_app
from node.blobstore.tiered import TieredBlobStore
from node.models import ArchiveTier, ArchiveVersion, ContentRead
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from tests.api.conftest import Client, serve
from tests.fixtures.node import MakeNode

CONTENT = b"inpatient record, read from the console now and then " * 300


@pytest.fixture
def tiered(make_node: MakeNode, database_url: str, tmp_path: Path) -> NodeRuntime:
    """A node whose INPATIENT records go cold at once unless read within a day."""
    node = make_node(
        database_url=database_url,
        cold_blob_dir=tmp_path / "cold",
        tier_cold_after_days={"INPATIENT": 0},
        tier_cold_idle_days={"INPATIENT": 1},
    )
    assert isinstance(node.blobs, TieredBlobStore)
    return node


@pytest.fixture
def client(tiered: NodeRuntime) -> Iterator[Client]:
    with serve(create_app(tiered)) as http:
        yield http


def _archived(
    node: NodeRuntime, who: Principal, content: bytes, trigger: date | None = None
) -> str:
    new = NewArchive(
        record_class=RecordClass.INPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="cardiology",
        title="Discharge summary",
        patient_id="MRN-CONTENT",
        source_system="HIS",
        media_type="text/plain",
        filename="summary.txt",
        trigger_date=trigger,
    )
    created = node.archives.create(who, new, [content])
    node.archives.archive(who, created.id)
    return str(created.id)


def _sign_in(client: Client, key: str) -> dict[str, str]:
    answer = client.post("/console/login", data={"api_key": key, "lang": "en"})
    assert answer.status_code == 303, answer.text
    match = re.match(r"ac_session=([^;]+)", answer.headers["set-cookie"])
    assert match
    return {"ac_session": match.group(1)}


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _last_access(node: NodeRuntime, archive_id: str) -> object:
    with node.db.session() as session:
        row = session.get(ArchiveTier, archive_id)
        return None if row is None else row.last_access_at


def _reads(node: NodeRuntime) -> list[tuple[str, str, str | None, bool]]:
    with node.db.session() as session:
        return [
            (r.archive_id, r.purpose, r.tier, r.completed)
            for r in session.execute(select(ContentRead).order_by(ContentRead.id)).scalars()
        ]


def _content_accesses(node: NodeRuntime, who: Principal, archive_id: str) -> list[str]:
    return [
        str(e.event["data"]["purpose"])
        for e in node.archives.events(who, archive_id)
        if e.event_type == "ACCESS" and e.event["data"]["scope"] == "content"
    ]


def test_console_reads_keep_the_last_access_the_tier_policy_uses(
    tiered: NodeRuntime, client: Client
) -> None:
    node = tiered
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    read = _archived(node, archivist, CONTENT)
    unread = _archived(node, archivist, CONTENT + b"!")
    blobs = node.blobs
    assert isinstance(blobs, TieredBlobStore)
    with node.db.session() as session:
        cids = dict(session.execute(select(ArchiveVersion.archive_id, ArchiveVersion.cid)).all())
    cookies = _sign_in(client, node.keys.issue(Role.ARCHIVIST, "reader").secret)
    page = client.get(f"/console/archives/{read}", cookies=cookies)
    assert page.status_code == 200
    assert f'action="/console/archives/{read}/content"' in page.text
    token = _csrf(page.text)

    def download(archive_id: str) -> bytes:
        answer = client.post(
            f"/console/archives/{archive_id}/content",
            data={"csrf": token, "purpose": "treatment"},
            cookies=cookies,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-disposition"] == "attachment; filename*=UTF-8''summary.txt"
        assert answer.headers["x-archive-version"] == "1"
        assert answer.headers["content-type"].startswith("text/plain")
        assert "sandbox" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        return answer.content

    assert _last_access(node, read) is None
    assert download(read) == CONTENT
    assert _last_access(node, read) is not None
    assert _reads(node) == [(read, "treatment", "hot", True)]
    assert _content_accesses(node, archivist, read) == ["treatment"]

    # The policy sees the console read: only the unread archive is due and moves cold.
    assert node.tiers.due() == [unread]
    report = node.tiers.tick()
    assert (report.moved, report.problems) == (1, [])
    assert blobs.tier_of(cids[unread]) == "cold"
    assert blobs.tier_of(cids[read]) == "hot"
    assert node.tiers.recalled() == []

    # A console read from cold: transparent, recorded as cold; the policy recalls it.
    assert download(unread) == CONTENT + b"!"
    assert _reads(node)[-1] == (unread, "treatment", "cold", True)
    assert node.tiers.recalled() == [unread]
    back = node.tiers.tick()
    assert (back.moved, back.problems) == (1, [])
    assert blobs.tier_of(cids[unread]) == "hot"

    # An earlier version by number; a missing one is the console's 404 page, nothing recorded.
    reads = len(_reads(node))
    missing = client.post(
        f"/console/archives/{read}/content",
        data={"csrf": token, "purpose": "treatment", "version": "7"},
        cookies=cookies,
    )
    assert missing.status_code == 404
    assert "version_not_found" in missing.text
    assert len(_reads(node)) == reads


def test_refused_console_reads_record_nothing(tiered: NodeRuntime, client: Client) -> None:
    node = tiered
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    archive_id = _archived(node, archivist, CONTENT)
    path = f"/console/archives/{archive_id}/content"
    cookies = _sign_in(client, node.keys.issue(Role.ARCHIVIST, "reader").secret)
    token = _csrf(client.get(f"/console/archives/{archive_id}", cookies=cookies).text)
    good = {"csrf": token, "purpose": "treatment"}

    signed_out = client.post(path, data=good)
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/console/login")
    no_token = client.post(path, data={"purpose": "treatment"}, cookies=cookies)
    assert (no_token.status_code, no_token.json()["code"]) == (403, "csrf_failed")
    cross = client.post(
        path, data=good, cookies=cookies, headers={"Origin": "https://evil.example"}
    )
    assert (cross.status_code, cross.json()["code"]) == (403, "csrf_failed")
    for bad in ({"csrf": token}, {**good, "purpose": "curiosity"}, {**good, "version": "0"}):
        refused = client.post(path, data=bad, cookies=cookies)
        assert refused.status_code == 400, bad
        assert "invalid_input" in refused.text
    huge = client.post(
        path,
        content=b"purpose=treatment&csrf=" + b"x" * (70 * 1024),
        cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    bad_utf8 = client.post(
        path,
        content=b"purpose=treatment&csrf=\xff\xfe",
        cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (bad_utf8.status_code, bad_utf8.json()["code"]) == (400, "invalid_encoding")
    deep = client.post(
        path,
        content=b"[" * 100,
        cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (deep.status_code, deep.json()["code"]) == (400, "json_too_deep")

    # An auditor never reads content: no form on the page, the read refused (403 page).
    auditor = _sign_in(client, node.keys.issue(Role.AUDITOR, "audit").secret)
    page = client.get(f"/console/archives/{archive_id}", cookies=auditor)
    assert page.status_code == 200
    assert 'id="content-form"' not in page.text
    forbidden = client.post(
        path, data={"csrf": _csrf(page.text), "purpose": "audit"}, cookies=auditor
    )
    assert forbidden.status_code == 403

    assert _last_access(node, archive_id) is None
    assert _reads(node) == []
    assert _content_accesses(node, archivist, archive_id) == []


def test_a_destroyed_archive_has_no_content_to_read(tiered: NodeRuntime, client: Client) -> None:
    """After destruction the form is gone and a read is the service's 410 ``destroyed`` on the
    console's error page; nothing is recorded."""
    node = tiered
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    manager = node.keys.authenticate(node.keys.issue(Role.RECORDS_MANAGER, "manager").secret)
    old = (datetime.now(UTC) - timedelta(days=40 * 366)).date()
    archive_id = _archived(node, archivist, CONTENT, old)
    node.retention.start_dispositions(archivist)
    proposal = node.retention.propose(archivist, [archive_id], "retention expired")
    node.retention.decide(manager, proposal.id, archive_id, approve=True, reason="checked")
    node.retention.destroy(archivist, proposal.id, archive_id)
    cookies = _sign_in(client, node.keys.issue(Role.ARCHIVIST, "reader").secret)
    page = client.get(f"/console/archives/{archive_id}", cookies=cookies)
    assert page.status_code == 200
    assert 'id="content-form"' not in page.text
    gone = client.post(
        f"/console/archives/{archive_id}/content",
        data={"csrf": _csrf(page.text), "purpose": "legal"},
        cookies=cookies,
    )
    assert gone.status_code == 410
    assert "destroyed" in gone.text
    assert _reads(node) == []
    assert _last_access(node, archive_id) is None


def test_a_form_field_holding_nul_is_refused_before_it_reaches_the_node(
    tiered: NodeRuntime, client: Client
) -> None:
    """PostgreSQL text cannot hold NUL (a console reason reaching a text column answered 500
    there): every console form refuses it with 400 ``invalid_encoding``, the sign-in form
    included, and nothing is read or recorded."""
    node = tiered
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    archive_id = _archived(node, archivist, CONTENT)
    refused = client.post("/console/login", data={"api_key": "x\x00y", "lang": "en"})
    assert refused.status_code == 400, refused.text
    assert "invalid_encoding" in refused.text
    cookies = _sign_in(client, node.keys.issue(Role.ARCHIVIST, "reader").secret)
    token = _csrf(client.get(f"/console/archives/{archive_id}", cookies=cookies).text)
    for data in (
        {"csrf": token, "purpose": "treat\x00ment"},
        {"csrf": token, "purpose": "treatment", "note\x00": "x"},
    ):
        answer = client.post(f"/console/archives/{archive_id}/content", data=data, cookies=cookies)
        assert answer.status_code == 400, answer.text
        assert "invalid_encoding" in answer.text
    assert _reads(node) == []
    answer = client.post(
        f"/console/archives/{archive_id}/content",
        data={"csrf": token, "purpose": "treatment"},
        cookies=cookies,
    )
    assert answer.status_code == 200  # the same form without the NUL is served
