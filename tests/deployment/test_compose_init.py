"""``archivechain compose-init``, the one-shot job of docker-compose.yml, run for real against
ganache 7.9.2 (from node_modules, started as the compose file starts it) and PostgreSQL: contracts
deployed, members admitted through governance, one database per hospital created, node configs
that a node opens and serves with; a second run resumes instead of re-creating."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from anchoring.chain import Role, RpcChain
from anchoring.deployment import Deployment
from archivechain import main
from node.config import load_settings
from node.principal import Role as ApiRole
from node.runtime import NodeRuntime
from tests.contracts.test_ganache import running_ganache
from tests.support import postgres_url


@pytest.fixture
def compose_ganache() -> Iterator[str]:
    """ganache with the compose file's settings: the dev chain id (31337) and the dev mnemonic."""
    with running_ganache(31337) as url:
        yield url


@pytest.fixture
def database_prefix() -> Iterator[tuple[str, str]]:
    """(server URL, a unique database-name prefix); the databases made with it are dropped."""
    base = postgres_url()
    if base is None:
        pytest.skip("ARCHIVECHAIN_TEST_POSTGRES_URL is not set")
    prefix = f"ci_{secrets.token_hex(4)}"
    yield base, prefix
    admin = create_engine(make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "_%"}
        ).scalars()
        for name in list(names):
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_compose_init_prepares_the_consortium_on_an_external_chain(
    compose_ganache: str,
    database_prefix: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, prefix = database_prefix
    template = base.rsplit("/", 1)[0] + f"/{prefix}_{{name}}"
    data_dir = tmp_path / "consortium"
    args = ["compose-init", "--rpc", compose_ganache, "--data-dir", str(data_dir),
            "--hospitals", "2", "--database-url-template", template]  # fmt: skip

    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "compose consortium ready (2 hospitals)" in out
    assert f"databases created: {prefix}_hospital_1, {prefix}_hospital_2" in err
    assert "admitted through governance" in err

    network = json.loads((data_dir / "network.json").read_text())
    deployment = Deployment.load(data_dir / "deployment.json")
    on_chain = RpcChain(compose_ganache, deployment)
    assert [n["name"] for n in network["nodes"]] == ["hospital-1", "hospital-2"]
    for index, entry in enumerate(network["nodes"], start=1):
        assert on_chain.is_active(entry["address"], Role.HOSPITAL)
        settings = load_settings(Path(entry["config"]))
        assert settings.database_url == template.format(name=f"hospital_{index}")
        assert settings.rpc_url == compose_ganache
        runtime = NodeRuntime.open(settings)  # what the node container runs
        try:
            key = entry["api_keys"]["archivist"]
            assert runtime.keys.authenticate(key).role is ApiRole.ARCHIVIST  # keys in its own DB
            assert runtime.hospital == entry["address"]
        finally:
            runtime.close()
    assert on_chain.is_active(network["members"]["regulator"]["address"], Role.REGULATOR)

    # `docker compose down` then `up` runs the job again: everything is reused.
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "identities reused" in err
    assert "databases created" not in err
    assert "contracts verified" in err
    assert (
        json.loads((data_dir / "network.json").read_text())["nodes"][0]["api_keys"]
        == (network["nodes"][0]["api_keys"])
    )


@pytest.mark.parametrize(
    "apis",
    [
        ("/ip4/127.0.0.1/tcp/5001/http",),  # one daemon for three hospitals
        ("/ip4/127.0.0.1/tcp/5001/http",) * 3,
        ("/ip4/127.0.0.1/tcp/5001/http", "/ip4/127.0.0.1/tcp/5002/http"),
        # one daemon spelt two ways, and four daemons for three hospitals
        ("/ip4/127.0.0.1/tcp/5001/http", "http://localhost:5001", "/ip4/127.0.0.1/tcp/5003/http"),
        tuple(f"/ip4/127.0.0.1/tcp/500{n}/http" for n in range(1, 5)),
    ],
    ids=["one-for-all", "the-same-three-times", "two-for-three", "two-spellings", "four"],
)
def test_compose_init_refuses_an_ipfs_daemon_shared_by_hospitals(
    tmp_path: Path,
    database_prefix: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    apis: tuple[str, ...],
) -> None:
    """Each hospital needs its own IPFS daemon: on a shared one the former custodian's unpin of a
    transferred record (the same CID at both hospitals) deletes the recipient's copy. Refused
    with exit code 2 and one line before anything is made: no database, no node directory, and
    no chain is even contacted (the RPC URL here answers nothing)."""
    base, prefix = database_prefix
    template = (
        make_url(base).set(database=f"{prefix}_{{name}}").render_as_string(hide_password=False)
    )
    args = ["compose-init", "--rpc=http://127.0.0.1:9", "--data-dir", str(tmp_path / "c"),
            "--hospitals=3", f"--database-url-template={template}"]  # fmt: skip
    args += [f"--ipfs-api={api}" for api in apis]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "3 hospitals need 3 different IPFS daemons" in err
    admin = create_engine(make_url(base).set(database="postgres"))
    try:
        with admin.connect() as conn:
            made = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname LIKE :p"),
                {"p": prefix + "_%"},
            ).scalar_one()
    finally:
        admin.dispose()
    assert made == 0
    assert not (tmp_path / "c" / "nodes").exists()
