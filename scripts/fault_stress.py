"""Stress version of the kill -9 fault-injection test: many more kills against a fresh anvil.

Usage: .venv/bin/python scripts/fault_stress.py [--kills N] [--seed S]
Prints one line per run and a summary; exits 1 on the first broken invariant.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchoring import storage  # noqa: E402
from anchoring.chain import JsonRpc, RpcChain  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.db import Database  # noqa: E402
from node.ports import free_port  # noqa: E402
from tests.anchoring.test_fault_injection import POINTS, check_invariants, run_child  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            accounts = derive_test_accounts()
            consortium = build_consortium(anvil.rpc_url, accounts, Path(tmp))
            chain = RpcChain(JsonRpc(anvil.rpc_url), consortium.deployment)
            db_url = f"sqlite:///{Path(tmp) / 'fault.db'}"
            db = Database.connect(db_url)
            storage.metadata.create_all(db.writer)
            hospital = accounts.hospital_c
            kills = runs = 0
            while kills < args.kills:
                runs += 1
                point = rng.choice(POINTS)
                code, acked, recovered = run_child(
                    db_url, consortium, hospital, point, rng.randint(1, 4), runs
                )
                kills += code == -9
                check_invariants(db, chain, hospital.address, settled=False)
                print(
                    f"run {runs}: point={point} exit={code} acked={len(acked)} "
                    f"recovered={recovered}",
                    flush=True,
                )
            code, _, _ = run_child(db_url, consortium, hospital, "none", 1, runs + 1)
            check_invariants(db, chain, hospital.address, settled=True)
            print(f"ok: {kills} kills in {runs} runs, invariants held")
    finally:
        anvil.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
