"""Child process of the kill -9 re-plan test (``test_replan.py``): runs the anchoring worker, which
finds its transactions unsendable and re-plans their nonces, and SIGKILLs itself at one fault point
of the re-plan (``replanning``: signed but not committed; ``replanned``: committed, nothing sent;
``replan-broadcast``: the first re-planned transaction sent).

Usage: python -m tests.anchoring.replan_child DB_URL RPC_URL DEPLOYMENT_FILE PRIVATE_KEY_HEX POINT
Exits 3 if the point was never reached.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from eth_account import Account

from anchoring.chain import ContractWriter, RpcChain
from anchoring.deployment import Deployment
from anchoring.worker import AnchoringWorker, WorkerConfig
from node.db import Database


def main(argv: list[str]) -> int:
    db_url, rpc_url, deployment_file, key, point = argv

    def hook(at: str) -> None:
        if at == point:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    worker = AnchoringWorker(
        sessions=Database.connect(db_url).write_session,
        chain=ContractWriter(
            RpcChain(rpc_url, Deployment.load(Path(deployment_file))),
            Account.from_key(bytes.fromhex(key)),
        ),
        config=WorkerConfig(interval=0.0, backoff_initial=0.05, replan_grace=0.0),
        fault_hook=hook,
    )
    for _ in range(20):
        worker.tick()
    print(f"never reached {point}: {worker.status}", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
