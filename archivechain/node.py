"""``archivechain node run``: serve one hospital node (HTTP API, anchoring schedule) until stopped.

Loads the settings (``--config`` TOML file, ``ARCHIVECHAIN_*`` environment, ``--data-dir``), opens
the runtime (which refuses insecure production settings), starts it, and serves
``api.main.create_app(runtime)`` with uvicorn. SIGINT or SIGTERM stops the server gracefully
(in-flight requests finish), then the runtime closes (queued units of work are committed, the
scheduler stops). ``<data-dir>/node.pid`` records the running process.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from node.config import NodeSettings, load_settings
from node.errors import ConfigError, InputError, NodeError, UnavailableError
from node.process import NODE_PID_FILE, remove_pid_file, write_pid_file

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

log = logging.getLogger("archivechain.node")

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="ARCHIVECHAIN_CONFIG",
    help="Node configuration file (TOML). Environment variables ARCHIVECHAIN_* override it.",
)
NODE_DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node data directory (overrides the configuration).",
)


class SettingsRefusedError(InputError):
    """The node cannot start with these settings (insecure, missing keystore or deployment):
    reported as one line with exit code 2."""

    code = "settings_refused"


class NodeRunningError(InputError):
    """The command needs the node stopped: one line, exit code 2, nothing done."""

    code = "node_running"


def refuse_running_node(settings: NodeSettings, stop_it_before: str) -> None:
    """Raise ``NodeRunningError`` if ``<data-dir>/node.pid`` records a live process (a stale file
    is removed; a missing directory is left missing)."""
    from node.process import running_pid

    pid = running_pid(node_pid_path(settings))
    if pid is not None:
        raise NodeRunningError(f"the node runs (pid {pid}); stop it before {stop_it_before}")


@contextmanager
def holding_node_pid(settings: NodeSettings, stop_it_before: str) -> Iterator[None]:
    """Record this process in the node's pid file for the duration, so the node cannot start
    meanwhile; ``NodeRunningError`` if it runs. Use once the data directory is known to exist."""
    from node.process import AlreadyRunningError

    pid_file = node_pid_path(settings)
    try:
        write_pid_file(pid_file, "the node")
    except AlreadyRunningError as exc:
        raise NodeRunningError(f"{exc.message}; stop it before {stop_it_before}") from None
    try:
        yield
    finally:
        remove_pid_file(pid_file)


def node_settings(config_file: Path | None, data_dir: Path | None) -> NodeSettings:
    """Settings from the file, the environment and ``--data-dir``; refusals exit 2."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    with settings_refusals():
        return load_settings(config_file, **overrides)


@contextmanager
def settings_refusals() -> Iterator[None]:
    """Turn configuration, keystore and deployment-file problems into ``SettingsRefusedError``
    (exit 2, one line) and other anchoring errors into one-line ``NodeError``s."""
    from anchoring.deployment import DeploymentFileError, DeploymentNotFoundError
    from anchoring.errors import AnchoringError, ChainError
    from node.keystore import KeystoreError

    try:
        yield
    except (ConfigError, KeystoreError) as exc:
        raise SettingsRefusedError(exc.message, code=exc.code) from None
    except (DeploymentNotFoundError, DeploymentFileError) as exc:
        raise SettingsRefusedError(
            f"{exc} (deploy with `archivechain contracts deploy` or set deployment_file)",
            code=exc.code,
        ) from None
    except ChainError as exc:
        raise UnavailableError(str(exc)) from None
    except AnchoringError as exc:
        raise NodeError(str(exc), code=exc.code) from None


def open_runtime(settings: NodeSettings, *, create_keystore: bool | None = None) -> NodeRuntime:
    """``NodeRuntime.open`` with refusals reported as one line, exit 2."""
    from node.runtime import NodeRuntime

    with settings_refusals():
        return NodeRuntime.open(settings, create_keystore=create_keystore)


def node_pid_path(settings: NodeSettings) -> Path:
    """``<data-dir>/node.pid``."""
    return settings.data_dir / NODE_PID_FILE


@click.group("node")
def node_group() -> None:
    """Run a hospital node."""


@node_group.command("run")
@CONFIG_OPTION
@NODE_DATA_DIR_OPTION
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run(config_file: Path | None, data_dir: Path | None, log_level: str) -> None:
    """Serve the node's HTTP API and anchoring until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("alembic", "apscheduler"):  # per-tick and per-migration-step INFO lines
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = node_settings(config_file, data_dir)
    from node.ports import port_in_use

    if port_in_use(settings.host, settings.port):
        raise UnavailableError(f"cannot listen on {settings.host}:{settings.port}: port in use")
    pid_file = node_pid_path(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    write_pid_file(pid_file, f"node {settings.name}")
    try:
        runtime = open_runtime(settings)
        try:
            app = _create_app(runtime)
            _install_fault_point(runtime)
            _prepare_process()  # before the runtime starts its threads
            runtime.start()
            log.info(
                "node %s (%s, %s mode) serving %s", settings.name, runtime.hospital,
                settings.mode, settings.base_url,
            )  # fmt: skip
            _serve(app, settings)
        finally:
            runtime.close()
            log.info("node %s stopped", settings.name)
    finally:
        remove_pid_file(pid_file)


FAULT_POINT_ENV = "ARCHIVECHAIN_TEST_FAULT_POINT"
"""TEST SEAM (fault injection only): the node SIGKILLs itself when the federation or retention
service reaches the named point (e.g. ``transfer-staged``; ``destruction-shredded#3`` for its third
time), or an ingest has stored its ciphertext (``ingest-stored``). Never set it in production."""


def _install_fault_point(runtime: NodeRuntime) -> None:
    point = os.environ.get(FAULT_POINT_ENV)
    if not point:
        return
    if runtime.settings.mode != "dev":
        raise SettingsRefusedError(
            f"{FAULT_POINT_ENV} is a test seam and is refused outside dev mode", code="test_seam"
        )
    log.warning("fault injection armed at %s (test seam)", point)

    name, _, nth = point.partition("#")
    wanted = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    reached_count = 0

    def hook(reached: str) -> None:
        nonlocal reached_count
        if reached == name:
            reached_count += 1
            if reached_count >= wanted:
                os.kill(os.getpid(), signal.SIGKILL)

    runtime.transfers.fault_hook = hook
    runtime.retention.fault_hook = hook
    runtime.archives.fault_hook = hook


def _prepare_process() -> None:
    """Once the node is sure to serve, before any of its threads starts: the recursion limit and
    thread stacks under which deep input cannot crash the process, the open-file limit,
    rate-limited client-triggered log lines (process-wide, so not done for a refused start)."""
    from api.server import prepare_process

    prepare_process()


def _create_app(runtime: NodeRuntime) -> Any:
    try:
        from api.main import create_app
    except ImportError as exc:
        raise NodeError(f"the HTTP API is not available: {exc}", code="api_missing") from None
    return create_app(runtime)


def _serve(app: Any, settings: NodeSettings) -> None:
    """Serve ``app`` (uvicorn, hardened by ``api.server``) until a signal asks it to stop."""
    from api.server import HttpLimits, connection_limit, make_server, run_server

    max_connections = connection_limit(settings.http_max_connections)
    if max_connections < settings.http_max_connections:
        log.warning(
            "http_max_connections lowered from %d to %d to fit the open-file limit",
            settings.http_max_connections,
            max_connections,
        )
    limits = HttpLimits(
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        body_min_rate=settings.http_body_min_rate,
        idle_timeout=settings.http_idle_timeout,
        max_connections=max_connections,
    )
    server = make_server(app, host=settings.host, port=settings.port, limits=limits)

    def stop(signum: int, frame: FrameType | None) -> None:
        # The server runs in its own thread (see api.server.run_server); this handler, in the
        # main thread, asks it to finish in-flight requests and stop, so the runtime then closes
        # cleanly instead of dying mid-way.
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_server(server)
    except SystemExit:  # uvicorn exits when it cannot bind or start the app
        raise UnavailableError(
            f"the HTTP server could not start on {settings.host}:{settings.port}"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise UnavailableError(
            f"the HTTP server could not start on {settings.host}:{settings.port}"
        )
