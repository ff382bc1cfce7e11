"""``archivechain audit orphans`` (``node.orphans``) on a real node: real database (SQLite and
PostgreSQL), real blob files in a hot and a cold directory, the CLI in process. Blobs no record
names (an upload killed between storing its ciphertext and committing its row, a deletion recorded
but not carried out) are listed with exit 1 and deleted with ``--delete``; blobs a version row or a
held replica names are never touched (in the node's store, either tier, or the store of replicas
held for others), and the node's data still verifies afterwards. A mistyped data directory is
refused and left uncreated. A node process
SIGKILLed between storing an ingest's ciphertext and committing it (the node's dev-mode fault point
``ingest-stored``) leaves exactly one such blob. The command refuses while the node runs; an IPFS
pin is listed and never removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from anchoring.storage import LogEntry
from archivechain import main
from archivechain.node import FAULT_POINT_ENV
from node.backup import verify_node_data
from node.blobstore.base import BlobRef
from node.blobstore.ipfs import IpfsBlobStore
from node.blobstore.local import LocalBlobStore
from node.blobstore.tiered import TieredBlobStore
from node.models import ArchiveVersion, HeldReplica
from node.orphans import Orphan, find_orphans, remove_orphans
from node.principal import Role
from node.process import NODE_PID_FILE, running_pid
from node.runtime import NodeRuntime
from tests.anchoring.test_anchor_cli import _config
from tests.fixtures.node import MakeNode
from tests.support import REPO_ROOT, lab_result

HOSPITAL_B = "0x" + "b" * 40


def _cid(node: NodeRuntime, archive_id: str) -> str:
    with node.db.session() as session:
        return session.execute(
            select(ArchiveVersion.cid).where(ArchiveVersion.archive_id == archive_id)
        ).scalar_one()


def _hold_replica(node: NodeRuntime, ref: BlobRef) -> None:
    """A replica held for another hospital, as ``PUT /peer/v1/replicas/…`` records it."""
    with node.db.transaction() as session:
        session.add(
            HeldReplica(
                custodian=HOSPITAL_B,
                archive_id="01JB0000000000000000000000",
                version=1,
                cid=ref.cid,
                sha256=ref.sha256,
                size=ref.size,
                stored_at=datetime.now(UTC),
            )
        )


def test_audit_orphans_lists_then_deletes_only_unreferenced_blobs(
    make_node: MakeNode, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(database_url=database_url, cold_blob_dir=tmp_path / "cold")
    assert isinstance(node.blobs, TieredBlobStore)
    hot, cold = node.blobs.hot, node.blobs.cold
    assert isinstance(hot, LocalBlobStore)
    assert isinstance(cold, LocalBlobStore)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    kept = node.archives.create(archivist, lab_result(), [b"kept result " * 100])
    moved_away = node.archives.create(archivist, lab_result(), [b"transferred result " * 100])
    kept_cid, moved_cid = _cid(node, kept.id), _cid(node, moved_away.id)

    held = node.replica_holder.store
    assert isinstance(held, LocalBlobStore)
    replica = held.put_stream([os.urandom(3000)])  # held for hospital B: referenced
    _hold_replica(node, replica)
    unrecorded_replica = held.put_stream([os.urandom(900)])  # its PUT was killed before the row
    # Ciphertext of uploads killed before their commit (one linked, one renamed into place),
    # one in the cold tier, and a version whose deletion was recorded but not carried out.
    small = hot.put_stream([os.urandom(5000)])
    large = hot.put_stream([os.urandom((1 << 20) + 17)])
    in_cold = cold.put_stream([os.urandom(700)])
    with node.db.transaction() as session:
        session.execute(
            update(ArchiveVersion)
            .where(ArchiveVersion.archive_id == moved_away.id)
            .values(blob_deleted_at=datetime.now(UTC))
        )
    config_file = _config(node)
    with config_file.open("a", encoding="utf-8") as config_lines:
        config_lines.write(f"cold_blob_dir = {json.dumps(str(tmp_path / 'cold'))}\n")
    config = str(config_file)
    settings = node.settings
    node.close()
    expected = {
        ("hot", small.cid),
        ("hot", large.cid),
        ("cold", in_cold.cid),
        ("hot", moved_cid),
        ("replicas", unrecorded_replica.cid),
    }
    stores = {"hot": hot, "cold": cold, "replicas": held}

    assert main(["audit", "orphans", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "7 stored blob(s), 2 referenced CID(s): 5 unreferenced, 0 deleted" in out
    listed = {tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("ORPHAN")}
    assert listed == expected
    assert f"ORPHAN hot {large.cid} {large.size} bytes" in out
    assert not (settings.data_dir / NODE_PID_FILE).exists()  # held during the run only

    assert main(["audit", "orphans", "--config", config, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {(o["tier"], o["cid"]) for o in report["orphans"]} == expected
    assert all(o["removable"] for o in report["orphans"])
    assert (report["removed"], report["remaining"]) == ([], 5)
    assert hot.exists(small.cid)
    assert cold.exists(in_cold.cid)

    assert main(["audit", "orphans", "--config", config, "--delete"]) == 0
    out = capsys.readouterr().out
    assert "5 unreferenced, 5 deleted" in out
    assert "ORPHAN" not in out
    for tier, cid in expected:
        assert not stores[tier].exists(cid)
    assert hot.exists(kept_cid)
    assert held.exists(replica.cid)
    assert verify_node_data(settings).problems == []  # nothing a record names was lost

    assert main(["audit", "orphans", "--config", config]) == 0
    assert "2 stored blob(s), 2 referenced CID(s): 0 unreferenced" in capsys.readouterr().out


def test_audit_orphans_refuses_while_the_node_runs(
    make_node: MakeNode, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node()
    assert isinstance(node.blobs, LocalBlobStore)
    orphan = node.blobs.put_stream([os.urandom(100)])
    config = str(_config(node))
    pid_file = node.settings.data_dir / NODE_PID_FILE
    node.close()
    holder = subprocess.Popen(  # a live process that owns the pid file, as `node run` does
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from node.process import write_pid_file;"
            " write_pid_file(Path(sys.argv[1]), 'the node'); print('ready', flush=True);"
            " time.sleep(120)",
            str(pid_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        assert main(["audit", "orphans", "--config", config, "--delete"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "already running" in err[0]
        assert f"pid {holder.pid}" in err[0]
        assert node.blobs.exists(orphan.cid)
        assert running_pid(pid_file) == holder.pid  # the node's pid file is left alone
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while running_pid(pid_file) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main(["audit", "orphans", "--config", config, "--delete"]) == 0
    assert not node.blobs.exists(orphan.cid)


def test_an_orphan_named_by_a_record_after_the_search_is_kept(make_node: MakeNode) -> None:
    node = make_node()
    assert isinstance(node.blobs, LocalBlobStore)
    first = node.blobs.put_stream([os.urandom(200)])
    second = node.blobs.put_stream([os.urandom(300)])
    with node.db.session() as session:
        report = find_orphans(session, node.blobs)
    assert {o.cid for o in report.orphans} == {first.cid, second.cid}
    _hold_replica(node, second)  # e.g. a replica stored meanwhile
    with node.db.session() as session:
        remove_orphans(session, node.blobs, report)
    assert [o.cid for o in report.removed] == [first.cid]
    assert [o.cid for o in report.remaining] == [second.cid]
    assert not node.blobs.exists(first.cid)
    assert node.blobs.exists(second.cid)


def test_ipfs_pins_are_listed_never_removed(make_node: MakeNode, ipfs_api_addr: str) -> None:
    node = make_node(blob_store="ipfs", ipfs_api=ipfs_api_addr)
    assert isinstance(node.blobs, IpfsBlobStore)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "alice").secret)
    kept = node.archives.create(archivist, lab_result(), [b"kept on ipfs"])
    pin = node.blobs.put_stream([os.urandom(400)])
    with node.db.session() as session:
        report = find_orphans(session, node.blobs)
        remove_orphans(session, node.blobs, report)
    mine = [o for o in report.orphans if o.cid == pin.cid]
    assert mine == [Orphan(cid=pin.cid, tier="hot", size=None, removable=False)]
    assert _cid(node, kept.id) not in {o.cid for o in report.orphans}
    assert report.removed == []
    assert node.blobs.exists(pin.cid)


def test_kill_9_between_storing_and_committing_an_ingest_leaves_one_orphan_the_audit_removes(
    make_node: MakeNode, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(database_url=database_url)
    secret = node.keys.issue(Role.ARCHIVIST, "alice").secret
    settings = node.settings
    config = str(_config(node))
    node.close()
    env = {k: v for k, v in os.environ.items() if k != FAULT_POINT_ENV}
    argv = [
        sys.executable, "-m", "tests.monitoring.ingest_child", str(settings.data_dir),
        str(settings.database_url), settings.rpc_url, str(settings.deployment_file), secret,
    ]  # fmt: skip

    def ingest(fault: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env={**env, FAULT_POINT_ENV: fault} if fault else env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    killed = ingest("ingest-stored")
    assert killed.returncode == -9, killed.stdout + killed.stderr[-3000:]
    assert main(["audit", "orphans", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "1 stored blob(s), 0 referenced CID(s): 1 unreferenced, 0 deleted" in out
    [orphan] = [line.split()[2] for line in out.splitlines() if line.startswith("ORPHAN")]

    done = ingest(None)  # the node still ingests; its blob is referenced, the orphan is not
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["audit", "orphans", "--config", config, "--delete"]) == 0
    assert "2 stored blob(s), 1 referenced CID(s): 1 unreferenced, 1 deleted" in (
        capsys.readouterr().out
    )
    reopened = NodeRuntime.open(settings)
    try:
        assert not reopened.blobs.exists(orphan)
        with reopened.db.session() as session:
            [kept] = session.execute(select(ArchiveVersion.cid)).scalars().all()
            logged = session.execute(select(LogEntry.index)).scalars().all()
        assert reopened.blobs.exists(kept)
        assert logged == [0]  # the killed ingest logged nothing
    finally:
        reopened.close()


def test_a_directory_without_a_node_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    assert main(["audit", "orphans", "--data-dir", str(missing), "--delete"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no node here" in err[0]
    assert not missing.exists()
