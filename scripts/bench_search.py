"""Catalogue keyword search at large N (issue 13 §4: p95 ≤ 50 ms at 10^6 archives). Prints a
table; not a test.

A real node (hospital A of a throwaway consortium on a fresh anvil; SQLite WAL, or PostgreSQL
with ``--postgres URL``) whose catalogue is filled **synthetically**: ``--archives N`` archive
rows and their search terms are bulk-inserted (Core ``executemany``, 20,000 rows per statement)
with the node's own term cutter (``node.textindex.index_terms``) — no blobs, no events, because
ingesting 10^6 records through the real path takes hours on this machine (see
docs/benchmarks.md). Each archive has a 3-word title and a 10-word text drawn from a vocabulary
of the 17 frequent Chinese and 13 Latin words of ``bench_hospital_ingest`` plus 5,000 generated
two-character Chinese words (Zipf-like: the frequent words in about a third of the archives).

Timed: the catalogue query of ``ArchiveService.search`` with ``text=`` (``_catalogue_query`` +
``_matching``: the term subquery, the total count and a page of 50), for frequent Chinese,
frequent Latin, rare Chinese and two-word queries. **Not** timed: the metadata-read logging of
the listed archives (a unit of work with up to 50 ACCESS events per search, which the synthetic
rows cannot take: they have no CREATE event); ``bench_hospital_ingest`` times search with it.

Usage: .venv/bin/python scripts/bench_search.py [--archives N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402
from ulid import ULID  # noqa: E402

from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.models import Archive, SearchTerm  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.services.archives import SearchFilters  # noqa: E402
from node.textindex import index_terms  # noqa: E402
from scripts.bench_hospital_ingest import WORDS_EN, WORDS_ZH  # noqa: E402
from scripts.bench_ingest import load_average, machine, postgres_schemas  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402

CHUNK = 20_000


def vocabulary(rng: random.Random) -> list[str]:
    """Frequent words first, then 5,000 generated two-character Chinese words."""
    rare = {
        chr(rng.randint(0x4E00, 0x9FA5)) + chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(5000)
    }
    return [*WORDS_ZH, *WORDS_EN, *sorted(rare)]


def fill(node: object, total: int, rng: random.Random) -> tuple[float, int]:
    """Insert ``total`` synthetic archives and their terms; (seconds, term rows)."""
    words = vocabulary(rng)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(words))]
    base = datetime(2020, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    term_rows = 0
    db = node.db  # type: ignore[attr-defined]
    custodian = node.ledger.hospital  # type: ignore[attr-defined]
    for offset in range(0, total, CHUNK):
        archives, terms = [], []
        for i in range(offset, min(total, offset + CHUNK)):
            archive_id = str(ULID())
            drawn = rng.choices(words, weights, k=13)
            title, text = "".join(drawn[:3]), " ".join(drawn[3:])
            created = base + timedelta(seconds=i * 60)
            archives.append(
                {
                    "id": archive_id,
                    "record_class": "INPATIENT",
                    "sensitivity": "NORMAL",
                    "department": "cardiology",
                    "title": title,
                    "patient_pseudonym": f"{i % 50_000:064x}",
                    "source_system": "HIS",
                    "metadata_json": {},
                    "search_text": title,
                    "state": "CREATED",
                    "custodian": custodian,
                    "trigger_date": created,
                    "on_hold": False,
                    "hold_by_regulator": False,
                    "current_version": 1,
                    "last_event_hash": b"\0" * 32,
                    "event_count": 1,
                    "chain_status": "none",
                    "created_by": "00" * 32,
                    "created_at": created,
                    "updated_at": created,
                }
            )
            terms.extend({"term": t, "archive_id": archive_id} for t in index_terms(title, text))
        with db.transaction() as session:
            session.connection().execute(insert(Archive), archives)
            session.connection().execute(insert(SearchTerm), terms)
        term_rows += len(terms)
    return time.perf_counter() - started, term_rows


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(args: argparse.Namespace) -> int:
    rng = random.Random(13)
    load_before = load_average()
    started = datetime.now(UTC)
    rows: list[tuple[str, str]] = []
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-search-") as tmp,
            postgres_schemas(args.postgres, ["search"]) as (database_url,),
        ):
            root = Path(tmp)
            consortium = build_consortium(anvil.rpc_url, derive_test_accounts(), root / "chain")
            node = build_node(
                consortium, consortium.accounts.hospital_a, root / "node", database_url=database_url
            )
            try:
                seconds, term_rows = fill(node, args.archives, rng)
                rows.append(
                    (
                        f"fill: {args.archives:,} archives, {term_rows:,} term rows",
                        f"{seconds:,.0f} s",
                    )
                )
                principal = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bench").secret)
                words = vocabulary(random.Random(13))
                rare = rng.sample(words[len(WORDS_ZH) + len(WORDS_EN) :], 10)
                for label, queries in (
                    ("frequent Chinese", ["胸痛", "冠状动脉", "出院小结", "血常规", "高血压"]),
                    ("frequent Latin", ["chest", "follow", "ct", "discharge", "nursing"]),
                    ("rare Chinese", rare[:5]),
                    (
                        "two words",
                        ["胸痛 chest", "造影 report", f"{rare[5]} 出院", "肺炎 ct", "心肌梗死"],
                    ),
                ):
                    times: list[float] = []
                    found: list[int] = []
                    for _ in range(4):
                        for query in queries:
                            filters = SearchFilters(text=query, limit=50)
                            began = time.perf_counter()
                            built = node.archives._catalogue_query(principal, filters)
                            total, _ids = node.archives._matching(built, filters)
                            times.append(time.perf_counter() - began)
                            found.append(total)
                    rows.append(
                        (
                            f"search query, {label} ({min(found):,}–{max(found):,} matches): "
                            "p50 / p95",
                            f"{statistics.median(times) * 1e3:.1f} / "
                            f"{percentile(times, 0.95) * 1e3:.1f} ms",
                        )
                    )
            finally:
                node.close()
    finally:
        anvil.stop()
    width = max(len(name) for name, _ in rows)
    print(f"ArchiveChain catalogue search benchmark — {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_average()}")
    database = "PostgreSQL" if args.postgres else "SQLite WAL synchronous=FULL"
    print(f"node: {database}; cpus: {os.cpu_count()}")
    print("-" * (width + 20))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archives", type=int, default=100_000, help="archives to fill in")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server instead of SQLite")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
