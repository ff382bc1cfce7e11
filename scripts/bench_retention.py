"""Retention benchmark (issue 10 §5). Prints a table; not a test.

A real node (hospital A of a throwaway consortium on a fresh anvil with 1 s blocks, SQLite WAL
``synchronous=FULL`` or PostgreSQL, local blob store) with ``--count`` outpatient archives whose
retention ran out a year ago (trigger 16 years back, 4 KB each), called in process at the service
level (no HTTP), anchoring worker not running (so "excluding the chain": the chain calls only
wait in the outbox):

  1. the disposition job: every due archive into DISPOSITION_REVIEW (units of 500), archives/s;
  2. disposition lists of 1,000 proposed by an archivist, archives/s;
  3. approval of each item by a records manager, one unit each, items/s;
  4. destruction (key copies destroyed, metadata erased, certificate built, canonicalised,
     hashed and EIP-712 signed, DESTROY logged, ``destroy`` queued, tombstone appended; then the
     ciphertext deleted and recorded): ``--single`` archives one by one (one unit each), the rest
     list by list (``destroy_approved``: 200 archives per unit), destructions/s;
  5. gas per archive of ``destroy``/``destroyBatch`` on chain (the worker coalesces queued
     destroys, up to 100 per transaction), from the receipts of a second,
     small node whose worker then sends everything (``--gas-sample`` archives).

Usage: .venv/bin/python scripts/bench_retention.py [--count N] [--threads T] [--gas-sample K]
                                                   [--single S] [--postgres URL] [--profile]
                                                   [--sqlite-cache-mib M]
Everything lives in a temporary directory removed at the end. The node uses the public anvil test
keys and a cheap keystore cost: BENCHMARK ONLY.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select, text  # noqa: E402
from sqlalchemy.orm import selectinload  # noqa: E402

import node.services.retention as retention_module  # noqa: E402
from anchoring.chain import JsonRpc  # noqa: E402
from anchoring.events import (  # noqa: E402
    DispositionApproveData,
    DispositionApproveEvent,
    RecordClass,
    Sensitivity,
)
from anchoring.storage import OutboxItem  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.db import DEFAULT_SQLITE_CACHE_MIB, UnitOfWork  # noqa: E402
from node.ledger import Ledger  # noqa: E402
from node.ledgerstate import plain_states, version_rows  # noqa: E402
from node.models import Archive, DispositionDecision, DispositionItem, DispositionProposal  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Principal, Role  # noqa: E402
from node.runtime import NodeRuntime  # noqa: E402
from node.services.archives import NewArchive, NewContent  # noqa: E402
from node.services.retention import DESTRUCTION_CHUNK  # noqa: E402
from tests.fixtures.chain import Consortium, build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402

T = TypeVar("T")
LIST_SIZE = 1000
SETUP_BATCH = 100
APPROVE_BATCH = 500


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    )


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class Bench:
    """A node with ``count`` due archives and the three callers."""

    def __init__(
        self,
        consortium: Consortium,
        data_dir: Path,
        count: int,
        database_url: str | None,
        sqlite_cache_mib: int = DEFAULT_SQLITE_CACHE_MIB,
    ) -> None:
        self.node: NodeRuntime = build_node(
            consortium,
            consortium.accounts.hospital_a,
            data_dir,
            name="bench-retention",
            database_url=database_url,
            sqlite_cache_mib=sqlite_cache_mib,
        )
        keys = self.node.keys
        self.archivist = keys.authenticate(keys.issue(Role.ARCHIVIST, "archivist").secret)
        self.manager = keys.authenticate(keys.issue(Role.RECORDS_MANAGER, "manager").secret)
        trigger = (datetime.now(UTC) - timedelta(days=16 * 366)).date()
        new = NewArchive(
            record_class=RecordClass.OUTPATIENT,
            sensitivity=Sensitivity.NORMAL,
            department="clinic",
            title="Benchmark visit note",
            patient_id="BENCH-PATIENT",
            source_system="HIS",
            media_type="application/octet-stream",
            trigger_date=trigger,
        )
        self.ids: list[str] = []

        def batch(size: int) -> list[str]:
            views = self.node.archives.create_many(
                self.archivist, [NewContent(new, [os.urandom(4096)]) for _ in range(size)]
            )
            ids = [view.id for view in views]
            self.node.archives.archive_many(self.archivist, ids)
            return ids

        sizes = [min(SETUP_BATCH, count - start) for start in range(0, count, SETUP_BATCH)]
        with ThreadPoolExecutor(4) as pool:  # concurrent units share group commits
            self.ids = [i for ids in pool.map(batch, sizes) for i in ids]

    def review(self) -> int:
        return self.node.retention.start_dispositions(self.archivist)

    def propose(self) -> list[tuple[str, str]]:
        items = []
        for start in range(0, len(self.ids), LIST_SIZE):
            chunk = self.ids[start : start + LIST_SIZE]
            proposal = self.node.retention.propose(self.archivist, chunk, "retention expired")
            items += [(proposal.id, archive_id) for archive_id in chunk]
        return items

    def approve_lists(self, items: list[tuple[str, str]]) -> None:
        """Setup only (``--fast-approve``): approve the items ``APPROVE_BATCH`` per unit of work
        with exactly the steps of ``RetentionService.decide``'s approval (four eyes, item
        pending, archive held and in review, not on hold, DISPOSITION_APPROVE logged through the
        ledger and checked by the lifecycle, the item's decision, expiry, approver and reason),
        instead of one unit per item: the same rows and events, 100,000 approvals in minutes."""
        service = self.node.retention
        manager = self.manager
        days = service.settings.disposition_approval_days
        reason = "reviewed"
        reason_hash = hashlib.sha256(reason.encode("utf-8")).hexdigest()
        by_proposal: dict[str, list[str]] = {}
        for proposal_id, archive_id in items:
            by_proposal.setdefault(proposal_id, []).append(archive_id)
        for proposal_id, archive_ids in by_proposal.items():
            for start in range(0, len(archive_ids), APPROVE_BATCH):
                part = archive_ids[start : start + APPROVE_BATCH]

                def unit(uow: UnitOfWork, part: list[str] = part, pid: str = proposal_id) -> None:
                    proposal = service._proposal(uow, pid)
                    assert proposal.proposed_by != manager.actor  # four eyes
                    for archive_id in part:
                        item = service._item(uow, proposal.id, archive_id)
                        assert item.decision == DispositionDecision.PENDING.value
                        archive = service.ledger.held(uow.session, manager, item.archive_id)
                        state = service.ledger.state(uow.session, archive)
                        service._require_reviewable(state, archive.id)
                        item.decision = DispositionDecision.APPROVED.value
                        item.expires_at = uow.now + timedelta(days=days)
                        data = DispositionApproveData(
                            proposal=proposal.id,
                            expires_at=item.expires_at,
                            reason_hash=reason_hash,
                        )
                        service.ledger.record(
                            uow, archive, state, DispositionApproveEvent, manager.actor, data
                        )
                        item.decided_by = manager.actor
                        item.decided_at = uow.now
                        item.reason = reason

                service.units.run(unit)

    def approve(self, items: list[tuple[str, str]], threads: int) -> None:
        def one(item: tuple[str, str]) -> None:
            self.node.retention.decide(
                self.manager, item[0], item[1], approve=True, reason="reviewed"
            )

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, items))

    def destroy_lists(self, items: list[tuple[str, str]]) -> int:
        """Execute the lists of ``items`` (items of those lists destroyed one by one before are
        reported as refused, ``not_approved``: executed)."""
        proposals = sorted({proposal for proposal, _ in items})
        total = 0
        for proposal in proposals:
            outcome = self.node.retention.destroy_approved(self.archivist, proposal)
            assert {code for _, code in outcome.refused} <= {"not_approved"}, outcome.refused[:3]
            total += len(outcome.destroyed)
        return total

    def destroy(self, items: list[tuple[str, str]], threads: int, who: Principal) -> list[int]:
        def one(item: tuple[str, str]) -> int:
            return self.node.retention.destroy(who, item[0], item[1]).key_copies_destroyed

        if threads == 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, items))


def profile_units(node: NodeRuntime, profiler: cProfile.Profile) -> None:
    """Profile the work of a destruction inside its unit of work. Units run on the group
    committer's thread, so a profile of the calling thread shows only the wait: wrap the
    service's set-based step (``_shred``: guards, erasure, certificates, events, bulk rows)
    instead; the unit's commit (flush of the log and the rows) and the blob deletion are not
    included."""
    service = node.retention
    for name in ("_shred",):
        original = getattr(service, name)

        def wrapped(
            *args: object, _original: Callable[..., object] = original, **kwargs: object
        ) -> object:
            profiler.enable()
            try:
                return _original(*args, **kwargs)
            finally:
                profiler.disable()

        setattr(service, name, wrapped)


def compare_states(node: NodeRuntime, items: list[tuple[str, str]]) -> tuple[float, float]:
    """Read-only: the lifecycle states of ``items`` (approved, not destroyed) in chunks of
    ``DESTRUCTION_CHUNK``, built set-based (``plain_states``) and replayed by a ledger with an
    empty cache (``Ledger.states``, what a destruction did before for archives not cached);
    checks they are equal. CPU milliseconds per archive of each, this thread."""
    built_cpu = replay_cpu = 0.0
    by_proposal: dict[str, list[str]] = {}
    for proposal_id, archive_id in items:
        by_proposal.setdefault(proposal_id, []).append(archive_id)
    chunks = [
        (proposal_id, archive_ids[start : start + DESTRUCTION_CHUNK])
        for proposal_id, archive_ids in by_proposal.items()
        for start in range(0, len(archive_ids), DESTRUCTION_CHUNK)
    ]
    with node.db.session() as session:
        for proposal_id, ids in chunks:
            proposal = session.get_one(DispositionProposal, proposal_id)
            rows = {
                item.archive_id: item
                for item in session.execute(
                    select(DispositionItem).where(
                        DispositionItem.proposal_id == proposal.id,
                        DispositionItem.archive_id.in_(ids),
                    )
                ).scalars()
            }
            archives = {
                archive.id: archive
                for archive in session.execute(
                    select(Archive)
                    .where(Archive.id.in_(ids))
                    .options(selectinload(Archive.versions))
                ).scalars()
            }
            pairs = [(rows[i], archives[i]) for i in ids]
            cpu = time.process_time()
            versions = version_rows(session, ids)
            built = plain_states(session, node.ledger.hospital, proposal, pairs, versions)
            built_cpu += time.process_time() - cpu
            cpu = time.process_time()
            replayed = Ledger(node.ledger.hospital).states(session, [a for _, a in pairs])
            replay_cpu += time.process_time() - cpu
            assert built == replayed, "built and replayed states differ"
        session.rollback()
    return 1000 * built_cpu / len(items), 1000 * replay_cpu / len(items)


def count_built_states() -> list[int]:
    """Count the states ``_checked`` gets from ``node.ledgerstate.plain_states`` (the rest are
    replayed by the ledger): a one-element list, updated as the destruction runs."""
    built = [0]
    original = retention_module.plain_states

    def counting(*args: Any, **kwargs: Any) -> Any:
        states = original(*args, **kwargs)
        built[0] += len(states)
        return states

    retention_module.plain_states = counting  # type: ignore[assignment]
    return built


def gas_per_destroy(consortium: Consortium, data_dir: Path, sample: int, rpc: JsonRpc) -> list[int]:
    bench = Bench(consortium, data_dir, sample, None)
    try:
        bench.review()
        items = bench.propose()
        bench.approve(items, 1)
        bench.destroy(items, 1, bench.archivist)
        bench.node.worker.run_until_anchored(timeout=120)
        rows_by_tx: dict[str, int] = {}
        with bench.node.db.session() as session:
            for row in session.execute(select(OutboxItem)).scalars():
                if row.payload.get("function") == "destroy" and row.tx_hash:
                    rows_by_tx[row.tx_hash] = rows_by_tx.get(row.tx_hash, 0) + 1
        # The worker coalesces queued destroys into destroyBatch: gas per archive is the
        # transaction's gas over the archives it carries.
        return [
            int(rpc.request("eth_getTransactionReceipt", [h])["gasUsed"], 16) // n
            for h, n in rows_by_tx.items()
            for _ in range(n)
        ]
    finally:
        bench.node.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="due archives (default 10,000)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent destroy callers")
    parser.add_argument("--gas-sample", type=int, default=20, help="archives destroyed on chain")
    parser.add_argument("--single", type=int, default=100, help="archives destroyed one by one")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--sqlite-cache-mib",
        type=int,
        default=DEFAULT_SQLITE_CACHE_MIB,
        help=f"SQLite page cache per connection (default {DEFAULT_SQLITE_CACHE_MIB})",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile of the per-archive steps of 4b to stderr (slows 4b down)",
    )
    parser.add_argument(
        "--fast-approve",
        action="store_true",
        help="setup: approve 500 items per unit (decide's steps) instead of one unit per item",
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=2000,
        help="archives whose states are built and replayed side by side before 4b (read-only)",
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="4b on an empty ledger state cache (as after a restart)",
    )
    parser.add_argument(
        "--skip-gas", action="store_true", help="do not run step 5 (the on-chain sample)"
    )
    args = parser.parse_args()
    started = datetime.now(UTC)
    rows: list[tuple[str, str]] = []
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=1, state_file=None))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            root = Path(tmp)
            consortium = build_consortium(anvil.rpc_url, derive_test_accounts(), root / "chain")
            schema = None
            url = None
            if args.postgres:
                from sqlalchemy import create_engine

                schema = f"bench_retention_{os.getpid()}"
                engine = create_engine(args.postgres)
                with engine.begin() as connection:
                    connection.execute(text(f"CREATE SCHEMA {schema}"))
                engine.dispose()
                url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            bench, setup = timed(
                lambda: Bench(consortium, root / "node", args.count, url, args.sqlite_cache_mib)
            )
            try:
                rows.append(("setup: create + archive (not timed below)", f"{setup:.1f} s"))
                print(f"setup {setup:.1f} s", file=sys.stderr, flush=True)
                moved, seconds = timed(bench.review)
                assert moved == args.count, moved
                rows.append(("1. into DISPOSITION_REVIEW", f"{moved / seconds:,.0f} archives/s"))
                items, seconds = timed(bench.propose)
                rows.append(
                    ("2. proposed (lists of 1,000)", f"{len(items) / seconds:,.0f} archives/s")
                )
                if args.fast_approve:
                    _, seconds = timed(lambda: bench.approve_lists(items))
                    label = f"3. approved (setup: {APPROVE_BATCH} per unit)"
                else:
                    _, seconds = timed(lambda: bench.approve(items, args.threads))
                    label = f"3. approved ({args.threads} callers)"
                rows.append((label, f"{len(items) / seconds:,.0f} items/s"))
                print(f"approved {len(items) / seconds:,.0f} items/s", file=sys.stderr, flush=True)
                single = items[: args.single]
                copies, seconds = timed(lambda: bench.destroy(single, 1, bench.archivist))
                assert all(c == 1 for c in copies)
                rows.append(
                    (
                        f"4a. destroyed one by one ({len(single)}, 1 caller)",
                        f"{len(single) / seconds:,.0f} archives/s",
                    )
                )
                rest = items[args.single :]
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profile_units(bench.node, profiler)
                sample = rest[: args.compare]
                if sample:
                    built_ms, replay_ms = compare_states(bench.node, sample)
                    rows.append(
                        (
                            f"states of {len(sample):,} (chunks of 200): built / replayed",
                            f"{built_ms:.3f} / {replay_ms:.3f} CPU-ms per archive (equal)",
                        )
                    )
                if args.cold_cache:
                    bench.node.retention.ledger = Ledger(bench.node.ledger.hospital)
                built = count_built_states()
                cpu = time.process_time()
                done, seconds = timed(lambda: bench.destroy_lists(rest))
                cpu = time.process_time() - cpu
                if profiler is not None:
                    stats = pstats.Stats(profiler, stream=sys.stderr)
                    stats.sort_stats("cumulative").print_stats(40)
                assert done == len(rest), done
                rows.append(
                    (
                        f"4b. destroyed by list ({len(rest):,}, 200 per transaction)",
                        f"{len(rest) / seconds:,.0f} archives/s",
                    )
                )
                # On a shared machine the wall clock mostly measures the other processes: the
                # process's CPU time (every thread: caller, group committer, blob deleters) is
                # what the destruction itself costs; on an idle machine it bounds the rate.
                rows.append(
                    (
                        "4b. the same per CPU second of this process",
                        f"{len(rest) / cpu:,.0f} archives/CPU-s ({cpu:.1f} CPU-s)",
                    )
                )
                rows.append(
                    (
                        "4b. states built set-based / replayed",
                        f"{built[0]:,} / {len(rest) - built[0]:,}",
                    )
                )
                rows.append(
                    (
                        "load average (1, 5, 15 min) after 4b",
                        " ".join(f"{x:.1f}" for x in os.getloadavg()),
                    )
                )
            finally:
                bench.node.close()
                if schema is not None and args.postgres:
                    from sqlalchemy import create_engine

                    engine = create_engine(args.postgres)
                    with engine.begin() as connection:
                        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                    engine.dispose()
            if not args.skip_gas:
                rpc = JsonRpc(anvil.rpc_url)
                gas = gas_per_destroy(consortium, root / "gas", args.gas_sample, rpc)
                rows.append(
                    (
                        f"5. destroy gas per archive ({len(gas)} archives, worker batches)",
                        f"mean {statistics.mean(gas):,.0f}, max {max(gas):,}",
                    )
                )
    finally:
        anvil.stop()
    print(
        f"ArchiveChain retention benchmark — {started:%Y-%m-%d %H:%M} UTC, {args.count:,} archives"
    )
    print(f"machine: {machine()}")
    database = (
        "PostgreSQL"
        if args.postgres
        else f"SQLite WAL synchronous=FULL, page cache {args.sqlite_cache_mib} MiB"
    )
    print(f"node: {database}, local blobs")
    width = max(len(name) for name, _ in rows)
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
