"""Ingest benchmarks (issue 4 §9). Prints a table; not a test.

A real node (hospital A of a throwaway consortium on a fresh anvil with 1 s blocks, SQLite in WAL
mode with ``synchronous=FULL``, local blob store, anchoring scheduler running) is served by uvicorn
in a *subprocess* of this script; every request below is real HTTP over loopback (httpx):

  1. archive creation through ``POST /api/v1/archives``: throughput and latency p50/p99 for 4 KB and
     1 MB payloads (``--clients`` concurrent clients) and 100 MB payloads (one at a time);
     single-archive create p50 (one client, one request at a time);
  2. bulk event ingest: ACCESS events in batches of 5,000 through ``POST /api/v1/access-events``,
     spread over 100 archives; durable events/s = events / wall time until the 201s (each 201 is
     sent after the batch's commit); one client, then two concurrent clients;
  3. peak memory of the server process while it receives one 1 GB upload, generated on the fly and
     streamed by the client (``VmHWM`` of the server, reset through ``/proc/<pid>/clear_refs``
     just before the upload; ``VmRSS`` before it for comparison);
  4. the same ingest at the service level (``ArchiveService.record_accesses`` called in process on
     a second node, after the server has stopped): the difference is the HTTP and JSON cost;
  5. the log writer alone (``LogWriter`` append + flush + commit, 5,000 events per transaction, on
     a third database of the same kind): the share of the log in the figures above.

Items 2 and 4 also print the node's CPU time per event (``/proc/<pid>/stat``, all threads; the
database server's CPU is not included): unlike events/s, it hardly moves when other work shares
the machine.

Usage: .venv/bin/python scripts/bench_ingest.py [--quick] [--clients N] [--skip-1gb] [--postgres URL]
                                                [--ingest-only]
  --quick     fewer uploads and batches, 100 MB and 1 GB uploads cut to 20 MB and 200 MB
  --ingest-only  only item 2 and 4 (bulk ingest over HTTP and at the service level); the 100
              archives it needs are still created over HTTP, untimed
  --postgres  run both nodes on PostgreSQL (a fresh schema each, dropped at the end) instead of
              SQLite, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test

Everything (chain, node data, uploads) lives in a temporary directory removed at the end. The node
uses the public anvil test keys and a cheap keystore cost: BENCHMARK ONLY.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from anchoring.deployment import Deployment  # noqa: E402
from anchoring.events import AccessScope, Purpose, RecordClass, Sensitivity  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.runtime import NodeRuntime  # noqa: E402
from node.services.archives import NewArchive, ReportedAccess  # noqa: E402
from tests.fixtures.chain import Consortium, build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
BATCH = 5_000
ARCHIVES_FOR_INGEST = 100
STAFF_POOL = 400
"""Distinct staff ids that appear in the reports (a ward's worth of readers)."""
PURPOSES = (Purpose.TREATMENT, Purpose.TREATMENT, Purpose.QUALITY, Purpose.AUDIT)
SCOPES = (AccessScope.CONTENT, AccessScope.CONTENT, AccessScope.METADATA)
METADATA = {
    "record_class": "IMAGING",
    "sensitivity": "NORMAL",
    "department": "radiology",
    "title": "Benchmark study",
    "patient_id": "BENCH-PATIENT",
    "source_system": "PACS",
}
MAX_UPLOAD = GIB + 64 * MIB
READY_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    name: str
    value: str


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def machine() -> str:
    """uname, cores and CPU model."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = platform.uname()
    return f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} cores ({model})"


def http_parser() -> str:
    """The HTTP/1.1 implementation uvicorn picks here (httptools when installed, else h11)."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ``clear_refs`` value 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Request bodies


class Multipart:
    """A streamed ``multipart/form-data`` upload of ``size`` generated bytes (never all in
    memory): the ``metadata`` field, then the file part, with an exact Content-Length."""

    BLOCK = os.urandom(MIB)

    def __init__(self, size: int, metadata: dict[str, Any]) -> None:
        self.size = size
        boundary = f"bench{os.urandom(12).hex()}"
        self.head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="metadata"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json.dumps(metadata)}\r\n"
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="bench.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(self.head) + size + len(self.tail)),
        }
        self.small = os.urandom(size) if size <= MIB else None

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        if self.small is not None:
            yield self.small
        else:
            left = self.size
            while left > 0:
                piece = self.BLOCK[: min(left, MIB)]
                yield piece
                left -= len(piece)
        yield self.tail


def batch_reports(archive_ids: list[str], seed: int) -> list[dict[str, Any]]:
    """``BATCH`` reports spread evenly over ``archive_ids``, with varied purposes, scopes and
    staff (one in ten without a staff id: the calling system itself)."""
    rng = random.Random(seed)
    reports = []
    for i in range(BATCH):
        report: dict[str, Any] = {
            "archive_id": archive_ids[i % len(archive_ids)],
            "purpose": rng.choice(PURPOSES).value,
            "scope": rng.choice(SCOPES).value,
        }
        if rng.random() >= 0.1:
            report["staff_id"] = f"pacs-user-{rng.randrange(STAFF_POOL):04d}"
        reports.append(report)
    return reports


# --------------------------------------------------------------------------------------------
# The server subprocess


def serve(args: argparse.Namespace) -> int:
    """Child mode: build the node, issue an archivist key, serve the API until SIGTERM."""
    import uvicorn

    from api.main import create_app

    accounts = derive_test_accounts()
    deployment = Deployment.load(args.deployment)
    consortium = Consortium(args.rpc, deployment, args.deployment.parent, accounts)
    runtime = build_node(
        consortium,
        accounts.hospital_a,
        args.data_dir,
        start=False,
        name="bench-node",
        database_url=args.database_url,
        max_upload_bytes=MAX_UPLOAD,
    )
    try:
        runtime.start(scheduler=True)
        secret = runtime.keys.issue(Role.ARCHIVIST, "bench-archivist").secret
        app = create_app(runtime)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        ready = args.data_dir / "ready.json"

        def announce() -> None:
            while not server.started:
                time.sleep(0.05)
            fd = os.open(ready, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"archivist": secret}, handle)

        threading.Thread(target=announce, daemon=True).start()
        server.run()
    finally:
        runtime.close()
    return 0


class Server:
    """The node served by a child process of this script."""

    def __init__(self, consortium: Consortium, data_dir: Path, database_url: str | None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True)
        self.log = (data_dir.parent / "server.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve",
                "--rpc",
                consortium.rpc_url,
                "--deployment",
                str(consortium.deployment_file),
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                *(["--database-url", database_url] if database_url else []),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        ready = data_dir / "ready.json"
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists() or ready.stat().st_size == 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the node did not start; see {self.log.name}")
            time.sleep(0.1)
        time.sleep(0.1)
        self.key = json.loads(ready.read_text())["archivist"]
        self.headers = {"Authorization": f"Bearer {self.key}"}

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=600.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------
# Benchmarks over HTTP


def upload(client: httpx.Client, size: int) -> tuple[str, float]:
    """One archive of ``size`` generated bytes; returns its id and the request's latency."""
    body = Multipart(size, METADATA)
    start = time.perf_counter()
    response = client.post("/api/v1/archives", content=body.chunks(), headers=body.headers)
    elapsed = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"upload of {size} bytes: {response.status_code} {response.text}")
    return str(response.json()["id"]), elapsed


def run_clients(
    server: Server, jobs: list[Any], work: Callable[[httpx.Client, Any], Any], clients: int
) -> tuple[list[Any], float]:
    """Run ``work(client, job)`` for every job on ``clients`` threads, each with its own
    connection; returns the results and the wall time."""
    local = threading.local()
    opened: list[httpx.Client] = []
    lock = threading.Lock()

    def call(job: Any) -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = server.client()
            with lock:
                opened.append(client)
        return work(client, job)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(call, jobs))
    wall = time.perf_counter() - start
    for client in opened:
        client.close()
    return results, wall


def creation_rows(
    server: Server, label: str, size: int, count: int, clients: int
) -> tuple[list[Row], list[str]]:
    results, wall = run_clients(server, [size] * count, upload, clients)
    latencies = [latency for _, latency in results]
    mb_s = size * count / wall / MIB
    rows = [
        Row(
            f"create {label} × {count}, {clients} client(s): throughput",
            f"{count / wall:,.1f} archives/s ({mb_s:,.1f} MiB/s)",
        ),
        Row(
            f"create {label}: latency p50 / p99",
            f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))}",
        ),
    ]
    return rows, [archive_id for archive_id, _ in results]


def single_create_p50(server: Server, count: int) -> Row:
    with server.client() as client:
        latencies = [upload(client, 4 * KIB)[1] for _ in range(count)]
    return Row(
        f"single-archive create p50 (4 KB, one at a time, {count} requests)",
        ms(statistics.median(latencies)),
    )


def post_batch(client: httpx.Client, body: bytes) -> float:
    start = time.perf_counter()
    response = client.post(
        "/api/v1/access-events", content=body, headers={"Content-Type": "application/json"}
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 201 or response.json() != {"recorded": BATCH}:
        raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
    return elapsed


def ingest_rows(server: Server, archive_ids: list[str], batches: int) -> list[Row]:
    bodies = [
        json.dumps({"reports": batch_reports(archive_ids, seed)}).encode()
        for seed in range(batches + 1)
    ]
    with server.client() as client:
        post_batch(client, bodies[0])  # warm-up: caches, connection, first pages
    rows = [Row("access batch body size (5,000 reports)", f"{len(bodies[1]) / MIB:,.2f} MiB")]
    for clients in (1, 2):
        cpu_before = process_cpu_seconds(server.pid)
        latencies, wall = run_clients(server, bodies[1:], post_batch, clients)
        cpu = process_cpu_seconds(server.pid) - cpu_before
        events = BATCH * batches
        rows.append(
            Row(
                f"HTTP ingest, {batches} × 5,000 events, {clients} client(s): durable events/s",
                f"{events / wall:,.0f}",
            )
        )
        rows.append(
            Row(
                "  server CPU per event (the node process, all threads; not the database's)",
                f"{cpu / events * 1e6:,.1f} µs",
            )
        )
        rows.append(
            Row(
                "  batch latency (request → 201) p50 / p99",
                f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))}",
            )
        )
    return rows


def peak_memory_rows(server: Server, size: int) -> list[Row]:
    baseline = proc_status_kib(server.pid, "VmRSS")
    was_reset = reset_peak_rss(server.pid)
    client_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with server.client() as client:
        _, elapsed = upload(client, size)
    peak = proc_status_kib(server.pid, "VmHWM")
    client_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    scope = "during the upload" if was_reset else "since server start (clear_refs unavailable)"
    return [
        Row(
            f"upload {label} (streamed): time, throughput",
            f"{elapsed:,.1f} s, {size / elapsed / MIB:,.0f} MiB/s",
        ),
        Row(
            f"server peak RSS {scope} / RSS before",
            f"{peak / KIB:,.0f} MiB / {baseline / KIB:,.0f} MiB",
        ),
        Row(
            "client peak RSS growth during the upload",
            f"{max(0, client_after - client_before) / KIB:,.0f} MiB",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Service level (in process, no HTTP)


def service_rows(
    consortium: Consortium, data_dir: Path, database_url: str | None, batches: int
) -> list[Row]:
    """``record_accesses`` called directly on a node of hospital B (same kind of batches), with
    no HTTP and no anchoring schedule."""
    runtime: NodeRuntime = build_node(
        consortium,
        consortium.accounts.hospital_b,
        data_dir,
        name="bench-service",
        database_url=database_url,
    )
    try:
        principal = runtime.keys.authenticate(
            runtime.keys.issue(Role.ARCHIVIST, "bench-service").secret
        )
        new = NewArchive(
            record_class=RecordClass.IMAGING,
            sensitivity=Sensitivity.NORMAL,
            department="radiology",
            title="Benchmark study",
            patient_id="BENCH-PATIENT",
            source_system="PACS",
            media_type="application/octet-stream",
        )
        archive_ids = [
            runtime.archives.create(principal, new, [os.urandom(4 * KIB)]).id
            for _ in range(ARCHIVES_FOR_INGEST)
        ]
        prepared = [
            [
                ReportedAccess(
                    archive_id=r["archive_id"],
                    purpose=Purpose(r["purpose"]),
                    scope=AccessScope(r["scope"]),
                    staff_id=r.get("staff_id"),
                )
                for r in batch_reports(archive_ids, seed)
            ]
            for seed in range(batches + 1)
        ]
        runtime.archives.record_accesses(principal, prepared[0])  # warm-up
        timings = []
        cpu_before = process_cpu_seconds(os.getpid())
        start = time.perf_counter()
        for reports in prepared[1:]:
            began = time.perf_counter()
            runtime.archives.record_accesses(principal, reports)
            timings.append(time.perf_counter() - began)
        wall = time.perf_counter() - start
        cpu = process_cpu_seconds(os.getpid()) - cpu_before
    finally:
        runtime.close()
    return [
        Row(
            f"service ingest (record_accesses, no HTTP), {batches} × 5,000: durable events/s",
            f"{BATCH * batches / wall:,.0f}",
        ),
        Row(
            "  per batch p50 / p99",
            f"{ms(percentile(timings, 0.5))} / {ms(percentile(timings, 0.99))}",
        ),
        Row(
            "  CPU per event (this process, no anchoring schedule; not the database's)",
            f"{cpu / (BATCH * batches) * 1e6:,.1f} µs",
        ),
    ]


# --------------------------------------------------------------------------------------------
# The log writer alone


def log_writer_rows(database_url: str, batches: int) -> list[Row]:
    """``LogWriter`` append + flush + commit of 5,000 ACCESS-sized events per transaction, on the
    same database as the node (no service, no HTTP): the share of the log itself, per event."""
    from anchoring import storage
    from anchoring.storage import LogWriter
    from node.db import Database

    db = Database.connect(database_url)
    storage.metadata.create_all(db.writer)
    now = datetime.now(UTC)
    event = b'{"data":{"purpose":"TREATMENT","scope":"CONTENT"},"prev":"%s","n":%%d}' % (b"a" * 64)
    walls, cpus = [], []
    try:
        for batch in range(batches + 1):
            cpu, began = time.process_time(), time.perf_counter()
            with db.write_session() as session, session.begin():
                writer = LogWriter.open(session)
                for i in range(BATCH):
                    writer.append(
                        event % (batch * BATCH + i),
                        archive_id="01JDQ0000000000000000BENCH",
                        event_type="ACCESS",
                        time=now,
                    )
                writer.flush()
            if batch:  # the first is a warm-up
                walls.append(time.perf_counter() - began)
                cpus.append(time.process_time() - cpu)
    finally:
        db.dispose()
    return [
        Row(
            f"log writer alone (append + flush + commit), {batches} × 5,000: per event",
            f"{statistics.median(walls) / BATCH * 1e6:,.1f} µs wall, "
            f"{statistics.median(cpus) / BATCH * 1e6:,.1f} µs CPU (median batch)",
        )
    ]


# --------------------------------------------------------------------------------------------
# PostgreSQL schemas (only with --postgres)


@contextmanager
def postgres_schemas(base: str | None, names: list[str]) -> Iterator[list[str | None]]:
    """One database URL per name: a fresh schema on ``base`` each (dropped on exit), or None for
    SQLite when ``base`` is None."""
    if base is None:
        yield [None for _ in names]
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schemas = [f"bench_{name}_{os.urandom(4).hex()}" for name in names]
    urls: list[str | None] = []
    with admin.connect() as conn:
        for schema in schemas:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(base)
            url = url.set(query={**url.query, "options": f"-csearch_path={schema}"})
            urls.append(url.render_as_string(hide_password=False))
    try:
        yield urls
    finally:
        with admin.connect() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    quick = args.quick
    small_count, medium_count, large_count = (40, 10, 2) if quick else (200, 50, 3)
    large_size = 20 * MIB if quick else 100 * MIB
    huge_size = 200 * MIB if quick else GIB
    batches = 8 if quick else 40
    started = datetime.now(UTC)
    load_before = load_average()
    rows: list[Row] = []
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
            postgres_schemas(args.postgres, ["server", "service", "log"]) as (
                server_db,
                service_db,
                log_db,
            ),
        ):
            root = Path(tmp)
            consortium = build_consortium(anvil.rpc_url, derive_test_accounts(), root / "chain")
            server = Server(consortium, root / "server", server_db)
            try:
                small_ids: list[str] = []
                if not args.ingest_only:
                    rows.append(single_create_p50(server, 30 if quick else 100))
                    small_rows, small_ids = creation_rows(
                        server, "4 KB", 4 * KIB, small_count, args.clients
                    )
                    rows += small_rows
                    rows += creation_rows(server, "1 MB", MIB, medium_count, args.clients)[0]
                    rows += creation_rows(
                        server, f"{large_size // MIB} MB", large_size, large_count, 1
                    )[0]
                ingest_ids = small_ids[:ARCHIVES_FOR_INGEST]
                while len(ingest_ids) < ARCHIVES_FOR_INGEST:
                    with server.client() as client:
                        ingest_ids.append(upload(client, 4 * KIB)[0])
                rows += ingest_rows(server, ingest_ids, batches)
                if not args.skip_1gb and not args.ingest_only:
                    rows += peak_memory_rows(server, huge_size)
            finally:
                server.stop()
            rows += service_rows(consortium, root / "service", service_db, batches)
            rows += log_writer_rows(log_db or f"sqlite:///{root / 'log.db'}", batches)
    finally:
        anvil.stop()
    width = max(len(row.name) for row in rows)
    print(
        f"ArchiveChain ingest benchmarks — {started:%Y-%m-%d %H:%M} UTC{' (quick)' if quick else ''}"
    )
    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_average()}")
    database = "PostgreSQL" if args.postgres else "SQLite WAL synchronous=FULL"
    print(
        f"node: {database}, local blob store, anchoring on (anvil, 1 s blocks), "
        f"uvicorn ({http_parser()}) in a subprocess, httpx over loopback"
    )
    print("-" * (width + 40))
    for row in rows:
        print(f"{row.name:<{width}}  {row.value}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent upload clients")
    parser.add_argument("--skip-1gb", action="store_true", help="skip the 1 GB upload")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server instead of SQLite")
    parser.add_argument(
        "--ingest-only", action="store_true", help="only the bulk-ingest figures (HTTP, service)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rpc", help=argparse.SUPPRESS)
    parser.add_argument("--deployment", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
