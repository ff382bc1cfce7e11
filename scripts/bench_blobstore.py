"""Local blob store writes of small blobs: linked from an unnamed file vs renamed from ``tmp/``.

Prints, per way of writing and per number of writing threads, the wall time and the process's
user and system CPU per blob for ``put_stream(durable=False)`` of random blobs (4 KB by default;
a batch import stores them so and makes them durable with one ``syncfs``). Each measure uses a
fresh store; the two ways alternate, ``--rounds`` times, so a host that changes speed affects both
alike. "renamed" is the store with unnamed files turned off (the path of blobs over
``SMALL_BLOB_BYTES`` and of systems without ``O_TMPFILE``). Not a test; BENCHMARK ONLY.

Usage: .venv/bin/python scripts/bench_blobstore.py [--blobs N] [--size BYTES] [--threads 1,16]
       [--rounds R] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.blobstore.local import LocalBlobStore  # noqa: E402
from scripts.bench_ingest import load_average, machine  # noqa: E402


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(root: Path, way: str, blobs: list[bytes], threads: int) -> tuple[float, float, float]:
    """Wall, user and system seconds per blob of storing ``blobs`` from ``threads`` threads."""
    store = LocalBlobStore(root)
    if way == "renamed":  # the store's own switch, as on a file system without unnamed files
        store._unnamed_files = False
    step = -(-len(blobs) // threads)
    runs = [blobs[start : start + step] for start in range(0, len(blobs), step)]
    user, system = _cpu()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda run: [store.put_stream([b], durable=False) for b in run], runs):
            pass
    wall = time.perf_counter() - began
    user_after, system_after = _cpu()
    count = len(blobs)
    return wall / count, (user_after - user) / count, (system_after - system) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=3000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--threads", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are made")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"ArchiveChain local blob store writes — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average (1/5/15 min) before: {load_average()}")
    print(f"{args.blobs:,} blobs of {args.size:,} bytes per measure, put_stream(durable=False)")
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-blobs-", dir=args.dir) as tmp:
        number = 0
        for round_ in range(args.rounds):
            for count in threads:
                ways = ("linked", "renamed") if round_ % 2 == 0 else ("renamed", "linked")
                for way in ways:
                    blobs = [os.urandom(args.size) for _ in range(args.blobs)]
                    number += 1
                    figures = measure(Path(tmp) / f"store-{number}", way, blobs, count)
                    results.setdefault((way, count), []).append(figures)
    print("-" * 96)
    print(
        f"{'way':10} {'threads':>7}   median per blob: wall / user / system CPU (µs)   each round"
    )
    for (way, count), rows in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        wall, user, system = (statistics.median(column) * 1e6 for column in zip(*rows, strict=True))
        each = ", ".join(f"{(r[1] + r[2]) * 1e6:.0f}" for r in rows)
        print(f"{way:10} {count:>7}   {wall:6.0f} / {user:5.0f} / {system:5.0f}{'':24}CPU {each}")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
