"""Child process of ``test_destruction_crash.py``: opens the hospital node on an existing data
directory and database (as ``archivechain node run`` does, dev mode), arms the node's fault point
from ``ARCHIVECHAIN_TEST_FAULT_POINT`` with the same seam (``archivechain.node``), and executes a
disposition list in small chunks. Prints ``destroyed <n> refused <n>`` if it was not killed.

Usage: python -m tests.api.destruction_child DATA_DIR DATABASE_URL RPC_URL DEPLOYMENT_FILE
       API_KEY PROPOSAL_ID CHUNK
"""

from __future__ import annotations

import sys

from tests.support import open_child_runtime


def main(argv: list[str]) -> None:
    data_dir, database_url, rpc_url, deployment_file, secret, proposal, chunk = argv
    runtime = open_child_runtime(data_dir, database_url, rpc_url, deployment_file)
    try:
        principal = runtime.keys.authenticate(secret)
        outcome = runtime.retention.destroy_approved(principal, proposal, chunk=int(chunk))
        print(f"destroyed {len(outcome.destroyed)} refused {len(outcome.refused)}", flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
