"""The compliance report against a scripted history on a real node (SQLite and PostgreSQL): every
figure is computed independently in the test from the script (which archive was created when,
archived or not, held, past its retention, fixity-checked), then compared with the JSON and the
CSV forms."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import update

from node.models import Archive
from tests.api.conftest import Api
from tests.monitoring.test_fixity import _blob_path

REPORT = "/api/v1/reports/compliance"


def _age(api: Api, archive_id: str, days: float) -> None:
    """Script: the archive was created ``days`` ago."""
    when = datetime.now(UTC) - timedelta(days=days)
    with api.node.db.transaction() as session:
        session.execute(update(Archive).where(Archive.id == archive_id).values(created_at=when))


def _archive(api: Api, archive_id: str) -> None:
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text


def test_compliance_report_matches_the_scripted_history(api: Api) -> None:
    archivist = api.auth("archivist")
    script: list[dict[str, Any]] = [
        {"name": "late", "class": "INPATIENT", "age": 20, "archive": True},
        {"name": "on_time", "class": "INPATIENT", "age": 0, "archive": True},
        {"name": "overdue", "class": "LAB", "age": 10, "archive": False},
        {"name": "young", "class": "LAB", "age": 0, "archive": False},
        {"name": "lab_on_time", "class": "LAB", "age": 3, "archive": True},
        {"name": "outside", "class": "OUTPATIENT", "age": 400, "archive": True},
    ]
    ids: dict[str, str] = {}
    for step in script:
        ids[step["name"]] = api.create(record_class=step["class"])["id"]
        _age(api, ids[step["name"]], step["age"])
        if step["archive"]:
            _archive(api, ids[step["name"]])
    held = api.client.post(
        f"/api/v1/archives/{ids['on_time']}/hold", json={"reason": "litigation"}, headers=archivist
    )
    assert held.status_code == 200, held.text
    with api.node.db.transaction() as session:  # script: the retention of "late" has expired
        session.execute(
            update(Archive)
            .where(Archive.id == ids["late"])
            .values(retention_deadline=datetime.now(UTC) - timedelta(days=1))
        )
    api.client.post(
        "/api/v1/audits/fixity",
        json={"scope": "archives", "archive_ids": [ids["young"]]},
        headers=archivist,
    )
    path = _blob_path(api.node, ids["overdue"])
    path.write_bytes(b"\x00" + path.read_bytes()[1:])
    api.client.post(
        "/api/v1/audits/fixity",
        json={"scope": "archives", "archive_ids": [ids["overdue"]]},
        headers=archivist,
    )

    # expected figures, computed from the script alone (7-day deadline for every class)
    window = [s for s in script if s["age"] < 365]
    by_class: dict[str, dict[str, int]] = {}
    tallies: dict[str, dict[str, int]] = {}
    for s in window:
        state = "ARCHIVED" if s["archive"] else "CREATED"
        by_class.setdefault(s["class"], {}).setdefault(state, 0)
        by_class[s["class"]][state] += 1
        t = tallies.setdefault(s["class"], {"eligible": 0, "on_time": 0, "late": 0, "overdue": 0})
        if s["archive"]:
            t["eligible"] += 1
            t["on_time" if s["age"] <= 7 else "late"] += 1
        elif s["age"] > 7:
            t["eligible"] += 1
            t["overdue"] += 1
    total = {
        k: sum(t[k] for t in tallies.values()) for k in ("eligible", "on_time", "late", "overdue")
    }

    today = date.today()
    params = {"from": (today - timedelta(days=365)).isoformat()}
    response = api.client.get(REPORT, params=params, headers=api.auth("auditor"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["hospital"] == api.node.hospital
    assert report["archives"] == by_class
    for record_class, t in tallies.items():
        got = report["on_time_archiving"]["by_class"][record_class]
        assert {k: got[k] for k in t} == t
        assert got["rate"] == (t["on_time"] / t["eligible"] if t["eligible"] else None)
    got_total = report["on_time_archiving"]["total"]
    assert {k: got_total[k] for k in total} == total
    assert got_total["rate"] == total["on_time"] / total["eligible"]  # 2 of 4
    assert report["holds"] == {"on_hold": 1, "by_regulator": 0}
    assert report["dispositions"] == {"overdue": 1, "in_review": 0}
    fixity = report["fixity"]
    assert (fixity["versions"], fixity["passed"], fixity["failed"]) == (len(script), 1, 1)
    assert fixity["never_checked"] == len(script) - 2
    assert fixity["oldest_check"] is not None
    # the fixtures' PDF is a real PDF: archiving raised no qc_failed
    assert report["open_alerts"] == {"fixity_mismatch": 1}
    assert report["anchoring"]["events_behind"] > 0  # nothing anchored in this test

    as_csv = api.client.get(REPORT, params={**params, "format": "csv"}, headers=api.auth("auditor"))
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["section", "key", "measure", "value"]
    values = {(r[0], r[1], r[2]): r[3] for r in rows[1:]}
    assert values[("archives", "LAB", "CREATED")] == "2"
    assert float(values[("on_time_archiving", "ALL", "rate")]) == got_total["rate"]
    assert values[("dispositions", "overdue", "")] == "1"
    assert values[("open_alerts", "fixity_mismatch", "")] == "1"

    narrow = api.client.get(  # a window holding nothing
        REPORT, params={"from": "2001-01-01", "to": "2001-02-01"}, headers=api.auth("archivist")
    ).json()
    assert narrow["archives"] == {}
    assert narrow["on_time_archiving"]["total"]["rate"] is None


def test_compliance_report_refusals(api: Api) -> None:
    auditor = api.auth("auditor")
    inverted = api.client.get(
        REPORT, params={"from": "2024-02-01", "to": "2024-01-01"}, headers=auditor
    )
    assert inverted.status_code == 400
    assert inverted.json()["code"] == "invalid_window"
    for params in ({"from": "yesterday"}, {"to": "2024-13-01"}, {"format": "xml"}, {"x": "1"}):
        assert api.client.get(REPORT, params=params, headers=auditor).status_code == 422, params
    assert api.client.get(REPORT, headers=api.auth("cardiologist")).status_code == 403
    assert api.client.get(REPORT, headers=api.auth("admin")).status_code == 403
    assert api.client.get(REPORT).status_code == 401
