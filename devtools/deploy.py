"""Idempotent deployment of ConsortiumRegistry, ArchiveNotary and AttestationRevocations, signed
with a local key.

The first run deploys the three contracts from the committed artifacts and writes
``<data-dir>/deployment.json``; later runs load that file and check, loudly, that the chain still
holds exactly that code at those addresses (a wiped dev chain, another chain behind the same URL or
recompiled contracts are all refused with a message saying what to do). Transactions are signed
locally with eth-account; no node-side unlocked account is ever used.

Deployer key: ``$ARCHIVECHAIN_DEPLOYER_KEY`` (or an explicit argument). Only on the dev chain
(chain id 31337) does it default to anvil's public test account 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from anchoring.artifacts import Artifact, load_artifacts
from anchoring.chain import (
    ContractCodec,
    ContractRevertError,
    ContractWriter,
    JsonRpc,
    Role,
    RpcChain,
    TxReceipt,
    decode_revert,
    receipt_from_rpc,
    sign_transaction,
    wait_for_receipt,
)
from anchoring.deployment import DeployedContract, Deployment, deployment_path
from anchoring.errors import ChainError
from anchoring.ids import normalize_address
from devtools.devchain import DEV_CHAIN_ID
from node.errors import ConfigError, NodeError

DEV_CHAIN_DEPLOYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
"""DEV CHAIN ONLY: account 0 of the public test mnemonic "test test … junk" that anvil funds.
Everyone knows this key; it is refused on any chain other than the dev chain id."""
DEPLOYER_KEY_ENV = "ARCHIVECHAIN_DEPLOYER_KEY"
DEFAULT_PROPOSAL_LIFETIME = 7 * 24 * 3600


class DeploymentError(NodeError, RuntimeError):
    """Deploying the contracts failed."""

    code = "deployment_failed"


class DeploymentMismatchError(DeploymentError):
    """The deployment file does not describe what the chain holds."""

    code = "deployment_mismatch"


@dataclass(frozen=True)
class DeployOutcome:
    """Result of ``ensure_deployed``: the deployment, its file, and whether this run created it."""

    deployment: Deployment
    path: Path
    created: bool


@dataclass(frozen=True)
class HospitalSeed:
    """A founding hospital for ``bootstrap_hospitals``."""

    address: str
    name: str
    public_key: bytes  # 33-byte compressed secp256k1


def deployer_account(chain_id: int, key: str | None = None) -> LocalAccount:
    """The deployer's local account: ``key``, else ``$ARCHIVECHAIN_DEPLOYER_KEY``, else (dev chain
    only) the well-known dev key. The key itself never appears in errors or logs."""
    secret = key or os.environ.get(DEPLOYER_KEY_ENV)
    if not secret:
        if chain_id != DEV_CHAIN_ID:
            raise ConfigError(
                f"chain {chain_id} is not the dev chain ({DEV_CHAIN_ID}): "
                f"set {DEPLOYER_KEY_ENV} to the deployer's private key"
            )
        secret = DEV_CHAIN_DEPLOYER_KEY
    elif secret == DEV_CHAIN_DEPLOYER_KEY and chain_id != DEV_CHAIN_ID:
        raise ConfigError(f"the public dev key may only deploy to the dev chain ({DEV_CHAIN_ID})")
    try:
        account: LocalAccount = Account.from_key(secret)
    except (ValueError, TypeError):
        raise ConfigError("the deployer key is not a valid secp256k1 private key") from None
    return account


def ensure_deployed(
    rpc_url: str,
    data_dir: Path,
    *,
    deployer_key: str | None = None,
    proposal_lifetime: int = DEFAULT_PROPOSAL_LIFETIME,
    timeout: float = 120.0,
) -> DeployOutcome:
    """Deploy once per data directory; afterwards verify the recorded deployment against the chain."""
    rpc = JsonRpc(rpc_url)
    path = deployment_path(data_dir)
    if path.exists():
        existing = Deployment.load(path)
        verify_deployment(rpc, existing)
        return DeployOutcome(existing, path, created=False)
    account = deployer_account(rpc.chain_id(), deployer_key)
    deployment = deploy_contracts(
        rpc, account, proposal_lifetime=proposal_lifetime, timeout=timeout
    )
    verify_deployment(rpc, deployment)
    deployment.save(path)
    return DeployOutcome(deployment, path, created=True)


def deploy_contracts(
    rpc: JsonRpc,
    account: LocalAccount,
    *,
    proposal_lifetime: int = DEFAULT_PROPOSAL_LIFETIME,
    build_dir: Path | None = None,
    timeout: float = 120.0,
) -> Deployment:
    """Deploy the registry, then the notary pointing at it, then the attestation revocation list
    pointing at the notary; return the ``Deployment`` (not saved)."""
    if proposal_lifetime <= 0:
        raise ConfigError("proposal lifetime must be positive")
    artifacts = load_artifacts(build_dir)
    registry_artifact = artifacts["ConsortiumRegistry"]
    notary_artifact = artifacts["ArchiveNotary"]
    registry = _create(rpc, account, registry_artifact, [proposal_lifetime], timeout)
    assert registry.contract_address is not None  # checked by _create
    notary = _create(rpc, account, notary_artifact, [registry.contract_address], timeout)
    assert notary.contract_address is not None
    revocations_artifact = artifacts["AttestationRevocations"]
    revocations = _create(rpc, account, revocations_artifact, [notary.contract_address], timeout)
    return Deployment(
        chain_id=rpc.chain_id(),
        deployer=str(account.address),
        deploy_block=registry.block_number,
        proposal_lifetime=proposal_lifetime,
        registry=_record(registry, registry_artifact),
        notary=_record(notary, notary_artifact),
        revocations=_record(revocations, revocations_artifact),
    )


def _record(receipt: TxReceipt, artifact: Artifact) -> DeployedContract:
    assert receipt.contract_address is not None
    return DeployedContract(
        address=receipt.contract_address,
        tx_hash=receipt.tx_hash.removeprefix("0x").lower(),
        block_number=receipt.block_number,
        artifact_sha256=artifact.sha256,
    )


def _create(
    rpc: JsonRpc,
    account: LocalAccount,
    artifact: Artifact,
    args: Sequence[object],
    timeout: float,
) -> TxReceipt:
    codec = ContractCodec(artifact.name, artifact.abi)
    data = artifact.bytecode + codec.encode_constructor(args)
    try:
        estimate = rpc.estimate_gas(str(account.address), None, data)
    except ContractRevertError as exc:
        name, error_args = decode_revert(exc.data, [codec])
        raise DeploymentError(
            f"deploying {artifact.name} would revert: {name}{error_args}"
        ) from None
    signed = sign_transaction(
        account,
        chain_id=rpc.chain_id(),
        nonce=rpc.nonce(str(account.address), "pending"),
        to=None,
        data=data,
        gas=estimate + estimate // 5,
        fees=rpc.fee_fields(),
    )
    rpc.send_raw(signed.raw)
    receipt = receipt_from_rpc(wait_for_receipt(rpc, signed.tx_hash, timeout=timeout))
    if receipt.status != 1 or receipt.contract_address is None:
        raise DeploymentError(f"deploying {artifact.name} failed in transaction {signed.tx_hash}")
    return receipt


def verify_deployment(rpc: JsonRpc, deployment: Deployment, build_dir: Path | None = None) -> None:
    """Refuse loudly unless the chain behind ``rpc`` holds exactly this deployment."""
    try:
        chain_id = rpc.chain_id()
    except ChainError as exc:
        raise DeploymentError(f"cannot check the deployment: {exc}") from None
    if chain_id != deployment.chain_id:
        raise DeploymentMismatchError(
            f"the deployment file is for chain {deployment.chain_id} but {rpc.url} is chain {chain_id}"
        )
    artifacts = load_artifacts(build_dir)
    contracts = [
        ("ConsortiumRegistry", deployment.registry),
        ("ArchiveNotary", deployment.notary),
    ]
    if deployment.revocations is not None:
        contracts.append(("AttestationRevocations", deployment.revocations))
    for name, contract in contracts:
        code = rpc.code_at(contract.address)
        if not code:
            raise DeploymentMismatchError(
                f"the chain has no code at the {name} address {contract.address}: it lost its state "
                "(a reset dev chain?); remove the deployment file to deploy afresh"
            )
        if not artifacts[name].runtime_code_matches(code):
            raise DeploymentMismatchError(
                f"the code at {contract.address} is not the committed {name} artifact "
                "(were the contracts recompiled after deployment?)"
            )
    notary_codec = ContractCodec(artifacts["ArchiveNotary"].name, artifacts["ArchiveNotary"].abi)
    (linked,) = notary_codec.decode_output(
        "registry", rpc.call(deployment.notary.address, notary_codec.encode_call("registry", []))
    )
    if normalize_address(linked) != deployment.registry.address:
        raise DeploymentMismatchError(
            f"the notary at {deployment.notary.address} uses registry {linked}, "
            f"not {deployment.registry.address}"
        )


def bootstrap_hospitals(
    chain: RpcChain,
    deployer: LocalAccount,
    hospitals: Sequence[HospitalSeed],
    *,
    finish: bool = True,
) -> list[str]:
    """Admit the founding hospitals (skipping those already admitted) and, with ``finish``, close
    the bootstrap phase. Returns the addresses admitted by this call. Safe to run again."""
    writer = ContractWriter(chain, deployer)
    admitted: list[str] = []
    (bootstrapping,) = chain.call("ConsortiumRegistry", "bootstrapping")
    for seed in hospitals:
        address = normalize_address(seed.address)
        if chain.member(address).role is Role.HOSPITAL:
            continue
        if not bootstrapping:
            raise DeploymentError(
                f"bootstrap is finished; {address} must be admitted through governance"
            )
        writer.transact(
            "bootstrapHospital",
            [address, seed.name, seed.public_key],
            contract="ConsortiumRegistry",
        )
        admitted.append(address)
    if finish and bootstrapping:
        writer.transact("finishBootstrap", [], contract="ConsortiumRegistry")
    return admitted
