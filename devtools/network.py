"""A local consortium on one machine (dev only): what ``archivechain up`` and ``down`` run.

``LocalNetwork.prepare`` brings the chain side up and every node's data to the point where the
node processes can start: anvil with persistent state under ``<data-dir>/chain`` (interval mining),
the contracts deployed once, the identities (N hospitals, a regulator, an insurer) generated once
and funded, the first hospital bootstrapped by the deployer and everyone else admitted through
governance, a ``node.toml`` per hospital, one API key per role per node, and ``network.json``.
``LocalNetwork.start_nodes`` then starts one ``archivechain node run`` process per hospital and
waits until each answers its health check; ``LocalNetwork.supervise`` then watches them and starts
again, with exponential back-off, any node process that dies (saying so loudly each time);
``LocalNetwork.stop`` stops them (nodes first, then anvil so its state is dumped). ``down`` stops a
network from another process.

Every step is idempotent, so ``up`` on an existing data directory resumes: identities, deployment,
admissions, API keys and node data are reused, never re-created. If the dev chain lost its state
(``deployment.json`` exists but the chain holds no code there, or fewer checkpoints than a node
recorded) ``prepare`` refuses loudly unless ``reset_chain`` is set, which redeploys (same deployer
and nonces on a fresh chain give the same addresses) and re-queues every transaction the chain
lost, so each node re-anchors its recorded checkpoints in order and earlier proofs verify again.

Data directory layout (see docs/network.md)::

    network.json            addresses, URLs and API keys (mode 0600, dev only)
    deployment.json         the contracts (``anchoring.deployment``)
    up.pid                  the running ``archivechain up`` supervisor
    chain/                  anvil state, pid, log (``devtools.devchain``)
    nodes/<name>/           one hospital node: node.toml, keystore.json, node.db, blobs/, node.log
    members/<name>/         regulator and insurer keystores
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount

from anchoring.chain import JsonRpc, Role, RpcChain, wait_for_receipt
from anchoring.deployment import Deployment, deployment_path
from anchoring.errors import ChainStateLostError
from devtools.deploy import (
    HospitalSeed,
    bootstrap_hospitals,
    deployer_account,
    ensure_deployed,
    verify_deployment,
)
from devtools.devchain import (
    DEFAULT_BLOCK_TIME,
    DEFAULT_HOST,
    ChainPaths,
    devchain_status,
    rpc_answers,
    start_devchain,
    stop_devchain,
)
from devtools.governance import admit_member
from node.config import NodeSettings
from node.errors import ConflictError, InputError, NodeError, UnavailableError
from node.keystore import DEV_PASSPHRASE, Keystore
from node.ports import port_in_use
from node.principal import Role as ApiRole
from node.process import (
    NODE_PID_FILE,
    pid_alive,
    running_pid,
    stop_recorded,
    terminate,
    wait_gone,
)

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

NETWORK_FORMAT: Final = "archivechain.network/v1"
NETWORK_NOTE: Final = (
    "DEV ONLY: this file contains API keys in clear. Keep it private (mode 0600); never use a dev "
    "network for real patient data."
)
DEFAULT_HOSPITALS: Final = 3
DEFAULT_BASE_PORT: Final = 8601
DEFAULT_CHAIN_PORT: Final = 8545
MAX_HOSPITALS: Final = 32
DEV_SCRYPT_N: Final = 1 << 14
"""Keystore cost of dev identities: they are sealed with the public dev passphrase anyway, so a
costly KDF would protect nothing and only slow every start. Production keystores use 2^17."""
FUNDING_WEI: Final = 100 * 10**18
MIN_BALANCE_WEI: Final = 10 * 10**18
CLINICIAN_DEPARTMENT: Final = "general"
API_KEY_ROLES: Final = (
    ApiRole.ADMIN,
    ApiRole.ARCHIVIST,
    ApiRole.CLINICIAN,
    ApiRole.AUDITOR,
    ApiRole.RECORDS_MANAGER,
)
HEALTH_PATH: Final = "/healthz"
MANAGED_SETTINGS: Final = (
    "MODE", "NAME", "DATA_DIR", "DATABASE_URL", "RPC_URL", "DEPLOYMENT_FILE", "KEYSTORE_PATH",
    "KEYSTORE_PASSPHRASE", "KEYSTORE_PASSPHRASE_FILE", "HOST", "PORT", "PUBLIC_URL", "CONFIG",
)  # fmt: skip
"""``ARCHIVECHAIN_*`` variables removed from the node processes' environment: ``up`` sets these in
node.toml, and the environment would otherwise override them."""
MEMBER_ROLES: Final = (("regulator", "Health Regulator", Role.REGULATOR),
                       ("insurer", "Insurer", Role.INSURER))  # fmt: skip
RESTART_DELAY_FIRST: Final = 1.0
RESTART_DELAY_MAX: Final = 60.0
"""A node that dies is started again after 1 s, then 2, 4, … up to 60 s while it keeps dying."""
STABLE_AFTER: Final = 60.0
"""Seconds a restarted node must stay up before its next death counts as a first one again."""
RESTART_HEALTH_TIMEOUT: Final = 90.0
"""A restarted node that does not answer its health check in this time is killed and counted as
dead (it would otherwise hold its port and never serve)."""

Reporter = Callable[[str], None]


class NetworkError(NodeError, RuntimeError):
    """The local network cannot be brought up or down."""

    code = "network_error"


class ChainStateLostNetworkError(NetworkError):
    """The dev chain no longer holds what this data directory recorded."""

    code = "chain_state_lost"


class NetworkRunningError(ConflictError):
    """``up`` is already running on this data directory."""

    code = "network_running"


# ------------------------------------------------------------------------------------------------
# Layout and the network file


@dataclass(frozen=True)
class NetworkLayout:
    """Paths of a network data directory (always absolute)."""

    data_dir: Path

    @classmethod
    def of(cls, data_dir: Path) -> NetworkLayout:
        """Layout of ``data_dir`` (resolved)."""
        return cls(data_dir.expanduser().resolve())

    @property
    def network_file(self) -> Path:
        """``network.json``."""
        return self.data_dir / "network.json"

    @property
    def deployment_file(self) -> Path:
        """``deployment.json``."""
        return deployment_path(self.data_dir)

    @property
    def supervisor_pid(self) -> Path:
        """Pid file of the running ``up``."""
        return self.data_dir / "up.pid"

    @property
    def chain(self) -> ChainPaths:
        """The dev chain's files."""
        return ChainPaths(self.data_dir)

    def node_dir(self, name: str) -> Path:
        """Data directory of hospital node ``name``."""
        return self.data_dir / "nodes" / name

    def member_dir(self, name: str) -> Path:
        """Folder of non-hospital member ``name`` (its keystore)."""
        return self.data_dir / "members" / name

    def holds_network(self) -> bool:
        """Whether ``up`` has ever run here: its network file, its pid file, the dev chain's
        folder or the nodes' folder (``up`` killed early has not written all of them)."""
        return any(
            path.exists()
            for path in (
                self.network_file,
                self.supervisor_pid,
                self.chain.folder,
                self.data_dir / "nodes",
            )
        )

    def node_pid_files(self) -> list[Path]:
        """Pid files of every node folder present."""
        nodes = self.data_dir / "nodes"
        if not nodes.is_dir():
            return []
        return sorted(folder / NODE_PID_FILE for folder in nodes.iterdir() if folder.is_dir())


def hospital_name(index: int) -> str:
    """Folder and node name of hospital ``index`` (1-based)."""
    return f"hospital-{index}"


def read_network_file(path: Path) -> dict[str, Any] | None:
    """The recorded network description, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != NETWORK_FORMAT:
        return None
    return document


def write_private_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` atomically with mode 0600 (created private, never world-readable)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


# ------------------------------------------------------------------------------------------------
# Identities and nodes


@dataclass
class Identity:
    """One consortium member of the local network and its keystore."""

    name: str
    display_name: str
    role: Role
    keystore: Keystore

    @property
    def address(self) -> str:
        """EIP-55 address."""
        return self.keystore.address

    @property
    def account(self) -> LocalAccount:
        """Signer for its transactions."""
        return self.keystore.account()


@dataclass
class NodeSpec:
    """A hospital node of the network."""

    identity: Identity
    port: int
    host: str
    data_dir: Path
    api_keys: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Node name (its folder name)."""
        return self.identity.name

    @property
    def url(self) -> str:
        """Base URL of its HTTP API."""
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        """Its ``node.toml``."""
        return self.data_dir / "node.toml"

    @property
    def log_file(self) -> Path:
        """Where its process writes."""
        return self.data_dir / "node.log"

    @property
    def pid_file(self) -> Path:
        """Pid file written by ``node run``."""
        return self.data_dir / NODE_PID_FILE


def _load_or_create_identity(
    folder: Path, name: str, display_name: str, role: Role
) -> tuple[Identity, bool]:
    path = folder / "keystore.json"
    if path.exists():
        return Identity(name, display_name, role, Keystore.load(path, DEV_PASSPHRASE)), False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    keystore = Keystore.create(path, DEV_PASSPHRASE, scrypt_n=DEV_SCRYPT_N)
    return Identity(name, display_name, role, keystore), True


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


# ------------------------------------------------------------------------------------------------
# The network


@dataclass
class LocalNetwork:
    """Bring a dev consortium up in ``data_dir`` (see the module docstring)."""

    data_dir: Path
    hospitals: int | None = None
    base_port: int | None = None
    chain_port: int | None = None
    host: str = DEFAULT_HOST
    block_time: float = DEFAULT_BLOCK_TIME
    report: Reporter = field(default=lambda _line: None)
    layout: NetworkLayout = field(init=False)
    nodes: list[NodeSpec] = field(default_factory=list, init=False)
    members: list[Identity] = field(default_factory=list, init=False)
    deployment: Deployment | None = field(default=None, init=False)
    rpc_url: str = field(default="", init=False)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _watch: dict[str, NodeWatch] = field(default_factory=dict, init=False)
    _node_env: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.layout = NetworkLayout.of(self.data_dir)

    # -- configuration -----------------------------------------------------------------------

    def _resolve_settings(self) -> tuple[int, int, int, dict[str, Any] | None]:
        """(hospitals, base port, chain port, recorded network file) for this run."""
        recorded = read_network_file(self.layout.network_file)
        existing = len(recorded["nodes"]) if recorded else self._hospital_folders()
        hospitals = (
            self.hospitals if self.hospitals is not None else (existing or DEFAULT_HOSPITALS)
        )
        if not 1 <= hospitals <= MAX_HOSPITALS:
            raise InputError(f"--hospitals must be between 1 and {MAX_HOSPITALS}")
        if hospitals < existing:
            raise InputError(
                f"this network has {existing} hospitals; it cannot shrink to {hospitals} "
                "(members stay on chain). Run `up` without --hospitals."
            )
        base_port = self.base_port or (recorded or {}).get("base_port") or DEFAULT_BASE_PORT
        chain_port = self.chain_port or (recorded or {}).get("chain_port") or DEFAULT_CHAIN_PORT
        if not 1024 <= int(base_port) <= 65535 - hospitals:
            raise InputError(f"base port {base_port} leaves no room for {hospitals} nodes")
        return hospitals, int(base_port), int(chain_port), recorded

    def _hospital_folders(self) -> int:
        count = 0
        while (self.layout.node_dir(hospital_name(count + 1)) / "keystore.json").exists():
            count += 1
        return count

    # -- prepare ---------------------------------------------------------------------------------

    def prepare(self, *, reset_chain: bool = False) -> None:
        """Everything before the node processes start (idempotent; see the module docstring)."""
        hospitals, base_port, chain_port, recorded = self._resolve_settings()
        self._stop_leftover_nodes()
        self._check_ports(hospitals, base_port, chain_port)
        self.layout.data_dir.mkdir(parents=True, exist_ok=True)
        self._start_chain(chain_port)
        rpc = JsonRpc(self.rpc_url, timeout=30.0)
        self.deployment = self._ensure_deployment(rpc, reset_chain)
        chain = RpcChain(rpc, self.deployment)
        self._load_identities(hospitals, base_port, recorded)
        self._fund(rpc)
        self._admit(chain)
        for node in self.nodes:
            self._write_node_config(node)
        self._prepare_node_data(recorded, reset_chain)
        self.write_network_file(base_port, chain_port)

    def _stop_leftover_nodes(self) -> None:
        """Stop this data directory's node processes that an ``up`` killed outright left running
        (only one ``up`` runs per data directory, so no live ``up`` owns them): they hold the
        ports this run needs."""
        for pid_file in self.layout.node_pid_files():
            pid = stop_recorded(pid_file)
            if pid is not None:
                self.report(
                    f"{pid_file.parent.name} was left running (pid {pid}) by an `up` that was "
                    "killed; stopped it"
                )

    def _check_ports(self, hospitals: int, base_port: int, chain_port: int) -> None:
        """Refuse, before anything starts, ports someone else holds, saying who probably holds
        them and how to choose others."""
        busy = [
            port for port in range(base_port, base_port + hospitals) if port_in_use(self.host, port)
        ]
        if busy:
            ours = [port for port in busy if _healthy(f"http://{self.host}:{port}")]
            holder = (
                "an ArchiveChain node answers there: probably another `archivechain up` with "
                f"another --data-dir; stop it with `{cli_program()} down --data-dir <its dir>`, or"
                if ours
                else "by another program;"
            )
            span = f"; the nodes use P to P+{hospitals - 1}" if hospitals > 1 else ""
            raise UnavailableError(
                f"node port(s) {', '.join(map(str, busy))} on {self.host} already in use ({holder} "
                f"choose other node ports: --base-port P (make up BASE_PORT=P){span})"
            )
        if devchain_status(self.layout.data_dir) is None and port_in_use(self.host, chain_port):
            holder = (
                "a JSON-RPC chain answers there: probably the dev chain of another "
                "`archivechain up` or `archivechain chain start` with another --data-dir"
                if rpc_answers(f"http://{self.host}:{chain_port}")
                else "by another program"
            )
            raise UnavailableError(
                f"chain port {chain_port} on {self.host} already in use ({holder}); choose "
                f"another: --chain-port C (make up CHAIN_PORT=C)"
            )

    def _start_chain(self, port: int) -> None:
        running = devchain_status(self.layout.data_dir)
        process, _started = start_devchain(
            self.layout.data_dir, port=port, host=self.host, block_time=self.block_time
        )
        self.rpc_url = process.rpc_url
        if running is None:
            self.report(f"dev chain started at {self.rpc_url} (state {self.layout.chain.state})")
        else:
            self.report(f"dev chain already running at {self.rpc_url} (pid {running.pid})")

    def _ensure_deployment(self, rpc: JsonRpc, reset_chain: bool) -> Deployment:
        path = self.layout.deployment_file
        if path.exists():
            recorded = Deployment.load(path)
            lost = not rpc.code_at(recorded.registry.address) or not rpc.code_at(
                recorded.notary.address
            )
            if lost and not reset_chain:
                raise ChainStateLostNetworkError(
                    f"the dev chain at {self.rpc_url} lost its state: {path.name} records "
                    f"ConsortiumRegistry at {recorded.registry.address} but the chain holds no code "
                    f"there (was {self.layout.chain.state} deleted or anvil killed before saving?). "
                    f"Node data is intact. Recover with: {cli_program()} up --reset-chain "
                    f"--data-dir {self.layout.data_dir}"
                )
            if lost:
                kept = path.with_name(f"deployment.lost-{int(time.time())}.json")
                os.replace(path, kept)
                self.report(f"chain state lost: redeploying (old deployment kept as {kept.name})")
                outcome = ensure_deployed(self.rpc_url, self.layout.data_dir)
                fresh = outcome.deployment
                same = (fresh.registry.address, fresh.notary.address) == (
                    recorded.registry.address,
                    recorded.notary.address,
                )
                self.report(
                    "redeployed at the same addresses: earlier proofs will verify once re-anchored"
                    if same
                    else "redeployed at NEW addresses: proofs issued before cannot verify any more"
                )
                return fresh
            verify_deployment(rpc, recorded)
            self.report(f"contracts verified (registry {recorded.registry.address})")
            return recorded
        outcome = ensure_deployed(self.rpc_url, self.layout.data_dir)
        deployed = outcome.deployment
        revocations = (
            f", revocations {deployed.revocations.address}" if deployed.revocations else ""
        )
        self.report(
            f"contracts deployed: registry {deployed.registry.address}, "
            f"notary {deployed.notary.address}{revocations}"
        )
        return outcome.deployment

    def _load_identities(
        self, hospitals: int, base_port: int, recorded: dict[str, Any] | None
    ) -> None:
        recorded_keys = {
            str(entry.get("name")): dict(entry.get("api_keys") or {})
            for entry in (recorded or {}).get("nodes", [])
        }
        created: list[str] = []
        self.nodes = []
        for index in range(1, hospitals + 1):
            name = hospital_name(index)
            identity, new = _load_or_create_identity(
                self.layout.node_dir(name), name, f"Hospital {index}", Role.HOSPITAL
            )
            if new:
                created.append(name)
            self.nodes.append(
                NodeSpec(
                    identity=identity,
                    port=base_port + index - 1,
                    host=self.host,
                    data_dir=self.layout.node_dir(name),
                    api_keys=recorded_keys.get(name, {}),
                )
            )
        self.members = []
        for name, display, role in MEMBER_ROLES:
            identity, new = _load_or_create_identity(
                self.layout.member_dir(name), name, display, role
            )
            if new:
                created.append(name)
            self.members.append(identity)
        if created:
            self.report(f"identities created: {', '.join(created)}")
        else:
            self.report("identities reused")

    def _fund(self, rpc: JsonRpc) -> None:
        """Top up every identity below ``MIN_BALANCE_WEI`` from the deployer (dev chain only)."""
        deployer = deployer_account(rpc.chain_id())
        needy = [
            identity.address
            for identity in [node.identity for node in self.nodes] + self.members
            if int(rpc.request("eth_getBalance", [identity.address, "latest"]), 16)
            < MIN_BALANCE_WEI
        ]
        if not needy:
            return
        nonce = rpc.nonce(str(deployer.address), "pending")
        fees = rpc.fee_fields()
        hashes = []
        for offset, address in enumerate(needy):
            signed = Account.sign_transaction(
                {
                    "chainId": rpc.chain_id(),
                    "nonce": nonce + offset,
                    "to": address,
                    "value": FUNDING_WEI,
                    "gas": 21_000,
                    **fees,
                },
                deployer.key,
            )
            hashes.append(rpc.send_raw(bytes(signed.raw_transaction)))
        for tx_hash in hashes:
            receipt = wait_for_receipt(rpc, tx_hash, timeout=60.0)
            if int(receipt["status"], 16) != 1:
                raise NetworkError(f"funding transaction {tx_hash} failed")
        self.report(f"funded {len(needy)} account(s)")

    def _admit(self, chain: RpcChain) -> None:
        """Bootstrap the first hospital; admit everyone else through governance."""
        first, *others = self.nodes
        deployer = deployer_account(chain.chain_id())
        seed = HospitalSeed(
            first.identity.address,
            first.identity.display_name,
            first.identity.keystore.encryption_public_key,
        )
        if bootstrap_hospitals(chain, deployer, [seed], finish=True):
            self.report(f"{first.name} bootstrapped by the deployer; bootstrap finished")
        hospitals = [node.identity for node in self.nodes]
        admitted: list[str] = []
        for identity in [node.identity for node in others] + self.members:
            outcome = admit_member(
                chain,
                first.identity.account,
                [h.account for h in hospitals[1:]],
                address=identity.address,
                role=identity.role,
                name=identity.display_name,
                public_key=identity.keystore.encryption_public_key,
            )
            if not outcome.already_member:
                admitted.append(f"{identity.name} (proposal {outcome.proposal_id})")
        if admitted:
            self.report(f"admitted through governance: {', '.join(admitted)}")

    def _write_node_config(self, node: NodeSpec) -> None:
        assert self.deployment is not None
        lines = [
            "# Generated by `archivechain up` (dev only) and rewritten on every `up`.",
            'mode = "dev"',
            f"name = {_toml_string(node.name)}",
            f"data_dir = {_toml_string(str(node.data_dir))}",
            f"rpc_url = {_toml_string(self.rpc_url)}",
            f"deployment_file = {_toml_string(str(self.layout.deployment_file))}",
            f"host = {_toml_string(node.host)}",
            f"port = {node.port}",
            "",
            "[peers]  # the other hospitals' nodes, for transfers and shares",
            *(
                f"{_toml_string(peer.identity.address)} = {_toml_string(peer.url)}"
                for peer in self.nodes
                if peer is not node
            ),
        ]
        node.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def node_settings(self, node: NodeSpec) -> NodeSettings:
        """The settings a node process reads from its ``node.toml`` (environment ignored)."""
        assert self.deployment is not None
        return NodeSettings(
            mode="dev",
            name=node.name,
            data_dir=node.data_dir,
            rpc_url=self.rpc_url,
            deployment_file=self.layout.deployment_file,
            host=node.host,
            port=node.port,
            peers={peer.identity.address: peer.url for peer in self.nodes if peer is not node},
        )

    def _prepare_node_data(self, recorded: dict[str, Any] | None, reset_chain: bool) -> None:
        """Migrate each node's database, check it against the chain, issue missing API keys."""
        from node.runtime import NodeRuntime

        lost: list[str] = []
        for node in self.nodes:
            runtime = NodeRuntime.open(self.node_settings(node), create_keystore=False)
            try:
                runtime.start(scheduler=False)
                if reset_chain:
                    replayed = runtime.worker.replay_lost()
                    if replayed:
                        self.report(
                            f"{node.name}: {replayed} lost transaction(s) queued to re-send"
                        )
                    self._report_lost_regulator_holds(runtime, node)
                try:
                    runtime.worker.reconcile()
                except ChainStateLostError as exc:
                    lost.append(f"{node.name}: {exc}")
                issued = self._ensure_api_keys(runtime, node)
                if issued:
                    self.report(f"{node.name}: API keys issued for {', '.join(issued)}")
            finally:
                runtime.close()
        if lost:
            raise ChainStateLostNetworkError(
                "the dev chain lost transactions these nodes recorded as confirmed ("
                + "; ".join(lost)
                + f"). Recover with: {cli_program()} up --reset-chain --data-dir "
                + str(self.layout.data_dir)
            )

    def _report_lost_regulator_holds(self, runtime: NodeRuntime, node: NodeSpec) -> None:
        """Name the archives whose regulator hold the reset chain no longer has. A node re-sends
        only its own transactions: a regulator's ``placeHold`` is signed with the regulator's
        key, so only the regulator can place it again (until then those archives' bundles fail
        ``custody_mismatch``, ``on_hold``)."""
        from sqlalchemy import select

        from node.models import NOT_HELD, Archive

        with runtime.db.session() as session:
            held = list(
                session.scalars(
                    select(Archive.id)
                    .where(
                        Archive.hold_by_regulator.is_(True),
                        Archive.custodian == runtime.hospital,
                        Archive.state.not_in([s.value for s in NOT_HELD]),
                    )
                    .order_by(Archive.id)
                )
            )
        lost = [archive_id for archive_id in held if not runtime.chain.custody(archive_id).on_hold]
        if not lost:
            return
        shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        self.report(
            f"{node.name}: {len(lost)} archive(s) were on a regulator hold that the reset chain "
            f"no longer has: {shown}. Only the regulator can place it again, once the archive is "
            f"registered again: ARCHIVECHAIN_MEMBER_PASSPHRASE={DEV_PASSPHRASE} "
            f"{cli_program()} regulator hold ID --keystore "
            f"{shlex.quote(str(self.layout.member_dir('regulator') / 'keystore.json'))} "
            f"--rpc {self.rpc_url} "
            f"--deployment {shlex.quote(str(self.layout.deployment_file))} --reason TEXT "
            "(with the key of the regulator that placed the hold)"
        )

    def _ensure_api_keys(self, runtime: NodeRuntime, node: NodeSpec) -> list[str]:
        """Reuse each recorded key that still authenticates with its role; issue the others."""
        from node.errors import AuthenticationError

        issued: list[str] = []
        for role in API_KEY_ROLES:
            secret = node.api_keys.get(role.value)
            if secret:
                try:
                    if runtime.keys.authenticate(secret).role is role:
                        continue
                except AuthenticationError:
                    pass
            department = CLINICIAN_DEPARTMENT if role is ApiRole.CLINICIAN else None
            new = runtime.keys.issue(role, f"network-{role.value}", department)
            node.api_keys[role.value] = new.secret
            issued.append(role.value)
        return issued

    def write_network_file(self, base_port: int, chain_port: int) -> Path:
        """Write ``network.json`` (mode 0600)."""
        assert self.deployment is not None
        document: dict[str, Any] = {
            "format": NETWORK_FORMAT,
            "note": NETWORK_NOTE,
            "mode": "dev",
            "updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data_dir": str(self.layout.data_dir),
            "rpc_url": self.rpc_url,
            "chain_port": chain_port,
            "base_port": base_port,
            "chain_id": self.deployment.chain_id,
            "deployment_file": str(self.layout.deployment_file),
            "contracts": {
                "ConsortiumRegistry": self.deployment.registry.address,
                "ArchiveNotary": self.deployment.notary.address,
                **(
                    {"AttestationRevocations": self.deployment.revocations.address}
                    if self.deployment.revocations is not None
                    else {}
                ),
            },
            "nodes": [
                {
                    "name": node.name,
                    "display_name": node.identity.display_name,
                    "address": node.identity.address,
                    "url": node.url,
                    "port": node.port,
                    "config": str(node.config_file),
                    "data_dir": str(node.data_dir),
                    "log": str(node.log_file),
                    "api_keys": {role.value: node.api_keys[role.value] for role in API_KEY_ROLES},
                    "clinician_department": CLINICIAN_DEPARTMENT,
                }
                for node in self.nodes
            ],
            "members": {
                member.name: {
                    "name": member.display_name,
                    "role": member.role.name,
                    "address": member.address,
                    "keystore": str(member.keystore.path),
                }
                for member in self.members
            },
        }
        write_private_json(self.layout.network_file, document)
        return self.layout.network_file

    # -- node processes --------------------------------------------------------------------------

    def start_nodes(self, *, timeout: float = 90.0) -> None:
        """Start one ``archivechain node run`` per hospital and wait until all are healthy."""
        self._node_env = {
            key: value
            for key, value in os.environ.items()
            if not (
                key.startswith("ARCHIVECHAIN_")
                and key.removeprefix("ARCHIVECHAIN_") in MANAGED_SETTINGS
            )
        }
        for node in self.nodes:
            if running_pid(node.pid_file) is not None:
                raise NetworkError(f"{node.name} is already running ({node.pid_file})")
            self._spawn(node)
        deadline = time.monotonic() + timeout
        waiting = list(self.nodes)
        while waiting:
            for node in list(waiting):
                process = self._processes[node.name]
                if process.poll() is not None:
                    raise NetworkError(
                        f"{node.name} exited with code {process.returncode} while starting: "
                        f"{_last_line(node.log_file)} (log: {node.log_file})"
                    )
                if _healthy(node.url):
                    waiting.remove(node)
                    self._watch[node.name] = NodeWatch(node, healthy_since=time.monotonic())
                    self.report(f"{node.name} ready at {node.url}")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(node.name for node in waiting)
                raise NetworkError(f"node(s) {names} did not become healthy in {timeout:.0f} s")
            if waiting:
                time.sleep(0.2)

    def _spawn(self, node: NodeSpec) -> subprocess.Popen[bytes]:
        """Start ``node``'s process (output appended to its log) and record it."""
        with node.log_file.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "archivechain",
                    "node",
                    "run",
                    "--config",
                    str(node.config_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._node_env,
                start_new_session=True,  # Ctrl-C reaches `up`, which stops nodes in order
            )
        self._processes[node.name] = process
        return process

    # -- supervision -----------------------------------------------------------------------------

    def supervise(self, should_stop: Callable[[], bool], *, poll: float = 0.5) -> None:
        """Watch the node processes until ``should_stop()``: each one that dies is reported and
        started again (see ``check_nodes``). Returns without starting anything once asked to stop,
        so a stop never races a restart."""
        while not should_stop():
            self.check_nodes()
            if not should_stop():
                time.sleep(poll)

    def check_nodes(self, now: float | None = None) -> None:
        """One round of supervision: report and schedule a restart for every node process that
        died, start those whose back-off elapsed, and mark restarted ones healthy once they answer.

        A death (a non-zero exit, or a signal such as SIGKILL or SIGSEGV) is reported on stderr
        with the node, its exit code or signal and the last line of its log, every time. Restarts
        wait 1 s, 2 s, 4 s, … at most ``RESTART_DELAY_MAX``; the delay starts again from 1 s once
        a node stayed up ``STABLE_AFTER`` seconds. A node stopped on purpose (it exited 0 after
        SIGTERM or SIGINT, or one of those killed it) is reported and left stopped: whoever stopped
        it may be running it themselves.
        """
        now = time.monotonic() if now is None else now
        for name, watch in self._watch.items():
            process = self._processes.get(name)
            if watch.left_stopped:
                continue
            if watch.restart_at is not None:  # down, waiting for its back-off
                if now >= watch.restart_at:
                    watch.restart_at = None
                    watch.healthy_since = None
                    watch.started_at = now
                    watch.restarts += 1
                    started = self._spawn(watch.node)
                    self.report(
                        f"{name}: restart {watch.restarts} (pid {started.pid}), "
                        f"waiting for {watch.node.url}{HEALTH_PATH}"
                    )
                continue
            if process is None:
                continue
            code = process.poll()
            if code is not None and _stopped_on_purpose(code):
                watch.left_stopped = True
                self.report(
                    f"{name} (pid {process.pid}) {_describe_exit(code)}: someone stopped it on "
                    "purpose, so it stays stopped (`up` restarts nodes that crash; `down` then "
                    "`up` runs it again)"
                )
            elif code is not None:
                self._node_died(watch, process.pid, _describe_exit(code), now)
            elif watch.healthy_since is None:  # restarted, not yet answering
                if _healthy(watch.node.url):
                    watch.healthy_since = now
                    self.report(f"{name} is back: healthy at {watch.node.url} (pid {process.pid})")
                elif now - watch.started_at > RESTART_HEALTH_TIMEOUT:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait(10)
                    self._node_died(
                        watch,
                        process.pid,
                        f"did not answer {HEALTH_PATH} within {RESTART_HEALTH_TIMEOUT:.0f} s of "
                        "its restart and was killed",
                        now,
                    )
            elif watch.crashes and now - watch.healthy_since >= STABLE_AFTER:
                watch.crashes = 0  # up long enough: the next death starts the back-off again

    def _node_died(self, watch: NodeWatch, pid: int, how: str, now: float) -> None:
        watch.crashes += 1
        delay = restart_delay(watch.crashes)
        watch.restart_at = now + delay
        last = _last_line(watch.node.log_file)[:300] or "(empty)"
        in_a_row = f", {watch.crashes} times in a row" if watch.crashes > 1 else ""
        self.report(
            f"!! NODE DOWN: {watch.node.name} (pid {pid}) {how}{in_a_row}; last log line: {last} "
            f"-- restarting it in {delay:g} s (log: {watch.node.log_file})"
        )

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the node processes (in parallel), then the chain (its state is dumped)."""
        running = {
            name: process for name, process in self._processes.items() if process.poll() is None
        }  # the dead ones were reported when they died
        for process in running.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for name, process in running.items():
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.report(f"{name} did not stop in {timeout:.0f} s; killing it")
                process.kill()
                process.wait(5)
                continue
            if code != 0:
                self.report(
                    f"{name} exited with code {code} (see {self.layout.node_dir(name)}/node.log)"
                )
        self._processes.clear()
        self._watch.clear()
        for pid_file in self.layout.node_pid_files():  # nodes started outside this process
            stop_recorded(pid_file, timeout)
        if stop_devchain(self.layout.data_dir):
            self.report("dev chain stopped; state saved")


@dataclass
class NodeWatch:
    """What ``up`` knows of one supervised node process."""

    node: NodeSpec
    healthy_since: float | None = None
    """When it last answered its health check after a start (None while starting or down)."""
    started_at: float = 0.0
    crashes: int = 0
    """Deaths since it last stayed up ``STABLE_AFTER`` seconds (drives the back-off)."""
    restarts: int = 0
    restart_at: float | None = None
    """When it is started again (set while it is down)."""
    left_stopped: bool = False
    """It was stopped on purpose: no longer watched."""


def restart_delay(crashes: int) -> float:
    """Back-off before restarting a node that died ``crashes`` times in a row (1, 2, 4 … 60 s)."""
    doublings = min(max(crashes - 1, 0), 16)  # past 60 s anyway; keeps the power small
    return min(RESTART_DELAY_FIRST * 2.0**doublings, RESTART_DELAY_MAX)


def _describe_exit(code: int) -> str:
    """A process's return code in words: the signal that killed it, or its exit code."""
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 0:
        return "exited cleanly (code 0)"
    return f"exited with code {code}"


def _stopped_on_purpose(code: int) -> bool:
    """Whether a node's return code means someone asked it to stop: a clean exit (the node exits
    0 on SIGTERM or SIGINT), or one of those signals arriving before its handlers were set."""
    return code in (0, -signal.SIGTERM, -signal.SIGINT)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=1.0) as response:  # noqa: S310
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------------
# down


@dataclass(frozen=True)
class DownReport:
    """What ``down`` stopped."""

    supervisor: int | None
    nodes: tuple[int, ...]
    chain: bool


def down(data_dir: Path, *, timeout: float = 60.0) -> DownReport:
    """Stop the network of ``data_dir``: the ``up`` supervisor (which stops its nodes and the
    chain), then anything left behind (a supervisor killed with SIGKILL leaves its nodes)."""
    layout = NetworkLayout.of(data_dir)
    supervisor = running_pid(layout.supervisor_pid)
    if supervisor is not None and not terminate(supervisor, timeout):
        wait_gone(supervisor, 5.0)
    nodes = tuple(
        pid for pid in (stop_recorded(path) for path in layout.node_pid_files()) if pid is not None
    )
    chain = stop_devchain(layout.data_dir)
    with contextlib.suppress(FileNotFoundError):
        if supervisor is not None and not pid_alive(supervisor):
            layout.supervisor_pid.unlink()
    return DownReport(supervisor, nodes, chain)


def recorded_network(data_dir: Path) -> dict[str, Any] | None:
    """``network.json`` of ``data_dir`` (None if absent)."""
    return read_network_file(NetworkLayout.of(data_dir).network_file)


def summary_lines(network: LocalNetwork) -> Sequence[str]:
    """The summary ``up`` prints once everything runs, ending with what to do next."""
    assert network.deployment is not None
    network_file = _shown(network.layout.network_file)
    data_dir = _shown(network.layout.data_dir)
    first = network.nodes[0]
    lines = [
        f"ArchiveChain dev network up ({len(network.nodes)} hospitals)",
        f"  chain     {network.rpc_url} (chain id {network.deployment.chain_id})",
        f"  registry  {network.deployment.registry.address}",
        f"  notary    {network.deployment.notary.address}",
    ]
    if network.deployment.revocations is not None:
        lines.append(f"  revocations {network.deployment.revocations.address}")
    lines += [f"  {node.name:<11} {node.url}  {node.identity.address}" for node in network.nodes]
    lines += [f"  {member.name:<11} {member.address}" for member in network.members]
    lines += [
        f"  API keys in {network_file} (dev only, mode 0600)",
        "Next, in another terminal:",
        '  try it     README.md, section "Five-minute walkthrough" (upload, archive, prove, verify)',
        f"  API docs   {first.url}/docs (Swagger UI), {first.url}/openapi.json",
        f"  API keys   jq '.nodes[0].api_keys' {network_file}",
        f"  logs       {data_dir}/nodes/<name>/node.log; a node that crashes is reported here "
        "and restarted",
        f"Ctrl-C here, or `{_down_command(data_dir)}` in another terminal, stops everything.",
    ]
    return lines


def _down_command(data_dir: str) -> str:
    """How to stop the network from another shell (``make down`` for the Makefile's default)."""
    command = f"{cli_program()} down --data-dir {data_dir}"
    return f"make down` or `{command}" if data_dir == "data" else command


def cli_program() -> str:
    """``archivechain`` as the user can run it from the working directory, for the commands that
    messages print: the program this process was started as (``.venv/bin/archivechain`` for
    ``make up``, whose venv is not activated), its bare name when that is what ``PATH`` finds,
    ``<python> -m archivechain`` when started so, and ``archivechain`` when none of these is
    known."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started is None or not started.is_file():
        return "archivechain"
    if started.name == "__main__.py":
        return f"{_runnable(Path(sys.executable))} -m archivechain"
    found = shutil.which(started.name)
    with contextlib.suppress(OSError):
        if found is not None and Path(found).samefile(started):
            return started.name
    return _runnable(started)


def _runnable(path: Path) -> str:
    """``path`` as a shell runs that very file: shown as below, with ``./`` if it has no folder
    (a bare name would be looked up on ``PATH``)."""
    shown = _shown(path)
    return shown if "/" in shown else f"./{shown}"


def _shown(path: Path) -> str:
    """``path`` as a user would type it here: relative below the working directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = [
    "API_KEY_ROLES",
    "DEFAULT_BASE_PORT",
    "DEFAULT_CHAIN_PORT",
    "DEFAULT_HOSPITALS",
    "ChainStateLostNetworkError",
    "DownReport",
    "LocalNetwork",
    "NetworkError",
    "NetworkLayout",
    "NetworkRunningError",
    "NodeWatch",
    "cli_program",
    "down",
    "read_network_file",
    "recorded_network",
    "restart_delay",
    "summary_lines",
    "write_private_json",
]
