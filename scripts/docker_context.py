"""Stage on the host what the images copy (``make images`` runs this first), so that no image
build resolves or compiles anything: it only installs what ``make install`` already pinned.

``build/docker/`` receives one build context per image (``make images`` passes each to
``docker build`` with its Dockerfile from ``docker/``):

- ``node/wheelhouse/``: the archivechain wheel and every dependency as a wheel (``pip wheel`` with
  ``constraints.txt``, from the host's pip cache); the node image installs from it with
  ``--no-index``, so it needs neither a compiler nor a package index.
- ``node/web-assets/``: the pinned npm packages whose files the node serves (``api.web.assets``:
  Swagger UI for ``/docs``, htmx and Chart.js for the console), each with its ``package.json``
  so the version check still applies.
- ``ganache/ganache.tar`` and ``ipfs/ipfs.tar``: ``node_modules`` holding exactly ``ganache@7.9.2`` or
  ``ipfs@0.66.1`` and their dependency closure, copied from the project's ``node_modules``
  (installed by ``npm ci`` from ``package-lock.json``, so every version is the lock's); the
  ipfs and postgres contexts also get their start scripts from ``docker/``.

Usage: ``python scripts/docker_context.py [--out build/docker]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NODE_PACKAGES = {"ganache": "7.9.2", "ipfs": "0.66.1"}
NOT_RUN = ("*.ts", "*.map", "*.md", "*.markdown", "*.cc", "*.h", ".github")
CONTEXT_FILES = {"ipfs": ("ipfs-start.sh", "ipfs-polyfill.cjs"), "postgres": ("postgres-start.sh",)}


def _lock_packages() -> dict[str, dict[str, Any]]:
    lock = json.loads((ROOT / "package-lock.json").read_text("utf-8"))
    packages: dict[str, dict[str, Any]] = lock["packages"]
    return packages


def _resolve(packages: dict[str, dict[str, Any]], parent: str, name: str) -> str | None:
    """Where Node's resolution finds ``name`` required from the package at ``parent``."""
    base = parent
    while True:
        candidate = f"{base}/node_modules/{name}" if base else f"node_modules/{name}"
        if candidate in packages:
            return candidate
        if not base:
            return None
        cut = base.rfind("/node_modules/")
        base = base[:cut] if cut >= 0 else ""


def closure(packages: dict[str, dict[str, Any]], root: str, base: Path = ROOT) -> set[str]:
    """Lock paths of ``root`` and every package it needs at run time (dev dependencies aside),
    as installed under ``base``: an optional dependency not installed (another platform's) is
    left out; a required one missing from the lock stops the staging."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        entry = packages[path]
        wanted = {
            **entry.get("dependencies", {}),
            **entry.get("optionalDependencies", {}),
            **entry.get("peerDependencies", {}),
        }
        for name in wanted:
            found = _resolve(packages, path, name)
            optional = name in entry.get("optionalDependencies", {}) or entry.get(
                "peerDependenciesMeta", {}
            ).get(name, {}).get("optional", False)
            if found is not None and (base / found).exists():
                todo.append(found)
            elif not optional:
                raise SystemExit(f"docker_context: {path} needs {name}, not installed")
    return seen


def stage_node_package(out: Path, name: str, version: str) -> int:
    """Write ``out/name.tar``: ``node_modules/`` with ``name`` and its closure; the number of
    packages. One tar (``ADD`` unpacks it) instead of tens of thousands of files to ``COPY``,
    which the classic builder checksums one by one; entries sorted, times and owners fixed, so
    the same lock gives the same tar and Docker's layer cache holds."""
    packages = _lock_packages()
    root = f"node_modules/{name}"
    if packages.get(root, {}).get("version") != version:
        raise SystemExit(f"docker_context: package-lock.json does not pin {name}@{version}")
    installed = ROOT / root / "package.json"
    if not installed.is_file() or json.loads(installed.read_text("utf-8"))["version"] != version:
        raise SystemExit(f"docker_context: node_modules lacks {name}@{version}: run make install")
    paths = closure(packages, root)
    tops = [p for p in sorted(paths) if not any(p.startswith(q + "/") for q in paths if q != p)]

    # GNU tar (Python's tarfile takes minutes for ipfs's ~45,000 files on a loaded machine).
    subprocess.run(
        [
            "tar",
            "--create",
            "--file",
            str(out / f"{name}.tar"),
            "--directory",
            str(ROOT),
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=u+rwX,go+rX,go-w",
            # Never loaded at run time: type declarations, TypeScript and native sources, source
            # maps, documents (about half of ipfs's files, each one slow to unpack in a build).
            *(f"--exclude={pattern}" for pattern in NOT_RUN),
            "--",
            *tops,
        ],
        check=True,
    )
    return len(paths)


def stage_web_assets(out: Path) -> int:
    """Copy each vendor file the node serves, with its package's ``package.json``."""
    sys.path.insert(0, str(ROOT))
    from api.web.assets import VENDOR_ASSETS, installed_version

    modules = ROOT / "node_modules"
    target = out / "web-assets"
    for asset in VENDOR_ASSETS.values():
        if installed_version(modules, asset.package) != asset.version:
            raise SystemExit(
                f"docker_context: node_modules lacks {asset.package}@{asset.version}:"
                " run make install"
            )
        for relative in ("package.json", asset.path):
            destination = target / asset.package / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(modules / asset.package / relative, destination)
    return len(VENDOR_ASSETS)


def stage_wheelhouse(out: Path, python: str) -> int:
    """``pip wheel`` the project and its pinned dependencies into ``out/wheelhouse``."""
    target = out / "wheelhouse"
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            "--wheel-dir",
            str(target),
            str(ROOT),
        ],
        check=False,
        capture_output=True,
        text=True,
        # Fixed zip timestamps: the same sources give the same wheel, so Docker's layer cache holds.
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )
    # Keep pip's errors, not its warnings about index locations of this machine's configuration.
    for line in (result.stdout + result.stderr).splitlines():
        if not line.startswith("WARNING: Location "):
            print(line, file=sys.stderr)
    if result.returncode != 0:
        raise SystemExit(f"docker_context: pip wheel failed (exit {result.returncode})")
    return len(list(target.glob("*.whl")))


def main() -> None:
    """Stage one small build context per image under ``build/docker`` (replacing an earlier run):
    ``node/``, ``ganache/``, ``ipfs/``, ``postgres/``; ``make images`` builds each Dockerfile of
    ``docker/`` with its own context, so no build receives the others' files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docker")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    for image in ("node", *NODE_PACKAGES, "postgres"):
        (out / image).mkdir(parents=True)
    wheels = stage_wheelhouse(out / "node", args.python)
    shutil.copy2(ROOT / "constraints.txt", out / "node" / "constraints.txt")
    assets = stage_web_assets(out / "node")
    counts = {name: stage_node_package(out / name, name, v) for name, v in NODE_PACKAGES.items()}
    for image, files in CONTEXT_FILES.items():
        for name in files:
            shutil.copy2(ROOT / "docker" / name, out / image / name)
    print(
        f"docker_context: {wheels} wheels, {assets} web assets, "
        + ", ".join(f"{name} with {n} packages" for name, n in counts.items())
        + f" in {out}"
    )


if __name__ == "__main__":
    main()
