"""``disposition_overdue`` alerts (SQLite and PostgreSQL, a real node on anvil): an archive held
here more than ``disposition_overdue_days`` (30) past its retention deadline and still ARCHIVED
or in DISPOSITION_REVIEW is alerted once per run (counted again on the next); one on hold, one
whose deadline passed within the grace, one in the future and one never archived are not. The
daily job, ``POST /retention/run`` and ``archivechain retention run`` raise them alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from anchoring.events import RecordClass, Sensitivity
from archivechain import main
from node.models import Archive
from node.principal import Role
from node.retention import add_years
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from tests.anchoring.test_anchor_cli import _config
from tests.api.conftest import Api
from tests.fixtures.node import MakeNode

YEARS = 15  # OUTPATIENT: 15 years from the last visit


def _new(patient: str, trigger: date) -> NewArchive:
    return NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Visit note",
        patient_id=patient,
        source_system="HIS",
        media_type="text/plain",
        trigger_date=trigger,
    )


def test_overdue_dispositions_are_alerted(node: NodeRuntime) -> None:
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "overdue").secret)
    today = datetime.now(UTC).date()
    long_ago = add_years(today, -YEARS) - timedelta(days=400)  # deadline ~400 days ago
    recently = add_years(today, -YEARS) - timedelta(days=10)  # deadline 10 days ago: in grace

    def create(name: str, trigger: date) -> str:
        view = node.archives.create(archivist, _new(f"MRN-{name}", trigger), [b"visit note"])
        return view.id

    in_review = create("review", long_ago)
    node.archives.archive(archivist, in_review)
    assert node.retention.start_dispositions(archivist) == 1
    ids = {
        name: create(name, trigger)
        for name, trigger in (
            ("archived", long_ago),
            ("held", long_ago),
            ("grace", recently),
            ("future", today),
            ("created", long_ago),
        )
    }
    for name in ("archived", "held", "grace", "future"):
        view = node.archives.archive(archivist, ids[name])
        assert view.retention_deadline is not None
    node.archives.place_hold(archivist, ids["held"], "litigation")

    assert node.retention.overdue() == 2
    alerts = node.alert_store.open_for(["disposition_overdue"])
    found = {a.subject: (a.severity.value, a.detail["state"], a.count) for a in alerts}
    assert found == {
        in_review: ("warning", "DISPOSITION_REVIEW", 1),
        ids["archived"]: ("warning", "ARCHIVED", 1),
    }
    assert all(a.detail["days_overdue"] >= 400 for a in alerts)

    node.retention.run_schedule()  # the daily job raises them too: same alerts, counted again
    counts = {a.subject: a.count for a in node.alert_store.open_for(["disposition_overdue"])}
    assert counts == {in_review: 2, ids["archived"]: 2}


def _scenario(node: NodeRuntime) -> dict[str, str]:
    """Archives whose deadline passed long ago (archived / archived and on hold / never
    archived), within the grace, or in the future; the first is overdue once in review."""
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "scenario").secret)
    today = datetime.now(UTC).date()
    long_ago = add_years(today, -YEARS) - timedelta(days=400)
    recently = add_years(today, -YEARS) - timedelta(days=10)
    ids: dict[str, str] = {}
    for name, trigger in (
        ("overdue", long_ago),
        ("held", long_ago),
        ("grace", recently),
        ("future", today),
        ("created", long_ago),
    ):
        ids[name] = node.archives.create(archivist, _new(f"MRN-{name}", trigger), [b"x"]).id
        if name != "created":
            node.archives.archive(archivist, ids[name])
    node.archives.place_hold(archivist, ids["held"], "litigation")
    return ids


def test_the_retention_route_alerts_overdue_dispositions(api: Api) -> None:
    """``POST /retention/run`` does what the daily job does for dispositions: due archives into
    review, then the overdue ones alerted; a caller without the role changes nothing."""
    node = api.node
    ids = _scenario(node)
    manager = node.keys.issue(Role.RECORDS_MANAGER, "manager-overdue").secret
    run = "/api/v1/retention/run"

    for who in ("auditor", "cardiologist"):
        refused = api.client.post(run, headers=api.auth(who))
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
    assert node.alert_store.open_for(["disposition_overdue"]) == []
    with node.db.session() as session:
        assert session.get_one(Archive, ids["overdue"]).state == "ARCHIVED"

    done = api.client.post(run, headers=api.auth("archivist"))
    assert done.status_code == 200, done.text
    assert done.json() == {"moved_to_review": 2, "overdue_alerted": 1}  # overdue + grace moved
    listed = api.client.get(
        "/api/v1/alerts", headers=api.auth("admin"), params={"kind": "disposition_overdue"}
    )
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(a["subject"], a["severity"], a["detail"]["state"], a["count"]) for a in items] == [
        (ids["overdue"], "warning", "DISPOSITION_REVIEW", 1)
    ]
    assert items[0]["detail"]["days_overdue"] >= 400

    again = api.client.post(run, headers={"Authorization": f"Bearer {manager}"})
    assert again.json() == {"moved_to_review": 0, "overdue_alerted": 1}
    counts = {a.subject: a.count for a in node.alert_store.open_for(["disposition_overdue"])}
    assert counts == {ids["overdue"]: 2}


def test_the_retention_command_alerts_overdue_dispositions(
    make_node: MakeNode, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``archivechain retention run`` on a stopped node raises the alerts the daily job raises."""
    node = make_node(database_url=database_url)
    ids = _scenario(node)
    config = str(_config(node))
    settings = node.settings
    node.close()

    assert main(["retention", "run", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "moved to disposition review 2" in out
    assert "overdue dispositions alerted 1" in out
    assert main(["retention", "run", "--config", config]) == 0
    assert "overdue dispositions alerted 1" in capsys.readouterr().out

    reopened = NodeRuntime.open(settings)
    try:
        alerts = reopened.alert_store.open_for(["disposition_overdue"])
    finally:
        reopened.close()
    assert [(a.subject, a.detail["state"], a.count) for a in alerts] == [
        (ids["overdue"], "DISPOSITION_REVIEW", 2)
    ]
