"""``archivechain retention run``: the retention job on demand from the command line, against a
real node's data directory (SQLite, real anvil)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anchoring.events import RecordClass, Sensitivity
from archivechain import main
from node.db import Database
from node.models import Archive
from node.principal import Role
from node.services.archives import NewArchive


def test_retention_run_moves_due_archives_to_review(
    make_node: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node()
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "cli").secret)
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Visit note",
        patient_id="MRN-CLI",
        source_system="HIS",
        media_type="text/plain",
        trigger_date=(datetime.now(UTC) - timedelta(days=16 * 366)).date(),
    )
    due = node.archives.create(archivist, new, [b"note"]).id
    node.archives.archive(archivist, due)
    kept = node.archives.create(archivist, replace(new, trigger_date=None), [b"x"]).id
    node.archives.archive(archivist, kept)
    settings = node.settings
    config = settings.data_dir / "cli.toml"
    config.write_text(
        'mode = "dev"\n'
        f'data_dir = "{settings.data_dir}"\n'
        f'rpc_url = "{settings.rpc_url}"\n'
        f'deployment_file = "{settings.deployment_file}"\n'
    )
    node.close()

    assert main(["retention", "run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "moved to disposition review 1" in out

    database = Database.connect(settings.resolved_database_url)
    try:
        with database.session() as session:
            assert session.get_one(Archive, due).state == "DISPOSITION_REVIEW"
            assert session.get_one(Archive, kept).state == "ARCHIVED"
    finally:
        database.dispose()
