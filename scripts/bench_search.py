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
Once the node is built its objects are frozen out of full garbage collections, as a serving node
does (``api.server.prepare_process``).

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
from typing import Any

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchoring.events import RecordClass  # noqa: E402
from api.server import freeze_startup_objects  # noqa: E402
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

QUERIES: list[tuple[str, str, list[str]]] = [
    ("frequent Chinese", "archivist", ["胸痛", "冠状动脉", "出院 小结", "血常规", "高血压"]),
    ("frequent Latin", "archivist", ["chest", "follow", "ct", "discharge", "nursing"]),
    ("rare Chinese", "archivist", []),  # drawn from the generated words
    ("two words", "archivist", []),
    ("clinician (policy), frequent", "clinician", ["胸痛", "chest", "出院 小结", "ct", "肺炎"]),
    ("clinician (policy), rare + two", "clinician", []),
]


def _queries(rng: random.Random) -> list[tuple[str, str, list[SearchFilters]]]:
    words = vocabulary()
    rare = rng.sample(words[len(WORDS_ZH) + len(WORDS_EN) :], 10)
    two = ["胸痛 chest", "造影 report", f"{rare[5]} 出院", "肺炎 ct", "心肌 梗死"]
    fixed = {
        "rare Chinese": rare[:5],
        "two words": two,
        "clinician (policy), rare + two": [*rare[6:9], *two[:2]],
    }
    out: list[tuple[str, str, list[SearchFilters]]] = []
    for label, who, texts in QUERIES:
        out.append((label, who, [SearchFilters(text=t) for t in texts or fixed[label]]))
    out.append(
        (
            "filters: text + department",
            "archivist",
            [
                SearchFilters(text=t, department=d)
                for t, d in (
                    ("胸痛", "oncology"),
                    ("chest", "cardiology"),
                    (rare[0], "oncology"),
                    ("出院 小结", "pediatrics"),
                    ("ct", "psychiatry"),
                )
            ],
        )
    )
    out.append(
        (
            "filters: no text (department / state)",
            "archivist",
            [
                SearchFilters(department="cardiology"),
                SearchFilters(department="oncology", state="CREATED"),
                SearchFilters(state="CREATED"),
                SearchFilters(record_class=RecordClass.INPATIENT, department="psychiatry"),
                SearchFilters(),
            ],
        )
    )
    out.append(
        (
            "clinician, no text",
            "clinician",
            [SearchFilters(), SearchFilters(state="CREATED"), SearchFilters(department="oncology")],
        )
    )
    out.append(
        (
            "page 5 (offset 200), frequent",
            "archivist",
            [SearchFilters(text=t, offset=200) for t in ("胸痛", "chest", "出院 小结")],
        )
    )
    return out


def _explain(node: Any, principal: Any, filters: SearchFilters) -> list[str]:
    """EXPLAIN (ANALYZE) of the page and count statements of one search."""
    lines: list[str] = []
    with node.db.session() as session:
        postgres = session.connection().dialect.name == "postgresql"
        for statement in node.archives._statements(principal, filters, session):
            dialect = session.connection().dialect
            shown = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            compiled = statement.compile(dialect=dialect)
            params = compiled.construct_params()
            args: Any = (
                tuple(params[name] for name in compiled.positiontup or ())
                if compiled.positional
                else params
            )
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
            lines.append(f"-- {shown}")
            began = time.perf_counter()
            run = session.connection().exec_driver_sql
            plan = run(prefix + str(compiled), args).all()
            lines.extend(str(row[0] if postgres else row[-1]) for row in plan)
            if not postgres:
                run(str(compiled), args).all()
            lines.append(f"-- {(time.perf_counter() - began) * 1e3:.1f} ms")
    return lines


def _measure(
    node: Any,
    principals: dict[str, Any],
    rng: random.Random,
    rounds: int,
    explain: bool,
    per_query: bool = False,
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for label, who, searches in _queries(rng):
        principal = principals[who]
        times: list[float] = []
        found: list[int] = []
        each: dict[int, list[float]] = {i: [] for i in range(len(searches))}
        for _ in range(rounds):
            for i, filters in enumerate(searches):
                began = time.perf_counter()
                with node.db.session() as session:
                    built = node.archives._catalogue_query(principal, filters, session)
                    total, _exact, ids, _more = node.archives._matching(built, filters, session)
                    node.archives._page_rows(session, ids)
                times.append(time.perf_counter() - began)
                each[i].append(times[-1])
                found.append(total)
        if per_query:
            for i, filters in enumerate(searches):
                shown = {k: v for k, v in vars(filters).items() if v and k != "limit"}
                rows.append(
                    (
                        f"  {shown}: p50 / p95",
                        f"{statistics.median(each[i]) * 1e3:.1f} / "
                        f"{percentile(each[i], 0.95) * 1e3:.1f} ms",
                    )
                )
        rows.append(
            (
                f"{label} ({min(found):,}–{max(found):,} matches): p50 / p95",
                f"{statistics.median(times) * 1e3:.1f} / {percentile(times, 0.95) * 1e3:.1f} ms"
                f"  [load {load_average()}]",
            )
        )
        if explain:
            for filters in searches[:2]:
                print(f"## {label}: {filters}")
                print("\n".join(_explain(node, principal, filters)))
    return rows


def run(args: argparse.Namespace) -> int:
    load_before = load_average()
    started = datetime.now(UTC)
    rows: list[tuple[str, str]] = []
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-search-") as tmp,
            postgres_schemas(None if args.database else args.postgres, ["search"]) as (fresh,),
        ):
            root = Path(tmp)
            consortium = build_consortium(anvil.rpc_url, derive_test_accounts(), root / "chain")
            node = build_node(
                consortium,
                consortium.accounts.hospital_a,
                root / "node",
                database_url=args.database or fresh,
            )
            try:
                with node.db.session() as session:
                    held = session.execute(text("SELECT count(*) FROM archives")).scalar_one()
                if held == 0:
                    seconds, term_rows = fill(node.db, args.archives, node.ledger.hospital)
                    rows.append(
                        (
                            f"fill: {args.archives:,} archives, {term_rows:,} term rows",
                            f"{seconds:,.0f} s  [load {load_average()}]",
                        )
                    )
                else:
                    rows.append(("reused database: archives", f"{held:,}"))
                # as a serving node does once built (api.server.prepare_process): full
                # collections no longer walk the start-up objects (100-170 ms pauses otherwise)
                freeze_startup_objects()
                archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bench").secret)
                clinician = node.keys.authenticate(
                    node.keys.issue(Role.CLINICIAN, "bench", department="cardiology").secret
                )
                principals = {"archivist": archivist, "clinician": clinician}
                _measure(node, principals, random.Random(13), 1, False)  # warm the caches
                rows += _measure(
                    node,
                    principals,
                    random.Random(13),
                    args.rounds,
                    args.explain,
                    args.per_query,
                )
            finally:
                node.close()
    finally:
        anvil.stop()
    width = max(len(name) for name, _ in rows)
    print(f"ArchiveChain catalogue search benchmark — {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_average()}")
    postgres = args.postgres or (args.database or "").startswith("postgresql")
    database = "PostgreSQL" if postgres else "SQLite WAL synchronous=FULL"
    print(f"node: {database}; cpus: {os.cpu_count()}; 50 per page; {args.rounds} rounds")
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
    parser.add_argument(
        "--database",
        metavar="URL",
        help="an existing node database (SQLite file or PostgreSQL schema): filled if it holds "
        "no archive, reused as it is otherwise, and kept",
    )
    parser.add_argument("--rounds", type=int, default=4, help="times each query is run")
    parser.add_argument("--explain", action="store_true", help="print the statements' plans")
    parser.add_argument(
        "--per-query", action="store_true", help="also print each query's p50 / p95"
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
