"""De-identification and attestation-signature benchmarks (issue 12 §4–5). Prints figures; not a test.

Pure CPU work, no chain or database: the parts of a derivation and of an attestation check that
grow with the data. Measures
  1. ``node.deid.deidentify_dicom`` on pydicom's CT_small.dcm (39 KiB) and MR_small.dcm;
  2. ``deidentify_fhir`` on a 3-resource Bundle and on a 300-resource one;
  3. ``deidentify_hl7`` on an ADT message;
  4. ``anchoring.attestation.typed_digest`` + ``recover_signer`` (what a verifier does before
     its chain reads), per attestation.

Usage: .venv/bin/python scripts/bench_deid.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from eth_account import Account
from eth_typing import Hash32
from pydicom.data import get_testdata_file

from anchoring.attestation import recover_signer, typed_digest
from node import crypto, deid

SECRET = b"\x01" * 32  # a fixed benchmark secret, not a real key


def keyed(text: str) -> str:
    return crypto.pseudonym(SECRET, "deid", f"bench:{text}")


def timed(work: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bundle(resources: int) -> bytes:
    entries = [
        {
            "resource": {
                "resourceType": "Patient",
                "id": "MRN-1",
                "name": [{"family": "Zhang", "given": ["Wei"]}],
                "identifier": [{"value": "MRN-1"}],
                "birthDate": "1974-12-25",
            }
        }
    ]
    for i in range(resources - 1):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"OBS-{i}",
                    "status": "final",
                    "subject": {"reference": "Patient/MRN-1", "display": "Zhang Wei"},
                    "effectiveDateTime": "2024-04-21T09:30:00Z",
                    "valueQuantity": {"value": 13.5, "unit": "g/dL"},
                }
            }
        )
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


HL7 = (
    b"MSH|^~\\&|HIS|HOSP|ARCHIVE|HOSP|20240502101500||ADT^A03|MSG-1|P|2.5.1\r"
    b"PID|1||MRN-1^^^HOSP^MR||ZHANG^WEI||19741225|M|||12 ROAD^^BEIJING||555-0101\r"
    b"NK1|1|LI^NA|SPO|1 ROAD|555-0199\r"
    b"PV1|1|I|5B^12^1||||DOC1^HOUSE|||cardiology|||||||DOC4||V-1\r"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    repeat = args.repeat
    print("De-identification and attestation signature benchmarks")
    print(f"- machine: {platform.platform()}, {os.cpu_count()} CPUs; median of {repeat} runs")
    print()
    print("| work | input | median | throughput |")
    print("|---|---|---:|---:|")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = get_testdata_file(name)
        assert path is not None
        data = Path(path).read_bytes()
        seconds = timed(lambda data=data: deid.deidentify_dicom(data, keyed), repeat)
        print(f"| dicom-basic | {name} ({len(data) / 1024:.0f} KiB) | {seconds * 1000:.1f} ms "
              f"| {len(data) / seconds / 2**20:.1f} MiB/s |")  # fmt: skip
    for size in (3, 300):
        data = bundle(size)
        seconds = timed(lambda data=data: deid.deidentify_fhir(data, keyed), repeat)
        print(f"| fhir-r4-deid | Bundle of {size} ({len(data) / 1024:.1f} KiB) | "
              f"{seconds * 1000:.2f} ms | {len(data) / seconds / 2**20:.1f} MiB/s |")  # fmt: skip
    seconds = timed(lambda: deid.deidentify_hl7(HL7, keyed), repeat * 10)
    print(f"| hl7v2-deid | ADT^A03 ({len(HL7)} B) | {seconds * 1e6:.0f} µs | "
          f"{1 / seconds:,.0f} messages/s |")  # fmt: skip
    account = Account.create()
    domain = {"name": "ArchiveChain", "version": "1", "chainId": 31337,
              "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}  # fmt: skip
    message = {
        "attestationId": "0x" + "11" * 32, "issuer": account.address,
        "insurer": "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc", "patientRef": "0x" + "22" * 32,
        "consentHash": "0x" + "33" * 32, "purpose": "insurance", "facts": "dates,record_class",
        "claimStart": "2024-01-01", "claimEnd": "2024-12-31", "issuedAt": 1700000000,
        "expiresAt": 1702592000, "issuedBlock": 12,
        "revocations": "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9", "recordsHash": "0x" + "44" * 32,
    }  # fmt: skip
    digest = typed_digest(domain, message)
    signature = "0x" + bytes(account.unsafe_sign_hash(Hash32(digest)).signature).hex()

    def check() -> None:
        assert recover_signer(typed_digest(domain, message), signature) == account.address

    seconds = timed(check, repeat * 10)
    print(f"| attestation digest + signer recovery | one attestation | {seconds * 1e6:.0f} µs | "
          f"{1 / seconds:,.0f} /s |")  # fmt: skip


if __name__ == "__main__":
    main()
