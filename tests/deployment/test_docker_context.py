"""scripts/docker_context.py, which stages on the host what the images copy: the dependency
closure of an npm package follows Node's resolution through the lock (nested copies first), leaves
out an optional dependency that is not installed and stops on a missing required one; the web
assets staged are exactly the files the node serves, and a node pointed at them serves them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from api.web.assets import VENDOR_ASSETS, _vendor_file

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docker_context", ROOT / "scripts" / "docker_context.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["docker_context"] = module
    spec.loader.exec_module(module)
    return module


docker_context = _module()


def _install(base: Path, packages: dict[str, dict[str, Any]]) -> None:
    for path in packages:
        if path:
            (base / path).mkdir(parents=True, exist_ok=True)


def test_closure_follows_node_resolution_nested_first(tmp_path: Path) -> None:
    packages: dict[str, dict[str, Any]] = {
        "node_modules/app": {
            "dependencies": {"a": "1", "b": "2"},
            "optionalDependencies": {"c": "1"},
        },
        "node_modules/app/node_modules/b": {"dependencies": {"a": "2"}},  # nested b@2 wins
        "node_modules/app/node_modules/b/node_modules/a": {},  # a@2 under b
        "node_modules/a": {},
        "node_modules/b": {"dependencies": {"unused": "1"}},  # b@1: not the one app resolves
        "node_modules/unused": {},
        "node_modules/c": {},  # optional, in the lock, not installed (another platform)
    }
    _install(tmp_path, {k: v for k, v in packages.items() if k != "node_modules/c"})
    found = docker_context.closure(packages, "node_modules/app", base=tmp_path)
    assert found == {
        "node_modules/app",
        "node_modules/a",
        "node_modules/app/node_modules/b",
        "node_modules/app/node_modules/b/node_modules/a",
    }


def test_closure_stops_on_a_missing_required_dependency(tmp_path: Path) -> None:
    packages: dict[str, dict[str, Any]] = {"node_modules/app": {"dependencies": {"gone": "1"}}}
    _install(tmp_path, packages)
    with pytest.raises(SystemExit, match="needs gone, not installed"):
        docker_context.closure(packages, "node_modules/app", base=tmp_path)


def test_the_pinned_chain_and_ipfs_closures_resolve_from_the_lock() -> None:
    if not (ROOT / "node_modules" / "ganache").is_dir():
        pytest.fail("node_modules is missing: run make install")
    packages = docker_context._lock_packages()
    ganache = docker_context.closure(packages, "node_modules/ganache")
    assert "node_modules/ganache" in ganache
    assert len(ganache) > 10
    ipfs = docker_context.closure(packages, "node_modules/ipfs")
    assert "node_modules/ipfs-core" in ipfs  # the daemon's core, not only the CLI
    assert "node_modules/solc" not in ipfs | ganache  # the closure, not all of node_modules


def test_staged_web_assets_are_exactly_what_the_node_serves(tmp_path: Path) -> None:
    if not (ROOT / "node_modules" / "swagger-ui-dist").is_dir():
        pytest.fail("node_modules is missing: run make install")
    assert docker_context.stage_web_assets(tmp_path) == len(VENDOR_ASSETS)
    staged = tmp_path / "web-assets"
    for name, asset in VENDOR_ASSETS.items():
        served = _vendor_file(staged.resolve(), name)
        assert served is not None, name
        assert (
            served.read_bytes() == (ROOT / "node_modules" / asset.package / asset.path).read_bytes()
        )
        manifest = json.loads((staged / asset.package / "package.json").read_text("utf-8"))
        assert manifest["version"] == asset.version
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    expected = {f"{a.package}/{a.path}" for a in VENDOR_ASSETS.values()}
    expected |= {f"{a.package}/package.json" for a in VENDOR_ASSETS.values()}
    assert files == expected  # nothing else of node_modules in the image


def test_the_ganache_tar_is_reproducible_and_holds_only_what_runs(tmp_path: Path) -> None:
    import hashlib
    import tarfile

    if not (ROOT / "node_modules" / "ganache").is_dir():
        pytest.fail("node_modules is missing: run make install")
    digests = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        assert docker_context.stage_node_package(tmp_path / run, "ganache", "7.9.2") > 1
        digests.append(hashlib.sha256((tmp_path / run / "ganache.tar").read_bytes()).hexdigest())
    assert digests[0] == digests[1]  # same lock, same tar: Docker's layer cache holds
    with tarfile.open(tmp_path / "a" / "ganache.tar") as archive:
        members = {m.name: m for m in archive.getmembers()}
    cli = members["node_modules/ganache/dist/node/cli.js"]  # the image's entrypoint
    assert cli.mode & 0o111
    assert "node_modules/ganache/package.json" in members
    assert {m.uid for m in members.values()} == {0}
    assert {m.mtime for m in members.values()} == {0}
    assert not [n for n in members if n.endswith((".d.ts", ".map", ".md"))]
    with pytest.raises(SystemExit, match=r"does not pin ganache@7\.9\.3"):
        docker_context.stage_node_package(tmp_path / "a", "ganache", "7.9.3")
