"""The restore drill, with real processes: a node serves under write load, ``archivechain backup``
runs meanwhile, the node is killed with SIGKILL, its data directory wiped, ``archivechain restore``
brings it back and verifies it, and the node serves again every archive the backup holds."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from node.ports import free_block
from node.principal import Role
from tests.api.conftest import PDF, archive_metadata
from tests.deployment.test_backup import anchor_everything, create_archives
from tests.fixtures.node import MakeNode
from tests.network.conftest import cli, environment

START_TIMEOUT = 90.0


def start_node(config: Path, logs: Path, tag: str) -> subprocess.Popen[bytes]:
    with (logs / f"node-{tag}.out").open("wb") as out, (logs / f"node-{tag}.err").open("wb") as err:
        return subprocess.Popen(
            cli("node", "run", "--config", str(config)),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=environment(),
        )


def wait_healthy(process: subprocess.Popen[bytes], url: str, logs: Path, tag: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"node exited {process.returncode}: {(logs / f'node-{tag}.err').read_text()}"
            )
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"node not healthy in {START_TIMEOUT} s")


class Load(threading.Thread):
    """Creates and archives records until stopped; remembers each one completed, in order."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        self.done: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                created = self.client.post(
                    "/api/v1/archives",
                    files={"file": ("summary.pdf", PDF, "application/pdf")},
                    data={"metadata": json.dumps(archive_metadata())},
                )
                archive_id = str(created.json()["id"])
                archived = self.client.post(f"/api/v1/archives/{archive_id}/archive")
                if archived.status_code == 200:
                    self.done.append(archive_id)
            except (httpx.HTTPError, KeyError, ValueError):
                if self.stop.is_set():
                    return
                time.sleep(0.05)


def test_restore_drill_backup_under_load_kill_9_wipe_restore_verify_serve(
    make_node: MakeNode, tmp_path: Path
) -> None:
    # Before the drill: a node with anchored archives (the chain holds its checkpoints).
    node = make_node(anchor_interval=0.01)
    anchored_ids = create_archives(node, 2)
    anchor_everything(node)
    key = node.keys.issue(Role.ARCHIVIST, "drill-archivist").secret
    settings = node.settings
    node.close()
    port = free_block(1)
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "node.toml"
    config.write_text(
        "\n".join(
            [
                'mode = "dev"',
                f'name = "{settings.name}"',
                f"data_dir = {json.dumps(str(settings.data_dir))}",
                f"rpc_url = {json.dumps(settings.rpc_url)}",
                f"deployment_file = {json.dumps(str(settings.deployment_file))}",
                'host = "127.0.0.1"',
                f"port = {port}",
                "anchor_interval = 3600.0",  # nothing written during the drill gets anchored
            ]
        )
        + "\n"
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    backup = tmp_path / "backups" / "drill.tar"
    process = start_node(config, logs, "1")
    restarted: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(process, url, logs, "1")
        load = Load(url, key)
        load.start()
        while len(load.done) < 2:
            time.sleep(0.05)
        completed_before_backup = list(load.done)
        result = subprocess.run(
            cli("backup", "--config", str(config), "--out", str(backup), "--with-blobs"),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "backup written to" in result.stdout
        # The load goes on after the backup. The next record to complete may have been created
        # before the backup's snapshot (and only archived after it), so it may be in the backup;
        # the one after it was created once the backup had returned.
        target = len(load.done) + 2
        while len(load.done) < target:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # kill -9, mid-load
        assert process.wait(30) == -signal.SIGKILL
        load.stop.set()
        load.join(30)

        shutil.rmtree(settings.data_dir)  # the machine is lost
        restored = subprocess.run(
            cli("restore", str(backup), "--config", str(config)),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=180,
            check=False,
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "restored and verified" in restored.stdout
        assert "checkpoints (up to" in restored.stdout

        restarted = start_node(config, logs, "2")
        wait_healthy(restarted, url, logs, "2")
        with httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            for archive_id in [*anchored_ids, *completed_before_backup]:
                content = client.get(
                    f"/api/v1/archives/{archive_id}/content", params={"purpose": "audit"}
                )
                assert content.status_code == 200, content.text
                assert content.content == PDF
            # The last archive, written after the backup, went with the machine.
            missing = client.get(f"/api/v1/archives/{load.done[-1]}")
            assert missing.status_code == 404
            created = client.post(  # and the restored node takes new writes
                "/api/v1/archives",
                files={"file": ("new.pdf", PDF, "application/pdf")},
                data={"metadata": json.dumps(archive_metadata())},
            )
            assert created.status_code == 201, created.text
    finally:
        for running in (process, restarted):
            if running is not None and running.poll() is None:
                running.send_signal(signal.SIGTERM)
                try:
                    running.wait(30)
                except subprocess.TimeoutExpired:
                    running.kill()
