"""TCP ports on this machine: is one taken, and which one is free."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOCALHOST = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)  # Linux's default when the file cannot be read
LOWEST_PORT = 10000  # below this live well-known services and other people's fixed ports
HIGHEST_PORT = 65535


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (both ends included)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def _candidate_bases(count: int, ephemeral: tuple[int, int]) -> list[range]:
    """Ranges of first ports whose whole block of ``count`` lies outside ``ephemeral``."""
    low, high = ephemeral
    ranges = [range(LOWEST_PORT, low - count + 1), range(high + 1, HIGHEST_PORT - count + 2)]
    return [r for r in ranges if len(r) > 0]


def free_block(count: int = 1, host: str = LOCALHOST) -> int:
    """The first of ``count`` consecutive TCP ports that are all free right now.

    The block lies outside the kernel's ephemeral range. A port the kernel handed out (bind to
    port 0) can be taken a moment later as the local end of any outgoing connection, so a server
    started on it a second later may fail to bind; a port outside the range can only be taken by
    another listener. Meant for tests, throwaway chains and daemons.
    """
    if count < 1:
        raise ValueError(f"a block of {count} ports")
    candidates = _candidate_bases(count, ephemeral_range())
    if not candidates:
        raise RuntimeError(f"no room for {count} ports outside the ephemeral range")
    rng = random.SystemRandom()  # independent of any seed a test or worker sets
    for _ in range(500):
        base = rng.choice(rng.choice(candidates))
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no free block of {count} ports outside the ephemeral range")


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now and outside the ephemeral range (see ``free_block``)."""
    return free_block(1, host)
