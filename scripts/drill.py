"""The disaster-recovery drill (docs/recovery.md §4) an operator can run: three hospital nodes on a
fresh anvil, N archives at A, then the failures one by one, with figures.

Usage: .venv/bin/python scripts/drill.py [--archives N] [--size BYTES] [--batch B] [--load S]

Steady load (``--load`` seconds between archives, 0: none): B ingests one archive every S seconds
for the whole drill and A does too until it is lost; A ships its log every 2 s meanwhile (the
scheduled job's work), so the replicated-point window is measured: the longest time an
acknowledged event of A waited before a peer held it. While A's blobs are repaired a reader reads
the first-half archives round robin (each read of a wiped blob repairs it on the spot, through
``node.readback``); the reads that failed and the slowest successful read are printed.

1. A creates N archives (``--size`` bytes each) in batches; they are anchored.
2. Replicas are placed (k = 1, rendezvous over B and C) and A's log is shipped to B and C.
3. A's blob directory is wiped: every blob is repaired from the replicas (``repair_missing``).
4. A replica at a peer is corrupted: the challenge audit fails it, the replica moves.
5. A backup is taken halfway through; after the second half A's data directory is lost (the node
   is stopped under load, without a last shipment); the old backup plus ``restore_from_peers``
   rebuilds it (log to the chain's checkpoint, verified, and the unanchored tail both peers hold;
   keys and titles of archives created after the backup from the key records; blobs from
   replicas); A starts again and anchors a new event.

Prints one line per phase: seconds, bytes moved, and for the restore the events lost before the
last replicated point (must be 0) and the events acknowledged after it (the window's exposure).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from anchoring import storage  # noqa: E402
from anchoring.events import Purpose, RecordClass, Sensitivity  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.backup import (  # noqa: E402
    VerificationError,
    create_backup,
    restore_backup,
    verify_node_data,
)
from node.models import Archive, HeldReplica, LogShipment  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.recovery import restore_from_peers  # noqa: E402
from node.services.archives import NewArchive, NewContent  # noqa: E402
from node.services.ingestion import system_principal  # noqa: E402
from tests.federation.conftest import Hospital, start_hospital  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402

MANUAL = {"replica_tick": 3600.0, "log_ship_tick": 3600.0, "fixity_tick": 3600.0}
SHIPPING = {
    **MANUAL,
    "log_ship_tick": 2.0,
    "replica_tick": 5.0,
    "anchor_after_replication": True,
}
"""A: its log shipped every 2 s and replicas placed every 5 s by the scheduled jobs; a checkpoint
covers only shipped entries."""


def create(hospital: Hospital, count: int, size: int, batch: int, tag: str) -> None:
    """``count`` archives of ``size`` random bytes at ``hospital``, ``batch`` per unit of work."""
    principal = system_principal(hospital.runtime.pseudonyms, "drill")
    new = NewArchive(
        record_class=RecordClass.LAB,
        sensitivity=Sensitivity.NORMAL,
        department="lab",
        title=f"drill {tag}",
        patient_id="DRILL-1",
        source_system="LIS",
        media_type="application/octet-stream",
    )
    done = 0
    while done < count:
        n = min(batch, count - done)
        items = [NewContent(new, [os.urandom(size)]) for _ in range(n)]
        hospital.runtime.archives.create_many(principal, items)
        done += n


def log_size(hospital: Hospital) -> int:
    with hospital.runtime.db.session() as session:
        return storage.current_size(session)


def shipped_size(hospital: Hospital) -> int:
    """Entries of the hospital's log that every log peer holds (the replicated point)."""
    with hospital.runtime.db.session() as session:
        sizes = list(session.execute(select(LogShipment.shipped)).scalars())
    return min(sizes) if sizes else 0


class Load(threading.Thread):
    """Steady ingest at one node: an archive every ``interval`` seconds until stopped."""

    def __init__(self, hospital: Hospital, size: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.hospital, self.size, self.interval = hospital, size, interval
        self.stopping = threading.Event()
        self.acknowledged = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                create(self.hospital, 1, self.size, 1, "load")
                self.acknowledged += 1
            except Exception:  # the node is being lost: counted, the load goes on
                self.errors += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


class Shipper(threading.Thread):
    """Samples A's acknowledged log size and its replicated point (shipped by the scheduled job
    every 2 s) so that the replicated-point window can be measured."""

    def __init__(self, hospital: Hospital, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.hospital, self.interval = hospital, interval
        self.stopping = threading.Event()
        self.acked: list[tuple[float, int]] = []  # (time, log size)
        self.replicated: list[tuple[float, int]] = []  # (time, size every peer holds)

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            with contextlib.suppress(Exception):
                now = time.monotonic()
                self.acked.append((now, log_size(self.hospital)))
                self.replicated.append((now, shipped_size(self.hospital)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)

    def window(self) -> float:
        """Longest time between an entry's acknowledgement (the first sample that includes it)
        and the end of the first shipment after which every log peer held it."""
        worst, previous = 0.0, 0
        for t_rep, size in self.replicated:
            if size > previous:  # entry ``previous`` is the oldest one newly replicated
                acked_at = next((t for t, n in self.acked if n > previous), None)
                if acked_at is not None:
                    worst = max(worst, t_rep - acked_at)
                previous = size
        return worst


class Reader(threading.Thread):
    """Reads the given archives round robin; keeps when reads failed."""

    def __init__(self, hospital: Hospital, archive_ids: list[str]) -> None:
        super().__init__(daemon=True)
        keys = hospital.runtime.keys
        self.principal = keys.authenticate(keys.issue(Role.ARCHIVIST, "drill-reader").secret)
        self.hospital, self.archive_ids = hospital, archive_ids
        self.stopping = threading.Event()
        self.reads = 0
        self.failures: list[float] = []
        self.first_fail: dict[str, float] = {}
        self.longest = 0.0
        self.slowest = 0.0

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            archive_id = self.archive_ids[i % len(self.archive_ids)]
            i += 1
            now = time.monotonic()
            try:
                stream = self.hospital.runtime.archives.open_content(
                    self.principal, archive_id, Purpose.TREATMENT
                )
                b"".join(stream.chunks)
                self.reads += 1
                self.slowest = max(self.slowest, time.monotonic() - now)
                if archive_id in self.first_fail:
                    failed_for = time.monotonic() - self.first_fail.pop(archive_id)
                    self.longest = max(self.longest, failed_for)
            except Exception:
                self.failures.append(now)
                self.first_fail.setdefault(archive_id, now)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archives", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--load", type=float, default=1.0)
    args = parser.parse_args()
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    half = args.archives // 2
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    nodes: dict[str, Hospital] = {}
    try:
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp_name:
            tmp = Path(tmp_name)
            accounts = derive_test_accounts()
            consortium = build_consortium(anvil.rpc_url, accounts, tmp / "chain")
            named = {"A": accounts.hospital_a, "B": accounts.hospital_b, "C": accounts.hospital_c}
            ports = {name: free_port() for name in named}
            urls = {named[n].address: f"http://127.0.0.1:{ports[n]}" for n in named}
            for name, account in named.items():
                peers = {a: u for a, u in urls.items() if a != account.address}
                nodes[name] = start_hospital(
                    name, consortium, account, tmp / name, ports[name], peers,
                    **(SHIPPING if name == "A" else MANUAL),
                )  # fmt: skip
            a = nodes["A"]
            print(f"drill: {args.archives} archives of {args.size} bytes, 3 nodes, k = 1, "
                  f"load: an archive every {args.load} s at A and at B")  # fmt: skip
            loads: list[Load] = []
            if args.load > 0:
                loads = [Load(nodes[n], args.size, args.load) for n in ("A", "B")]
                for load in loads:
                    load.start()
            shipper = Shipper(a)  # samples for the whole drill, until A is lost
            shipper.start()

            began = time.monotonic()
            create(a, half, args.size, args.batch, "first half")
            a.runtime.worker.run_until_anchored(timeout=600)
            backup = tmp / "a-old.tar"
            create_backup(a.runtime.settings, backup)
            create(a, args.archives - half, args.size, args.batch, "second half")
            a.runtime.worker.run_until_anchored(timeout=600)
            print(f"ingest+anchor    {time.monotonic() - began:8.1f} s  log {log_size(a)} events")

            began, placed, sent = time.monotonic(), 0, 0
            while True:
                report = a.runtime.replicas.place(limit=1000)
                placed, sent = placed + report.placed, sent + report.bytes_sent
                if report.placed == 0:
                    break
            print(f"replicate        {time.monotonic() - began:8.1f} s  {placed} replicas, "
                  f"{sent} bytes sent")  # fmt: skip
            a.runtime.worker.run_until_anchored(timeout=600)

            with a.runtime.db.session() as session:
                sample = list(
                    session.execute(
                        select(Archive.id).where(Archive.title == "drill first half").limit(200)
                    ).scalars()
                )
            reader = Reader(a, sample)
            reader.start()
            time.sleep(2)
            began = time.monotonic()
            # (A keeps ingesting: files written while the directory goes may survive)
            shutil.rmtree(a.runtime.settings.blob_dir, ignore_errors=True)
            repaired = a.runtime.replicas.repair_missing()
            repair_seconds = time.monotonic() - began
            time.sleep(2)
            reader.stop()
            failing = (max(reader.failures) - min(reader.failures)) if reader.failures else 0.0
            print(f"wipe blobs       {repair_seconds:8.1f} s  {repaired.repaired} "
                  f"repaired, {repaired.bytes_fetched} bytes fetched, "
                  f"{len(repaired.problems)} problems; reads meanwhile: {reader.reads} ok, "
                  f"{len(reader.failures)} failed, failing for {failing:.1f} s in all, "
                  f"longest for one archive {reader.longest:.1f} s, "
                  f"slowest successful read {reader.slowest:.2f} s, "
                  f"{len(reader.first_fail)} still failing")  # fmt: skip

            b = nodes["B"]
            with b.runtime.db.session() as session:
                cid = session.execute(select(HeldReplica.cid).limit(1)).scalar_one()
            path = b.runtime.replica_holder.store.path_of(cid)  # type: ignore[attr-defined]
            path.write_bytes(bytes(x ^ 0xFF for x in path.read_bytes()))
            began = time.monotonic()
            challenged = a.runtime.replicas.challenge(limit=args.archives * 2, every=True)
            moved = a.runtime.replicas.place()
            dropped = a.runtime.replicas.drop_unneeded()
            print(f"corrupt replica  {time.monotonic() - began:8.1f} s  {challenged.verified} "
                  f"verified, {challenged.failed} failed, {moved.placed} re-placed, "
                  f"{dropped.dropped} dropped")  # fmt: skip

            a.runtime.worker.run_until_anchored(timeout=600)
            time.sleep(30)  # A under load, shipping every 2 s, anchoring on its own schedule
            settings = a.runtime.settings
            if loads:
                loads[0].stopping.set()  # A's own clients stop as the node is lost …
            shipper.stop()
            acknowledged = log_size(a)  # … and so does shipping: no last shipment
            replicated_point = shipped_size(a)
            a.stop()
            if loads:
                loads[0].join(30)
            shutil.rmtree(settings.data_dir)
            began = time.monotonic()
            with contextlib.suppress(VerificationError):  # the backup is older than the chain
                restore_backup(backup, settings)
            result = restore_from_peers(settings)
            content_lost = 0
            try:
                verify_node_data(settings)
            except VerificationError as exc:  # archives acknowledged after their last replica
                content_lost = exc.message.count(" is missing")
                if "LOST EVENTS" in exc.message:
                    raise
            (settings.data_dir / "RESTORE_UNVERIFIED").unlink(missing_ok=True)
            seconds = time.monotonic() - began
            nodes["A"] = start_hospital(
                "A", consortium, named["A"], settings.data_dir, ports["A"],
                {k: v for k, v in urls.items() if k != named["A"].address}, **SHIPPING,
            )  # fmt: skip
            create(nodes["A"], 1, args.size, 1, "after restore")
            nodes["A"].runtime.worker.run_until_anchored(timeout=120)
            restored_size = result.log.local_size + result.log.recovered + result.log.tail_recovered
            print(f"restore old DB   {seconds:8.1f} s  {result.log.recovered} entries from "
                  f"peers to the checkpoint + {result.log.tail_recovered} unanchored, "
                  f"{result.records.restored} keys from key records "
                  f"({len(result.records.missing)} missing), "
                  f"{result.blobs_restored} blobs ({result.bytes_fetched} bytes); "
                  f"replicated-point window {shipper.window():.1f} s; acknowledged "
                  f"{acknowledged}, replicated point {replicated_point}, restored "
                  f"{restored_size}: events lost before the point "
                  f"{max(0, replicated_point - restored_size)}, after it (in the window) "
                  f"{max(0, acknowledged - max(restored_size, replicated_point))}; "
                  f"anchoring resumed at {log_size(nodes['A'])} events; "
                  f"{content_lost} archives' content acknowledged but not yet replicated "
                  f"(evidence kept, ciphertext lost)")  # fmt: skip
            for load in loads[1:]:
                load.stop()
                print(f"load at B        {load.acknowledged} archives acknowledged during the "
                      f"drill, {load.errors} refused")  # fmt: skip
            if loads:
                print(f"load at A        {loads[0].acknowledged} archives acknowledged before "
                      f"A was lost, {loads[0].errors} refused")  # fmt: skip
    finally:
        for hospital in nodes.values():
            hospital.stop()
        anvil.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
