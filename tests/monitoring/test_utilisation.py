"""The utilisation report against a scripted history on a real node (SQLite and PostgreSQL).

Content reads go through the real API (so the content route records them, with timings and bytes,
and the Prometheus instruments count them); the test then sets each recorded read's timings to
scripted values and adds scripted reads (one outside the window, one the client abandoned), and
computes every figure independently: percentiles by the "smallest value with at least q·n values at
or below it" definition (equal to the nearest rank the service uses, by a different algorithm)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, update

from api.streaming import timed
from node.models import ContentRead
from tests.api.conftest import PDF, Api

REPORT = "/api/v1/reports/utilisation"


def _read(api: Api, archive_id: str, purpose: str) -> bytes:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/content",
        params={"purpose": purpose},
        headers=api.auth("archivist"),
    )
    assert response.status_code == 200, response.text
    return response.content


def _quantile(values: list[float], q: float) -> float | None:
    """Smallest v among ``values`` with at least q·n values ≤ v (independent of the service)."""
    for v in sorted(set(values)):
        if sum(1 for x in values if x <= v) >= q * len(values):
            return v
    return None


def _summary(first: list[float], last: list[float]) -> dict[str, float | int | None]:
    return {
        "reads": len(first),
        "completed": len(last),
        "first_byte_p50": _quantile(first, 0.5),
        "first_byte_p95": _quantile(first, 0.95),
        "last_byte_p50": _quantile(last, 0.5),
        "last_byte_p95": _quantile(last, 0.95),
    }


def test_utilisation_report_matches_the_scripted_history(api: Api) -> None:
    ids = {
        "in1": api.create(record_class="INPATIENT")["id"],
        "in2": api.create(record_class="INPATIENT")["id"],
        "lab": api.create(record_class="LAB")["id"],
        "never_read": api.create(record_class="OUTPATIENT")["id"],
    }
    script = [  # (archive, class, purpose, first byte s, last byte s)
        ("in1", "INPATIENT", "treatment", 0.010, 0.050),
        ("in1", "INPATIENT", "treatment", 0.030, 0.090),
        ("in2", "INPATIENT", "research", 0.020, 0.200),
        ("lab", "LAB", "treatment", 0.005, 0.007),
    ]
    for name, _, purpose, _, _ in script:
        assert _read(api, ids[name], purpose) == PDF

    # every read was recorded by the content route: completed, whole body, ordered timings
    with api.node.db.session() as session:
        rows = session.scalars(select(ContentRead).order_by(ContentRead.id)).all()
        recorded = [(r.id, r.archive_id, r.record_class, r.purpose) for r in rows]
        assert [(r.bytes_sent, r.completed, r.version) for r in rows] == [(len(PDF), True, 1)] * 4
        assert all(0 < r.first_byte_seconds <= (r.last_byte_seconds or 0) for r in rows)
    assert [(a, c, p) for _, a, c, p in recorded] == [(ids[n], c, p) for n, c, p, _, _ in script]
    metrics = api.client.get("/metrics").text
    assert 'archivechain_content_reads_total{purpose="treatment",record_class="INPATIENT"} 2.0' in (
        metrics
    )
    assert 'archivechain_content_first_byte_seconds_count{record_class="LAB"} 1.0' in metrics
    assert 'archivechain_content_last_byte_seconds_count{record_class="INPATIENT"} 3.0' in metrics

    # script: the recorded reads took the scripted times; one abandoned read; one read long ago
    with api.node.db.transaction() as session:
        for (row_id, *_), (_, _, _, first, last) in zip(recorded, script, strict=True):
            session.execute(
                update(ContentRead)
                .where(ContentRead.id == row_id)
                .values(first_byte_seconds=first, last_byte_seconds=last)
            )
    api.node.reports.record_read(
        archive_id=ids["lab"],
        version=1,
        record_class="LAB",
        purpose="audit",
        first_byte_seconds=0.400,
        last_byte_seconds=None,
        bytes_sent=0,
    )
    api.node.reports.record_read(
        archive_id=ids["never_read"],
        version=1,
        record_class="OUTPATIENT",
        purpose="legal",
        first_byte_seconds=9.0,
        last_byte_seconds=9.5,
        bytes_sent=len(PDF),
        read_at=datetime.now(UTC) - timedelta(days=30),
    )
    window = [*script, ("lab", "LAB", "audit", 0.400, None)]

    # expected figures from the script alone
    by_class: dict[str, dict[str, float | int | None]] = {}
    for record_class in {c for _, c, _, _, _ in window}:
        reads = [s for s in window if s[1] == record_class]
        by_class[record_class] = _summary(
            [s[3] for s in reads], [s[4] for s in reads if s[4] is not None]
        )
    total = _summary([s[3] for s in window], [s[4] for s in window if s[4] is not None])
    purposes: dict[str, int] = {}
    for _, _, purpose, _, _ in window:
        purposes[purpose] = purposes.get(purpose, 0) + 1
    read_archives = {name for name, *_ in window}

    params = {"from": (date.today() - timedelta(days=7)).isoformat()}
    response = api.client.get(REPORT, params=params, headers=api.auth("auditor"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["hospital"] == api.node.hospital
    assert report["retrieval_seconds"]["by_class"] == by_class
    assert report["retrieval_seconds"]["total"] == total
    assert total["first_byte_p95"] == 0.400  # sanity
    assert total["last_byte_p50"] == 0.050
    assert report["utilisation"] == {
        "archives_read": len(read_archives),
        "archives_held": len(ids),
        "rate": len(read_archives) / len(ids),
    }
    assert report["reads_by_purpose"] == purposes
    assert report["sharing"] == {
        "grants": 0,
        "shared_reads": 0,
        "transfers_out": 0,
        "transfers_in": 0,
    }

    as_csv = api.client.get(REPORT, params={**params, "format": "csv"}, headers=api.auth("auditor"))
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows_csv = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows_csv[0] == ["section", "key", "measure", "value"]
    values = {(r[0], r[1], r[2]): r[3] for r in rows_csv[1:]}
    assert float(values[("retrieval_seconds", "INPATIENT", "last_byte_p95")]) == 0.2
    assert values[("retrieval_seconds", "LAB", "completed")] == "1"
    assert float(values[("utilisation", "rate", "")]) == 0.75
    assert values[("reads_by_purpose", "treatment", "")] == "3"

    wide = api.client.get(REPORT, params={"from": "2000-01-01"}, headers=api.auth("archivist"))
    assert wide.json()["retrieval_seconds"]["by_class"]["OUTPATIENT"]["first_byte_p50"] == 9.0
    assert wide.json()["utilisation"]["rate"] == 1.0
    empty = api.client.get(
        REPORT, params={"from": "2001-01-01", "to": "2001-02-01"}, headers=api.auth("archivist")
    ).json()
    assert empty["retrieval_seconds"]["total"]["first_byte_p50"] is None
    assert empty["utilisation"]["archives_read"] == 0
    assert empty["reads_by_purpose"] == {}


def test_utilisation_report_refusals(api: Api) -> None:
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


def test_timed_stream_reports_an_abandoned_read_without_a_last_byte() -> None:
    seen: list[tuple[float, float | None, int]] = []
    stream = timed(iter([b"ab", b"cd", b"ef"]), 0.0, lambda f, t, n: seen.append((f, t, n)))
    assert next(stream) == b"ab"
    stream.close()  # the client went away
    assert len(seen) == 1
    assert seen[0][1:] == (None, 2)
    whole: list[tuple[float, float | None, int]] = []
    assert b"".join(timed([b"ab", b"cd"], 0.0, lambda f, t, n: whole.append((f, t, n)))) == b"abcd"
    ((first, last, sent),) = whole
    assert sent == 4
    assert last is not None
    assert 0 < first <= last
