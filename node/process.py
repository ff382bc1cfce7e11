"""Pid files of long-running ArchiveChain processes (a node, the ``up`` supervisor) and stopping them.

A pid file holds ``{"pid": …, "start": …}`` where ``start`` is the process start time from
``/proc/<pid>/stat`` (Linux), so a pid recycled by an unrelated process is never mistaken for ours
and never signalled. Files are written atomically and removed on a clean exit; a stale file (its
process gone) is removed by whoever reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from node.errors import ConflictError

NODE_PID_FILE = "node.pid"
"""Pid file of ``archivechain node run`` in the node's data directory."""


class AlreadyRunningError(ConflictError):
    """Another live process owns this pid file."""

    code = "already_running"

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


def _start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``, or None without procfs or process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        fields = stat.rsplit(") ", 1)[1].split()
        return int(fields[19])  # field 22 of stat; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] == "Z"
    except (OSError, IndexError):
        return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """``(pid, start)`` recorded in ``path``, or None if absent or unreadable."""
    try:
        document = json.loads(path.read_text())
        pid = int(document["pid"])
        start = document.get("start")
        return pid, int(start) if start is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pid(path: Path) -> int | None:
    """The live process recorded in ``path`` (the same process, not a recycled pid), else None.
    A stale file is removed."""
    recorded = read_pid_file(path)
    if recorded is None:
        if path.exists():
            with contextlib.suppress(OSError):
                path.unlink()
        return None
    pid, start = recorded
    alive = pid_alive(pid) and (start is None or _start_time(pid) in (None, start))
    if not alive:
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return pid


def write_pid_file(path: Path, what: str) -> None:
    """Record this process in ``path``; ``AlreadyRunningError`` if another live process has it."""
    other = running_pid(path)
    if other is not None and other != os.getpid():
        raise AlreadyRunningError(f"{what} is already running (pid {other}, {path})", other)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(document) + "\n")
    os.replace(temp, path)


def remove_pid_file(path: Path) -> None:
    """Remove ``path`` if it records this process."""
    recorded = read_pid_file(path)
    if recorded is not None and recorded[0] == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits; True if it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM ``pid`` and wait; SIGKILL after ``timeout``. True if it stopped cleanly (no kill)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_gone(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 5.0)
    return False


def stop_recorded(path: Path, timeout: float = 30.0) -> int | None:
    """Stop the process recorded in ``path`` (if it runs); returns its pid. Removes the file."""
    pid = running_pid(path)
    if pid is None:
        return None
    terminate(pid, timeout)
    with contextlib.suppress(OSError):
        path.unlink()
    return pid
