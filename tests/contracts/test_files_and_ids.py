"""Pure parts around the contracts: archive ids and addresses, the deployment file, artifact
loading. No chain needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from anchoring.artifacts import (
    CONTRACT_NAMES,
    ArtifactError,
    default_build_dir,
    load_artifact,
    parse_artifact,
    serialize_document,
)
from anchoring.deployment import (
    DeployedContract,
    Deployment,
    DeploymentFileError,
    DeploymentNotFoundError,
    deployment_path,
)
from anchoring.ids import IdentifierError, archive_id_from_key, archive_key, normalize_address

CHECKSUMMED = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_archive_key_layout_and_round_trip() -> None:
    ulid = ULID()
    key = archive_key(str(ulid))
    assert key == bytes(16) + ulid.bytes
    assert int.from_bytes(key, "big") == int(ulid)  # bytes32(uint256(ulid))
    assert archive_id_from_key(key) == str(ulid)
    assert archive_key("7ZZZZZZZZZZZZZZZZZZZZZZZZZ") == bytes(16) + b"\xff" * 16


@pytest.mark.parametrize(
    "bad",
    [
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".lower(),  # not canonical
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27 characters
        "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",  # above 128 bits
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",  # U is not Crockford base32
        "",
    ],
)
def test_archive_key_refuses_malformed_ids(bad: str) -> None:
    with pytest.raises(IdentifierError):
        archive_key(bad)


def test_archive_id_from_key_refuses_foreign_keys() -> None:
    with pytest.raises(IdentifierError):
        archive_id_from_key(b"\x01" + bytes(31))  # high half not zero
    with pytest.raises(IdentifierError):
        archive_id_from_key(bytes(16))


def test_normalize_address() -> None:
    assert normalize_address(CHECKSUMMED.lower()) == CHECKSUMMED
    assert normalize_address("0x" + CHECKSUMMED[2:].upper()) == CHECKSUMMED
    assert normalize_address(CHECKSUMMED) == CHECKSUMMED
    letter = next(i for i, c in enumerate(CHECKSUMMED) if i > 1 and c.isalpha())
    typo = CHECKSUMMED[:letter] + CHECKSUMMED[letter].swapcase() + CHECKSUMMED[letter + 1 :]
    for bad in (typo, CHECKSUMMED[2:], CHECKSUMMED + "00", "0x" + "g" * 40):
        with pytest.raises(IdentifierError):
            normalize_address(bad)


def sample_deployment() -> Deployment:
    return Deployment(
        chain_id=31337,
        deployer="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        deploy_block=2,
        proposal_lifetime=604800,
        registry=DeployedContract(CHECKSUMMED, "ab" * 32, 2, "cd" * 32),
        notary=DeployedContract(
            "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", "12" * 32, 3, "34" * 32
        ),
    )


def test_deployment_file_round_trip(tmp_path: Path) -> None:
    deployment = sample_deployment()
    file = deployment.save(deployment_path(tmp_path / "data"))
    assert file == tmp_path / "data" / "deployment.json"
    assert Deployment.load(file) == deployment
    assert json.loads(file.read_text())["format"] == "archivechain.deployment/v1"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "archivechain.deployment/v0", "format"),
        (("chain_id",), 0, "chain_id"),
        (("chain_id",), True, "chain_id"),
        (("deploy_block",), -1, "deploy_block"),
        (("deployer",), CHECKSUMMED.lower(), "EIP-55"),
        (("registry", "address"), "0x1234", "not an address"),
        (("notary", "tx_hash"), "0x" + "ab" * 32, "64 lowercase hex"),
        (("notary", "artifact_sha256"), "AB" * 32, "64 lowercase hex"),
        (("registry", "surprise"), 1, "unexpected keys"),
        (("surprise",), 1, "unexpected keys"),
    ],
)
def test_deployment_file_is_strict(
    tmp_path: Path, path: tuple[str, ...], value: Any, message: str
) -> None:
    doc = sample_deployment().to_document()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    file = tmp_path / "deployment.json"
    file.write_text(json.dumps(doc))
    with pytest.raises(DeploymentFileError, match=message):
        Deployment.load(file)


def test_deployment_file_missing_keys_and_garbage(tmp_path: Path) -> None:
    doc = sample_deployment().to_document()
    del doc["notary"]
    file = tmp_path / "deployment.json"
    file.write_text(json.dumps(doc))
    with pytest.raises(DeploymentFileError, match="missing keys \\['notary'\\]"):
        Deployment.load(file)
    file.write_text("{not json")
    with pytest.raises(DeploymentFileError, match="not JSON"):
        Deployment.load(file)
    with pytest.raises(DeploymentNotFoundError):
        Deployment.load(tmp_path / "absent.json")


def test_committed_artifacts_load() -> None:
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.name == name
        assert artifact.compiler_version.startswith("0.8.37+commit.")
        assert artifact.settings["evmVersion"] == "shanghai"
        assert artifact.settings["optimizer"] == {"enabled": True, "runs": 200}
        assert artifact.bytecode.endswith(artifact.deployed_bytecode[-40:])
        assert set(artifact.source_sha256) == {
            "contracts/ArchiveNotary.sol",
            "contracts/AttestationRevocations.sol",
            "contracts/ConsortiumRegistry.sol",
            "contracts/RFC6962.sol",
        }
    # the notary keeps the registry address as an immutable; the registry has two immutables
    assert len(load_artifact("ArchiveNotary").immutable_ranges) >= 1
    assert len(load_artifact("ConsortiumRegistry").immutable_ranges) >= 2


def test_runtime_code_match_ignores_only_immutables() -> None:
    artifact = load_artifact("ArchiveNotary")
    code = bytearray(artifact.deployed_bytecode)
    start, length = artifact.immutable_ranges[0]
    code[start : start + length] = b"\x11" * length  # a deployed immutable value
    assert artifact.runtime_code_matches(bytes(code))
    code[0] ^= 0xFF
    assert not artifact.runtime_code_matches(bytes(code))
    assert not artifact.runtime_code_matches(artifact.deployed_bytecode + b"\x00")


def test_parse_artifact_is_strict() -> None:
    good = json.loads((default_build_dir() / "ArchiveNotary.json").read_text())
    assert parse_artifact(serialize_document(good), "ArchiveNotary").abi == good["abi"]
    mutations: list[tuple[str, Any]] = [
        ("format", "archivechain.artifact/v0"),
        ("contractName", "ConsortiumRegistry"),
        ("bytecode", "0x"),
        ("deployedBytecode", "0xzz"),
        ("abi", {"not": "a list"}),
        ("immutableReferences", {"1": [{"start": "x"}]}),
        ("sources", {"a.sol": {"sha256": "nothex"}}),
    ]
    for key, value in mutations:
        with pytest.raises(ArtifactError):
            parse_artifact(serialize_document({**good, key: value}), "ArchiveNotary")
    with pytest.raises(ArtifactError, match="missing keys"):
        parse_artifact(
            serialize_document({k: v for k, v in good.items() if k != "abi"}), "ArchiveNotary"
        )
    with pytest.raises(ArtifactError, match="not JSON"):
        parse_artifact(b"\xff", "ArchiveNotary")
    with pytest.raises(ArtifactError, match="unknown contract"):
        load_artifact("Ownable")
