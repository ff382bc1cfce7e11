"""Compilation: the committed artifacts are exactly what the pinned compiler makes of the sources
(the drift test), the solcjs shim's workarounds, and ``archivechain contracts compile``."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from anchoring.artifacts import CONTRACT_NAMES, MANIFEST_NAME, default_build_dir, sha256_hex
from archivechain import main
from devtools.solc import (
    REPO_ROOT,
    SOLCJS_SHIM,
    Build,
    CompilerError,
    build_differences,
    compile_contracts,
    standard_input,
    write_build,
)


@pytest.fixture(scope="module")
def fresh_build() -> Build:
    """One compilation of contracts/*.sol for the whole module (about 3 s with solcjs)."""
    return compile_contracts()


def test_committed_artifacts_match_the_sources(fresh_build: Build) -> None:
    differing = build_differences(fresh_build, default_build_dir())
    assert differing == [], (
        f"anchoring/contracts is stale for {differing}: run `archivechain contracts compile`"
    )
    assert fresh_build.warnings == []
    # With solcjs the compiler's JSON is far beyond one 64 KiB pipe buffer: the shim's file
    # detour is what keeps it whole (py-solc-x would fail to parse a cut-off document).
    assert sum(len(data) for data in fresh_build.files.values()) > 65536


def test_manifest_describes_sources_and_artifacts(fresh_build: Build) -> None:
    manifest = json.loads(fresh_build.files[MANIFEST_NAME])
    for path, entry in manifest["sources"].items():
        assert entry["sha256"] == sha256_hex((REPO_ROOT / path).read_bytes())
    for name in CONTRACT_NAMES:
        assert manifest["artifacts"][name]["sha256"] == sha256_hex(
            fresh_build.files[f"{name}.json"]
        )
    assert manifest["compiler"]["version"] == "0.8.37+commit.f401782d"


def test_drift_is_detected(fresh_build: Build, tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for source in (REPO_ROOT / "contracts").glob("*.sol"):
        shutil.copy(source, contracts / source.name)
    notary = contracts / "ArchiveNotary.sol"
    notary.write_text(notary.read_text().replace("SLACK = 1 days", "SLACK = 2 days"))
    changed = compile_contracts(contracts)
    assert build_differences(changed, default_build_dir()) == [
        "ArchiveNotary.json",
        "AttestationRevocations.json",  # it imports the notary
        "ConsortiumRegistry.json",  # its `sources` digests changed too
        MANIFEST_NAME,
    ]
    out = tmp_path / "build"
    write_build(changed, out)
    assert build_differences(changed, out) == []


def test_compile_errors_are_reported(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for source in (REPO_ROOT / "contracts").glob("*.sol"):
        shutil.copy(source, contracts / source.name)
    broken = contracts / "RFC6962.sol"
    broken.write_text(broken.read_text().replace("return sn == 0", "return sn = 0"))
    with pytest.raises(CompilerError, match="compilation failed"):
        compile_contracts(contracts)


def test_shim_drops_allow_paths_and_filters_the_smt_notice() -> None:
    source = b"// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\ncontract Tiny {}\n"
    request = json.dumps(standard_input({"tiny.sol": source}))
    result = subprocess.run(
        [str(SOLCJS_SHIM), "--standard-json", "--allow-paths", "/tmp"],
        input=request, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert not result.stdout.startswith(">>>")
    output = json.loads(result.stdout)  # the SMT notice line was filtered out
    assert set(output["contracts"]["tiny.sol"]) == {"Tiny"}
    version = subprocess.run([str(SOLCJS_SHIM), "--version"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert "0.8.37+commit.f401782d" in version


def test_cli_compile_writes_and_check_refuses_stale(
    fresh_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "build"
    stale.mkdir()
    assert main(["contracts", "compile", "--check", "--build-dir", str(stale)]) == 1
    assert (
        "out of date: ArchiveNotary.json, AttestationRevocations.json, ConsortiumRegistry.json, "
        "manifest.json"
    ) in (capsys.readouterr().err)
    assert main(["contracts", "compile", "--build-dir", str(stale)]) == 0
    for name in (*CONTRACT_NAMES, "manifest"):
        committed = (default_build_dir() / f"{name}.json").read_bytes()
        assert (stale / f"{name}.json").read_bytes() == committed
    assert main(["contracts", "compile", "--check", "--build-dir", str(stale)]) == 0


def test_the_shim_waits_for_input_that_arrives_late() -> None:
    """py-solc-x writes the standard JSON to the compiler's stdin only after starting it; solcjs
    reads fd 0 with readFileSync after Node made the pipe non-blocking, so input that arrives
    late failed with EAGAIN ("An error occurred during execution", seen under load). The shim
    reads its input to the end first: a compilation whose input arrives a second late succeeds."""
    source = "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\ncontract Late {}\n"
    request = json.dumps(standard_input({"Late.sol": source.encode()}))
    process = subprocess.Popen(
        [str(SOLCJS_SHIM), "--standard-json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the compiler is running and has found no input yet
    out, err = process.communicate(request, timeout=120)
    assert process.returncode == 0, err
    output = json.loads(out)
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"]
    assert "Late" in output["contracts"]["Late.sol"]
