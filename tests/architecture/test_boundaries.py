"""The dependency rules of docs/architecture.md, checked: what importing a part drags in, and that
no module reaches into another's private names. Each import check runs in a fresh interpreter, so
what earlier tests imported cannot hide a violation."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anchoring", "node", "api", "archivechain", "devtools")


def _loaded_after(code: str) -> set[str]:
    """Top-level and dotted module names in ``sys.modules`` after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def _import_all(package: str) -> str:
    """Code that imports every module of ``package`` (Alembic's migration scripts run only
    inside Alembic and are left out)."""
    return (
        "import importlib, pkgutil\n"
        f"import {package}\n"
        f"for info in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        "    if '.migrations.' not in info.name:\n"
        "        importlib.import_module(info.name)\n"
    )


def test_services_never_import_the_composition_root() -> None:
    loaded = _loaded_after(_import_all("node.services"))
    assert "node.services.archives" in loaded  # the probe did import them
    assert "node.runtime" not in loaded


def test_the_node_imports_neither_the_api_nor_the_dev_tools_nor_the_cli() -> None:
    loaded = _loaded_after(_import_all("node"))
    assert "node.runtime" in loaded
    for forbidden in ("api", "devtools", "archivechain"):
        assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}, forbidden


def test_the_api_does_not_import_the_dev_tools() -> None:
    loaded = _loaded_after(_import_all("api"))
    assert not {m for m in loaded if m == "devtools" or m.startswith("devtools.")}


def test_the_verifier_needs_neither_web3_nor_a_database() -> None:
    loaded = _loaded_after("import anchoring.verifier")
    for heavy in ("web3", "sqlalchemy", "fastapi", "node"):
        assert heavy not in loaded, heavy


def test_the_attestation_verifier_needs_neither_web3_nor_a_database() -> None:
    loaded = _loaded_after("import anchoring.attestation, anchoring.rpcview")
    for heavy in ("web3", "eth_account", "sqlalchemy", "fastapi", "node"):
        assert heavy not in loaded, heavy
    cli = _loaded_after("import archivechain.attest")
    for heavy in ("web3", "eth_account", "sqlalchemy", "fastapi"):
        assert heavy not in cli, heavy


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_names_defined_in(tree: ast.Module) -> set[str]:
    """Private attribute names a module defines itself (its classes' fields and methods)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
            and isinstance(node.ctx, ast.Store)
        ):
            names.add(node.attr)
    return {name for name in names if _is_private(name)}


def _private_uses(path: Path) -> list[str]:
    """``obj._name`` for a private name this module does not define itself (another module's
    internals), and ``from m import _name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    own = _private_names_defined_in(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not _is_private(name) or name in own:
                continue
            found.append(f"{where}:{node.lineno}: .{name}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_uses_another_modules_private_names(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    if not sources:
        pytest.skip(f"no package {package}")
    violations = [use for path in sources for use in _private_uses(path)]
    assert violations == []


def test_the_private_name_check_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself would notice a service reaching into another's internals."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from node.ledger import _hidden\n\ndef f(ledger):\n    return ledger._states\n",
        encoding="utf-8",
    )
    uses = _private_uses(probe)
    assert [use.rsplit(": ", 1)[1] for use in uses] == ["import _hidden", "._states"]
