"""kill -9 in the middle of a destruction list (both databases): a node process executes a list of
five approved archives two per unit of work and SIGKILLs itself (the node's dev-mode fault point)
inside a unit after shredding one archive, after a unit committed but before its tombstones were
written, or after the tombstones but before the ciphertext was deleted. After the restart every
archive of the list is either fully destroyed — no live key copy, certificate whose hash is the
DESTROY event's, DESTROYED with metadata erased, tombstone, ciphertext gone, item executed — or
untouched (in review, key live, content readable, no certificate, event or tombstone). Executing the
list again destroys the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from api.main import create_app
from archivechain.node import FAULT_POINT_ENV
from node.models import (
    Archive,
    ArchiveVersion,
    DestructionCertificate,
    DispositionItem,
    WrappedKey,
)
from node.principal import Role
from node.retention import add_years
from node.runtime import NodeRuntime
from tests.api.conftest import Api, issue_keys, serve
from tests.api.test_disposition import _archive, _decide
from tests.fixtures.chain import Consortium
from tests.fixtures.node import build_node
from tests.support import REPO_ROOT

ARCHIVES = 5
CHUNK = 2

# fault point → how many archives are destroyed after the restart (chunks of 2: 2, 2, 1)
POINTS = {
    "destruction-shredded#3": 2,  # the second unit had shredded one archive: rolled back
    "destruction-committed#2": 4,  # the second unit committed, its tombstones not yet written
    "destruction-tombstoned#2": 4,  # tombstones written, ciphertext not yet deleted
}


def _child(
    node: NodeRuntime, consortium: Consortium, secret: str, proposal: str, fault: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_POINT_ENV}
    if fault:
        env[FAULT_POINT_ENV] = fault
    settings = node.settings
    return subprocess.run(
        [
            sys.executable, "-m", "tests.api.destruction_child", str(settings.data_dir),
            str(settings.database_url), consortium.rpc_url, str(consortium.deployment_file),
            secret, proposal, str(CHUNK),
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def _tombstones(node: NodeRuntime) -> dict[str, str]:
    path = node.settings.resolved_tombstone_file
    if not path.exists():
        return {}
    return {
        (t := json.loads(line))["archive_id"]: t["certificate_hash"]
        for line in path.read_text().splitlines()
        if line.strip()
    }


def _classify(api: Api, archive_id: str, title: str) -> str:
    """``destroyed`` or ``untouched``, asserting the archive is wholly one or the other."""
    node = api.node
    archivist = api.auth("archivist")
    with node.db.session() as session:
        archive = session.get_one(Archive, archive_id)
        keys = list(
            session.execute(select(WrappedKey).where(WrappedKey.archive_id == archive_id)).scalars()
        )
        certificate = session.get(DestructionCertificate, archive_id)
        item = session.execute(
            select(DispositionItem).where(DispositionItem.archive_id == archive_id)
        ).scalar_one()
        cids = list(
            session.execute(
                select(ArchiveVersion.cid).where(ArchiveVersion.archive_id == archive_id)
            ).scalars()
        )
        state, archive_title = archive.state, archive.title
    events = api.client.get(f"/api/v1/archives/{archive_id}/events", headers=archivist).json()
    destroys = [e for e in events if e["type"] == "DESTROY"]
    tombstones = _tombstones(node)
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        headers=archivist,
        params={"purpose": "operations"},
    )
    assert keys
    assert cids
    if state == "DESTROYED":
        assert all(k.blob is None and k.destroyed_at is not None for k in keys)
        assert certificate is not None
        assert len(destroys) == 1
        assert destroys[0]["event"]["data"]["certificate_hash"] == certificate.sha256
        assert tombstones.get(archive_id) == certificate.sha256
        assert item.decision == "executed"
        assert archive_title == ""
        assert not any(node.blobs.exists(cid) for cid in cids)
        assert (content.status_code, content.json()["code"]) == (410, "destroyed")
        return "destroyed"
    assert state == "DISPOSITION_REVIEW"
    assert all(k.blob is not None and k.destroyed_at is None for k in keys)
    assert certificate is None
    assert destroys == []
    assert archive_id not in tombstones
    assert item.decision == "approved"
    assert archive_title == title
    assert all(node.blobs.exists(cid) for cid in cids)
    assert content.status_code == 200, content.text
    return "untouched"


@pytest.mark.parametrize("fault", list(POINTS))
def test_kill_9_inside_a_destruction_list_leaves_no_half_shredded_archive(
    consortium: Consortium,
    chain: object,
    hospital_a: LocalAccount,
    database_url: str,
    tmp_path: Path,
    fault: str,
) -> None:
    data_dir = tmp_path / "node"
    node = build_node(consortium, hospital_a, data_dir, database_url=database_url)
    try:
        with serve(create_app(node)) as client:
            keys = issue_keys(node)
            keys["manager"] = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
            api = Api(node=node, app=create_app(node), client=client, keys=keys)
            long_ago = add_years(date.today(), -16)  # the 15-year deadline passed a year ago
            ids = [_archive(api, long_ago) for _ in range(ARCHIVES)]
            with node.db.session() as session:
                titles = {i: session.get_one(Archive, i).title for i in ids}
            ran = api.client.post("/api/v1/retention/run", headers=api.auth("archivist"))
            assert ran.is_success, ran.text
            proposal = api.client.post(
                "/api/v1/retention/proposals",
                headers=api.auth("archivist"),
                json={"archive_ids": ids, "reason": "expired"},
            ).json()["id"]
            for archive_id in ids:
                assert _decide(api, "manager", proposal, archive_id, approve=True).is_success
    finally:
        node.close()

    killed = _child(node, consortium, keys["archivist"], proposal, fault)
    assert killed.returncode == -9, killed.stdout + killed.stderr[-3000:]

    reopened = build_node(consortium, hospital_a, data_dir, database_url=database_url)
    try:
        with serve(create_app(reopened)) as client:
            api = Api(node=reopened, app=create_app(reopened), client=client, keys=keys)
            outcome = {i: _classify(api, i, titles[i]) for i in ids}
            done = sorted(i for i, kind in outcome.items() if kind == "destroyed")
            assert done == sorted(ids)[: POINTS[fault]]  # executed in archive-id order

            again = api.client.post(
                f"/api/v1/retention/proposals/{proposal}/destroy", headers=api.auth("archivist")
            )
            assert again.status_code == 200, again.text
            body = again.json()
            assert sorted(d["archive_id"] for d in body["destroyed"]) == sorted(
                set(ids) - set(done)
            )
            assert sorted(r["archive_id"] for r in body["refused"]) == done
            assert {r["code"] for r in body["refused"]} <= {"not_approved"}
            assert all(_classify(api, i, titles[i]) == "destroyed" for i in ids)
    finally:
        reopened.close()


def test_the_fault_point_is_refused_outside_dev_mode(tmp_path: Path) -> None:
    """The seam only arms in dev mode: a production node with the variable set does not start."""
    from archivechain.node import _install_fault_point
    from node.errors import NodeError

    class Settings:
        mode = "production"

    class Runtime:
        settings = Settings()

    os.environ[FAULT_POINT_ENV] = "destruction-shredded"
    try:
        with pytest.raises(NodeError) as refused:
            _install_fault_point(Runtime())  # type: ignore[arg-type]
        assert refused.value.code == "test_seam"
    finally:
        del os.environ[FAULT_POINT_ENV]
