"""Verifier benchmarks (issue 8, item 11). Prints a table; not a test.

Against a real anvil (automine, started here on a free port) and real bundles built by a real
hospital node (hospital A of the public test mnemonic — TEST KEYS ONLY): N archives, each
CREATE + ARCHIVE + one ACCESS, anchored and registered on chain, each proof bundle written to a file.

Measures, as a regulator runs it (the installed ``archivechain`` console script, in a fresh
process, wall clock):
  1. ``archivechain --help`` (start-up alone);
  2. ``archivechain verify ONE.json`` on a 3-event bundle (the target is <= 0.3 s);
  3. ``archivechain verify DIR --json`` on all N bundles in one process: bundles/s;
  4. in-process, after start-up: parse + verify per bundle, and the RPC round trips it costs;
  5. with ``--baseline CHECKOUT``, items 1-2 with that checkout's console script (e.g. main).

Usage: .venv/bin/python scripts/bench_verify.py [--bundles N] [--repeat R] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchoring.bundle import parse_bundle  # noqa: E402
from anchoring.events import Purpose, RecordClass, Sensitivity  # noqa: E402
from anchoring.rpcview import HttpJsonRpc, NotaryReader  # noqa: E402
from anchoring.verifier import verify_bundle  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.services.archives import NewArchive  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402


class CountingRpc(HttpJsonRpc):
    """Counts JSON-RPC requests (to report round trips per bundle)."""

    requests = 0

    def request(self, method: str, params: list[object]) -> object:
        CountingRpc.requests += 1
        return super().request(method, params)


def build_bundles(rpc_url: str, data: Path, count: int) -> tuple[Path, Path]:
    """A consortium, a node, ``count`` archived-and-read archives, their bundles as files."""
    accounts = derive_test_accounts()
    consortium = build_consortium(rpc_url, accounts, data)
    node = build_node(consortium, accounts.hospital_a, data / "node")
    out = data / "bundles"
    out.mkdir()
    try:
        who = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bench").secret)
        ids = []
        started = time.perf_counter()
        for i in range(count):
            view = node.archives.create(
                who,
                NewArchive(
                    record_class=RecordClass.INPATIENT,
                    sensitivity=Sensitivity.NORMAL,
                    department="cardiology",
                    title=f"Discharge summary {i}",
                    patient_id=f"MRN-{i:05d}",
                    source_system="HIS",
                    media_type="text/plain",
                ),
                [b"Discharge summary: stable, follow-up in two weeks. #%d" % i],
            )
            node.archives.archive(who, view.id)
            b"".join(node.archives.open_content(who, view.id, Purpose.TREATMENT).chunks)
            ids.append(view.id)
        node.worker.run_until_anchored(timeout=600)
        for i, archive_id in enumerate(ids):
            (out / f"{i:05d}.json").write_bytes(node.proofs.bundle(who, archive_id).document)
        print(
            f"# built {count} bundles in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    finally:
        node.close()
    return out, consortium.deployment_file


@dataclass
class Runs:
    """Wall-clock and CPU (user + system) seconds of repeated runs of one command."""

    wall: list[float]
    cpu: list[float]

    def __str__(self) -> str:
        return (
            f"wall median {statistics.median(self.wall):.3f} s, min {min(self.wall):.3f} s; "
            f"CPU median {statistics.median(self.cpu):.3f} s (n={len(self.wall)})"
        )


def timed(command: list[str], repeat: int, stdin: bytes | None = None) -> Runs:
    """``repeat`` fresh runs of ``command`` (each must exit 0)."""
    runs = Runs([], [])
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, input=stdin, capture_output=True, check=False)
        runs.wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{command[:3]} exited {done.returncode}: {done.stderr.decode()}")
    return runs


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores, "
        f'"{cpu}", Python {platform.python_version()}; load average {load}'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--baseline", type=Path, help="another checkout to time items 1-2 with")
    args = parser.parse_args()

    script = str(REPO / ".venv" / "bin" / "archivechain")
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    rows: list[tuple[str, str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bundles, deployment = build_bundles(anvil.rpc_url, Path(tmp), args.bundles)
            one = str(sorted(bundles.iterdir())[0])
            trust = ["--rpc", anvil.rpc_url, "--deployment", str(deployment)]

            rows.append(("`archivechain --help`", str(timed([script, "--help"], args.repeat))))
            single = timed([script, "verify", one, *trust], args.repeat)
            rows.append(("`archivechain verify` one 3-event bundle", str(single)))
            if args.baseline is not None:
                old = str(args.baseline / ".venv" / "bin" / "archivechain")
                rows.append(("baseline `--help`", str(timed([old, "--help"], 3))))
                rows.append(
                    ("baseline `verify` one bundle", str(timed([old, "verify", one, *trust], 3)))
                )

            batch = timed([script, "verify", str(bundles), *trust, "--json"], 3)
            rows.append(
                (
                    f"`archivechain verify DIR --json`, {args.bundles} bundles in one process",
                    f"{batch}: {args.bundles / min(batch.wall):,.0f} bundles/s (best run)",
                )
            )
            paths = "\n".join(str(p) for p in sorted(bundles.iterdir())).encode()
            listed = timed([script, "verify", "-", *trust], 3, stdin=paths)
            rows.append(
                (
                    f"`archivechain verify -` (paths on stdin), {args.bundles} bundles",
                    f"{listed}: {args.bundles / min(listed.wall):,.0f} bundles/s (best run)",
                )
            )

            # In-process: what one bundle costs once the process is up.
            from anchoring.deployment import Deployment

            reader = NotaryReader(
                CountingRpc(anvil.rpc_url), Deployment.load(deployment).notary.address
            )
            raws = [p.read_bytes() for p in sorted(bundles.iterdir())]
            started = time.perf_counter()
            parsed = [parse_bundle(raw) for raw in raws]
            parse_time = time.perf_counter() - started
            CountingRpc.requests = 0
            started = time.perf_counter()
            reports = [verify_bundle(bundle, reader) for bundle in parsed]
            verify_time = time.perf_counter() - started
            assert all(report.ok for report in reports)
            rows.append(
                (
                    "in process: parse one bundle",
                    f"{1000 * parse_time / len(raws):.3f} ms",
                )
            )
            rows.append(
                (
                    "in process: verify one bundle (chain reads included)",
                    f"{1000 * verify_time / len(raws):.3f} ms, "
                    f"{CountingRpc.requests / len(raws):.2f} RPC requests per bundle",
                )
            )
    finally:
        anvil.stop()

    print(f"Machine: {machine()}\n")
    print("| measurement | figure |")
    print("|---|---|")
    for name, figure in rows:
        print(f"| {name} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
