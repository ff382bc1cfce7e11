"""The local development chain: anvil from ``node_modules``, its state kept in the data directory.

Layout under ``<data-dir>/chain/``: ``state.json`` (anvil ``--state``: loaded at start, dumped every
``--state-interval`` seconds and on a clean stop), ``anvil.pid``, ``chain.json`` (pid, port, RPC URL)
and ``anvil.log``. The dev network mines one block per second (``--block-time 1``): anvil's automine
was seen leaving hundreds of transactions pending under bursts, interval mining does not.

Used by ``archivechain chain start|stop|status``, by ``archivechain up`` and by the test fixtures
(which start their own anvil with ``start_anvil`` and automine).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from node.errors import NodeError
from node.ports import port_in_use
from node.process import pid_alive

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_CHAIN_ID = 31337
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8545
DEFAULT_BLOCK_TIME = 1.0
DEFAULT_STATE_INTERVAL = 5
HARDFORK = "shanghai"
"""Same EVM rules as the compiled artifacts (``evmVersion: shanghai``) and the production targets."""


class DevChainError(NodeError, RuntimeError):
    """The dev chain could not be started, found or stopped."""

    code = "devchain_error"


class AnvilNotFoundError(DevChainError, FileNotFoundError):
    """No anvil binary: run ``npm ci`` (``@foundry-rs/anvil``) or set ``ARCHIVECHAIN_ANVIL``."""

    code = "anvil_not_found"


class ChainStartTimeoutError(DevChainError, TimeoutError):
    """anvil did not answer JSON-RPC in time."""

    code = "devchain_timeout"


def find_anvil() -> Path:
    """The anvil binary: ``$ARCHIVECHAIN_ANVIL``, the npm platform package, else ``anvil`` on PATH.

    The npm ``anvil`` launcher is a node script; the real binary is run directly so that signals
    reach anvil itself (a clean stop dumps the state).
    """
    override = os.environ.get("ARCHIVECHAIN_ANVIL")
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise AnvilNotFoundError(f"ARCHIVECHAIN_ANVIL={override} is not an executable")
        return path
    system = {"Linux": "linux", "Darwin": "darwin"}.get(
        platform.system(), platform.system().lower()
    )
    machine = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64"}.get(
        platform.machine(), platform.machine()
    )
    packaged = (
        REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{machine}" / "bin" / "anvil"
    )
    if os.access(packaged, os.X_OK):
        return packaged
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise AnvilNotFoundError(
        f"anvil not found (expected {packaged}); run `npm ci` or `make install`"
    )


@dataclass(frozen=True)
class AnvilOptions:
    """How to run anvil. ``block_time=None`` means automine (fine for tests, not for bursts)."""

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    block_time: float | None = DEFAULT_BLOCK_TIME
    state_file: Path | None = None
    state_interval: int | None = DEFAULT_STATE_INTERVAL
    chain_id: int = DEV_CHAIN_ID
    accounts: int = 10
    hardfork: str = HARDFORK
    extra_args: Sequence[str] = field(default_factory=tuple)

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC endpoint."""
        return f"http://{self.host}:{self.port}"

    def command(self, anvil: Path) -> list[str]:
        """The anvil command line."""
        cmd = [
            str(anvil),
            "--host", self.host,
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--hardfork", self.hardfork,
        ]  # fmt: skip
        if self.block_time is not None:
            cmd += ["--block-time", _seconds(self.block_time)]
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
            if self.state_interval is not None:
                cmd += ["--state-interval", str(self.state_interval)]
        return cmd + list(self.extra_args)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class AnvilProcess:
    """A running anvil. ``stop()`` sends SIGTERM and waits, so anvil dumps its state file."""

    def __init__(self, pid: int, rpc_url: str, process: subprocess.Popen[bytes] | None = None):
        self.pid = pid
        self.rpc_url = rpc_url
        self._process = process

    def is_running(self) -> bool:
        """Whether the process is still alive."""
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds (state is dumped on the way out), then SIGKILL."""
        if not self.is_running():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self._wait(timeout):
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self._wait(5.0)

    def _wait(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(self.pid):
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> AnvilProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def rpc_answers(rpc_url: str, timeout: float = 1.0) -> bool:
    """Whether ``eth_chainId`` gets an answer at ``rpc_url``."""
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is our own http endpoint
        rpc_url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return "result" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def start_anvil(
    options: AnvilOptions,
    *,
    log_file: Path | None = None,
    detach: bool = False,
    ready_timeout: float = 30.0,
) -> AnvilProcess:
    """Start anvil and return once it answers JSON-RPC.

    ``detach=True`` puts it in its own session so it outlives the calling process (the CLI).
    Refuses a port that is already taken rather than talking to someone else's chain.
    """
    if port_in_use(options.host, options.port):
        raise DevChainError(
            f"port {options.host}:{options.port} is already in use (another anvil or dev chain? "
            "e.g. an `archivechain up` or `archivechain chain start` with another --data-dir); "
            "choose another port: --port P for `chain start`, --chain-port P for `up` "
            "(make up CHAIN_PORT=P)"
        )
    anvil = find_anvil()
    if options.state_file is not None:
        options.state_file.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = log_file.open("ab")
    try:
        process = subprocess.Popen(
            options.command(anvil),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    finally:
        if not isinstance(log, int):
            log.close()
    handle = AnvilProcess(process.pid, options.rpc_url, process)
    deadline = time.monotonic() + ready_timeout
    while not rpc_answers(options.rpc_url, timeout=0.5):
        if process.poll() is not None:
            raise DevChainError(
                f"anvil exited with code {process.returncode} during start-up"
                + (f"; see {log_file}" if log_file else "")
            )
        if time.monotonic() > deadline:
            handle.stop()
            raise ChainStartTimeoutError(
                f"anvil did not answer on {options.rpc_url} in {ready_timeout:.0f} s"
            )
        time.sleep(0.05)
    return handle


# ------------------------------------------------------------------------------------------------
# The dev chain of a data directory


@dataclass(frozen=True)
class ChainPaths:
    """Files of the dev chain under ``<data-dir>/chain``."""

    data_dir: Path

    @property
    def folder(self) -> Path:
        """``<data-dir>/chain``."""
        return self.data_dir / "chain"

    @property
    def state(self) -> Path:
        """anvil's state file."""
        return self.folder / "state.json"

    @property
    def pid(self) -> Path:
        """Pid file of the running anvil."""
        return self.folder / "anvil.pid"

    @property
    def info(self) -> Path:
        """JSON with pid, port and RPC URL of the running anvil."""
        return self.folder / "chain.json"

    @property
    def log(self) -> Path:
        """anvil's output."""
        return self.folder / "anvil.log"


def devchain_status(data_dir: Path) -> AnvilProcess | None:
    """The running dev chain of ``data_dir``, or None (stale pid files are removed)."""
    paths = ChainPaths(data_dir.resolve())
    try:
        info: dict[str, Any] = json.loads(paths.info.read_text())
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if pid != info.get("pid") or not pid_alive(pid) or not _is_our_anvil(pid, paths.state):
        _remove_run_files(paths)
        return None
    return AnvilProcess(pid, str(info["rpc_url"]))


def _is_our_anvil(pid: int, state_file: Path) -> bool:
    """Guard against a recycled pid: the process must be anvil running on our state file."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs (macOS): trust the pid file
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(args) and Path(args[0].decode()).name == "anvil" and str(state_file).encode() in args
    )


def start_devchain(
    data_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    block_time: float | None = DEFAULT_BLOCK_TIME,
    state_interval: int = DEFAULT_STATE_INTERVAL,
    detach: bool = True,
) -> tuple[AnvilProcess, bool]:
    """Start the dev chain of ``data_dir`` (or find it running). Returns ``(process, started)``."""
    paths = ChainPaths(data_dir.resolve())
    running = devchain_status(paths.data_dir)
    if running is not None:
        return running, False
    options = AnvilOptions(
        port=port,
        host=host,
        block_time=block_time,
        state_file=paths.state,
        state_interval=state_interval,
    )
    process = start_anvil(options, log_file=paths.log, detach=detach)
    paths.pid.write_text(f"{process.pid}\n")
    paths.info.write_text(
        json.dumps(
            {
                "pid": process.pid,
                "rpc_url": process.rpc_url,
                "port": port,
                "state": str(paths.state),
                "started_at": int(time.time()),
            },
            indent=2,
        )
        + "\n"
    )
    return process, True


def stop_devchain(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the dev chain of ``data_dir`` cleanly (state dumped). False when none was running."""
    paths = ChainPaths(data_dir.resolve())
    running = devchain_status(paths.data_dir)
    if running is None:
        return False
    running.stop(timeout)
    if running.is_running():
        raise DevChainError(f"anvil (pid {running.pid}) did not stop")
    _remove_run_files(paths)
    return True


def _remove_run_files(paths: ChainPaths) -> None:
    for file in (paths.pid, paths.info):
        file.unlink(missing_ok=True)
