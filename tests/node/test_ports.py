"""Free ports for tests and throwaway daemons: outside the ephemeral range, and really free."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node import ports


@contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ports.LOCALHOST, port))
        sock.listen()
        yield


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t50000\n")
    assert ports.ephemeral_range(path) == (40000, 50000)
    path.write_text("garbled\n")
    assert ports.ephemeral_range(path) == ports.DEFAULT_EPHEMERAL_RANGE
    assert ports.ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL_RANGE


@pytest.mark.parametrize("count", [1, 2, 5])
def test_a_block_lies_outside_the_ephemeral_range_and_binds(count: int) -> None:
    low, high = ports.ephemeral_range()
    for _ in range(50):
        base = ports.free_block(count)
        block = range(base, base + count)
        assert block[0] >= ports.LOWEST_PORT
        assert block[-1] <= ports.HIGHEST_PORT
        assert all(port < low or port > high for port in block), (block, low, high)
    for port in block:
        with listening(port):
            pass


def test_free_port_is_outside_the_ephemeral_range() -> None:
    low, high = ports.ephemeral_range()
    for _ in range(50):
        port = ports.free_port()
        assert port < low or port > high


def test_taken_ports_are_skipped_and_none_left_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ports.free_block(3)
    # Only base, base + 1 and base + 2 are candidates now.
    monkeypatch.setattr(ports, "LOWEST_PORT", base)
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (base + 3, ports.HIGHEST_PORT))
    with listening(base), listening(base + 2):
        assert {ports.free_port() for _ in range(20)} == {base + 1}
        with listening(base + 1), pytest.raises(RuntimeError, match="no free block of 1 ports"):
            ports.free_port()
    with pytest.raises(RuntimeError, match="no room for 4 ports"):
        ports.free_block(4)
    with pytest.raises(ValueError):
        ports.free_block(0)
