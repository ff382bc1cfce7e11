"""Backup while the node serves, restore into a fresh directory, verification before serving:
event hash chains, the log against every on-chain checkpoint, blobs against their hashes; refusal
of damaged or tampered data and of a backup older than the chain (lost events counted)."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from anchoring import storage
from api.main import create_app
from archivechain import main
from node.backup import (
    RESTORE_MARKER,
    BackupFormatError,
    LostEventsError,
    RestoreRefusedError,
    VerificationError,
    create_backup,
    restore_backup,
    verify_node_data,
)
from node.config import NodeSettings
from node.errors import ConfigError
from node.runtime import NodeRuntime
from tests.api.conftest import PDF, Api, issue_keys, serve
from tests.fixtures.node import MakeNode

ANCHOR_TIMEOUT = 60.0


def anchor_everything(node: NodeRuntime) -> int:
    """Tick the worker until the whole log is anchored; the anchored size."""
    deadline = time.monotonic() + ANCHOR_TIMEOUT
    while time.monotonic() < deadline:
        node.worker.tick()
        with node.db.session() as session:
            size, anchored = storage.current_size(session), storage.anchored_size(session)
        if size and anchored == size:
            return anchored
        time.sleep(0.05)
    pytest.fail("the log was not anchored in time")


def create_archives(node: NodeRuntime, count: int) -> list[str]:
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        ids = []
        for _ in range(count):
            archive_id = str(api.create()["id"])
            response = client.post(
                f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
            )
            assert response.status_code == 200, response.text
            ids.append(archive_id)
        return ids


def read_content(node: NodeRuntime, archive_id: str) -> bytes:
    app = create_app(node)
    with serve(app) as client:
        keys = issue_keys(node)
        response = client.get(
            f"/api/v1/archives/{archive_id}/content",
            params={"purpose": "audit"},
            headers={"Authorization": f"Bearer {keys['archivist']}"},
        )
        assert response.status_code == 200, response.text
        return response.content


def restore_settings(node: NodeRuntime) -> NodeSettings:
    s = node.settings
    return NodeSettings(
        mode="dev",
        name=s.name,
        data_dir=s.data_dir,
        database_url=s.database_url,
        rpc_url=s.rpc_url,
        deployment_file=s.deployment_file,
    )


def wipe(settings: NodeSettings) -> None:
    """What a lost machine leaves: no data directory; on PostgreSQL, no schema either."""
    shutil.rmtree(settings.data_dir)
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
        return
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def test_backup_while_serving_then_wipe_restore_verify_serve(
    make_node: MakeNode, database_url: str, tmp_path: Path
) -> None:
    node = make_node(database_url=database_url, anchor_interval=0.01)
    archived = create_archives(node, 3)
    anchored = anchor_everything(node)
    backup = tmp_path / "backups" / "node.tar"
    node.settings.resolved_tombstone_file.write_text("")  # an empty destruction ledger
    result = create_backup(node.settings, backup, include_blobs=True)  # the node is open
    assert result.log_size >= anchored
    assert (result.archives, result.blobs_listed, result.blobs_included) == (3, 3, 3)
    assert "files/keystore.json" in result.files
    assert "files/tombstones.jsonl" in result.files  # the destruction ledger goes with it
    create_archives(node, 1)  # after the backup, not anchored: lost with the machine
    settings = restore_settings(node)
    node.close()
    wipe(settings)

    report = restore_backup(backup, settings)
    assert report.log_size == result.log_size
    assert report.chain_checkpoints >= 1
    assert report.chain_size == anchored
    assert (report.archives, report.blobs, report.lost_events) == (3, 3, 0)
    assert not (settings.data_dir / RESTORE_MARKER).exists()
    restored = NodeRuntime.open(settings)
    try:
        restored.start(scheduler=False)
        assert read_content(restored, archived[0]) == PDF
    finally:
        restored.close()


def test_a_backup_older_than_the_chain_is_refused_with_the_lost_events_counted(
    make_node: MakeNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(anchor_interval=0.01)
    create_archives(node, 1)
    anchor_everything(node)
    backup = tmp_path / "old.tar"
    old = create_backup(node.settings, backup, include_blobs=True)
    create_archives(node, 2)
    anchored = anchor_everything(node)  # the chain now covers events the backup lacks
    settings = restore_settings(node)
    node.close()
    wipe(settings)

    with pytest.raises(LostEventsError) as refused:
        restore_backup(backup, settings)
    assert refused.value.lost == anchored - old.log_size > 0
    assert (
        f"{anchored - old.log_size} events acknowledged and anchored after this backup are lost"
        in (refused.value.message)
    )
    assert (settings.data_dir / RESTORE_MARKER).exists()
    with pytest.raises(ConfigError, match=RESTORE_MARKER):
        NodeRuntime.open(settings)  # the node refuses to serve

    config = tmp_path / "node.toml"
    config.write_text(
        f'mode = "dev"\ndata_dir = "{settings.data_dir}"\nrpc_url = "{settings.rpc_url}"\n'
        f'deployment_file = "{settings.deployment_file}"\n'
    )
    assert main(["restore", "--verify-only", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{anchored - old.log_size} EVENTS LOST" in err
    assert (settings.data_dir / RESTORE_MARKER).exists()


def test_restore_refuses_damaged_backups_and_a_used_directory(
    make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node(anchor_interval=0.01)
    create_archives(node, 1)
    anchor_everything(node)
    backup = tmp_path / "b.tar"
    create_backup(node.settings, backup)
    with pytest.raises(RestoreRefusedError, match="never overwrites"):
        create_backup(node.settings, backup)
    settings = restore_settings(node)
    with pytest.raises(RestoreRefusedError, match="not empty"):
        restore_backup(backup, settings)  # the live data directory is never overwritten
    node.close()

    damaged = tmp_path / "damaged.tar"
    with tarfile.open(backup) as source, tarfile.open(damaged, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "database/node.db":
                data = data[:-1] + bytes([data[-1] ^ 1])
            target.addfile(member, io.BytesIO(data))
    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    with pytest.raises(BackupFormatError, match="does not match its SHA-256"):
        restore_backup(damaged, fresh)

    not_a_backup = tmp_path / "x.tar"
    not_a_backup.write_bytes(b"not a tar file at all")
    with pytest.raises(BackupFormatError, match="cannot read backup"):
        restore_backup(not_a_backup, settings.model_copy(update={"data_dir": tmp_path / "f2"}))


def test_verification_names_a_tampered_event_a_corrupt_blob_and_a_missing_blob(
    make_node: MakeNode, tmp_path: Path
) -> None:
    node = make_node(anchor_interval=0.01)
    [archive_id] = create_archives(node, 1)
    anchor_everything(node)
    backup = tmp_path / "b.tar"
    create_backup(node.settings, backup)  # without blobs: they come from --blobs-from
    blobs_copy = tmp_path / "blobs-copy"
    shutil.copytree(node.settings.blob_dir, blobs_copy)
    settings = restore_settings(node).model_copy(update={"data_dir": tmp_path / "restored"})
    node.close()

    with pytest.raises(VerificationError, match="is missing") as missing:
        restore_backup(backup, settings)
    assert archive_id in missing.value.message
    assert (settings.data_dir / RESTORE_MARKER).exists()
    shutil.rmtree(settings.data_dir)
    report = restore_backup(backup, settings, blobs_from=blobs_copy)
    assert report.blobs == 1

    [blob] = [p for p in settings.blob_dir.rglob("*") if p.is_file()]
    original = blob.read_bytes()
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(VerificationError, match="fixity check failed"):
        verify_node_data(settings)
    blob.write_bytes(original)
    verify_node_data(settings)

    db = sqlite3.connect(settings.data_dir / "node.db")
    with db:
        (raw,) = db.execute("SELECT event FROM log_entries WHERE idx = 0").fetchone()
        tampered = bytes(raw).replace(b'"type":"CREATE"', b'"type":"CREATE" ')
        db.execute("UPDATE log_entries SET event = ? WHERE idx = 0", (tampered,))
    db.close()
    with pytest.raises(VerificationError) as broken:
        verify_node_data(settings)
    message = broken.value.message
    assert "log: entry 0 is not a valid event" in message
    assert "differs from on-chain checkpoint #0" in message
    assert f"archive {archive_id}: its event chain is broken" in message


def test_verification_names_bad_search_terms_but_never_the_terms(
    make_node: MakeNode, database_url: str
) -> None:
    """No foreign key holds the keyword index to the catalogue (migration 0018): verification
    checks it, names the archive of each bad term, and never the term (PHI)."""
    node = make_node(database_url=database_url, anchor_interval=0.01)
    kept, relabelled, destroyed = create_archives(node, 3)
    anchor_everything(node)
    settings = node.settings
    node.close()
    assert verify_node_data(settings).archives == 3  # a consistent index passes

    orphan = "7" * 26
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            terms = connection.execute(
                text("SELECT count(*) FROM search_terms WHERE archive_id = :a"), {"a": relabelled}
            ).scalar_one()
            assert terms > 0
            connection.execute(
                text(
                    "INSERT INTO search_terms (term, archive_id, department) "
                    "VALUES ('secretname', :a, 'general'), ('secretword', :a, 'general')"
                ),
                {"a": orphan},
            )
            connection.execute(
                text("UPDATE search_terms SET department = 'elsewhere' WHERE archive_id = :a"),
                {"a": relabelled},
            )
            connection.execute(
                text("UPDATE archives SET state = 'DESTROYED' WHERE id = :a"), {"a": destroyed}
            )
    finally:
        engine.dispose()
    with pytest.raises(VerificationError) as bad:
        verify_node_data(settings)
    problems = [p for p in bad.value.report.problems if p.startswith("search index:")]
    assert problems == [
        f"search index: archive {relabelled}: {terms} term(s) filed under another department "
        "than the archive's",
        f"search index: archive {destroyed}: {_terms_of(database_url, destroyed)} term(s) left "
        "after the archive's destruction (PHI that should have been erased)",
        f"search index: archive {orphan}: 2 term(s) without an archive row",
    ]
    assert kept not in bad.value.message
    assert "secret" not in bad.value.message


def _terms_of(database_url: str, archive_id: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM search_terms WHERE archive_id = :a"),
                    {"a": archive_id},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_restore_on_a_python_without_extraction_filters_still_refuses_unsafe_members(
    make_node: MakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python before 3.11.4 (Debian 12's 3.11.2, in the node's image) has no
    ``tarfile.data_filter`` and ``extract(filter=...)`` raises TypeError there: restore extracts
    without a filter (members are checked first) and still refuses an unsafe member."""
    node = make_node(anchor_interval=0.01)
    create_archives(node, 1)
    anchor_everything(node)
    backup = tmp_path / "b.tar"
    create_backup(node.settings, backup, include_blobs=True)
    settings = restore_settings(node)
    node.close()

    original = tarfile.TarFile.extract

    def old_extract(self: tarfile.TarFile, member: object, path: object = "", **kwargs: object):  # type: ignore[no-untyped-def]
        if "filter" in kwargs:
            raise TypeError("extract() got an unexpected keyword argument 'filter'")
        return original(self, member, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.setattr(tarfile.TarFile, "extract", old_extract)

    unsafe = tmp_path / "unsafe.tar"
    with tarfile.open(backup) as source, tarfile.open(unsafe, "w") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member))
        link = tarfile.TarInfo("files/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        target.addfile(link)
    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    with pytest.raises(BackupFormatError, match="unexpected member: 'files/evil'"):
        restore_backup(unsafe, elsewhere)
    assert not (tmp_path / "elsewhere").exists()

    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    report = restore_backup(backup, fresh)
    assert (report.archives, report.blobs) == (1, 1)
    assert not (fresh.data_dir / RESTORE_MARKER).exists()


def node_config(settings: NodeSettings, path: Path) -> Path:
    path.write_text(
        f'mode = "dev"\ndata_dir = "{settings.data_dir}"\nrpc_url = "{settings.rpc_url}"\n'
        f'deployment_file = "{settings.deployment_file}"\n'
    )
    return path


def test_backup_to_an_unwritable_place_exits_2_in_one_line_and_leaves_nothing(
    make_node: MakeNode,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node(anchor_interval=0.01)
    config = node_config(node.settings, tmp_path / "node.toml")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    out = blocker / "sub" / "x.tar"
    assert main(["backup", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {out}: "), err
    assert err.count("\n") == 1, err

    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir") or args[2]))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)  # as a directory root cannot write would
    out = tmp_path / "new" / "deeper" / "x.tar"
    assert main(["backup", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {out}: Permission denied\n", err
    assert not (tmp_path / "new").exists()  # the directories it made are gone again
    node.close()


def test_a_backup_removes_the_temporary_directory_a_killed_backup_left(
    make_node: MakeNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backup killed with kill -9 leaves ``.backup-*`` (a full copy of the database) next to
    ``--out``; the next backup there removes such a directory untouched for an hour, and says so,
    but not a recent one (a backup still running)."""
    node = make_node(anchor_interval=0.01)
    config = node_config(node.settings, tmp_path / "node.toml")
    backups = tmp_path / "backups"
    stale, running = backups / ".backup-killed", backups / ".backup-running"
    for directory in (stale, running):
        directory.mkdir(parents=True)
        (directory / "node.db").write_bytes(b"a copy of the database")
    hours_ago = time.time() - 2 * 3600
    for path in (stale / "node.db", stale):
        os.utime(path, (hours_ago, hours_ago))
    assert main(["backup", "--config", str(config), "--out", str(backups / "b.tar")]) == 0
    err = capsys.readouterr().err
    assert f"warning: removed {stale}, left by an interrupted backup" in err, err
    assert not stale.exists()
    assert (running / "node.db").exists()
    assert sorted(p.name for p in backups.iterdir()) == [".backup-running", "b.tar"]
    node.close()


def test_restoring_a_file_that_is_not_a_backup_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVECHAIN_MODE", "dev")
    not_a_backup = tmp_path / "x.tar"
    not_a_backup.write_bytes(b"not a tar file at all")
    fresh = tmp_path / "new"
    assert main(["restore", str(not_a_backup), "--data-dir", str(fresh)]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot read backup {not_a_backup}: not a tar file (plain, gzip, bzip2 or xz)\n"
    )
    assert not fresh.exists()  # nothing created
