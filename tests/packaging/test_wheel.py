"""The project's wheel, installed into a fresh virtual environment outside the checkout, verifies a
real bundle against anvil: what a regulator does with `pip install` and no source tree. The
contract artifacts must come from the installed package (package data), not from a checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anchoring.events import RecordClass, Sensitivity
from devtools.devchain import AnvilProcess
from node.principal import Role
from node.services.archives import NewArchive
from tests.fixtures.node import MakeNode
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow


def _clean_environment() -> dict[str, str]:
    """The environment without anything pointing back into the checkout or its venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if str(REPO_ROOT) not in p
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the checkout) with the project's wheel and its dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # setuptools builds in the source tree's build/ directory; each xdist worker that runs a test
    # of this module builds once, and two builds in one tree delete each other's files (seen in
    # CI: "No such file or directory" while copying). So the wheel is built from a copy of what
    # the build reads.
    source = root / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("anchoring", "node", "api", "devtools", "archivechain"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dist)],
        check=True,
        cwd=root,
        env=_clean_environment(),
    )
    (wheel,) = dist.glob("archivechain-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=root)
    subprocess.run(
        [
            str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
            "-c", str(REPO_ROOT / "constraints.txt"), str(wheel),
        ],
        check=True,
        cwd=root,
        env=_clean_environment(),
    )  # fmt: skip
    return venv


def test_the_installed_package_carries_its_contract_artifacts(installed: Path) -> None:
    probe = (
        "import json, anchoring, anchoring.artifacts as a;"
        "print(json.dumps([anchoring.__file__, str(a.default_build_dir()),"
        " sorted(a.load_artifacts())]))"
    )
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=installed.parent,
        env=_clean_environment(),
    )
    package, artifacts, names = json.loads(result.stdout)
    assert Path(package).is_relative_to(installed)
    assert Path(artifacts).is_relative_to(installed)
    assert names == ["ArchiveNotary", "AttestationRevocations", "ConsortiumRegistry"]


def test_the_installed_cli_verifies_a_real_bundle_outside_the_checkout(
    installed: Path,
    make_node: MakeNode,
    sqlite_url: str,
    anvil_process: AnvilProcess,
    tmp_path: Path,
) -> None:
    node = make_node(database_url=sqlite_url)  # the node serving the bundle is not under test
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "archivist").secret)
    new = NewArchive(
        record_class=RecordClass.INPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="cardiology",
        title="Discharge summary",
        patient_id="MRN-0001",
        source_system="HIS",
        media_type="text/plain",
    )
    archive_id = node.archives.create(archivist, new, [b"stable, follow-up in two weeks"]).id
    node.archives.archive(archivist, archive_id)
    node.worker.run_until_anchored(timeout=30)
    built = node.proofs.bundle(archivist, archive_id)
    assert built.unanchored == 0
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(built.document)
    tampered = tmp_path / "tampered.json"
    document = json.loads(built.document)
    root = document["entries"][0]["checkpoint"]["root"]
    document["entries"][0]["checkpoint"]["root"] = ("0" if root[0] != "0" else "1") + root[1:]
    tampered.write_text(json.dumps(document))
    command = [
        str(installed / "bin" / "archivechain"), "verify",
        "--rpc", anvil_process.rpc_url, "--notary", node.deployment.notary.address,
    ]  # fmt: skip

    valid = subprocess.run(
        [*command, str(bundle)],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_environment(),
    )  # fmt: skip
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "VALID" in valid.stdout

    invalid = subprocess.run(
        [*command, str(tampered)],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_environment(),
    )  # fmt: skip
    assert invalid.returncode == 1, invalid.stdout + invalid.stderr
    assert "INVALID" in invalid.stdout
