"""Child process of ``test_destruction_crash.py``: opens the hospital node on an existing data
directory and database (as ``archivechain node run`` does, dev mode), arms the node's fault point
from ``ARCHIVECHAIN_TEST_FAULT_POINT`` with the same seam (``archivechain.node``), and executes a
disposition list in small chunks. Prints ``destroyed <n> refused <n>`` if it was not killed.

Usage: python -m tests.api.destruction_child DATA_DIR DATABASE_URL RPC_URL DEPLOYMENT_FILE
       API_KEY PROPOSAL_ID CHUNK
"""

from __future__ import annotations

import sys
from pathlib import Path

from archivechain.node import _install_fault_point
from node.config import NodeSettings
from node.runtime import NodeRuntime


def main(argv: list[str]) -> None:
    data_dir, database_url, rpc_url, deployment_file, secret, proposal, chunk = argv
    settings = NodeSettings(
        mode="dev",
        name="test-node",
        data_dir=Path(data_dir),
        database_url=database_url,
        rpc_url=rpc_url,
        deployment_file=Path(deployment_file),
    )
    runtime = NodeRuntime.open(settings)
    try:
        _install_fault_point(runtime)
        runtime.start(scheduler=False)  # the writer; no background jobs
        principal = runtime.keys.authenticate(secret)
        outcome = runtime.retention.destroy_approved(principal, proposal, chunk=int(chunk))
        print(f"destroyed {len(outcome.destroyed)} refused {len(outcome.refused)}", flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
