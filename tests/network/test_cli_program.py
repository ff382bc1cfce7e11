"""The commands ``up``'s messages print (``Recover with: … up --reset-chain``, ``… down``) run as
printed: ``make up`` starts ``.venv/bin/archivechain`` without activating the venv, so a bare
``archivechain`` would not be found (``devtools.network.cli_program``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from devtools.network import cli_program


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_make_up_prints_the_venv_program_relative_to_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / ".venv" / "bin" / "archivechain")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "argv", [".venv/bin/archivechain", "up"])
    assert cli_program() == ".venv/bin/archivechain"
    assert shutil.which(cli_program()) is not None  # runnable as printed
    monkeypatch.setattr(sys, "argv", [str(tmp_path / ".venv" / "bin" / "archivechain"), "up"])
    assert cli_program() == ".venv/bin/archivechain"  # shown below the working directory


def test_a_program_elsewhere_is_printed_whole_and_one_on_path_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _script(tmp_path / "bin" / "archivechain")
    monkeypatch.chdir(tmp_path / "bin")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "argv", [str(program), "up"])
    assert cli_program() == "./archivechain"  # a bare name would be looked up on PATH
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli_program() == str(program)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}/nonexistent")
    assert cli_program() == "archivechain"


def test_python_m_archivechain_and_unknown_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = Path(__file__).parents[2] / "archivechain" / "__main__.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(main), "up"])
    python, *rest = cli_program().split(" ")
    assert rest == ["-m", "archivechain"]
    assert shutil.which(python) is not None
    for argv in (["-c"], [""], []):
        monkeypatch.setattr(sys, "argv", argv)
        assert cli_program() == "archivechain"
