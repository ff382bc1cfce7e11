"""The disaster-recovery drill (docs/recovery.md §4) an operator can run: three hospital nodes on a
fresh anvil, N archives at A, then the failures one by one, with figures.

Usage: .venv/bin/python scripts/drill.py [--archives N] [--size BYTES] [--batch B]

1. A creates N archives (``--size`` bytes each) in batches; they are anchored.
2. Replicas are placed (k = 1, rendezvous over B and C) and A's log is shipped to B and C.
3. A's blob directory is wiped: every blob is repaired from the replicas (``repair_missing``).
4. A replica at a peer is corrupted: the challenge audit fails it, the replica moves.
5. A backup is taken halfway through; after the second half A's data directory is lost; the old
   backup plus ``restore_from_peers`` rebuilds it (log to the chain's checkpoint, verified; blobs
   from replicas); A starts again and anchors a new event.

Prints one line per phase: seconds, bytes moved, and for the restore the events lost (events
acknowledged at A before the failure that the restored log lacks).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from anchoring import storage  # noqa: E402
from anchoring.events import RecordClass, Sensitivity  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.backup import (  # noqa: E402
    VerificationError,
    create_backup,
    restore_backup,
    verify_node_data,
)
from node.models import HeldReplica  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.recovery import restore_from_peers  # noqa: E402
from node.services.archives import NewArchive, NewContent  # noqa: E402
from node.services.ingestion import system_principal  # noqa: E402
from tests.federation.conftest import Hospital, start_hospital  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402

MANUAL = {"replica_tick": 3600.0, "log_ship_tick": 3600.0, "fixity_tick": 3600.0}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archives", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    half = args.archives // 2
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    nodes: dict[str, Hospital] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            accounts = derive_test_accounts()
            consortium = build_consortium(anvil.rpc_url, accounts, tmp / "chain")
            named = {"A": accounts.hospital_a, "B": accounts.hospital_b, "C": accounts.hospital_c}
            ports = {name: free_port() for name in named}
            urls = {named[n].address: f"http://127.0.0.1:{ports[n]}" for n in named}
            for name, account in named.items():
                peers = {a: u for a, u in urls.items() if a != account.address}
                nodes[name] = start_hospital(
                    name, consortium, account, tmp / name, ports[name], peers, **MANUAL
                )
            a = nodes["A"]
            print(f"drill: {args.archives} archives of {args.size} bytes, 3 nodes, k = 1")

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
            began = time.monotonic()
            shipped = a.runtime.log_shipping.ship()
            print(f"ship log         {time.monotonic() - began:8.1f} s  {shipped.entries_sent} "
                  f"entries, {shipped.bytes_sent} bytes")  # fmt: skip

            began = time.monotonic()
            shutil.rmtree(a.runtime.settings.blob_dir)
            repaired = a.runtime.replicas.repair_missing()
            print(f"wipe blobs       {time.monotonic() - began:8.1f} s  {repaired.repaired} "
                  f"repaired, {repaired.bytes_fetched} bytes fetched, "
                  f"{len(repaired.problems)} problems")  # fmt: skip

            b = nodes["B"]
            with b.runtime.db.session() as session:
                cid = session.execute(select(HeldReplica.cid).limit(1)).scalar_one()
            path = b.runtime.replica_holder.store.path_of(cid)  # type: ignore[attr-defined]
            path.write_bytes(bytes(x ^ 0xFF for x in path.read_bytes()))
            began = time.monotonic()
            challenged = a.runtime.replicas.challenge(limit=args.archives * 2)
            moved = a.runtime.replicas.place()
            dropped = a.runtime.replicas.drop_unneeded()
            print(f"corrupt replica  {time.monotonic() - began:8.1f} s  {challenged.verified} "
                  f"verified, {challenged.failed} failed, {moved.placed} re-placed, "
                  f"{dropped.dropped} dropped")  # fmt: skip

            a.runtime.worker.run_until_anchored(timeout=600)
            a.runtime.log_shipping.ship()
            acknowledged = log_size(a)
            settings = a.runtime.settings
            a.stop()
            shutil.rmtree(settings.data_dir)
            began = time.monotonic()
            with contextlib.suppress(VerificationError):  # the backup is older than the chain
                restore_backup(backup, settings)
            result = restore_from_peers(settings)
            verify_node_data(settings)
            (settings.data_dir / "RESTORE_UNVERIFIED").unlink(missing_ok=True)
            seconds = time.monotonic() - began
            nodes["A"] = start_hospital(
                "A", consortium, named["A"], settings.data_dir, ports["A"],
                {k: v for k, v in urls.items() if k != named["A"].address}, **MANUAL,
            )  # fmt: skip
            create(nodes["A"], 1, args.size, 1, "after restore")
            nodes["A"].runtime.worker.run_until_anchored(timeout=120)
            restored_size = result.log.local_size + result.log.recovered
            print(f"restore old DB   {seconds:8.1f} s  {result.log.recovered} entries from "
                  f"peers, {result.blobs_restored} blobs ({result.bytes_fetched} bytes), "
                  f"events lost {acknowledged - restored_size - result.log.tail_recovered}, "
                  f"anchoring resumed at {log_size(nodes['A'])} events")  # fmt: skip
    finally:
        for hospital in nodes.values():
            hospital.stop()
        anvil.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
