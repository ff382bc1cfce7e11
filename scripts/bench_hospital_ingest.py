"""Ingestion benchmarks (issue 13 §4). Prints a table; not a test.

A real node (hospital A of a throwaway consortium on a fresh anvil, SQLite WAL ``synchronous=FULL``
or PostgreSQL, local blob store, no anchoring schedule) in this process:

  1. bulk import at the service level: ``IngestionService.ingest_batch`` of 4 KB documents in
     batches (each batch one unit of work: blobs encrypted and stored, then archives, CREATE
     events, message rows and search terms committed together) — durable archives/s;
  2. the same documents one per call (``ingest``), as a hospital system sending one at a time;
  3. HL7 v2 ORU^R01 over one MLLP connection (a real TCP socket; each message waits for its ACK,
     which is sent after the commit) — durable messages/s;
  4. keyword search (``GET /archives?text=`` at the service level: ``ArchiveService.search``) over
     the archives made above, Chinese and Latin queries: p50 / p95;
  5. (only with ``--parts import``) ``archivechain import`` (the CLI, a separate process) of
     4 KB files through the node's API served by uvicorn in this process: 2,000 files one file
     per request (``--batch 1``), then 10,000 files (each run its own) in batches of 100 one
     request at a time (``--batch 100 --parallel 1``) and two in flight (``--parallel 2``), the
     defaults (``--batch 250 --parallel 2``), and the defaults again with one file in 97 refused
     by the node (a blank patient id: the batch holding it is refused and
     sent again without it): archives/s over the whole run (files sent, refused ones included),
     the CLI's start-up (about 0.2 s) and the first and last batches included. A backfill
     is judged by its sustained rate: the batched runs are long enough (about 10 s) that these
     fixed costs weigh a few per cent, where on 2,000 files they weighed about a quarter.

Usage: .venv/bin/python scripts/bench_hospital_ingest.py [--quick] [--postgres URL]
       [--parts bulk,single,mllp,search,import] [--profile PREFIX]
``--parts`` runs only the named measures (default: all but import); ``--profile PREFIX`` writes cProfile
statistics of the bulk import to PREFIX.caller (the calling thread: validation, classification,
blob stores) and PREFIX.writer (the database writer's thread: the unit of work), pstats format.
Once the node is built and the documents generated, they are frozen out of the garbage collector
(``api.server.freeze_startup_objects``), as a serving node freezes what it built at start-up; a
node receives its documents request by request instead of holding them all. The bulk rows also
give CPU per archive: this process's (every thread) and every local ``postgres`` process's (0 for
SQLite). On the 2-core VM of docs/benchmarks.md the process's CPU per archive doubles (0.75 →
1.6 ms, same code) after two or three minutes of runs back to back and is back after 45 s idle,
while the server's does not move: leave a pause between runs whose figures are compared.
Everything lives in a temporary directory removed at the end. BENCHMARK ONLY keys and costs.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.server import freeze_startup_objects  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.services.archives import SearchFilters  # noqa: E402
from scripts.bench_ingest import load_average, machine, postgres_schemas  # noqa: E402
from scripts.synthetic_catalogue import document, percentile  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402


def oru(i: int) -> bytes:
    segments = [
        f"MSH|^~\\&|LIS|HOSP|ARCHIVE|HOSP|20240502101500||ORU^R01^ORU_R01|ORU-{i}|P|2.5.1",
        f"PID|1||MRN-{i % 5000}^^^HOSP^MR||DOE^JOHN",
        "PV1|1|I|5B^12^1|||||||cardiology|||||||||V-1001",
        "OBR|1||LAB-1|58410-2^CBC panel^LN|||20240502",
        "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL",
        "OBX|2|ST|8251-1^Comment^LN||血常规未见明显异常",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def pipelined(port: int, first: int, total: int, window: int = 1000) -> float:
    """ORU^R01 messages per second over one connection whose sender keeps up to ``window``
    messages unacknowledged (a writer thread; the ACKs are read and checked in order)."""
    sent = threading.Semaphore(window)
    with socket.create_connection(("127.0.0.1", port)) as sock:

        def writer() -> None:
            for i in range(first, first + total):
                sent.acquire()
                sock.sendall(b"\x0b" + oru(i) + b"\x1c\x0d")

        thread = threading.Thread(target=writer, daemon=True)
        start = time.perf_counter()
        thread.start()
        pending = b""
        for i in range(first, first + total):
            while b"\x1c\x0d" not in pending:
                pending += sock.recv(65536)
            reply, pending = pending.split(b"\x1c\x0d", 1)
            if b"MSA|AA" not in reply or f"|ORU-{i}|".encode() not in reply:
                raise RuntimeError("an ORU was not accepted, or answered out of order")
            sent.release()
        wall = time.perf_counter() - start
        thread.join()
    return total / wall


def postgres_cpu() -> float:
    """CPU seconds used so far by every ``postgres`` process on this machine (the server's
    backends, WAL writer, checkpointer, autovacuum); 0 when none runs here."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, fields = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # the process ended meanwhile
        if head.endswith("(postgres"):
            values = fields.split()
            total += int(values[11]) + int(values[12])  # utime, stime
    return total / ticks


def bulk(
    node: Any,
    principal: Any,
    docs: list[Any],
    total: int,
    batch: int,
    profile: str | None,
    parallel: int = 1,
) -> tuple[str, str]:
    """Durable archives/s of ``ingest_batch`` in batches of ``batch`` (optionally profiled), from
    ``parallel`` threads at once (the import CLI keeps two requests in flight by default; the
    API serves each in its own thread, and each is its own unit of work)."""
    caller = cProfile.Profile()
    writer = cProfile.Profile()
    if profile:  # the writer thread's profiler is enabled from inside that thread
        node.committer.run(lambda _uow: writer.enable())
        caller.enable()
    start, cpu, server = time.perf_counter(), time.process_time(), postgres_cpu()
    offsets = range(10, total, batch)
    if parallel == 1:
        for offset in offsets:
            node.ingestion.ingest_batch(principal, docs[offset : offset + batch])
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for _ in pool.map(
                lambda o: node.ingestion.ingest_batch(principal, docs[o : o + batch]), offsets
            ):
                pass
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    server = postgres_cpu() - server
    if profile:
        caller.disable()
        node.committer.run(lambda _uow: writer.disable())
        caller.dump_stats(f"{profile}.caller")
        writer.dump_stats(f"{profile}.writer")
    return (
        f"bulk import, 4 KB documents, batches of {batch} ({total - 10:,} docs), "
        f"{parallel} in flight: "
        "durable archives/s; CPU per archive: this process (all threads), PostgreSQL processes",
        f"{(total - 10) / wall:,.0f}; {cpu / (total - 10) * 1e3:.2f} ms, "
        f"{server / (total - 10) * 1e3:.2f} ms",
    )


def import_cli(node: Any, root: Path, single: int, batched: int) -> list[tuple[str, str]]:
    """``archivechain import`` of 4 KB files: ``single`` files one per request, then ``batched``
    files per run in batches (each run its own files, so nothing is a duplicate), against
    uvicorn serving the node's app."""
    import resource
    import subprocess

    from api.main import create_app
    from api.server import HttpLimits, make_server

    key = root / "import.key"
    key.write_text(node.keys.issue(Role.ARCHIVIST, "bench-import").secret + "\n")
    port = free_port()
    # The hardened server ``archivechain node`` runs (guarded h11 protocol, no access log).
    server = make_server(create_app(node), host="127.0.0.1", port=port, limits=HttpLimits())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    cli = Path(sys.executable).with_name("archivechain")
    rows: list[tuple[str, str]] = []
    try:
        # (files per request, requests in flight, files, every how many files one is refused)
        for batch, parallel, total, refuse in (
            (1, 1, single, 0),
            (100, 1, batched, 0),
            (100, 2, batched, 0),
            (250, 2, batched, 0),
            (250, 2, batched, 97),
        ):
            name = f"import-{batch}-{parallel}-{refuse}"
            directory = root / name
            directory.mkdir()
            lines = ["file,patient_id,class_hint,trigger_date"]
            refused = 0
            for i in range(total):
                head = f"{name} document {i} 出院小结 chest pain follow-up\n".encode()
                (directory / f"d{i:05d}.txt").write_bytes((head * 100)[:4096])
                # A blank patient id passes the manifest's check; the node refuses it.
                bad = refuse and i % refuse == refuse // 2
                refused += bool(bad)
                patient = "   " if bad else f"MRN-{i % 500}"
                lines.append(f"d{i:05d}.txt,{patient},住院病历,2024-05-0{1 + i % 9}")
            manifest = root / f"{name}.csv"
            manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
            load = load_average()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            start, cpu, postgres = time.perf_counter(), time.process_time(), postgres_cpu()
            done = subprocess.run(
                [str(cli), "import", str(directory), "--manifest", str(manifest), "--node",
                 f"http://127.0.0.1:{port}", "--api-key-file", str(key), "--batch", str(batch),
                 "--parallel", str(parallel)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            postgres = postgres_cpu() - postgres
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            client = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
            counts = f"imported {total - refused}, already present 0, failed {refused}"
            if done.returncode != (1 if refused else 0) or counts not in done.stdout:
                raise RuntimeError(f"import failed: {done.stdout[-300:]} {done.stderr[-300:]}")
            how = "one file per request" if batch == 1 else f"--batch {batch} --parallel {parallel}"
            if refused:
                how += f", {refused} files refused by the node (one in {refuse})"
            rows.append(
                (
                    f"archivechain import, {total:,} files of 4 KB, {how}: archives/s "
                    "(load 1/5/15 min at start); CPU per archive: CLI, node, PostgreSQL",
                    f"{total / wall:,.0f} ({load}); {client / total * 1e3:.2f}, "
                    f"{cpu / total * 1e3:.2f}, {postgres / total * 1e3:.2f} ms",
                )
            )
    finally:
        server.should_exit = True
        thread.join(30)
    return rows


def single(node: Any, principal: Any, docs: list[Any]) -> tuple[str, str]:
    """One document per ``ingest`` call."""
    timings = []
    start = time.perf_counter()
    for doc in docs:
        began = time.perf_counter()
        node.ingestion.ingest(principal, doc)
        timings.append(time.perf_counter() - began)
    wall = time.perf_counter() - start
    return (
        f"one document per call ({len(docs):,}): archives/s; p50 / p95",
        f"{len(docs) / wall:,.0f}; "
        f"{percentile(timings, 0.5) * 1e3:.2f} / {percentile(timings, 0.95) * 1e3:.2f} ms",
    )


def mllp(port: int, total: int) -> list[tuple[str, str]]:
    """ORU^R01 over one connection: each waiting for its ACK, then pipelined (10× as many)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        pending = b""
        start = time.perf_counter()
        for i in range(total):
            sock.sendall(b"\x0b" + oru(i) + b"\x1c\x0d")
            while b"\x1c\x0d" not in pending:
                pending += sock.recv(65536)
            reply, pending = pending.split(b"\x1c\x0d", 1)
            if b"MSA|AA" not in reply:
                raise RuntimeError("an ORU was not accepted")
        wall = time.perf_counter() - start
    piped = total * 10
    rate = pipelined(port, total, piped)
    return [
        (
            f"HL7 ORU^R01 over one MLLP connection ({total:,}, each waits for its ACK): msg/s",
            f"{total / wall:,.0f}",
        ),
        (
            f"HL7 ORU^R01 over one MLLP connection ({piped:,}, pipelined, group commit, "
            "ACK after commit): msg/s",
            f"{rate:,.0f}",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    quick = args.quick
    bulk_total, batch, single_total, hl7_total = (
        (2_000, 500, 300, 500) if quick else (20_000, 1_000, 1_000, 3_000)
    )
    rows: list[tuple[str, str]] = []
    load_before = load_average()
    started = datetime.now(UTC)
    rng = random.Random(13)
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-hospital-") as tmp,
            postgres_schemas(args.postgres, ["ingest"]) as (database_url,),
        ):
            root = Path(tmp)
            consortium = build_consortium(anvil.rpc_url, derive_test_accounts(), root / "chain")
            node = build_node(
                consortium,
                consortium.accounts.hospital_a,
                root / "node",
                database_url=database_url,
                mllp_enabled=True,
                mllp_port=0,
            )
            try:
                principal = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bench").secret)
                docs = [document(i, rng) for i in range(2 * bulk_total + single_total)]
                node.ingestion.ingest_batch(principal, docs[:10])  # warm-up
                # As a serving node does once built (prepare_process); the documents, which a
                # node would receive request by request, are frozen with it.
                freeze_startup_objects()
                parts = set(args.parts.split(","))
                if "bulk" in parts:
                    # Sequential batches (profiled with --profile), then two in flight, each
                    # run with documents of its own (a resent message would store nothing).
                    rows.append(bulk(node, principal, docs, bulk_total, batch, args.profile))
                    rows.append(
                        bulk(node, principal, docs[-bulk_total:], bulk_total, batch, None, 2)
                    )
                if "single" in parts:
                    rows.append(single(node, principal, docs[bulk_total:-bulk_total]))
                if "import" in parts:
                    rows.extend(
                        import_cli(node, root, *((500, 2_000) if quick else (2_000, 10_000)))
                    )
                if "mllp" in parts:
                    assert node.mllp is not None
                    rows.extend(mllp(node.mllp.port, hl7_total))
                archives = 2 * bulk_total + single_total + hl7_total
                for label, queries in (
                    ()
                    if "search" not in parts
                    else (
                        ("Chinese", ["胸痛", "冠状动脉", "出院小结", "血常规", "肺"]),
                        ("Latin", ["chest", "follow", "ct", "summary pain", "nursing"]),
                    )
                ):
                    times: list[float] = []
                    for _ in range(4):
                        for query in queries:
                            began = time.perf_counter()
                            node.archives.search(principal, SearchFilters(text=query, limit=50))
                            times.append(time.perf_counter() - began)
                    rows.append(
                        (
                            f"search ({label}, {archives:,} archives, 50 per page, "
                            "metadata reads logged): p50 / p95",
                            f"{statistics.median(times) * 1e3:.1f} / "
                            f"{percentile(times, 0.95) * 1e3:.1f} ms",
                        )
                    )
            finally:
                node.close()
    finally:
        anvil.stop()
    width = max(len(name) for name, _ in rows)
    print(f"ArchiveChain hospital ingestion benchmarks — {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_average()}")
    database = "PostgreSQL" if args.postgres else "SQLite WAL synchronous=FULL"
    print(f"node: {database}, local blob store, in process; cpus: {os.cpu_count()}")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server instead of SQLite")
    parser.add_argument(
        "--parts", default="bulk,single,mllp,search", help="measures to run (comma-separated)"
    )
    parser.add_argument("--profile", metavar="PREFIX", help="cProfile the bulk import")
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
