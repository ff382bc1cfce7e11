"""Anchoring benchmarks (issue 3 §7). Prints a table; not a test.

Against a real anvil with 1 s blocks (started here on a free port):
  1. gas per event at batch sizes 1, 100, 1,000, 10,000 vs. one checkpoint transaction per event;
  2. anchorCheckpoint gas at log sizes 10^3 and 10^6 (with the consistency proof);
  3. inclusion-proof verifications per second on one core;
  4. proof generation from the database at 10^6 and 10^7 leaves (SQLite; the log is built once
     and cached under --cache-dir because building 10^7 leaves takes minutes);
  5. time from append to "verifiable against an on-chain checkpoint", p50/p95.

Usage: .venv/bin/python scripts/bench_anchoring.py [--quick] [--cache-dir DIR]
  --quick  skips the 10^7-leaf database (uses 10^5 and 10^6)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

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


def build_db(path: Path, size: int) -> float:
    """Append ``size`` leaves (50k per transaction); returns appends/s (0 if cached)."""
    db = Database.connect(f"sqlite:///{path}")
    storage.metadata.create_all(db.writer)
    with db.session() as session:
        have = storage.current_size(session)
    start = time.perf_counter()
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
    return (size / elapsed) if elapsed > 1 else 0.0


def proof_generation(cache_dir: Path, sizes: list[int]) -> list[tuple[str, str]]:
    rows = []
    for size in sizes:
        path = cache_dir / f"bench-log-{size}.db"
        rate = build_db(path, size)
        if rate:
            rows.append((f"log append throughput while building {size:,} leaves", f"{rate:,.0f}/s"))
        db = Database.connect(f"sqlite:///{path}")
        timings = []
        with db.session() as session:
            for index in (0, size // 3, size // 2 + 7, size - 1) * 50:
                start = time.perf_counter()
                storage.inclusion_proof(session, index, size)
                timings.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(50):
                storage.consistency_proof(session, size // 2 + 1, size)
            consistency = (time.perf_counter() - start) / 50
        db.dispose()
        rows.append(
            (
                f"inclusion proof from DB at {size:,} leaves, p50 / p95",
                f"{statistics.median(timings) * 1e3:.3f} ms / "
                f"{statistics.quantiles(timings, n=20)[-1] * 1e3:.3f} ms",
            )
        )
        rows.append(
            (f"consistency proof from DB at {size:,} leaves", f"{consistency * 1e3:.3f} ms")
        )
    return rows


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
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
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
    width = max(len(name) for name, _ in rows)
    print(f"ArchiveChain anchoring benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"
    )
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
