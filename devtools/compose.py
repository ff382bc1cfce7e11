"""The one-shot job of ``docker-compose.yml``: ``archivechain up``'s preparation against a chain it
does not run (ganache in its own container), with each hospital on its own PostgreSQL database and
the IPFS blob store.

``ComposeNetwork`` is ``LocalNetwork`` with three differences: the chain is external (``rpc_url``,
never started or stopped here), each node's ``node.toml`` also names its database
(``database_url_template`` with ``{name}`` → ``hospital_1``…, created on the server when missing)
and its blob store (each hospital its own IPFS daemon: ``ipfs_apis``, one per hospital), and the
node processes run in their own containers (nothing is started or supervised here). Everything else — deployment, identities, funding, bootstrap and governance
admissions, API keys, ``network.json`` — is ``up``'s code, so ``docker compose up`` gives the same
consortium as ``make up``, and running the job again resumes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from devtools.network import DEFAULT_HOSPITALS, LocalNetwork, NodeSpec, hospital_name
from node.config import NodeSettings, ipfs_endpoint
from node.errors import InputError

__all__ = ["ComposeNetwork", "database_name"]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def database_name(node_name: str) -> str:
    """``hospital-1`` → ``hospital_1`` (a PostgreSQL identifier without quoting)."""
    return node_name.replace("-", "_")


@dataclass
class ComposeNetwork(LocalNetwork):
    """``LocalNetwork.prepare`` on an external chain, nodes on PostgreSQL and (optionally) IPFS."""

    external_rpc: str = ""
    database_url_template: str | None = None
    ipfs_apis: tuple[str, ...] = ()
    """One IPFS API multiaddr per hospital, in order (empty: local blob stores). Never one daemon
    for several nodes: a store owns its daemon's pins, so a former custodian unpinning a
    transferred record's ciphertext (identical bytes, the same CID) would remove the recipient's
    copy too."""

    def _start_chain(self, port: int) -> None:
        if not self.external_rpc:
            raise InputError("the compose network needs the chain's RPC URL")
        self.rpc_url = self.external_rpc
        self.report(f"chain at {self.rpc_url} (external)")

    def _stop_leftover_nodes(self) -> None:
        """The nodes run in their own containers; nothing to stop here."""

    def _check_ports(self, hospitals: int, base_port: int, chain_port: int) -> None:
        """Ports are the containers' business (checked when they bind)."""

    def check_ipfs_apis(self) -> None:
        """Refuse anything but one distinct IPFS daemon per hospital (compared by host and port,
        ``node.config.ipfs_endpoint``): a daemon shared by nodes loses a transferred record's
        blob when its former custodian unpins it."""
        if not self.ipfs_apis:
            return
        count = self.hospitals or DEFAULT_HOSPITALS
        distinct = len({ipfs_endpoint(api) for api in self.ipfs_apis})
        if len(self.ipfs_apis) != count or distinct != count:
            raise InputError(
                f"{count} hospitals need {count} different IPFS daemons (one --ipfs-api each), "
                f"got {len(self.ipfs_apis)} ({distinct} different): a daemon "
                "shared by nodes loses a transferred record's blob when its former custodian "
                "unpins it",
                code="shared_ipfs_daemon",
            )

    def ipfs_api(self, node_name: str) -> str | None:
        """The node's own IPFS daemon, the Nth for hospital N (None: a local blob store;
        ``prepare`` has checked that there is one per hospital)."""
        names = (hospital_name(index) for index in range(1, len(self.ipfs_apis) + 1))
        return dict(zip(names, self.ipfs_apis, strict=True)).get(node_name)

    def database_url(self, node_name: str) -> str | None:
        if self.database_url_template is None:
            return None
        return self.database_url_template.format(name=database_name(node_name))

    def ensure_databases(self) -> list[str]:
        """Create each hospital's PostgreSQL database if missing; the names created."""
        created: list[str] = []
        count = self.hospitals or DEFAULT_HOSPITALS
        for index in range(1, count + 1):
            url = self.database_url(hospital_name(index))
            if url is None:
                continue
            parsed = make_url(url)
            admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    exists = conn.execute(
                        text("SELECT 1 FROM pg_database WHERE datname = :name"),
                        {"name": parsed.database},
                    ).scalar_one_or_none()
                    if not exists:
                        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
                        created.append(str(parsed.database))
            finally:
                admin.dispose()
        return created

    def prepare(self, *, reset_chain: bool = False) -> None:
        self.check_ipfs_apis()  # refused before anything is created
        created = self.ensure_databases()
        if created:
            self.report(f"databases created: {', '.join(created)}")
        super().prepare(reset_chain=reset_chain)

    def node_settings(self, node: NodeSpec) -> NodeSettings:
        base = super().node_settings(node)
        update: dict[str, object] = {"database_url": self.database_url(node.name)}
        ipfs_api = self.ipfs_api(node.name)
        if ipfs_api:
            update |= {"blob_store": "ipfs", "ipfs_api": ipfs_api}
        return base.model_copy(update=update)

    def _write_node_config(self, node: NodeSpec) -> None:
        super()._write_node_config(node)
        extra = []
        url = self.database_url(node.name)
        if url is not None:
            extra.append(f"database_url = {_toml_string(url)}")
        ipfs_api = self.ipfs_api(node.name)
        if ipfs_api:
            extra += ['blob_store = "ipfs"', f"ipfs_api = {_toml_string(ipfs_api)}"]
        if extra:
            text_ = node.config_file.read_text(encoding="utf-8")
            head, peers = text_.split("\n[peers]", 1)
            node.config_file.write_text(
                head + "\n" + "\n".join(extra) + "\n\n[peers]" + peers, encoding="utf-8"
            )
