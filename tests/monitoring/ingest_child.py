"""Child process of ``test_orphans.py``: opens the hospital node on an existing data directory and
database (as ``archivechain node run`` does, dev mode), arms the node's fault point from
``ARCHIVECHAIN_TEST_FAULT_POINT`` with the same seam (``archivechain.node``) and ingests one
record. Prints ``created <id>`` if it was not killed.

Usage: python -m tests.monitoring.ingest_child DATA_DIR DATABASE_URL RPC_URL DEPLOYMENT_FILE API_KEY
"""

from __future__ import annotations

import sys

from tests.support import lab_result, open_child_runtime


def main(argv: list[str]) -> None:
    data_dir, database_url, rpc_url, deployment_file, secret = argv
    runtime = open_child_runtime(data_dir, database_url, rpc_url, deployment_file)
    try:
        principal = runtime.keys.authenticate(secret)
        record = lab_result()
        created = runtime.archives.create(principal, record, [b"haemoglobin 13.5 g/dL\n" * 200])
        print(f"created {created.id}", flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
