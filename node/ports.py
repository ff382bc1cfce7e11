"""TCP ports on this machine: is one taken, and which one is free."""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now (for tests and throwaway chains and daemons)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
