"""Compiled contract artifacts (``anchoring/contracts/*.json``, shipped as package data so an
installed wheel can load them): their format and loading.

The runtime never compiles: it reads the committed artifacts, one JSON document per deployable
contract plus ``manifest.json``. ``devtools.solc`` writes them with ``serialize_document`` so that a
recompilation of unchanged sources reproduces the committed bytes exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from anchoring.errors import AnchoringError

ARTIFACT_FORMAT = "archivechain.artifact/v1"
MANIFEST_FORMAT = "archivechain.build/v1"
MANIFEST_NAME = "manifest.json"
CONTRACT_NAMES: tuple[str, ...] = ("ConsortiumRegistry", "ArchiveNotary", "AttestationRevocations")
"""The deployable contracts, in deployment order (the notary needs the registry's address, the
revocation list the notary's)."""

_ARTIFACT_KEYS = frozenset(
    {
        "format",
        "contractName",
        "sourceName",
        "compiler",
        "sources",
        "abi",
        "bytecode",
        "deployedBytecode",
        "immutableReferences",
        "methodIdentifiers",
    }
)


class ArtifactError(AnchoringError, ValueError):
    """A compiled artifact is missing or malformed."""

    code = "artifact_invalid"


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract, as committed under ``anchoring/contracts/``."""

    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    immutable_ranges: tuple[tuple[int, int], ...]  # (start, length) in the deployed code
    compiler_version: str
    settings: dict[str, Any]
    source_sha256: dict[str, str]
    sha256: str  # of the artifact file's bytes

    def runtime_code_matches(self, code: bytes) -> bool:
        """Whether ``code`` (from ``eth_getCode``) is this contract's runtime code.

        Immutable variables are written into the code at deployment, so their byte ranges are
        ignored; everything else must be identical.
        """
        if len(code) != len(self.deployed_bytecode):
            return False
        expected = bytearray(self.deployed_bytecode)
        actual = bytearray(code)
        for start, length in self.immutable_ranges:
            expected[start : start + length] = bytes(length)
            actual[start : start + length] = bytes(length)
        return expected == actual


def default_build_dir() -> Path:
    """The artifacts shipped with this package (``anchoring/contracts``), or
    ``$ARCHIVECHAIN_CONTRACTS_BUILD`` when set."""
    override = os.environ.get("ARCHIVECHAIN_CONTRACTS_BUILD")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "contracts"


def serialize_document(document: dict[str, Any]) -> bytes:
    """The one byte layout of artifact and manifest files (sorted keys, 2-space indent, final LF)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256, the digest used for sources and artifact files."""
    return hashlib.sha256(data).hexdigest()


def load_artifact(name: str, build_dir: Path | None = None) -> Artifact:
    """Load and validate ``<build_dir>/<name>.json`` (cached per folder)."""
    folder = (build_dir or default_build_dir()).resolve()
    return _load_cached(name, str(folder))


def load_artifacts(build_dir: Path | None = None) -> dict[str, Artifact]:
    """All deployable contracts, keyed by name, in deployment order."""
    return {name: load_artifact(name, build_dir) for name in CONTRACT_NAMES}


@lru_cache(maxsize=32)
def _load_cached(name: str, folder: str) -> Artifact:
    if name not in CONTRACT_NAMES:
        raise ArtifactError(
            f"unknown contract {name!r}; expected one of {', '.join(CONTRACT_NAMES)}"
        )
    path = Path(folder) / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"artifact {path} is missing; run `archivechain contracts compile`"
        ) from None
    return parse_artifact(raw, name)


def parse_artifact(raw: bytes, name: str) -> Artifact:
    """Validate an artifact document strictly (format, keys, types, hex) and build an ``Artifact``."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact {name}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"artifact {name}: top level must be an object")
    keys = set(doc)
    if keys != _ARTIFACT_KEYS:
        missing = sorted(_ARTIFACT_KEYS - keys)
        extra = sorted(keys - _ARTIFACT_KEYS)
        raise ArtifactError(f"artifact {name}: missing keys {missing}, unexpected keys {extra}")
    if doc["format"] != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"artifact {name}: format {doc['format']!r}, expected {ARTIFACT_FORMAT}"
        )
    if doc["contractName"] != name:
        raise ArtifactError(f"artifact {name}: contractName is {doc['contractName']!r}")
    compiler = doc["compiler"]
    if not isinstance(compiler, dict) or not isinstance(compiler.get("version"), str):
        raise ArtifactError(f"artifact {name}: compiler.version missing")
    if not isinstance(compiler.get("settings"), dict):
        raise ArtifactError(f"artifact {name}: compiler.settings missing")
    abi = doc["abi"]
    if not isinstance(abi, list) or not all(isinstance(item, dict) for item in abi):
        raise ArtifactError(f"artifact {name}: abi must be a list of objects")
    sources = doc["sources"]
    if not isinstance(sources, dict) or not all(
        isinstance(v, dict) and _is_sha256(v.get("sha256")) for v in sources.values()
    ):
        raise ArtifactError(f"artifact {name}: sources must map paths to {{sha256}}")
    return Artifact(
        name=name,
        source_name=str(doc["sourceName"]),
        abi=abi,
        bytecode=_hex_code(doc["bytecode"], name, "bytecode"),
        deployed_bytecode=_hex_code(doc["deployedBytecode"], name, "deployedBytecode"),
        immutable_ranges=_immutable_ranges(doc["immutableReferences"], name),
        compiler_version=compiler["version"],
        settings=compiler["settings"],
        source_sha256={path: entry["sha256"] for path, entry in sources.items()},
        sha256=sha256_hex(raw),
    )


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _hex_code(value: object, name: str, field: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) <= 2:
        raise ArtifactError(f"artifact {name}: {field} must be non-empty 0x-hex")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ArtifactError(f"artifact {name}: {field} is not hex") from None


def _immutable_ranges(value: object, name: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, dict):
        raise ArtifactError(f"artifact {name}: immutableReferences must be an object")
    ranges: list[tuple[int, int]] = []
    for refs in value.values():
        if not isinstance(refs, list):
            raise ArtifactError(f"artifact {name}: immutableReferences entries must be lists")
        for ref in refs:
            if not (
                isinstance(ref, dict)
                and isinstance(ref.get("start"), int)
                and isinstance(ref.get("length"), int)
            ):
                raise ArtifactError(f"artifact {name}: bad immutable reference {ref!r}")
            ranges.append((ref["start"], ref["length"]))
    return tuple(sorted(ranges))
