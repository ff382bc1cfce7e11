"""Start and stop a local js-ipfs daemon (npm ``ipfs@0.66.1``) for development and tests.

kubo cannot be installed on these machines; js-ipfs serves the same HTTP RPC endpoints the IPFS
blob store uses (``/api/v0/add``, ``cat``, ``pin/*``, ``repo/gc``). Two quirks are handled here:

* under Node 20 js-ipfs needs ``Promise.withResolvers``, loaded from ``scripts/ipfs-polyfill.cjs``
  with ``NODE_OPTIONS=--require``;
* a daemon killed with SIGKILL leaves ``repo.lock`` (a directory) and ``api`` in its repo, and
  refuses to start again until they are removed. ``start`` removes them when no daemon we started
  is still alive (the pid is kept in ``archivechain-daemon.pid`` inside the repo).

The daemon runs offline (no swarm, no bootstrap, no gateway) on 127.0.0.1 and a free API port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx

from node.errors import NodeError
from node.ports import free_port

__all__ = ["DEFAULT_JSIPFS", "POLYFILL", "IpfsDaemon", "IpfsDevError"]

_REPO_ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_JSIPFS: Final = _REPO_ROOT / "node_modules" / ".bin" / "jsipfs"
POLYFILL: Final = _REPO_ROOT / "scripts" / "ipfs-polyfill.cjs"
_PID_FILE: Final = "archivechain-daemon.pid"
_LOG_FILE: Final = "archivechain-daemon.log"
_STALE_ENTRIES: Final = ("repo.lock", "api")
_OFFLINE_CONFIG: Final[dict[str, Any]] = {
    "Addresses": {"Swarm": [], "Announce": [], "NoAnnounce": [], "Gateway": "", "RPC": ""},
    "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
    "Bootstrap": [],
    "Pubsub": {"Enabled": False},
}


class IpfsDevError(NodeError, RuntimeError):
    """The development IPFS daemon could not be initialised, started or stopped."""

    code = "ipfs_dev_error"


class IpfsDaemon:
    """One js-ipfs daemon with its own repo folder. Use as a context manager or start/stop."""

    def __init__(
        self,
        repo_dir: Path | str,
        *,
        port: int | None = None,
        jsipfs: Path | str = DEFAULT_JSIPFS,
        startup_timeout: float = 60.0,
    ) -> None:
        self.repo_dir = Path(repo_dir)
        self._fixed_port = port
        self._port = port
        self._jsipfs = Path(jsipfs)
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The API port (known once started)."""
        if self._port is None:
            raise IpfsDevError("the IPFS daemon has not been started")
        return self._port

    @property
    def api_addr(self) -> str:
        """Multiaddr of the HTTP RPC API, as ``ipfshttpclient.Client`` takes it."""
        return f"/ip4/127.0.0.1/tcp/{self.port}/http"

    @property
    def api_url(self) -> str:
        """Plain URL of the HTTP RPC API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running daemon, if we started one."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        """Where the daemon's stdout and stderr go."""
        return self.repo_dir / _LOG_FILE

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Initialise the repo if needed, clear a crashed daemon's lock, start, wait until ready."""
        if self.is_running():
            return
        if not self._jsipfs.exists():
            raise IpfsDevError(f"jsipfs not found at {self._jsipfs} (run `npm ci`)")
        if not (self.repo_dir / "config").is_file():
            self._init_repo()
        self._clear_stale_lock()
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            reuse = attempt == 0 and self._port is not None  # a restart keeps its address
            self._port = self._fixed_port or (self._port if reuse else None) or free_port()
            self._write_api_address(self._port)
            self._spawn()
            try:
                self._wait_ready()
                return
            except IpfsDevError:
                self._terminate(signal.SIGKILL)
                self._clear_stale_lock()
                if attempt == attempts - 1:
                    raise

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``) and clear any lock it left."""
        if self._process is None:
            return
        self._terminate(signal.SIGTERM, timeout)
        self._clear_stale_lock()

    def kill(self) -> None:
        """SIGKILL the daemon without cleaning up, as a crash would (for fault-injection tests)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None

    def is_running(self) -> bool:
        """True while the daemon we started is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"IpfsDaemon(repo_dir={str(self.repo_dir)!r}, port={self._port}, pid={self.pid})"

    # ------------------------------------------------------------------ internals

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["IPFS_PATH"] = str(self.repo_dir)
        options = environment.get("NODE_OPTIONS", "")
        environment["NODE_OPTIONS"] = f"{options} --require {POLYFILL}".strip()
        return environment

    def _init_repo(self) -> None:
        self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
        config_path = self.repo_dir.parent / f".{self.repo_dir.name}.init-config.json"
        config_path.write_text(json.dumps(_OFFLINE_CONFIG))
        try:
            result = subprocess.run(
                [str(self._jsipfs), "init", "--emptyRepo", "--defaultConfig", str(config_path)],
                env=self._environment(),
                capture_output=True,
                timeout=self._startup_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise IpfsDevError("jsipfs init timed out") from None
        except OSError as exc:
            raise IpfsDevError(f"cannot run jsipfs (is Node.js installed?): {exc}") from exc
        finally:
            config_path.unlink(missing_ok=True)
        if result.returncode != 0 or not (self.repo_dir / "config").is_file():
            tail = result.stderr.decode("utf-8", "replace")[-500:]
            raise IpfsDevError(f"jsipfs init failed: {tail}")

    def _write_api_address(self, port: int) -> None:
        config_file = self.repo_dir / "config"
        config = json.loads(config_file.read_text())
        addresses = config.setdefault("Addresses", {})
        addresses.update(_OFFLINE_CONFIG["Addresses"])
        addresses["API"] = f"/ip4/127.0.0.1/tcp/{port}"
        config_file.write_text(json.dumps(config, indent=2))

    def _clear_stale_lock(self) -> None:
        pid_file = self.repo_dir / _PID_FILE
        if pid_file.exists():
            with contextlib.suppress(ValueError):
                if _daemon_runs_on(int(pid_file.read_text().strip()), self.repo_dir):
                    raise IpfsDevError(f"another daemon still runs on the repo {self.repo_dir}")
            pid_file.unlink(missing_ok=True)
        for name in _STALE_ENTRIES:
            entry = self.repo_dir / name
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    [str(self._jsipfs), "daemon", "--offline", "--enable-preload=false"],
                    env=self._environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise IpfsDevError(f"cannot run jsipfs (is Node.js installed?): {exc}") from exc
        (self.repo_dir / _PID_FILE).write_text(str(self._process.pid))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise IpfsDevError(f"the IPFS daemon exited during start-up: {self._log_tail()}")
            try:
                if httpx.post(f"{self.api_url}/api/v0/version", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise IpfsDevError(f"the IPFS daemon did not become ready: {self._log_tail()}")

    def _terminate(self, first_signal: signal.Signals, timeout: float = 15.0) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first_signal)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._process = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-500:]
        except FileNotFoundError:
            return "(no log)"


def _daemon_runs_on(pid: int, repo_dir: Path) -> bool:
    """True when ``pid`` is a live process serving ``repo_dir`` (a reused pid or zombie is not).

    js-ipfs renames its process to "ipfs", so the repo is recognised by the ``IPFS_PATH`` in the
    process environment.
    """
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:  # not ours to inspect: assume the worst, refuse to break its lock
        return True
    return f"IPFS_PATH={repo_dir}".encode() in environment
