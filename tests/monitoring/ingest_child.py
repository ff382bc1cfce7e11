"""Child process of ``test_orphans.py``: opens the hospital node on an existing data directory and
database (as ``archivechain node run`` does, dev mode), arms the node's fault point from
``ARCHIVECHAIN_TEST_FAULT_POINT`` with the same seam (``archivechain.node``) and ingests one
record. Prints ``created <id>`` if it was not killed.

Usage: python -m tests.monitoring.ingest_child DATA_DIR DATABASE_URL RPC_URL DEPLOYMENT_FILE API_KEY
"""

from __future__ import annotations

import sys
from pathlib import Path

from anchoring.events import RecordClass, Sensitivity
from archivechain.node import _install_fault_point
from node.config import NodeSettings
from node.runtime import NodeRuntime
from node.services.archives import NewArchive


def main(argv: list[str]) -> None:
    data_dir, database_url, rpc_url, deployment_file, secret = argv
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
        record = NewArchive(
            record_class=RecordClass.LAB,
            sensitivity=Sensitivity.NORMAL,
            department="laboratory",
            title="Blood count",
            patient_id="MRN-0042",
            source_system="LIS",
            media_type="text/plain",
        )
        created = runtime.archives.create(principal, record, [b"haemoglobin 13.5 g/dL\n" * 200])
        print(f"created {created.id}", flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
