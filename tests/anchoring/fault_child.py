"""Child process of the kill -9 fault-injection test (``test_fault_injection.py``) and of
``scripts/fault_stress.py``: appends events and anchors them, and SIGKILLs itself at a chosen point.

Protocol on stdout (one line each, flushed): ``recovered <log size>`` once everything acknowledged
by earlier runs is anchored; ``ack <index>`` after the transaction holding event ``index`` committed.

Usage: python -m tests.anchoring.fault_child DB_URL RPC_URL DEPLOYMENT_FILE PRIVATE_KEY_HEX
       KILL_POINT KILL_AFTER ROUNDS EVENTS_PER_ROUND SEED
KILL_POINT is one of: commit, planned, signed, broadcast, recorded, random, none.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from eth_account import Account

from anchoring import storage
from anchoring.chain import ContractWriter, RpcChain
from anchoring.deployment import Deployment
from anchoring.storage import LogWriter
from anchoring.worker import AnchoringWorker, WorkerConfig
from node.db import Database


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    db_url, rpc_url, deployment_file, key, point, after, rounds, per_round, seed = argv
    kill_after, n_rounds, n_events = int(after), int(rounds), int(per_round)
    rng = random.Random(int(seed))
    db = Database.connect(db_url)
    storage.metadata.create_all(db.writer)
    chain = RpcChain(rpc_url, Deployment.load(Path(deployment_file)))
    seen = {"count": 0}

    def hook(at: str) -> None:
        if at == point:
            seen["count"] += 1
            if seen["count"] >= kill_after:
                die()

    worker = AnchoringWorker(
        sessions=db.write_session,
        chain=ContractWriter(chain, Account.from_key(bytes.fromhex(key))),
        config=WorkerConfig(interval=0.0, backoff_initial=0.05, max_in_flight=4),
    )
    status = worker.run_until_anchored(timeout=60)
    print(f"recovered {status.log_size}", flush=True)
    worker.fault_hook = hook
    if point == "random":
        threading.Timer(rng.uniform(0.05, 0.6), die).start()
    for _ in range(n_rounds):
        with db.transaction() as session:
            writer = LogWriter.open(session)
            indices = [
                writer.append(
                    b'{"seed":%d,"n":%d}' % (int(seed), writer.size),
                    archive_id="01JDQ0000000000000000000FF",
                    event_type="ACCESS",
                    time=datetime.now(UTC),
                ).index
                for _ in range(rng.randint(1, n_events))
            ]
            writer.flush()
        for index in indices:
            print(f"ack {index}", flush=True)
        if point == "commit":
            hook("commit")
        worker.tick()
    worker.run_until_anchored(timeout=60)


if __name__ == "__main__":
    main(sys.argv[1:])
