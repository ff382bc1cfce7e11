"""The consortium demo (issue 5 §6). Run it against a network started with
``archivechain up --hospitals 3`` (``make up``) in another terminal:

    .venv/bin/python scripts/demo.py [--data-dir data]

It creates a record at hospital A, shares it with C (C reads it), transfers it to B (B accepts and
re-keys it), has the regulator place a legal hold on chain, shows that a further transfer is
refused, and prints ``archivechain verify`` for the proof bundle that spans A's and B's logs.
Uses only the public HTTP API, the regulator's dev keystore and the chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchoring.chain import ContractWriter, RpcChain  # noqa: E402
from anchoring.deployment import Deployment  # noqa: E402
from anchoring.ids import archive_key  # noqa: E402
from node.keystore import DEV_PASSPHRASE, Keystore  # noqa: E402

CONTENT = b"Cardiology referral: echocardiogram and discharge summary.\n" * 50


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def api(node: dict[str, Any], role: str = "archivist") -> httpx.Client:
    return httpx.Client(
        base_url=node["url"] + "/api/v1",
        headers={"Authorization": f"Bearer {node['api_keys'][role]}"},
        timeout=30,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    args = parser.parse_args()
    network = json.loads((args.data_dir / "network.json").read_text())
    a, b, c = network["nodes"][:3]
    print(f"hospitals: A={a['name']} {a['address']}\n           B={b['name']} {b['address']}")
    print(f"           C={c['name']} {c['address']}")

    say("A ingests and archives a record")
    with api(a) as client:
        metadata = {
            "record_class": "INPATIENT",
            "department": "cardiology",
            "title": "Cardiology referral",
            "source_system": "HIS",
            "patient_id": "MRN-DEMO-1",
        }
        created = client.post(
            "/archives",
            files={"file": ("referral.txt", CONTENT, "text/plain")},
            data={"metadata": json.dumps(metadata)},
        )
        created.raise_for_status()
        archive_id = created.json()["id"]
        client.post(f"/archives/{archive_id}/archive").raise_for_status()
        wait(
            lambda: client.get(f"/archives/{archive_id}").json()["chain_status"] == "registered",
            60,
            "the archive to be registered on chain",
        )
    print(f"archive {archive_id} registered on chain with A as custodian")

    say("A shares it with C for treatment; C reads it (logged in C's log)")
    with api(a) as client:
        client.post(
            f"/archives/{archive_id}/shares",
            json={
                "to": c["address"],
                "purpose": "treatment",
                "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
        ).raise_for_status()
    with api(c) as client:
        read = client.get(
            f"/shared/{a['address']}/{archive_id}/content", params={"purpose": "treatment"}
        )
        read.raise_for_status()
    print(f"C read {len(read.content)} bytes; identical: {read.content == CONTENT}")

    say("A transfers custody to B; B verifies, re-keys and accepts on chain")
    with api(a) as client:
        client.post(
            f"/archives/{archive_id}/transfers", json={"to": b["address"]}
        ).raise_for_status()

    def accepted(node: dict[str, Any]) -> bool:
        with api(node) as client:
            rows = client.get("/transfers").json()
        return any(r["archive_id"] == archive_id and r["state"] == "accepted" for r in rows)

    wait(lambda: accepted(b), 120, "B to accept the transfer")
    wait(lambda: accepted(a), 60, "A to see the acceptance and destroy its keys")
    with api(b) as client:
        read = client.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
    with api(a) as client:
        refused = client.get(f"/archives/{archive_id}/content", params={"purpose": "treatment"})
    print(
        f"B reads it: {read.status_code}; A can no longer decrypt: {refused.status_code} "
        f"{refused.json()['code']}"
    )

    say("The regulator places a legal hold on chain")
    deployment = Deployment.load(Path(network["deployment_file"]))
    chain = RpcChain(network["rpc_url"], deployment)
    regulator = next(m for m in network["members"].values() if m["role"] == "REGULATOR")
    keystore = Keystore.load(Path(regulator["keystore"]), DEV_PASSPHRASE)
    reason = hashlib.sha256(b"litigation hold, case 2026-117").digest()
    ContractWriter(chain, keystore.account()).transact(
        "placeHold", [archive_key(archive_id), reason]
    )
    with api(b) as client:
        wait(lambda: client.get(f"/archives/{archive_id}").json()["on_hold"], 60, "B to see it")
        attempt = client.post(f"/archives/{archive_id}/transfers", json={"to": c["address"]})
    print(
        f"B tries to transfer to C: {attempt.status_code} {attempt.json()['code']}: "
        f"{attempt.json()['message']}"
    )

    say("The proof bundle spans A's and B's logs; `archivechain verify` checks it on chain")
    with api(b, "auditor") as client:

        def anchored() -> bytes | None:
            proof = client.get(f"/archives/{archive_id}/proof")
            ok = proof.status_code == 200 and proof.headers.get("X-Unanchored-Events") == "0"
            return proof.content if ok else None

        document = wait(anchored, 60, "B's events to be anchored")
    bundle_file = args.data_dir / f"bundle-{archive_id}.json"
    bundle_file.write_bytes(document)
    verify = subprocess.run(
        [str(REPO / ".venv/bin/archivechain"), "verify", str(bundle_file), "--rpc",
         network["rpc_url"], "--deployment", network["deployment_file"]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(
        f"$ .venv/bin/archivechain verify {bundle_file} --rpc {network['rpc_url']} --deployment ..."
    )
    print(verify.stdout + verify.stderr, end="")
    return verify.returncode


if __name__ == "__main__":
    sys.exit(main())
