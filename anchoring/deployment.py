"""The deployment file (``<data-dir>/deployment.json``): where the consortium contracts live.

Written once by ``devtools.deploy`` and read by everything that talks to the chain (node, worker,
verifier). Parsing is strict: unknown or missing keys, malformed addresses or hashes are refused,
because a wrong address silently points a verifier at the wrong contract.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchoring.errors import AnchoringError
from anchoring.ids import IdentifierError, normalize_address

DEPLOYMENT_FORMAT = "archivechain.deployment/v1"
DEPLOYMENT_FILE_NAME = "deployment.json"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = frozenset(
    {"format", "chain_id", "deployer", "deploy_block", "proposal_lifetime", "registry", "notary"}
)
_OPTIONAL_KEYS = frozenset({"revocations"})
"""Keys a deployment made before the contract existed lacks (``AttestationRevocations``)."""
_CONTRACT_KEYS = frozenset({"address", "tx_hash", "block_number", "artifact_sha256"})


class DeploymentFileError(AnchoringError, ValueError):
    """The deployment file is malformed."""

    code = "deployment_invalid"


class DeploymentNotFoundError(AnchoringError, FileNotFoundError):
    """There is no deployment file where one was expected."""

    code = "deployment_missing"


@dataclass(frozen=True, slots=True)
class DeployedContract:
    """One deployed contract: address, creating transaction and the artifact it was built from."""

    address: str  # EIP-55
    tx_hash: str  # lowercase hex, no 0x
    block_number: int
    artifact_sha256: str  # sha256 of anchoring/contracts/<name>.json at deployment


@dataclass(frozen=True, slots=True)
class Deployment:
    """The consortium's contracts on one chain."""

    chain_id: int
    deployer: str  # EIP-55
    deploy_block: int  # block of the first deployment transaction
    proposal_lifetime: int  # seconds, the registry's constructor argument
    registry: DeployedContract
    notary: DeployedContract
    revocations: DeployedContract | None = None  # AttestationRevocations (docs/attestations.md)

    def to_document(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        document = {
            "format": DEPLOYMENT_FORMAT,
            "chain_id": self.chain_id,
            "deployer": self.deployer,
            "deploy_block": self.deploy_block,
            "proposal_lifetime": self.proposal_lifetime,
            "registry": _contract_document(self.registry),
            "notary": _contract_document(self.notary),
        }
        if self.revocations is not None:
            document["revocations"] = _contract_document(self.revocations)
        return document

    @classmethod
    def from_document(cls, doc: object) -> Deployment:
        """Parse and validate a JSON object (raises ``DeploymentFileError``)."""
        obj = _exact_object(doc, _TOP_KEYS, "deployment", optional=_OPTIONAL_KEYS)
        if obj["format"] != DEPLOYMENT_FORMAT:
            raise DeploymentFileError(
                f"deployment format is {obj['format']!r}, expected {DEPLOYMENT_FORMAT}"
            )
        return cls(
            chain_id=_positive_int(obj["chain_id"], "chain_id"),
            deployer=_address(obj["deployer"], "deployer"),
            deploy_block=_non_negative_int(obj["deploy_block"], "deploy_block"),
            proposal_lifetime=_positive_int(obj["proposal_lifetime"], "proposal_lifetime"),
            registry=_contract(obj["registry"], "registry"),
            notary=_contract(obj["notary"], "notary"),
            revocations=(
                _contract(obj["revocations"], "revocations") if "revocations" in obj else None
            ),
        )

    @classmethod
    def load(cls, file: Path) -> Deployment:
        """Read and validate a deployment file (see ``deployment_path``)."""
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise DeploymentNotFoundError(f"no deployment file at {file}") from None
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeploymentFileError(f"{file} is not JSON: {exc}") from None
        return cls.from_document(doc)

    def save(self, file: Path) -> Path:
        """Write atomically to ``file`` (parents created)."""
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(self.to_document(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, file)
        return file


def deployment_path(data_dir: Path) -> Path:
    """Where the deployment file of a data directory lives."""
    return data_dir / DEPLOYMENT_FILE_NAME


def _contract_document(contract: DeployedContract) -> dict[str, Any]:
    return {
        "address": contract.address,
        "tx_hash": contract.tx_hash,
        "block_number": contract.block_number,
        "artifact_sha256": contract.artifact_sha256,
    }


def _contract(value: object, where: str) -> DeployedContract:
    obj = _exact_object(value, _CONTRACT_KEYS, where)
    return DeployedContract(
        address=_address(obj["address"], f"{where}.address"),
        tx_hash=_hash(obj["tx_hash"], f"{where}.tx_hash"),
        block_number=_non_negative_int(obj["block_number"], f"{where}.block_number"),
        artifact_sha256=_hash(obj["artifact_sha256"], f"{where}.artifact_sha256"),
    )


def _exact_object(
    value: object, keys: frozenset[str], where: str, optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DeploymentFileError(f"{where}: expected an object")
    present = set(value) - (optional & set(value))
    if present != keys:
        raise DeploymentFileError(
            f"{where}: missing keys {sorted(keys - present)}, unexpected keys {sorted(present - keys)}"
        )
    return value


def _non_negative_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DeploymentFileError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _positive_int(value: object, where: str) -> int:
    number = _non_negative_int(value, where)
    if number == 0:
        raise DeploymentFileError(f"{where}: must be positive")
    return number


def _address(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DeploymentFileError(f"{where}: expected an address string")
    try:
        checksummed = normalize_address(value)
    except IdentifierError as exc:
        raise DeploymentFileError(f"{where}: {exc}") from None
    if checksummed != value:
        raise DeploymentFileError(f"{where}: address must be EIP-55 checksummed ({checksummed})")
    return checksummed


def _hash(value: object, where: str) -> str:
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise DeploymentFileError(f"{where}: expected 64 lowercase hex characters without 0x")
    return value
