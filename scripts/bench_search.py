"""Catalogue keyword search at large N (issue 13 §4: p95 ≤ 50 ms at 10^6 archives). Prints a
table; not a test.

A real node (hospital A of a throwaway consortium on a fresh anvil; SQLite WAL, or PostgreSQL
with ``--postgres URL``) whose catalogue is filled **synthetically** by ``scripts/synthetic_catalogue.fill``: ``--archives
N`` archive rows and their search terms are generated set-based in SQL (terms cut by the node's
own ``node.textindex.index_terms``) — no blobs, no events, because ingesting 10^6 records through
the real path takes hours on this machine (see docs/benchmarks.md). Each archive has 10 words
drawn from the 17 frequent Chinese and 13 Latin words plus 5,000 generated two-character Chinese
words (Zipf-like: the frequent words in a third of the archives or more), one of five
departments, and a sensitivity (90 % NORMAL).

Timed: the catalogue query of ``ArchiveService.search`` with ``text=`` (``_catalogue_query`` +
``_matching``: the rarest-term probe, a page of 50 and the total counted up to its cap), for
frequent Chinese, frequent Latin, rare Chinese and two-word queries, as an archivist and as a
cardiology clinician (the access policy filters rows: own department, not restricted). **Not** timed: the metadata-read logging of
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
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.services.archives import SearchFilters  # noqa: E402
from scripts.bench_ingest import load_average, machine, postgres_schemas  # noqa: E402
from scripts.synthetic_catalogue import (  # noqa: E402
    WORDS_EN,
    WORDS_ZH,
    fill,
    percentile,
    vocabulary,
)
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402


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
                seconds, term_rows = fill(node.db, args.archives, node.ledger.hospital)
                rows.append(
                    (
                        f"fill: {args.archives:,} archives, {term_rows:,} term rows",
                        f"{seconds:,.0f} s",
                    )
                )
                archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bench").secret)
                clinician = node.keys.authenticate(
                    node.keys.issue(Role.CLINICIAN, "bench", department="cardiology").secret
                )
                words = vocabulary()
                rare = rng.sample(words[len(WORDS_ZH) + len(WORDS_EN) :], 10)
                two = ["胸痛 chest", "造影 report", f"{rare[5]} 出院", "肺炎 ct", "心肌 梗死"]
                for label, principal, queries in (
                    (
                        "frequent Chinese",
                        archivist,
                        ["胸痛", "冠状动脉", "出院 小结", "血常规", "高血压"],
                    ),
                    (
                        "frequent Latin",
                        archivist,
                        ["chest", "follow", "ct", "discharge", "nursing"],
                    ),
                    ("rare Chinese", archivist, rare[:5]),
                    ("two words", archivist, two),
                    (
                        "clinician (policy), frequent",
                        clinician,
                        ["胸痛", "chest", "出院 小结", "ct", "肺炎"],
                    ),
                    ("clinician (policy), rare + two", clinician, rare[6:9] + two[:2]),
                ):
                    times: list[float] = []
                    found: list[int] = []
                    for _ in range(4):
                        for query in queries:
                            filters = SearchFilters(text=query, limit=50)
                            began = time.perf_counter()
                            with node.db.session() as session:
                                built = node.archives._catalogue_query(principal, filters, session)
                                total, _exact, _ids = node.archives._matching(
                                    built, filters, session
                                )
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
