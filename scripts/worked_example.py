"""Produce the "Worked example" section of docs/proof-format.md from a real run.

Starts a throwaway anvil, deploys the contracts, runs one hospital node (hospital A of the public
test mnemonic — TEST KEYS ONLY), creates and archives one record, reads it once, anchors, builds the
proof bundle and prints Markdown: the bundle, one event's canonical bytes and leaf hash, every step
of its inclusion proof, the raw ``checkpointAt`` and ``archive`` calls and their return data, and
the report of ``archivechain verify``. The bundle is verified with the verifier's own reader
(``anchoring.rpcview``), whose hand-made calldata is checked against the contract's ABI.

Usage: .venv/bin/python scripts/worked_example.py > /tmp/example.md
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anchoring import merkle  # noqa: E402
from anchoring.bundle import parse_bundle  # noqa: E402
from anchoring.chain import ContractCodec, JsonRpc  # noqa: E402
from anchoring.events import Purpose, RecordClass, Sensitivity  # noqa: E402
from anchoring.ids import archive_key  # noqa: E402
from anchoring.rpcview import NotaryReader, archive_calldata, checkpoint_at_calldata  # noqa: E402
from anchoring.verifier import verify_bundle  # noqa: E402
from devtools.devchain import AnvilOptions, start_anvil  # noqa: E402
from node.ports import free_port  # noqa: E402
from node.principal import Role  # noqa: E402
from node.services.archives import NewArchive  # noqa: E402
from tests.fixtures.chain import build_consortium, derive_test_accounts  # noqa: E402
from tests.fixtures.node import build_node  # noqa: E402


def words(data: bytes) -> str:
    return "\n".join("  " + data[i : i + 32].hex() for i in range(0, len(data), 32))


def main() -> int:
    anvil = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    out: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            accounts = derive_test_accounts()
            consortium = build_consortium(anvil.rpc_url, accounts, Path(tmp))
            node = build_node(consortium, accounts.hospital_a, Path(tmp) / "node")
            try:
                who = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "example").secret)
                view = node.archives.create(
                    who,
                    NewArchive(
                        record_class=RecordClass.INPATIENT,
                        sensitivity=Sensitivity.NORMAL,
                        department="cardiology",
                        title="Discharge summary",
                        patient_id="MRN-0001",
                        source_system="HIS",
                        media_type="text/plain",
                    ),
                    [b"Discharge summary: stable, follow-up in two weeks."],
                )
                node.archives.archive(who, view.id)
                b"".join(node.archives.open_content(who, view.id, Purpose.TREATMENT).chunks)
                node.worker.run_until_anchored(timeout=30)
                document = node.proofs.bundle(who, view.id).document
            finally:
                node.close()
            bundle = parse_bundle(document)
            reader = NotaryReader(anvil.rpc_url, consortium.deployment.notary.address)
            report = verify_bundle(bundle, reader)
            assert report.ok, report.to_text()

            out.append(
                "Values from a real run of `scripts/worked_example.py` (anvil, chain id "
                f"{bundle.chain_id}; hospital A is account 1 of the public test mnemonic)."
            )
            out.append("\n### 10.1 The bundle\n")
            out.append("```json\n" + json.dumps(json.loads(document), indent=2) + "\n```")
            entry = bundle.entries[1]
            leaf = merkle.leaf_hash(entry.event)
            out.append("\n### 10.2 Entry 1: canonical event bytes and leaf hash\n")
            out.append("`event` (base64) decodes to these canonical bytes (RFC 8785):\n")
            out.append("```\n" + entry.event.decode() + "\n```")
            out.append(f"\nleaf hash = SHA-256(0x00 ‖ bytes) = `{leaf.hex()}`")
            out.append("\n### 10.3 Its inclusion proof, step by step\n")
            index, size = entry.log_index, entry.checkpoint.size
            inner = (index ^ (size - 1)).bit_length()
            out.append(
                f"index = {index}, size = {size}, inner = bit_length({index} XOR {size - 1}) "
                f"= {inner}, border = popcount({index} >> {inner}) = "
                f"{(index >> inner).bit_count()}\n"
            )
            h = leaf
            for i, sibling in enumerate(entry.proof):
                left = i >= inner or (index >> i) & 1
                h = merkle.node_hash(sibling, h) if left else merkle.node_hash(h, sibling)
                side = "proof[i] ‖ h" if left else "h ‖ proof[i]"
                out.append(
                    f"- i = {i}: h = SHA-256(0x01 ‖ {side}) with proof[{i}] = "
                    f"`{sibling.hex()}` → `{h.hex()}`"
                )
            out.append(
                f"\nfinal h = `{h.hex()}` = checkpoint root `{entry.checkpoint.root.hex()}` ✓"
            )
            notary = ContractCodec.for_contract("ArchiveNotary")
            rpc = JsonRpc(anvil.rpc_url)
            call = checkpoint_at_calldata(entry.checkpoint.hospital, entry.checkpoint.index)
            assert call == notary.encode_call(
                "checkpointAt", [entry.checkpoint.hospital, entry.checkpoint.index]
            )
            result = rpc.call(bundle.notary, call)
            out.append("\n### 10.4 The checkpoint on chain\n")
            out.append(f"`eth_call` to `{bundle.notary}` with data:\n")
            out.append("```\n0x" + call[:4].hex() + "\n" + words(call[4:]) + "\n```")
            out.append("returns:\n")
            out.append("```\n" + words(result) + "\n```")
            size_, root_, at_ = notary.decode_output("checkpointAt", result)
            out.append(f"= (size {size_}, root `{bytes(root_).hex()}`, anchoredAt {at_}).")
            call = archive_calldata(bundle.archive_id)
            assert call == notary.encode_call("archive", [archive_key(bundle.archive_id)])
            result = rpc.call(bundle.notary, call)
            out.append("\n### 10.5 The custody record\n")
            out.append(
                f"`archive(bytes32)` for `{bundle.archive_id}` "
                f"(id `{archive_key(bundle.archive_id).hex()}`) returns:\n"
            )
            out.append("```\n" + words(result) + "\n```")
            out.append(
                "(custodian, state 1 = ARCHIVED, onHold, holdByRegulator, recordClass "
                "2 = INPATIENT, retentionDeadline, commitment, pendingRecipient, "
                "certificateHash)."
            )
            out.append("\n### 10.6 `archivechain verify` on this bundle\n")
            out.append("```\n" + report.to_text() + "\n```")
    finally:
        anvil.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
