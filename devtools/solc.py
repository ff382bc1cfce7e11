"""The Solidity compiler layer: contracts/*.sol -> committed artifacts in anchoring/contracts/.

Compiles through py-solc-x ``compile_standard`` with a native solc 0.8.37 when one is installed
(``$ARCHIVECHAIN_SOLC``, ``solc`` on PATH, or a py-solc-x managed copy), otherwise with solcjs from the
pinned npm ``solc`` package through ``scripts/solcjs-shim`` (see that script for why it exists).
Output is deterministic: recompiling unchanged sources reproduces the committed files byte for byte,
which is what the drift test and ``archivechain contracts compile --check`` rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import solcx
from solcx import install as solcx_install
from solcx.exceptions import SolcError, SolcNotInstalled, UnsupportedVersionError

from anchoring.artifacts import (
    ARTIFACT_FORMAT,
    CONTRACT_NAMES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    serialize_document,
    sha256_hex,
)
from node.errors import NodeError

SOLC_VERSION = "0.8.37"
EVM_VERSION = "shanghai"
OPTIMIZER_RUNS = 200
REPO_ROOT = Path(__file__).resolve().parents[1]
SOLCJS_SHIM = REPO_ROOT / "scripts" / "solcjs-shim"
SOLCJS = REPO_ROOT / "node_modules" / ".bin" / "solcjs"

COMPILER_SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "metadata": {"bytecodeHash": "ipfs"},
}
"""Everything that determines the bytecode besides the sources (recorded in every artifact)."""

_OUTPUTS = [
    "abi",
    "metadata",
    "evm.bytecode.object",
    "evm.deployedBytecode.object",
    "evm.deployedBytecode.immutableReferences",
    "evm.methodIdentifiers",
]
_VERSION_RE = re.compile(r"(\d+\.\d+\.\d+)\+commit\.([0-9a-f]+)")


class CompilerError(NodeError, RuntimeError):
    """The contracts did not compile, or the compiler misbehaved."""

    code = "compiler_error"


class CompilerNotFoundError(CompilerError, FileNotFoundError):
    """Neither a native solc 0.8.37 nor the npm solcjs is available."""

    code = "compiler_not_found"


@dataclass(frozen=True, slots=True)
class Compiler:
    """A solc executable py-solc-x can drive (a native binary or the solcjs shim)."""

    path: Path
    kind: Literal["native", "solcjs"]


@dataclass(frozen=True)
class Build:
    """The result of one compilation: file name -> exact bytes to commit, plus compiler warnings."""

    files: dict[str, bytes]
    warnings: list[str] = field(default_factory=list)
    compiler: Compiler | None = None


def find_compiler() -> Compiler:
    """Pick the compiler: ``$ARCHIVECHAIN_SOLC``, a native solc 0.8.37, else the solcjs shim."""
    override = os.environ.get("ARCHIVECHAIN_SOLC")
    if override:
        path = Path(override).resolve()
        kind: Literal["native", "solcjs"] = "solcjs" if path == SOLCJS_SHIM else "native"
        _require_version(path)
        return Compiler(path, kind)
    for candidate in _native_candidates():
        if _version_of(candidate) == SOLC_VERSION:
            return Compiler(candidate.resolve(), "native")
    if SOLCJS.exists() and os.access(SOLCJS_SHIM, os.X_OK):
        return Compiler(SOLCJS_SHIM, "solcjs")
    raise CompilerNotFoundError(
        f"no solc {SOLC_VERSION}: install it (py-solc-x or PATH) or run `npm ci` for solcjs "
        f"(expected {SOLCJS} and an executable {SOLCJS_SHIM})"
    )


def _native_candidates() -> list[Path]:
    found: list[Path] = []
    on_path = shutil.which("solc")
    if on_path:
        found.append(Path(on_path))
    try:
        managed = solcx_install.get_executable(SOLC_VERSION)
    except (SolcNotInstalled, UnsupportedVersionError, OSError):
        managed = None
    if managed is not None:
        found.append(Path(managed))
    return found


def _version_of(path: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(out)
    return match.group(1) if match else None


def _require_version(path: Path) -> None:
    version = _version_of(path)
    if version != SOLC_VERSION:
        raise CompilerNotFoundError(f"{path} is solc {version}, expected {SOLC_VERSION}")


def source_files(contracts_dir: Path) -> dict[str, bytes]:
    """Every ``*.sol`` under ``contracts_dir``, keyed by its source unit name ``contracts/<file>``."""
    files = sorted(contracts_dir.glob("*.sol"))
    if not files:
        raise CompilerError(f"no Solidity sources in {contracts_dir}")
    return {f"contracts/{path.name}": path.read_bytes() for path in files}


def standard_input(sources: dict[str, bytes]) -> dict[str, Any]:
    """The solc standard-JSON input for ``sources`` with the project's fixed settings."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": data.decode()} for name, data in sources.items()},
        "settings": {**COMPILER_SETTINGS, "outputSelection": {"*": {"*": _OUTPUTS}}},
    }


def compile_contracts(contracts_dir: Path | None = None, compiler: Compiler | None = None) -> Build:
    """Compile ``contracts/*.sol`` and render the artifact and manifest files (nothing is written).

    Results are memoised per (sources, compiler) within the process: compiling is deterministic.
    """
    folder = contracts_dir or REPO_ROOT / "contracts"
    sources = source_files(folder)
    chosen = compiler or find_compiler()
    key = (chosen, tuple(sorted((name, sha256_hex(data)) for name, data in sources.items())))
    if key not in _BUILDS:
        _BUILDS[key] = _compile(sources, chosen)
    return _BUILDS[key]


_BUILDS: dict[tuple[Compiler, tuple[tuple[str, str], ...]], Build] = {}


def _compile(sources: dict[str, bytes], chosen: Compiler) -> Build:
    try:
        output: dict[str, Any] = solcx.compile_standard(
            standard_input(sources), solc_binary=chosen.path
        )
    except SolcError as exc:
        raise CompilerError(f"compilation failed:\n{exc.message}") from None
    except (ValueError, OSError) as exc:  # JSON garbled, executable vanished
        raise CompilerError(f"compiler {chosen.path} failed: {exc}") from None
    warnings = [
        str(err.get("formattedMessage", err.get("message", "")))
        for err in output.get("errors", [])
        if err.get("severity") != "error"
    ]
    source_digests = {name: {"sha256": sha256_hex(data)} for name, data in sorted(sources.items())}
    files: dict[str, bytes] = {}
    manifest_artifacts: dict[str, dict[str, str]] = {}
    version = ""
    for name in CONTRACT_NAMES:
        source_name = f"contracts/{name}.sol"
        try:
            compiled = output["contracts"][source_name][name]
        except KeyError:
            raise CompilerError(
                f"compiler output has no contract {name} in {source_name}"
            ) from None
        version = _metadata_version(compiled["metadata"])
        document = _artifact_document(name, source_name, compiled, version, source_digests)
        data = serialize_document(document)
        files[f"{name}.json"] = data
        manifest_artifacts[name] = {"file": f"{name}.json", "sha256": sha256_hex(data)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "compiler": {"version": version, "settings": COMPILER_SETTINGS},
        "sources": source_digests,
        "artifacts": manifest_artifacts,
    }
    files[MANIFEST_NAME] = serialize_document(manifest)
    return Build(files=files, warnings=warnings, compiler=chosen)


def _metadata_version(metadata: str) -> str:
    """Compiler version without the platform suffix, so native solc and solcjs agree."""
    match = _VERSION_RE.search(metadata)
    if not match:
        raise CompilerError("compiler metadata carries no version")
    return f"{match.group(1)}+commit.{match.group(2)}"


def _artifact_document(
    name: str,
    source_name: str,
    compiled: dict[str, Any],
    version: str,
    sources: dict[str, dict[str, str]],
) -> dict[str, Any]:
    evm = compiled["evm"]
    bytecode = evm["bytecode"]["object"]
    if "__$" in bytecode:
        raise CompilerError(f"{name} needs library linking, which the build does not support")
    return {
        "format": ARTIFACT_FORMAT,
        "contractName": name,
        "sourceName": source_name,
        "compiler": {"version": version, "settings": COMPILER_SETTINGS},
        "sources": sources,
        "abi": compiled["abi"],
        "bytecode": "0x" + bytecode,
        "deployedBytecode": "0x" + evm["deployedBytecode"]["object"],
        "immutableReferences": evm["deployedBytecode"].get("immutableReferences", {}),
        "methodIdentifiers": evm["methodIdentifiers"],
    }


def write_build(build: Build, build_dir: Path) -> list[Path]:
    """Write every file of ``build`` into ``build_dir`` (atomically per file); return the paths."""
    build_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, data in sorted(build.files.items()):
        target = build_dir / file_name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        written.append(target)
    return written


def build_differences(build: Build, build_dir: Path) -> list[str]:
    """File names whose committed bytes in ``build_dir`` differ from ``build`` (or are missing)."""
    differing: list[str] = []
    for file_name, data in sorted(build.files.items()):
        target = build_dir / file_name
        if not target.exists() or target.read_bytes() != data:
            differing.append(file_name)
    return differing
