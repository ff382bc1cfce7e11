"""``archivechain audit fixity`` on a stopped node (real database, real blob files, the CLI in
process): exit 1 and one line per failure when a blob was changed, exit 0 for an intact scope,
exit 2 for contradictory options; the failure is an alert in the node's database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from api.main import create_app
from archivechain import main
from node.models import Archive
from node.runtime import NodeRuntime
from tests.anchoring.test_anchor_cli import _config
from tests.api.conftest import Api, issue_keys, serve
from tests.fixtures.node import MakeNode
from tests.monitoring.test_fixity import _blob_path


def test_audit_fixity_command(
    make_node: MakeNode, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(database_url=database_url)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        broken = api.create()["id"]
        lab = api.create(record_class="LAB")["id"]
    path = _blob_path(node, broken)
    path.write_bytes(b"\x00" + path.read_bytes()[1:])
    config = str(_config(node))
    settings = node.settings
    node.close()

    assert main(["audit", "fixity", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "checked 2 version(s): 1 passed, 1 failed" in out
    assert f"FAILED {broken} v1: hash_mismatch" in out

    assert main(["audit", "fixity", "--config", config, "--class", "LAB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["checked"], report["passed"], report["failures"]) == (1, 1, [])

    assert main(["audit", "fixity", "--config", config, "--archive", lab, "--class", "LAB"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["audit", "fixity", "--config", config, "--archive", "nope"]) == 2
    assert "not an archive id" in capsys.readouterr().err

    reopened = NodeRuntime.open(settings)
    try:
        alerts = reopened.alert_store.open_for(["fixity_mismatch"])
    finally:
        reopened.close()
    assert [(a.subject, a.count) for a in alerts] == [(broken, 1)]


def test_audit_log_command(
    make_node: MakeNode, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(database_url=database_url)
    app = create_app(node)
    with serve(app) as client:
        api = Api(node=node, app=app, client=client, keys=issue_keys(node))
        archive_id = api.create()["id"]
    node.worker.run_until_anchored(timeout=30)
    config = str(_config(node))
    assert main(["audit", "log", "--config", config]) == 0
    assert "1 log entries, 1 checkpoints, 1 archives checked" in capsys.readouterr().out
    with node.db.transaction() as session:
        session.execute(update(Archive).where(Archive.id == archive_id).values(department="x"))
    node.close()
    assert main(["audit", "log", "--config", config, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["findings"] == [
        {"kind": "catalogue_mismatch", "subject": archive_id, "detail": {"field": "department"}}
    ]
