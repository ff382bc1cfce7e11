"""Unthrottled fixity audits of a local store hash the blob files in worker processes
(``node.blobhash``): real files, real processes, SQLite and PostgreSQL. The audit finds the same
problems as the reader threads do (a flipped byte, a deleted blob, an unreadable one), the
processes stop with the node, and a worker whose parent is killed with SIGKILL exits on its own."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from multiformats import CID

from node.blobhash import MISSING, UNREADABLE, FileHasher, hash_blobs, hash_files
from node.blobstore.local import LocalBlobStore, object_file
from node.runtime import NodeRuntime
from node.services.audits import MISSING_SHA256, AuditScope
from tests.api.conftest import serve_api
from tests.fixtures.node import MakeNode
from tests.monitoring.test_fixity import _blob_path, _fixity_events, _open_alerts

REPO = Path(__file__).resolve().parents[2]


def _exit_after(seconds: float) -> None:
    """Run in a hashing process: end it abruptly after ``seconds`` (as a kill would)."""
    time.sleep(seconds)
    os._exit(1)


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_hash_files_reports_digests_missing_and_unreadable(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(70_001))  # several pieces of 4,096 bytes and a short last one
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    directory = tmp_path / "directory"
    directory.mkdir()
    results = hash_files(
        [str(big), str(tmp_path / "absent"), None, str(directory), str(empty)], 4096
    )
    assert results == [
        (hashlib.sha256(big.read_bytes()).hexdigest(), 70_001),
        MISSING,
        MISSING,
        f"{UNREADABLE}:IsADirectoryError",
        (hashlib.sha256(b"").hexdigest(), 0),
    ]


def test_hash_blobs_names_the_files_as_the_store_does(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    kept, deleted = os.urandom(5000), os.urandom(10)
    kept_cid = store.put_stream([kept]).cid
    deleted_cid = store.put_stream([deleted]).cid
    store.delete(deleted_cid)
    base58 = str(CID.decode(kept_cid).encode("base58btc"))
    dag_pb = "bafybeifrlajv3wgul3hoks4dnshre353sw6eyythbvtcgfzuoij7nvjgkm"
    for cid in (kept_cid, base58, deleted_cid):
        assert object_file(store.objects_dir, cid) == str(store.path_of(cid))
    assert object_file(store.objects_dir, dag_pb) is None
    digest = (hashlib.sha256(kept).hexdigest(), 5000)
    assert hash_blobs(store.objects_dir, [kept_cid, deleted_cid, base58, dag_pb], 1024) == [
        digest,
        MISSING,
        digest,
        MISSING,
    ]


def test_an_unthrottled_audit_hashes_in_processes_and_finds_the_same_problems(
    database_url: str, make_node: MakeNode
) -> None:
    node = make_node(
        database_url=database_url,
        fixity_max_bytes_per_second=0.0,
        fixity_read_processes=2,
        fixity_batch_size=4,
    )
    before = {p.pid for p in multiprocessing.active_children()}
    with serve_api(node) as api:
        ids = [api.create()["id"] for _ in range(7)]
        flipped, deleted, unreadable = ids[1], ids[3], ids[5]
        path = _blob_path(node, flipped)
        data = bytearray(path.read_bytes())
        data[0] ^= 0x80
        path.write_bytes(bytes(data))
        _blob_path(node, deleted).unlink()
        blocked = _blob_path(node, unreadable)
        blocked.unlink()
        blocked.mkdir()  # a directory where the file was: opening it fails

        report = node.fixity.audit(None, AuditScope())
        started = {p.pid for p in multiprocessing.active_children()} - before
        assert len(started) == 2  # the hashing processes did the reading

        assert (report.checked, report.passed, report.failed) == (7, 4, 3)
        assert sorted((f.archive_id, f.problem) for f in report.failures) == sorted(
            [(flipped, "hash_mismatch"), (deleted, "blob_missing"), (unreadable, "blob_unreadable")]
        )
        assert report.bytes_read == sum(
            _blob_path(node, a).stat().st_size for a in ids if a not in (deleted, unreadable)
        )
        assert _fixity_events(api, flipped) == [
            {"version": 1, "ciphertext_sha256": hashlib.sha256(data).hexdigest(), "ok": False}
        ]
        for archive_id in (deleted, unreadable):
            assert _fixity_events(api, archive_id) == [
                {"version": 1, "ciphertext_sha256": MISSING_SHA256, "ok": False}
            ]
        intact = ids[0]
        assert _fixity_events(api, intact) == [
            {
                "version": 1,
                "ciphertext_sha256": hashlib.sha256(
                    _blob_path(node, intact).read_bytes()
                ).hexdigest(),
                "ok": True,
            }
        ]
        assert _open_alerts(api) == sorted(
            [
                ("fixity_mismatch", flipped, 1),
                ("blob_missing", deleted, 1),
                ("fixity_mismatch", unreadable, 1),
            ]
        )

        again = node.fixity.audit(None, AuditScope())  # the same processes, the same findings
        assert (again.checked, again.passed, again.failed) == (7, 4, 3)
        assert {p.pid for p in multiprocessing.active_children()} - before == started
    node.close()
    assert all(_gone(pid) for pid in started)  # the node stops its hashing processes


def test_a_killed_hashing_process_does_not_break_later_audits(
    database_url: str, make_node: MakeNode
) -> None:
    node = make_node(
        database_url=database_url, fixity_max_bytes_per_second=0.0, fixity_read_processes=1
    )
    before = {p.pid for p in multiprocessing.active_children()}
    with serve_api(node) as api:
        for _ in range(3):
            api.create()
        assert node.fixity.audit(None, AuditScope()).passed == 3
        hasher = node.fixity._hasher
        assert hasher is not None
        # 1. The hashing process dies while the audit's batch waits in its queue (behind a task
        # that exits the process after 1 s): the batch fails with the pool and is submitted
        # again to the pool that replaces it (without that, this audit raised BrokenProcessPool).
        (worker,) = {p.pid for p in multiprocessing.active_children()} - before
        assert hasher._pool is not None
        hasher._pool.submit(_exit_after, 1.0)
        report = node.fixity.audit(None, AuditScope())
        assert (report.checked, report.passed) == (3, 3)
        killed = worker
        deadline = time.monotonic() + 30
        while not _gone(killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker,) = {p.pid for p in multiprocessing.active_children()} - before - {killed}
        assert hasher._pool is not None
        pool = hasher._pool
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (_gone(worker) and pool._broken) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool._broken
        report = node.fixity.audit(None, AuditScope())
        assert (report.checked, report.passed) == (3, 3)
        assert {p.pid for p in multiprocessing.active_children()} - before - {worker}


def test_a_throttled_audit_starts_no_process(database_url: str, make_node: MakeNode) -> None:
    node: NodeRuntime = make_node(database_url=database_url, fixity_read_processes=2)
    before = {p.pid for p in multiprocessing.active_children()}
    with serve_api(node) as api:
        api.create()
        report = node.fixity.audit(None, AuditScope())  # the default rate limit applies
    assert (report.checked, report.passed) == (1, 1)
    assert {p.pid for p in multiprocessing.active_children()} - before == set()


_ORPHAN = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from node.blobhash import FileHasher

    if __name__ == "__main__":
        hasher = FileHasher(1)
        assert hasher.submit(sys.argv[1], [sys.argv[2]], 4096).result()[0][1] == 5
        print(*(p.pid for p in multiprocessing.active_children()), flush=True)
        time.sleep(120)
    """
)


def test_a_hashing_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    cid = store.put_stream([b"12345"]).cid
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    parent = subprocess.Popen(
        [sys.executable, str(script), store.objects_dir, cid],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 1
        assert not _gone(workers[0])
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while not _gone(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(workers[0])
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_file_hasher_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        FileHasher(0)
