#!/usr/bin/env python3
"""Print the gas used by every state-changing function of ConsortiumRegistry and ArchiveNotary.

Starts a throwaway anvil (automine, hardfork shanghai, like the tests), deploys the committed
artifacts, exercises each function (see tests/contracts/gas.py) and prints a Markdown table with
the date and the machine. Usage: .venv/bin/python scripts/gas_report.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchoring.artifacts import load_artifact
from anchoring.chain import JsonRpc
from devtools.devchain import AnvilOptions, find_anvil, start_anvil
from node.ports import free_port
from tests.contracts.gas import markdown_table, measure
from tests.fixtures.chain import derive_test_accounts


def uname() -> str:
    """``uname -a`` (or the platform's equivalent)."""
    try:
        return subprocess.run(
            ["uname", "-a"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(platform.uname())


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    anvil = find_anvil()
    version = subprocess.run([str(anvil), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]  # fmt: skip
    started = time.monotonic()
    process = start_anvil(AnvilOptions(port=free_port(), block_time=None, state_file=None))
    try:
        rows = measure(JsonRpc(process.rpc_url), derive_test_accounts())
    finally:
        process.stop()
    artifact = load_artifact("ArchiveNotary")
    print(f"Gas report, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print()
    print(f"- machine: `{uname()}`, {os.cpu_count()} CPUs (nproc), {cpu_model()}")
    print(f"- chain: {version}, hardfork shanghai, automine")
    print(f"- compiler: solc {artifact.compiler_version}, optimizer runs "
          f"{artifact.settings['optimizer']['runs']}, evmVersion {artifact.settings['evmVersion']}")  # fmt: skip
    print(f"- measured in {time.monotonic() - started:.1f} s")
    print()
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
