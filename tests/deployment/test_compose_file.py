"""docker-compose.yml and the Dockerfiles, checked for structure (no Docker engine runs in these
tests): the services and their order of start, one volume per hospital, the passphrase only from a
secret file, commands that the real CLI accepts, healthchecks, a non-root runtime without a
compiler, nothing resolved or compiled inside an image build. Building and running the images is
``make compose-test`` (scripts/compose_test.sh, run by .ci/run); docker-compose itself validates
the file here, and must be installed when ``ARCHIVECHAIN_REQUIRE_COMPOSE=1`` (set by .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from archivechain.compose import compose_init
from archivechain.node import node_group

ROOT = Path(__file__).resolve().parents[2]
HOSPITALS = ("hospital-1", "hospital-2", "hospital-3")
IPFS = ("ipfs-1", "ipfs-2", "ipfs-3")  # one daemon per hospital


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"chain", "postgres", *IPFS, "init", *HOSPITALS}
    assert services["chain"]["image"] == "archivechain-ganache:7.9.2"
    assert all("build" not in service for service in services.values())  # `make images` builds
    assert all(service["network_mode"] == "host" for service in services.values())
    infra = {name: {"condition": "service_healthy"} for name in ("chain", "postgres", *IPFS)}
    assert services["init"]["depends_on"] == infra
    for name in HOSPITALS:
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"},
            **infra,
        }
    assert services["init"]["restart"] == "no"


def test_every_hospital_has_its_own_volume_and_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = set()
    for index, name in enumerate(HOSPITALS, start=1):
        service = services[name]
        assert f"{name}:/consortium/nodes/{name}" in service["volumes"]
        assert f"{name}:/consortium/nodes/{name}" in services["init"]["volumes"]
        assert service["command"] == [
            "node",
            "run",
            "--config",
            f"/consortium/nodes/{name}/node.toml",
        ]
        ports.add(service["environment"]["ARCHIVECHAIN_PORT"])
        assert service["environment"]["ARCHIVECHAIN_PORT"] == str(8600 + index)
    assert len(ports) == 3
    assert set(compose["volumes"]) >= {"ganache-state", "pgdata", *IPFS, *HOSPITALS}


def test_every_hospital_has_its_own_ipfs_daemon(compose: dict[str, Any]) -> None:
    """A node's blob store owns its daemon's pins: a daemon shared by two hospitals would lose a
    transferred record's ciphertext (the same CID at both) when the former custodian unpins it.
    So: one daemon per hospital, each on its own API port and repo volume, and compose-init gives
    hospital N the Nth."""
    services = compose["services"]
    ports = [services[name]["environment"]["IPFS_API_PORT"] for name in IPFS]
    assert ports == ["5001", "5002", "5003"]
    assert [services[name]["volumes"] for name in IPFS] == [[f"{n}:/repo"] for n in IPFS]
    assert all(services[name]["image"] == "archivechain-ipfs:0.66.1" for name in IPFS)
    init = compose["services"]["init"]["command"]
    context = compose_init.make_context("compose-init", list(init[1:]))
    assert context.params["ipfs_apis"] == tuple(f"/ip4/127.0.0.1/tcp/{p}/http" for p in ports)
    start = (ROOT / "docker" / "ipfs-start.sh").read_text()
    assert "IPFS_API_PORT" in start
    assert "/tcp/5001" not in start  # the port comes from the environment


def test_the_passphrase_comes_only_from_a_secret_file(compose: dict[str, Any]) -> None:
    assert compose["secrets"] == {"keystore_passphrase": {"file": "./secrets/keystore_passphrase"}}
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "archivechain-dev-passphrase" not in raw
    for name in HOSPITALS:
        service = compose["services"][name]
        assert "keystore_passphrase" in service["secrets"]
        env = service["environment"]
        assert env["ARCHIVECHAIN_KEYSTORE_PASSPHRASE_FILE"] == "/run/secrets/keystore_passphrase"
        assert "ARCHIVECHAIN_KEYSTORE_PASSPHRASE" not in env
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()


def test_commands_are_accepted_by_the_real_cli(compose: dict[str, Any]) -> None:
    init = compose["services"]["init"]["command"]
    assert init[0] == "compose-init"
    context = compose_init.make_context("compose-init", list(init[1:]))
    assert context.params["hospitals"] == len(HOSPITALS)
    assert context.params["base_port"] == 8601
    assert "{name}" in context.params["database_url_template"]
    for name in HOSPITALS:
        command = compose["services"][name]["command"]
        group_context = node_group.make_context("node", list(command[1:]), resilient_parsing=True)
        assert isinstance(group_context, click.Context)


def _stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]


def test_dockerfiles_exist_with_healthchecks_and_a_lean_non_root_runtime(
    compose: dict[str, Any],
) -> None:
    images = {service["image"] for service in compose["services"].values()}
    assert images == {
        "archivechain-node:latest",
        "archivechain-ganache:7.9.2",
        "archivechain-postgres:15",
        "archivechain-ipfs:0.66.1",
    }
    makefile = (ROOT / "scripts" / "docker_images.sh").read_text()  # what `make images` runs
    assert "sh scripts/docker_images.sh" in (ROOT / "Makefile").read_text()
    for image in images:
        name, tag = image.removeprefix("archivechain-").split(":")
        assert f"{name}:{tag}" in makefile  # `make images` builds each one
        path = ROOT / "docker" / f"{name}.Dockerfile"
        if path.exists():
            text = path.read_text()
            assert "HEALTHCHECK" in text, path
            assert "ARG BASE=archivechain/debian:bookworm" in text  # made locally, never pulled
            runtime = _stages(text)[-1]
            assert re.search(r"^USER (?!root)\w+", runtime, flags=re.MULTILINE), path
        else:
            pytest.fail(f"no Dockerfile for {image}")
    node = (ROOT / "docker" / "node.Dockerfile").read_text()
    build, runtime = _stages(node)
    # Installed from the wheelhouse staged on the host: no index, no compiler in either stage.
    assert "pip install --no-index --find-links /wheelhouse" in build
    assert "uninstall --yes --disable-pip-version-check pip setuptools" in build
    for tool in ("build-essential", "python3-dev", "gcc", "pip install"):
        assert tool not in runtime, tool
        assert tool == "pip install" or tool not in build, tool
    assert "/healthz" in runtime
    # The pinned npm assets of /docs and the console, served from the image.
    assert "COPY web-assets /opt/archivechain/web-assets" in runtime
    assert "ARCHIVECHAIN_WEB_ASSETS_DIR=/opt/archivechain/web-assets" in runtime
    for name in ("ganache", "ipfs"):
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        assert f"ADD {name}.tar /opt/{name}/" in text
        instructions = [line for line in text.splitlines() if not line.startswith("#")]
        assert not [line for line in instructions if re.search(r"\bnpm\b", line)], name
    staging = (ROOT / "scripts" / "docker_context.py").read_text()
    assert '{"ganache": "7.9.2", "ipfs": "0.66.1"}' in staging
    assert '-f "docker/$name.Dockerfile" "build/docker/$name"' in makefile  # own small context
    for script in ("ipfs-start.sh", "postgres-start.sh"):
        assert (ROOT / "docker" / script).stat().st_mode & 0o111, script


def test_docker_compose_accepts_the_file_and_the_besu_override(tmp_path: Path) -> None:
    """docker-compose 1.29 (Debian's) validates the file alone and merged with the override
    ``archivechain besu init`` writes."""
    import os
    import shutil
    import subprocess

    from devtools.besu import generate_network

    binary = shutil.which("docker-compose")
    if binary is None:
        reason = "docker-compose is not installed (apt-get install docker-compose)"
        if os.environ.get("ARCHIVECHAIN_REQUIRE_COMPOSE", "").strip().lower() in {"1", "true"}:
            pytest.fail(reason + " (ARCHIVECHAIN_REQUIRE_COMPOSE=1 forbids skipping)")
        pytest.skip(reason)
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    generate_network(tmp_path / "besu", 4, "correct horse battery staple", scrypt_n=1 << 4)
    (tmp_path / "secrets").mkdir()
    for name in ["keystore_passphrase", *(f"besu-{i}_key_passphrase" for i in range(1, 5))]:
        (tmp_path / "secrets" / name).write_text("unused by config")
    env = {**os.environ, "ARCHIVECHAIN_DEPLOYER_KEY": "0x" + "11" * 32}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "besu/docker-compose.besu.yml"]):
        args = [binary, *(f"--file={f}" for f in files), "config", "--quiet"]
        result = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    env.pop("ARCHIVECHAIN_DEPLOYER_KEY")
    args = [
        binary,
        "-f",
        "docker-compose.yml",
        "-f",
        "besu/docker-compose.besu.yml",
        "config",
        "-q",
    ]
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0  # the deployer key is required, never defaulted
    assert "deployer key" in result.stderr
