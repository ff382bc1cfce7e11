"""Fixity audit throughput (issue 11 §5). Prints a table; not a test.

Builds the parts of a node that a fixity audit uses (SQLite in WAL mode with ``synchronous=FULL``
or PostgreSQL, the group committer, the ledger, a local blob store; no chain: nothing here is
anchored), creates ``--archives`` archives of ``--size`` bytes each through ``ArchiveService``
(encrypted, stored, CREATE events logged), then measures in the same run, alternating, ``--rounds``
times:

  1. plain reading: every blob file read in 1 MiB pieces and SHA-256 hashed (what ``sha256sum``
     does), in the audit's order;
  2. the ``sha256sum`` command itself (GNU coreutils, the tool the issue names), run over the same
     files in groups of 500 paths per process, its printed hashes checked (skipped with a line
     saying so when the command is not installed);
  3. the fixity audit, unthrottled (``fixity_max_bytes_per_second = 0``): the same files read
     and hashed by ``--processes`` worker processes (``fixity_read_processes``; 0: read through
     the blob store and hashed by ``--workers`` reader threads, ``fixity_read_workers``),
     the lifecycle state of each archive looked up, one FIXITY_CHECK event per version committed
     in units of work of at most ``fixity_batch_size``, overlapping the reads.

All read files the page cache already holds (the set is read once before timing, and audited
once untimed, which also starts the hashing processes: a node starts them once), so the ratios
compare the audit's overhead with the cost of hashing, not disk speed. Python's ``hashlib`` uses
OpenSSL, which uses the CPU's SHA instructions where it has them; coreutils' ``sha256sum`` may not
(Debian's does not), so (1) is the stricter reference. Reported: MB/s and archives/s of each,
audit ÷ plain (target ≥ 0.8) and audit ÷ ``sha256sum`` from the medians; on a shared machine also
the median of the per-round ratios (each round's plain read and audit run back to back) and the
ratio of the best rounds (the least disturbed). Because wall-clock figures on a loaded machine
vary by a factor of two or more, the CPU time spent is printed too (medians, per version): this
process's (every thread) for each, and for the audit on PostgreSQL also the server processes
of the benchmark's own connections (read from ``/proc``, so only for a server on this machine;
found by ``application_name``). CPU time does not depend on how many other processes compete
for the cores nearly as much as wall time does.

``--profile`` prints cProfile figures of the audit's main thread and of its units of work (the
function each runs on the database writer's thread; not the commit itself).

Usage: .venv/bin/python scripts/bench_fixity.py [--archives N] [--size BYTES] [--rounds R]
                                                [--batch B] [--workers W] [--processes P]
                                                [--postgres URL] [--profile]
Everything lives in a temporary directory removed at the end. Cheap keystore cost: BENCHMARK ONLY.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import platform
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from anchoring.events import RecordClass, Sensitivity
from node import migrations
from node.blobstore.local import LocalBlobStore
from node.config import NodeSettings
from node.db import Database, GroupCommitter, UnitOfWork
from node.keyring import KeyRing
from node.keystore import DEV_PASSPHRASE, Keystore
from node.ledger import Ledger
from node.models import ArchiveVersion
from node.principal import Principal, Role
from node.pseudonyms import Pseudonyms
from node.services.alerts import AlertService
from node.services.archives import ArchiveService, NewArchive
from node.services.audits import AuditScope, FixityAuditService

MB = 1_000_000
T = TypeVar("T")


class _ProfiledUnits:
    """The group committer, with each unit of work's function profiled on the writer thread."""

    def __init__(self, units: GroupCommitter) -> None:
        self.units = units
        self.profile = cProfile.Profile()

    def run(self, fn: Callable[[UnitOfWork], T], timeout: float | None = 120.0) -> T:
        def profiled(uow: UnitOfWork) -> T:
            self.profile.enable()
            try:
                return fn(uow)
            finally:
                self.profile.disable()

        return self.units.run(profiled, timeout)


def _server_cpu(admin: Engine, application: str) -> Callable[[], float | None]:
    """CPU seconds used so far by the PostgreSQL server processes of this benchmark's
    connections (None when the server does not run on this machine)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def used() -> float | None:
        with admin.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": application},
            ).scalars()
            total = 0
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    return None
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    return used


def _plain(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
                total += len(chunk)
    return total


SHA256SUM_GROUP = 500
"""Paths per ``sha256sum`` process (one process per file would measure process start-up)."""


def _sha256sum(command: str, paths: list[Path], expected: list[str]) -> None:
    """Hash ``paths`` with the ``sha256sum`` command and check what it prints."""
    printed: list[str] = []
    for start in range(0, len(paths), SHA256SUM_GROUP):
        group = [str(p) for p in paths[start : start + SHA256SUM_GROUP]]
        out = subprocess.run([command, "--", *group], check=True, capture_output=True).stdout
        printed.extend(line.split(maxsplit=1)[0] for line in out.decode().splitlines())
    if printed != expected:
        raise SystemExit("sha256sum printed other hashes than the blob files have")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archives", type=int, default=200)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=NodeSettings().fixity_batch_size)
    parser.add_argument("--workers", type=int, default=NodeSettings().fixity_read_workers)
    parser.add_argument("--processes", type=int, default=NodeSettings().fixity_read_processes)
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fixity-") as tmp:
        root = Path(tmp)
        schema = None
        server_cpu: Callable[[], float | None] = lambda: None  # noqa: E731
        if args.postgres:
            schema = f"bench_{secrets.token_hex(4)}"
            admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(args.postgres)
            url = url.set(
                query={
                    **url.query,
                    "options": f"-csearch_path={schema}",
                    "application_name": schema,
                }
            )
            database_url = url.render_as_string(hide_password=False)
            server_cpu = _server_cpu(admin, schema)
        else:
            database_url = f"sqlite:///{root / 'node.db'}"
        try:
            return _run(args, root, database_url, server_cpu)
        finally:
            if schema is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()


def _run(
    args: argparse.Namespace,
    root: Path,
    database_url: str,
    server_cpu: Callable[[], float | None],
) -> int:
    keystore = Keystore.create(root / "keystore.json", DEV_PASSPHRASE, scrypt_n=2**10)
    settings = NodeSettings(
        mode="dev",
        data_dir=root,
        database_url=database_url,
        fixity_max_bytes_per_second=0,
        fixity_batch_size=args.batch,
        fixity_read_workers=args.workers,
        fixity_read_processes=args.processes,
        max_upload_bytes=max(args.size, 1),
    )
    migrations.upgrade(database_url)
    db = Database.connect(database_url)
    units = GroupCommitter(db)
    units.start()
    blobs = LocalBlobStore(settings.blob_dir)
    ledger = Ledger(keystore.address)
    archives = ArchiveService(
        settings=settings,
        db=db,
        units=units,
        ledger=ledger,
        keyring=KeyRing(keystore),
        blobs=blobs,
        pseudonyms=Pseudonyms(keystore.pseudonym_secret),
    )
    alerts = AlertService(db=db, units=units)
    profiled = _ProfiledUnits(units) if args.profile else None
    fixity = FixityAuditService(
        settings=settings,
        db=db,
        units=profiled or units,
        ledger=ledger,
        blobs=blobs,
        alerts=alerts,
    )
    principal = Principal(key_id=1, name="bench", role=Role.ARCHIVIST, actor="ab" * 32)
    payload = os.urandom(args.size)
    began = time.perf_counter()
    for i in range(args.archives):
        archives.create(
            principal,
            NewArchive(
                record_class=RecordClass.LAB,
                sensitivity=Sensitivity.NORMAL,
                department="lab",
                title=f"bench {i}",
                patient_id=f"P{i}",
                source_system="LIS",
                media_type="application/octet-stream",
            ),
            [payload],
        )
    created = time.perf_counter() - began
    with db.session() as session:
        cids = list(
            session.execute(select(ArchiveVersion.cid).order_by(ArchiveVersion.id)).scalars()
        )
    paths = [blobs.path_of(cid) for cid in cids]
    stored = sum(p.stat().st_size for p in paths)
    _plain(paths)  # warm the page cache
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    sha256sum = shutil.which("sha256sum")

    fixity.audit(None, AuditScope())  # untimed: starts the hashing processes, if any
    load_before = os.getloadavg()
    plain_times, audit_times, tool_times = [], [], []
    plain_cpu, audit_cpu, audit_server_cpu = [], [], []
    main_profile = cProfile.Profile() if args.profile else None
    for _ in range(args.rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        read = _plain(paths)
        plain_times.append(time.perf_counter() - t0)
        plain_cpu.append(time.process_time() - c0)
        assert read == stored
        if sha256sum is not None:
            t0 = time.perf_counter()
            _sha256sum(sha256sum, paths, expected)
            tool_times.append(time.perf_counter() - t0)
        s0 = server_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        if main_profile is not None:
            main_profile.enable()
        report = fixity.audit(None, AuditScope())
        if main_profile is not None:
            main_profile.disable()
        audit_times.append(time.perf_counter() - t0)
        audit_cpu.append(time.process_time() - c0)
        s1 = server_cpu()
        if s0 is not None and s1 is not None:
            audit_server_cpu.append(s1 - s0)
        assert report.checked == args.archives
        assert report.failed == 0
        assert report.bytes_read == stored
    fixity.close()
    units.stop()
    db.dispose()

    plain, audit = statistics.median(plain_times), statistics.median(audit_times)
    backend = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    loads = ", ".join(f"{x:.2f}" for x in load_before)
    print(f"load average before/after timing: {loads} / {os.getloadavg()[0]:.2f}; {backend}")
    print(
        f"{args.archives} archives x {args.size:,} bytes ({stored / MB:.1f} MB stored), "
        f"created in {created:.1f} s; batch {args.batch}; {args.workers} reader thread(s), "
        f"{args.processes} hashing process(es); "
        f"median of {args.rounds} rounds"
    )
    print(f"{'':28}{'MB/s':>10}{'archives/s':>12}{'seconds':>10}")
    rows = [("plain sha256 read", plain), ("fixity audit (unthrottled)", audit)]
    if tool_times:
        rows.insert(1, ("sha256sum command", statistics.median(tool_times)))
    for name, seconds in rows:
        print(
            f"{name:28}{stored / MB / seconds:>10.1f}{args.archives / seconds:>12.1f}"
            f"{seconds:>10.3f}"
        )
    print(f"ratio audit / plain: {plain / audit:.3f} (target >= 0.8)")
    if tool_times:
        tool = statistics.median(tool_times)
        version = subprocess.run(
            [str(sha256sum), "--version"], check=True, capture_output=True, text=True
        ).stdout.splitlines()[0]
        print(f"ratio audit / sha256sum command: {tool / audit:.3f} ({version})")
    else:
        print("sha256sum command: not installed, not measured")
    paired = statistics.median(p / a for p, a in zip(plain_times, audit_times, strict=True))
    best = min(plain_times) / min(audit_times)
    print(f"median of per-round ratios: {paired:.3f}; best round / best round: {best:.3f}")
    print(f"rounds plain: {[round(t, 3) for t in plain_times]}")
    print(f"rounds audit: {[round(t, 3) for t in audit_times]}")
    if tool_times:
        print(f"rounds sha256sum: {[round(t, 3) for t in tool_times]}")
    per_version = 1000 / args.archives  # ms per version from seconds per run
    cpu = (
        f"CPU ms per version (medians): plain {statistics.median(plain_cpu) * per_version:.3f}; "
        f"audit {statistics.median(audit_cpu) * per_version:.3f} (this process, every thread)"
    )
    if audit_server_cpu:
        cpu += f" + {statistics.median(audit_server_cpu) * per_version:.3f} (PostgreSQL server)"
    print(cpu)
    if main_profile is not None and profiled is not None:
        for name, profile in (("main thread", main_profile), ("units of work", profiled.profile)):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
            print(f"--- profile: {name} (all rounds)\n{out.getvalue()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
