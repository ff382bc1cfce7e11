"""The README's five-minute walkthrough, run as written against a live ``archivechain up``: its
shell blocks are taken from README.md and pasted, all at once (what the slowest reader does not do
and the fastest does), into ``bash -euo pipefail`` in a folder where ``data`` and ``.venv`` are the
test network's data directory and this environment. So the README cannot rot: a step that fails,
an address that is hard-coded, a proof fetched before it is anchored or a verdict that changes
fails this test.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.network.conftest import Net, environment, wait_ready

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Five-minute walkthrough"


def walkthrough_blocks() -> list[str]:
    """The ``sh`` blocks of the walkthrough section (up to the next heading)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    following = re.search(r"^#{2,3} ", text[start + len(SECTION) :], re.MULTILINE)
    end = start + len(SECTION) + following.start() if following else len(text)
    return re.findall(r"^```sh\n(.*?)^```", text[start:end], re.MULTILINE | re.DOTALL)


def test_the_walkthrough_reads_everything_from_network_json() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 7, blocks
    script = "\n".join(blocks)
    curls = [line for line in script.splitlines() if re.search(r"\bcurl\b", line)]
    assert curls
    for line in curls:  # an HTTP error must stop the reader, not end up in a file
        assert re.search(r"\bcurl -f|--fail", line), line
    for port in ("8545", "8601", "127.0.0.1", "localhost"):
        assert port not in script, f"{port} is hard-coded in the walkthrough"
    assert "proof?wait=" in script


def test_the_walkthrough_runs_as_written(net: Net, tmp_path: Path) -> None:
    assert shutil.which("jq"), "the walkthrough needs jq (apt-get install jq; .ci/run does)"
    assert shutil.which("curl"), "the walkthrough needs curl"
    ports = ("--base-port", str(net.base_port), "--chain-port", str(net.chain_port))
    up = net.up("--hospitals", "1", *ports, tag="walkthrough")
    try:
        wait_ready(net, up, nodes=1)
        reader = tmp_path / "reader"
        reader.mkdir()
        (reader / "data").symlink_to(net.data_dir)
        (reader / ".venv").symlink_to(Path(sys.prefix))
        result = subprocess.run(
            [
                "bash",
                "--noprofile",
                "--norc",
                "-euo",
                "pipefail",
                "-c",
                "\n".join(walkthrough_blocks()),
            ],
            cwd=reader,
            capture_output=True,
            text=True,
            env=environment(),
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert result.returncode == 0, output
        assert "curl:" not in result.stderr, output
        assert re.search(r"^[0-9A-HJKMNP-TV-Z]{26}$", result.stdout, re.MULTILINE), output  # the id
        assert '"state": "ARCHIVED"' in result.stdout, output
        assert "Discharge summary: stable" in result.stdout, output
        assert '[{"log_index":0,' in result.stdout, output  # the proof holds all three events
        assert "VALID: 3 events verified against the chain" in result.stdout, output
        assert "INVALID (entry 0)" in result.stdout, output
        assert "exit code 1" in result.stdout, output
        assert "error: malformed bundle" in result.stderr, output
        assert "exit code 2" in result.stdout, output
    finally:
        up.process.send_signal(signal.SIGINT)
        if up.process.wait(60) != 0:
            pytest.fail(f"up did not stop cleanly:\n{up.output()}")
