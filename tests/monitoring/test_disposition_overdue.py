"""``disposition_overdue`` alerts (SQLite and PostgreSQL, a real node on anvil): an archive held
here more than ``disposition_overdue_days`` (30) past its retention deadline and still ARCHIVED
or in DISPOSITION_REVIEW is alerted once per run (counted again on the next); one on hold, one
whose deadline passed within the grace, one in the future and one never archived are not."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from anchoring.events import RecordClass, Sensitivity
from node.principal import Role
from node.retention import add_years
from node.runtime import NodeRuntime
from node.services.archives import NewArchive

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
