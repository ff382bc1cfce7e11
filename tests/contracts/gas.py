"""Gas measurements of every state-changing function of both contracts (used by test_gas.py and
scripts/gas_report.py). Deploys a fresh pair of contracts on the given chain, then exercises each
function once in a realistic situation and records ``gasUsed`` from the receipt."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, JsonRpc, RpcChain, TxReceipt
from devtools.deploy import deploy_contracts
from tests.contracts.helpers import (
    OLD_TRIGGER,
    MerkleLog,
    advance_time,
    h,
    latest_time,
    new_archive,
)
from tests.fixtures.chain import TestAccounts, public_key_of

MILLION = 1_000_000
TYPICAL_PREVIOUS = 998_997  # a checkpoint about a thousand events earlier: 20-node proof
WORST_PREVIOUS = 524_287  # the longest proof into 10^6 (21 nodes, 38 hashes)


@dataclass(frozen=True)
class GasRow:
    """One measurement."""

    contract: str
    function: str
    case: str
    gas: int


class GasMeter:
    """Sends transactions and records their gas."""

    def __init__(self, chain: RpcChain) -> None:
        self.chain = chain
        self.rows: list[GasRow] = []

    def send(
        self,
        account: LocalAccount,
        contract: str,
        function: str,
        args: list[object],
        case: str = "",
    ) -> TxReceipt:
        """Send and record."""
        receipt = ContractWriter(self.chain, account).transact(
            function,
            args,
            contract=contract,  # type: ignore[arg-type]
        )
        self.rows.append(GasRow(contract, function, case, receipt.gas_used))
        return receipt


def measure(rpc: JsonRpc, accounts: TestAccounts, log: MerkleLog | None = None) -> list[GasRow]:
    """Deploy fresh contracts on ``rpc`` and measure every state-changing function."""
    deployment = deploy_contracts(rpc, accounts.deployer, proposal_lifetime=3600)
    chain = RpcChain(rpc, deployment)
    meter = GasMeter(chain)
    for name, contract in (("ConsortiumRegistry", deployment.registry),
                           ("ArchiveNotary", deployment.notary)):  # fmt: skip
        raw = rpc.receipt("0x" + contract.tx_hash)
        assert raw is not None
        meter.rows.append(GasRow(name, "(deployment)", "", int(raw["gasUsed"], 16)))
    _registry(meter, accounts)
    _custody(meter, accounts)
    _checkpoints(meter, accounts, log or MerkleLog(MILLION, seed="gas"))
    if deployment.revocations is not None:
        raw = rpc.receipt("0x" + deployment.revocations.tx_hash)
        assert raw is not None
        meter.rows.append(
            GasRow("AttestationRevocations", "(deployment)", "", int(raw["gasUsed"], 16))
        )
        meter.send(accounts.hospital_a, "AttestationRevocations", "revoke", [h("attestation")])
    return meter.rows


def _registry(meter: GasMeter, a: TestAccounts) -> None:
    reg = "ConsortiumRegistry"
    for i, hospital in enumerate(a.hospitals):
        meter.send(a.deployer, reg, "bootstrapHospital",
                   [hospital.address, f"Hospital {'ABC'[i]}", public_key_of(hospital)])  # fmt: skip
    meter.send(a.deployer, reg, "finishBootstrap", [])

    def passed(receipt: TxReceipt, case: str) -> None:
        pid = receipt.event("ProposalCreated").args["id"]
        meter.send(a.hospital_b, reg, "approve", [pid], case)
        meter.send(a.hospital_c, reg, "execute", [pid], case)

    for member, role, name in ((a.regulator, 2, "Health Regulator"), (a.insurer, 3, "Insurer")):
        passed(meter.send(a.hospital_a, reg, "proposeAdmission",
                          [member.address, role, name, public_key_of(member)]), "admission")  # fmt: skip
    passed(
        meter.send(a.hospital_a, reg, "proposeRoleChange", [a.insurer.address, 4]), "role change"
    )
    passed(meter.send(a.hospital_a, reg, "proposeSuspension", [a.insurer.address]), "suspension")
    passed(
        meter.send(a.hospital_a, reg, "proposeReinstatement", [a.insurer.address]), "reinstatement"
    )
    meter.send(a.regulator, reg, "rotatePublicKey", [public_key_of(a.outsider)])
    # LAB (3): raise its floor from 1 to 10 years (no class the custody section uses)
    passed(meter.send(a.hospital_a, reg, "proposeRetentionFloor", [3, 10]), "retention floor")


def _custody(meter: GasMeter, a: TestAccounts) -> None:
    nt = "ArchiveNotary"
    now = latest_time(meter.chain)
    deadline = now + 1000
    # A real trigger (today, 00:00 UTC) and the EMERGENCY class's floor of 15 years: the floor
    # check runs in full, the deadline lies exactly on the minimum.
    today = now - now % 86_400
    (floor_deadline,) = meter.chain.call(nt, "minimumDeadline", [1, today])  # type: ignore[arg-type]
    _, key = new_archive()
    meter.send(
        a.hospital_a, nt, "register", [key, 1, today, floor_deadline, h("content"), bytes(32)]
    )
    _, key = new_archive()
    meter.send(a.hospital_a, nt, "register", [key, 1, OLD_TRIGGER, deadline, h("content"), bytes(32)],
               "trigger in the past")  # fmt: skip
    batches: list[list[bytes]] = []
    for n in (1, 10, 100):
        keys = [new_archive()[1] for _ in range(n)]
        items = [(k, 1, today, floor_deadline, h(f"c{i}"), bytes(32)) for i, k in enumerate(keys)]
        label = f"{n} archive" + ("s" if n > 1 else "")
        receipt = meter.send(a.hospital_a, nt, "registerBatch", [items], label)
        if n > 1:
            meter.rows.append(
                GasRow(nt, "registerBatch", f"per archive at {n}", receipt.gas_used // n)
            )
        batches.append(keys)
    meter.send(a.hospital_a, nt, "offerTransfer", [key, a.hospital_b.address])
    meter.send(a.hospital_a, nt, "cancelTransfer", [key])
    meter.send(a.hospital_a, nt, "offerTransfer", [key, a.hospital_b.address], "again")
    meter.send(a.hospital_b, nt, "rejectTransfer", [key, h("no room")])
    meter.send(a.hospital_a, nt, "offerTransfer", [key, a.hospital_b.address], "again")
    meter.send(a.hospital_b, nt, "acceptTransfer", [key])
    meter.send(a.hospital_b, nt, "placeHold", [key, h("own")], "by custodian")
    meter.send(a.regulator, nt, "placeHold", [key, h("court")], "regulator takes over")
    meter.send(a.regulator, nt, "releaseHold", [key, h("lifted")], "by regulator")
    meter.send(a.regulator, nt, "placeHold", [key, h("court")], "by regulator")
    meter.send(a.regulator, nt, "releaseHold", [key, h("lifted")], "by regulator")
    meter.send(a.hospital_b, nt, "placeHold", [key, h("own")], "by custodian")
    meter.send(a.hospital_b, nt, "releaseHold", [key, h("done")], "by custodian")
    meter.send(a.hospital_b, nt, "extendRetention", [key, deadline + 10])
    advance_time(meter.chain.rpc, 2000)
    meter.send(a.hospital_b, nt, "destroy", [key, h("certificate")])
    advance_time(meter.chain.rpc, floor_deadline - now)  # the registered batches' deadline
    for keys in batches:
        n = len(keys)
        items = [(k, h(f"certificate {i}")) for i, k in enumerate(keys)]
        label = f"{n} archive" + ("s" if n > 1 else "")
        receipt = meter.send(a.hospital_a, nt, "destroyBatch", [items], label)
        if n > 1:
            meter.rows.append(
                GasRow(nt, "destroyBatch", f"per archive at {n}", receipt.gas_used // n)
            )


def _checkpoints(meter: GasMeter, a: TestAccounts, log: MerkleLog) -> None:
    nt = "ArchiveNotary"
    meter.send(a.hospital_c, nt, "anchorCheckpoint", [8, log.root(8), []], "first (no proof)")
    meter.send(a.hospital_c, nt, "anchorCheckpoint", [1000, log.root(1000), log.consistency(8, 1000)],
               "8 -> 1,000")  # fmt: skip
    for hospital, previous, label in ((a.hospital_a, TYPICAL_PREVIOUS, "typical"),
                                      (a.hospital_b, WORST_PREVIOUS, "worst")):  # fmt: skip
        ContractWriter(meter.chain, hospital).transact(
            "anchorCheckpoint", [previous, log.root(previous), []]
        )
        proof = log.consistency(previous, MILLION)
        meter.send(hospital, nt, "anchorCheckpoint", [MILLION, log.root(MILLION), proof],
                   f"{previous:,} -> 10^6, {len(proof)}-node proof ({label})")  # fmt: skip


def markdown_table(rows: list[GasRow]) -> str:
    """The rows as a Markdown table."""
    lines = ["| contract | function | case | gas |", "|---|---|---|---:|"]
    lines += [f"| {r.contract} | `{r.function}` | {r.case} | {r.gas:,} |" for r in rows]
    return "\n".join(lines)
