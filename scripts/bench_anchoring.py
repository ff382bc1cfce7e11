"""Anchoring benchmarks (issue 3 §7). Prints a table; not a test.

Against a real anvil with 1 s blocks (started here on a free port):
  1. gas per event at batch sizes 1, 100, 1,000, 10,000 vs. one checkpoint transaction per event;
  2. anchorCheckpoint gas at log sizes 10^3 and 10^6 (with the consistency proof);
  3. inclusion-proof verifications per second on one core;
  4. proof generation from the database at 10^6 and 10^7 leaves (SQLite; the log is built once
     and cached under --cache-dir because building 10^7 leaves takes minutes), three ways:
     - the published method (issue 3): 4 fixed leaves × 50 inclusion proofs, p50/p95, and the mean
       of 50 consistency proofs from size/2 + 1, in one session (the pages are warm after the
       first round);
     - random leaves: 1,000 inclusion proofs of random leaves and 300 consistency proofs from
       random sizes, p50/p95, with the file's pages as the machine left them;
     - cold: the file's pages dropped from the OS cache (posix_fadvise DONTNEED) and a new engine
       (so the upper levels are loaded again: that first proof is reported on its own), then the
       random proofs again;
     with --postgres URL, the same at 10^6 leaves on PostgreSQL (a fresh schema, dropped after);
  5. time from append to "verifiable against an on-chain checkpoint", p50/p95.

Usage: .venv/bin/python scripts/bench_anchoring.py [--quick] [--cache-dir DIR] [--proofs-only]
                                                   [--postgres URL]
  --quick        skips the 10^7-leaf database (uses 10^5 and 10^6)
  --proofs-only  only item 4 (no anvil)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from anchoring import merkle, storage  # noqa: E402
from anchoring.chain import ContractWriter, JsonRpc, RpcChain  # noqa: E402
from anchoring.storage import Checkpoint, CheckpointState, LogWriter  # noqa: E402
from anchoring.worker import AnchoringWorker, WorkerConfig  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.db import Database  # noqa: E402
from node.ports import free_port  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402

NOW = datetime.now(UTC)


def leaf(i: int) -> bytes:
    return merkle.leaf_hash(b'{"bench":%d}' % i)


class Log:
    """An in-memory list of leaf hashes for building proofs fed to the contract."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []

    def grow(self, to: int) -> None:
        self.leaves.extend(leaf(i) for i in range(len(self.leaves), to))

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.leaves[:size])


def anchor(writer: ContractWriter, log: Log, previous: int, size: int) -> int:
    """Anchor the checkpoint of ``size`` after ``previous``; returns the gas used."""
    log.grow(size)
    proof = merkle.consistency_proof(previous, size, log.leaves) if previous else []
    receipt = writer.transact("anchorCheckpoint", [size, log.root(size), proof])
    return int(receipt.gas_used)


def gas_benchmarks(chain: RpcChain, accounts: object) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    writer = ContractWriter(chain, accounts.hospital_a)  # type: ignore[attr-defined]
    log = Log()
    anchor(writer, log, 0, 500)  # the first checkpoint needs no proof
    gas = anchor(writer, log, 500, 1_000)
    rows.append(("anchorCheckpoint gas at log size 1,000 (from 500)", f"{gas:,}"))
    size = 1_000
    singles = []
    for _ in range(10):
        singles.append(anchor(writer, log, size, size + 1))
        size += 1
    rows.append(
        ("gas/event, one checkpoint tx per event (baseline)", f"{statistics.mean(singles):,.0f}")
    )
    for batch in (1, 100, 1_000, 10_000):
        gas = anchor(writer, log, size, size + batch)
        rows.append(
            (
                f"gas/event, batch {batch:,} (log {size:,} → {size + batch:,})",
                f"{gas / batch:,.1f}  (tx {gas:,})",
            )
        )
        size += batch
    big_writer = ContractWriter(chain, accounts.hospital_c)  # type: ignore[attr-defined]
    big = Log()
    anchor(big_writer, big, 0, 999_000)
    gas = anchor(big_writer, big, 999_000, 1_000_000)
    rows.append(("anchorCheckpoint gas at log size 1,000,000 (from 999,000)", f"{gas:,}"))
    gas = anchor(big_writer, big, 1_000_000, 1_000_001)
    rows.append(("anchorCheckpoint gas at log size 1,000,001 (from 1,000,000)", f"{gas:,}"))
    return rows


def verification_rate() -> tuple[str, str]:
    size = 1_000_000
    index = 123_457
    leaves = [leaf(i) for i in range(size)]
    root = merkle.root_from_leaf_hashes(leaves)
    proof = merkle.inclusion_proof(index, size, leaves)
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 2.0:
        for _ in range(1000):
            merkle.verify_inclusion(index, size, leaves[index], proof, root)
        count += 1000
    rate = count / (time.perf_counter() - start)
    return ("inclusion proof verifications/s, one core (log 10^6)", f"{rate:,.0f}")


LAYOUT = "r0004"
"""Schema revision of the cached logs (``log_nodes`` keys changed in migration 0004)."""


def build_db(url: str, size: int) -> float:
    """Append ``size`` leaves (50k per transaction); returns appends/s (0 if already built)."""
    db = Database.connect(url)
    storage.metadata.create_all(db.writer)
    with db.session() as session:
        have = storage.current_size(session)
    start = time.perf_counter()
    built = size - have
    step = 50_000
    while have < size:
        with db.transaction() as session:
            writer = LogWriter.open(session)
            for i in range(have, min(size, have + step)):
                writer.append(
                    b'{"bench":%d}' % i,
                    archive_id="01JDQ0000000000000000BENCH",
                    event_type="ACCESS",
                    time=NOW,
                )
            writer.flush()
        have = min(size, have + step)
    elapsed = time.perf_counter() - start
    db.dispose()
    return (built / elapsed) if elapsed > 1 else 0.0


def _p50_p95(timings: list[float]) -> str:
    return (
        f"{statistics.median(timings) * 1e3:.3f} ms / "
        f"{statistics.quantiles(timings, n=20)[-1] * 1e3:.3f} ms"
    )


def _timed(call: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def _random_proofs(db: Database, size: int, label: str, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    with db.session() as session:
        inclusion = [
            _timed(storage.inclusion_proof, session, rng.randrange(size), size)
            for _ in range(1_000)
        ]
        consistency = [
            _timed(storage.consistency_proof, session, rng.randrange(1, size + 1), size)
            for _ in range(300)
        ]
    return [
        (f"  inclusion, 1,000 random leaves{label}, p50 / p95", _p50_p95(inclusion)),
        (f"  consistency, 300 random sizes{label}, p50 / p95", _p50_p95(consistency)),
    ]


def _first_proof(db: Database, size: int, label: str) -> tuple[str, str]:
    """The first proof on a new engine, which loads the upper levels into memory."""
    with db.session() as session:
        elapsed = _timed(storage.inclusion_proof, session, size // 3, size)
    upper = storage.upper_levels(db.reader)
    held = upper.held if upper is not None else 0
    return (
        f"  first proof on a new engine{label} (loads {held:,} upper hashes, "
        f"{held * 32 / 2**20:.1f} MiB)",
        f"{elapsed * 1e3:.1f} ms",
    )


def _drop_from_os_cache(path: Path) -> None:
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def proofs_at(url: str, size: int, path: Path | None) -> list[tuple[str, str]]:
    """Every proof figure for the log of ``size`` leaves at ``url`` (``path``: its SQLite file)."""
    backend = "SQLite" if path is not None else "PostgreSQL"
    rows = []
    rate = build_db(url, size)
    if rate:
        rows.append((f"log append throughput while building {size:,} leaves", f"{rate:,.0f}/s"))
    db = Database.connect(url)
    try:
        first = _first_proof(db, size, "")
        timings = []
        with db.session() as session:
            for index in (0, size // 3, size // 2 + 7, size - 1) * 50:
                timings.append(_timed(storage.inclusion_proof, session, index, size))
            start = time.perf_counter()
            for _ in range(50):
                storage.consistency_proof(session, size // 2 + 1, size)
            consistency = (time.perf_counter() - start) / 50
        rows.append((f"inclusion proof from DB at {size:,} leaves, p50 / p95", _p50_p95(timings)))
        rows.append(
            (f"consistency proof from DB at {size:,} leaves", f"{consistency * 1e3:.3f} ms")
        )
        rows.append((f"  ({backend}, {size:,} leaves) random proofs, pages as found:", ""))
        rows += _random_proofs(db, size, "", seed=size)
        rows.append(first)
    finally:
        db.dispose()
    if path is not None:
        _drop_from_os_cache(path)
        db = Database.connect(url)
        try:
            rows.append(
                (f"  ({backend}, {size:,} leaves) after dropping the file from the OS cache:", "")
            )
            rows.append(_first_proof(db, size, ", cold file"))
            rows += _random_proofs(db, size, ", cold file", seed=size + 1)
        finally:
            db.dispose()
    return rows


def proof_generation(cache_dir: Path, sizes: list[int]) -> list[tuple[str, str]]:
    rows = []
    for size in sizes:
        path = cache_dir / f"bench-log-{LAYOUT}-{size}.db"
        rows += proofs_at(f"sqlite:///{path}", size, path)
    return rows


def postgres_proof_generation(base: str, size: int) -> list[tuple[str, str]]:
    """The proof figures on PostgreSQL, in a fresh schema dropped afterwards."""
    schema = f"bench_proofs_{os.urandom(4).hex()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base)
        url = url.set(query={**url.query, "options": f"-csearch_path={schema}"})
        return proofs_at(url.render_as_string(hide_password=False), size, None)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def latency(chain: RpcChain, hospital: object, seconds: float) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.connect(f"sqlite:///{Path(tmp) / 'lat.db'}")
        storage.metadata.create_all(db.writer)
        worker = AnchoringWorker(
            sessions=db.write_session,
            chain=ContractWriter(chain, hospital),  # type: ignore[arg-type]
            config=WorkerConfig(interval=0.5, max_batch=1000),
        )
        stop = threading.Event()

        def ticker() -> None:
            while not stop.is_set():
                worker.tick()
                time.sleep(0.1)

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        appended: dict[int, float] = {}
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            with db.transaction() as session:
                writer = LogWriter.open(session)
                index = writer.append(
                    b'{"lat":%d}' % n,
                    archive_id="01JDQ0000000000000000BENCH",
                    event_type="ACCESS",
                    time=datetime.now(UTC),
                ).index
                writer.flush()
            appended[index] = time.time()
            n += 1
            time.sleep(0.05)
        worker_deadline = time.monotonic() + 30
        while worker.status.events_behind and time.monotonic() < worker_deadline:
            time.sleep(0.1)
        stop.set()
        thread.join()
        with db.session() as session:
            confirmed = list(
                session.execute(
                    select(Checkpoint)
                    .where(Checkpoint.state == CheckpointState.CONFIRMED)
                    .order_by(Checkpoint.size)
                ).scalars()
            )
        delays = []
        for index, at in appended.items():
            cover = next(c for c in confirmed if c.size > index)
            assert cover.confirmed_at is not None
            delays.append(cover.confirmed_at.timestamp() - at)
        db.dispose()
    p50 = statistics.median(delays)
    p95 = statistics.quantiles(delays, n=20)[-1]
    return (
        f"append → verifiable on chain (1 s blocks, {len(delays)} events), p50 / p95",
        f"{p50:.2f} s / {p95:.2f} s",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "archivechain-bench"
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--proofs-only", action="store_true")
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[tuple[str, str]] = []
    if not args.proofs_only:
        anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                accounts = derive_test_accounts()
                consortium = build_consortium(anvil.rpc_url, accounts, Path(tmp))
                chain = RpcChain(JsonRpc(anvil.rpc_url), consortium.deployment)
                rows.append(latency(chain, accounts.hospital_b, args.latency_seconds))
                rows += gas_benchmarks(chain, accounts)
        finally:
            anvil.stop()
        rows.append(verification_rate())
    sizes = [100_000, 1_000_000] if args.quick else [1_000_000, 10_000_000]
    rows += proof_generation(args.cache_dir, sizes)
    if args.postgres:
        rows += postgres_proof_generation(args.postgres, sizes[-1] if args.quick else sizes[0])
    width = max(len(name) for name, _ in rows)
    print(f"ArchiveChain anchoring benchmarks — {started:%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"
    )
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
